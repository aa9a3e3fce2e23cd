"""Seed 003, "Advanced Usage / Custom Configuration" (edits: see README.md)."""

import asyncio
import os

from _model import MODEL

from frontier_signal.lm import LMConfig, SignalProvider

# Create custom config
config = LMConfig(
    base_url=os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000"),
    api_key=os.environ["FRONTIER_SIGNAL_API_KEY"],
    timeout=60.0,
    max_retries=5,
)

# Use with provider
provider = SignalProvider(config)
print(provider)  # the key is never shown


async def main():
    print(f"Warm: {await provider.warmup(MODEL)}")
    await provider.close()


asyncio.run(main())
