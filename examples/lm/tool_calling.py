"""Seed 003, "Advanced Usage / Tool/Function Calling" (edits: see README.md)."""

import asyncio

from _model import MODEL

from frontier_signal.lm import create_provider

tools = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get weather for a location",
            "parameters": {
                "type": "object",
                "properties": {"location": {"type": "string"}},
                "required": ["location"],
            },
        },
    }
]


async def main():
    provider = create_provider("signal")
    response = await provider.create_chat_completion(
        model=MODEL,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=tools,
        tool_choice="auto",
        max_tokens=40,
    )

    # Check for tool calls
    if response["choices"][0]["message"].get("tool_calls"):
        tool_call = response["choices"][0]["message"]["tool_calls"][0]
        print(f"Function: {tool_call['function']['name']}")
        print(f"Arguments: {tool_call['function']['arguments']}")
    else:
        print(f"No tool call; answer: {response['choices'][0]['message']['content']!r}")
    await provider.close()


asyncio.run(main())
