"""Seed 003, "API Reference / Clients / AsyncSynthClient" (edits: see README.md)."""

import asyncio

from _model import MODEL

from frontier_signal.lm import AsyncLMClient

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
    async with AsyncLMClient() as client:
        response = await client.chat_completions_create(
            model=MODEL,
            messages=[{"role": "user", "content": "What's the weather in Paris?"}],
            temperature=0.7,
            max_tokens=20,
            tools=tools,  # Optional tool definitions
            tool_choice="auto",
        )
        print(f"Finish reason: {response['choices'][0]['finish_reason']}")


asyncio.run(main())
