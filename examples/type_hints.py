"""Seed 000, "Type Hints" (edits: see README.md)."""

import os

from frontier_signal import RunConfig, SignalClient, TrainingExample

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")


def prepare_batch(texts: list[str]) -> list[TrainingExample]:
    return [TrainingExample(text=t) for t in texts]


config = RunConfig(
    base_model=MODEL,
    lora_r=32,
)

# edit: use the config and the batch
client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run = client.create_run(config)
result = run.forward_backward(prepare_batch(["Typed examples train too."]))
print(f"Typed batch loss: {result['loss']:.4f}")
