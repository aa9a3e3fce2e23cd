"""Seed 000, "Quick Start / Synchronous Client" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")

# Initialize client
client = SignalClient(
    api_key=os.environ["FRONTIER_SIGNAL_API_KEY"],  # Your API key
    base_url=os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000"),
)

# List available models
models = client.list_models()
print(f"Available models: {models}")

# Create a training run
run = client.create_run(
    base_model=MODEL,
    lora_r=32,
    lora_alpha=64,
    learning_rate=3e-4,
)

# Prepare training data
batch = [
    {"text": "The quick brown fox jumps over the lazy dog."},
    {"text": "Machine learning is transforming technology."},
]

# Training loop
for step in range(10):
    # Forward-backward pass
    result = run.forward_backward(batch=batch)
    print(f"Step {step}: Loss = {result['loss']:.4f}")

    # Optimizer step
    run.optim_step()

    # Sample from model every 5 steps
    if step % 5 == 0:
        samples = run.sample(
            prompts=["The meaning of life is"],
            temperature=0.7,
            max_tokens=20,
        )
        print(f"Sample: {samples['outputs'][0]}")

# Save final model
artifact = run.save_state(mode="adapter", push_to_hub=False)
print(f"Saved to: {artifact['checkpoint_path']}")
