"""Seed 003, "Quick Start / Provider Switching" (edits: see README.md).

The `openai` provider reads OPENAI_API_KEY and OPENAI_BASE_URL; real OpenAI is not reachable
here, so point them at this server (`$FRONTIER_SIGNAL_BASE_URL/v1` and a Frontier Signal key).
"""

import asyncio

from _model import MODEL

from frontier_signal.lm import UnifiedLMClient


async def main():
    async with UnifiedLMClient() as client:
        # Use Signal
        response = await client.create_chat_completion(
            model=MODEL,
            messages=[{"role": "user", "content": "Hello!"}],
            provider="signal",
            max_tokens=20,
        )
        print(f"signal: {response['model']}")

        # Use OpenAI
        response = await client.create_chat_completion(
            model=MODEL,
            messages=[{"role": "user", "content": "Hello!"}],
            provider="openai",
            max_tokens=20,
        )
        print(f"openai: {response['model']}")


asyncio.run(main())
