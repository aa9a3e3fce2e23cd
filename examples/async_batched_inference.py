"""Seed 001, "Async Support / Example 2: Async Batched Inference" (edits: see README.md)."""

import asyncio
import os

from frontier_signal import AsyncInferenceClient, SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")


async def infer_batch(inference, prompts):
    return await inference.batch_sample(prompts, max_tokens=50)


async def main():
    # edit: the seed's "run_123" is a run this script creates
    run_id = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"]).create_run(MODEL).run_id

    # Create async inference client
    async with AsyncInferenceClient(
        run_id=run_id,
        api_key=os.environ["FRONTIER_SIGNAL_API_KEY"],
        batch_size=32,
    ) as inference:
        # Process multiple batches concurrently (edit: the seed's "..." dropped)
        batch1 = ["prompt1", "prompt2"]
        batch2 = ["prompt3", "prompt4"]
        batch3 = ["prompt5", "prompt6"]

        results = await asyncio.gather(
            infer_batch(inference, batch1),
            infer_batch(inference, batch2),
            infer_batch(inference, batch3),
        )

        print(f"Processed {sum(len(r) for r in results)} prompts concurrently")


asyncio.run(main())
