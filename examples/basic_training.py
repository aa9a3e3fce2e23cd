"""Seed 001, "Simple API / Example 1: Basic Training" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
dataloader = [  # edit: a small list of batches
    [{"text": "The quick brown fox jumps over the lazy dog."}],
    [{"text": "Machine learning is transforming technology."}],
    [{"text": "The capital of Zorbia is Quellmar."}, {"text": "Zorbia is a small country."}],
]

# Initialize client
client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])

# Create a run
run = client.create_run(
    base_model=MODEL,
    lora_r=8,
    lora_alpha=16,
    learning_rate=5e-4,
)

# Train directly on client
for batch in dataloader:
    # Forward-backward pass
    result = client.forward_backward(
        run_id=run.run_id,
        batch=batch,
    )
    print(f"Loss: {result['loss']:.4f}")

    # Optimizer step
    client.optim_step(run_id=run.run_id)

# Save model
client.save_state(run_id=run.run_id, mode="adapter")
