"""Seed 001, "Advanced Training API / Example 2: Convenience Methods" (edits: see README.md)."""

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

# Get training client from run
training = run.training(timeout=7200)

# Use train_batch (combines forward_backward + optim_step)
for batch in dataloader:
    result = training.train_batch(
        batch_data=batch,
        learning_rate=1e-4,  # Override learning rate
    )
    print(f"Step {result['step']}: loss={result['loss']:.4f}")

# Or train for full epoch with progress bar
result = training.train_epoch(
    dataloader=dataloader,
    progress=True,  # Shows tqdm progress bar
)
print(f"Epoch complete: avg_loss={result['avg_loss']:.4f}")
