"""Seed 000, "Advanced Usage / Export to HuggingFace Hub" (edits: see README.md).

Without a reachable hub (no network, or no HF_TOKEN on the server) the server keeps the local
save and the SDK raises an error naming its path: this script prints that and exits 0.
"""

import os

from frontier_signal import SignalAPIError, SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(base_model=MODEL)
run.forward_backward(batch=[{"text": "The quick brown fox jumps over the lazy dog."}])
run.optim_step()

try:
    artifact = run.save_state(
        mode="merged",
        push_to_hub=True,
        hub_model_id="your-username/your-model-name",
    )
    print(f"Pushed to the hub: {artifact['hub_model_id']}")
except SignalAPIError as e:
    print(f"Hub push failed, the local save is kept: {e.message}")
