"""Seed 000, "Context Manager (Sync)" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")

with SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"]) as client:
    run = client.create_run(base_model=MODEL)
    # Training code here...
    print(f"Created run: {run.run_id}")
