"""Seed 001, "Async Support / Example 1: Async Training" (edits: see README.md)."""

import asyncio
import os

from frontier_signal import AsyncTrainingClient, SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
dataloader = [  # edit: a small list of batches
    [{"text": "The quick brown fox jumps over the lazy dog."}],
    [{"text": "Machine learning is transforming technology."}],
    [{"text": "The capital of Zorbia is Quellmar."}, {"text": "Zorbia is a small country."}],
]


async def train_async():
    client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
    run = client.create_run(base_model=MODEL)

    # Get async training client
    async with AsyncTrainingClient(
        run_id=run.run_id,
        api_key=client.api_key,
        base_url=client.base_url,
    ) as training:
        for batch in dataloader:
            result = await training.train_batch(batch)
            print(f"Loss: {result['loss']:.4f}")

        await training.save_checkpoint(mode="adapter")


asyncio.run(train_async())
