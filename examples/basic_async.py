"""Seed 000, "Quick Start / Asynchronous Client" (edits: see README.md)."""

import asyncio
import os

from frontier_signal import AsyncSignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")


async def train():
    # Use async context manager for automatic cleanup
    async with AsyncSignalClient(
        api_key=os.environ["FRONTIER_SIGNAL_API_KEY"],
        base_url=os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000"),
    ) as client:
        # Create run
        run = await client.create_run(
            base_model=MODEL,
            lora_r=32,
        )

        # Training data
        batch = [
            {"text": "The quick brown fox jumps over the lazy dog."},
            {"text": "Machine learning is transforming technology."},
        ]

        # Training loop
        for step in range(10):
            result = await run.forward_backward(batch=batch)
            print(f"Step {step}: Loss = {result['loss']:.4f}")

            await run.optim_step()

        # Save model
        artifact = await run.save_state(mode="adapter")
        print(f"Saved to: {artifact['checkpoint_path']}")


# Run the async function
asyncio.run(train())
