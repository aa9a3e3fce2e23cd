"""Seed 003, "Quick Start / Basic Usage" (edits: see README.md)."""

import asyncio

from _model import MODEL

from frontier_signal.lm import create_provider


async def main():
    # Create provider (config from environment)
    provider = create_provider("signal")

    # Warm up model (cached for 10 minutes)
    await provider.warmup(MODEL)

    # Make request
    response = await provider.create_chat_completion(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=20
    )

    print(response["choices"][0]["message"]["content"])

    # Clean up
    await provider.close()


asyncio.run(main())
