"""Seed 000, "Advanced Usage / Gradient Accumulation" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(base_model=MODEL)
batch1 = [{"text": "The quick brown fox jumps over the lazy dog."}]
batch2 = [{"text": "Machine learning is transforming technology."}]
batch3 = [{"text": "The capital of Zorbia is Quellmar."}]

# Accumulate gradients
run.forward_backward(batch=batch1, accumulate=False)  # Reset
run.forward_backward(batch=batch2, accumulate=True)  # Accumulate
run.forward_backward(batch=batch3, accumulate=True)  # Accumulate

# Apply accumulated gradients
result = run.optim_step()
print(f"Applied accumulated gradients: step {result['step']}, grad_norm {result['grad_norm']:.4f}")
