"""Seed 003, "Quick Start / One-Shot Request" (edits: see README.md)."""

import asyncio

from _model import MODEL

from frontier_signal.lm import create_chat_completion_async


async def main():
    response = await create_chat_completion_async(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=20
    )
    print(f"One-shot answer: {response['choices'][0]['message']['content']!r}")


asyncio.run(main())
