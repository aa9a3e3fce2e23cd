"""Seed 001, "Advanced Training API / Example 1: Fine-Grained Control" (edits: see README.md)."""

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
    timeout=7200,  # 2 hours
    max_retries=3,
)

# Fine-grained control over training
for batch in dataloader:
    # Compute gradients
    result = training.forward_backward(batch)

    # Conditional optimizer step (e.g., gradient clipping)
    if result["grad_norm"] < 100.0:
        training.optim_step()
    else:
        print(f"Skipping step: gradient norm too high ({result['grad_norm']})")

# Access training metrics
metrics = training.get_metrics()
print(f"Average loss: {metrics['avg_loss']:.4f}")
print(f"Current step: {metrics['current_step']}")

# Save checkpoint
training.save_checkpoint(mode="adapter")
