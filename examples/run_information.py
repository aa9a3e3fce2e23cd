"""Seed 000, "Run Information" and "List Operations" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(base_model=MODEL)
run.forward_backward(batch=[{"text": "The quick brown fox jumps over the lazy dog."}])
run.optim_step()

# Get current status
status = run.get_status()

# Get metrics history
metrics = run.get_metrics()

# List all models
models = client.list_models()

# List all runs
runs = client.list_runs()

print(f"Status: {status['status']} at step {status['step']}")
print(f"Metrics: {metrics}")
print(f"Models: {models}")
print(f"Runs: {len(runs)}")
