"""Seed 000, "Advanced Usage / Custom LoRA Configuration" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])

run = client.create_run(
    base_model=MODEL,
    lora_r=64,  # Higher rank = more capacity
    lora_alpha=128,  # Usually 2x lora_r
    lora_dropout=0.05,
    lora_target_modules=["q_proj", "v_proj", "k_proj", "o_proj"],
)
print(f"LoRA config: {run.get_status()['config']}")
