"""Seed 000, "API Levels / Level 1: Simple API" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
batch = [{"text": "The quick brown fox jumps over the lazy dog."}]
prompts = ["The meaning of life is"]

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(base_model=MODEL)

# Direct training calls
client.forward_backward(run.run_id, batch)
client.optim_step(run.run_id)
samples = client.sample(run.run_id, prompts, max_tokens=20)
print(f"Sample: {samples['outputs'][0]}")
