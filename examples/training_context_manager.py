"""Seed 001, "Advanced Training API / Example 3: Context Manager" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
dataloader = [  # edit: a small list of batches
    [{"text": "The quick brown fox jumps over the lazy dog."}],
    [{"text": "Machine learning is transforming technology."}],
    [{"text": "The capital of Zorbia is Quellmar."}, {"text": "Zorbia is a small country."}],
]

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(base_model=MODEL)

# Use context manager for automatic cleanup
with client.training(run.run_id) as training:
    for batch in dataloader:
        training.train_batch(batch)

    # Save before exiting
    saved = training.save_checkpoint(mode="adapter")

# Session automatically closed
print(f"Saved step {saved['step']}; the client still answers: {len(client.list_runs())} runs")
