"""Seed 001, "Migration Examples / From Simple to Advanced Training" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
dataloader = [  # edit: a small list of batches
    [{"text": "The quick brown fox jumps over the lazy dog."}],
    [{"text": "Machine learning is transforming technology."}],
    [{"text": "The capital of Zorbia is Quellmar."}, {"text": "Zorbia is a small country."}],
]

# Before (Simple API)
client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(base_model=MODEL)

for batch in dataloader:
    client.forward_backward(run.run_id, batch)
    client.optim_step(run.run_id)

# After (Advanced Training API)
client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(base_model=MODEL)

training = client.training(run.run_id, timeout=7200)
for batch in dataloader:
    training.train_batch(batch)  # Cleaner + automatic metrics tracking

print(f"Final avg loss: {training.get_metrics()['avg_loss']}")
