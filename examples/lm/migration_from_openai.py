"""Seed 003, "Migration Guide / From OpenAI" (Before and After in one script; see README.md).

"Before" uses the official `openai` client, reading OPENAI_API_KEY / OPENAI_BASE_URL (point
them at this server: real OpenAI is not reachable here).
"""

import asyncio

from _model import MODEL
from openai import AsyncOpenAI

from frontier_signal.lm import create_provider

messages = [{"role": "user", "content": "Hello!"}]


async def main():
    # Before (OpenAI)
    client = AsyncOpenAI()
    response = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20)
    print(f"Before: {response.choices[0].finish_reason}")
    await client.close()

    # After (Signal)
    model = MODEL
    provider = create_provider("signal")
    await provider.warmup(model)  # Added step
    response = await provider.create_chat_completion(model=model, messages=messages, max_tokens=20)
    print(f"After: {response['choices'][0]['finish_reason']}")
    await provider.close()


asyncio.run(main())
