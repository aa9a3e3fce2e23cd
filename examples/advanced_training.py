"""Seed 000, "API Levels / Level 2: Advanced Training API" (edits: see README.md)."""

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

# Get specialized training client
training = client.training(
    run_id=run.run_id,
    timeout=7200,  # 2 hours for long training
    max_retries=3,
)

# Fine-grained control
for batch in dataloader:
    result = training.forward_backward(batch)

    # Conditional optimizer step (e.g., gradient clipping)
    if result["grad_norm"] < 10.0:
        training.optim_step()

# Convenience methods
training.train_batch(batch)  # forward_backward + optim_step
training.train_epoch(dataloader, progress=True)  # Full epoch with progress bar

# State tracking
metrics = training.get_metrics()
print(f"Average loss: {metrics['avg_loss']:.4f}")

# Save checkpoint
training.save_checkpoint(mode="adapter")
