"""Seed 001, "Simple API / Example 2: Using SignalRun Wrapper" (edits: see README.md)."""

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

# Use run methods (cleaner than passing run_id)
for batch in dataloader:
    result = run.forward_backward(batch=batch)
    run.optim_step()

saved = run.save_state(mode="adapter")
print(f"Saved step {saved['step']} to: {saved['checkpoint_path']}")
