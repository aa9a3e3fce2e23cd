"""Seed 001, "Migration Examples / From Simple to Advanced Inference" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run_id = client.create_run(base_model=MODEL).run_id  # edit: instead of "run_123"

# Before (Simple API)
outputs = client.sample(
    run_id=run_id,
    prompts=["Hello"] * 5,  # edit: 100 -> 5
    max_tokens=50,
)

# After (Advanced Inference API)
inference = client.inference(run_id=run_id, batch_size=32)

# Automatically batches for efficiency
outputs = inference.batch_sample(
    prompts=["Hello"] * 5,  # edit: 100 -> 5
    max_tokens=50,
)
print(f"Generated {len(outputs)} outputs")
