"""Seed 000, "API Levels / Level 3: Advanced Inference API" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])

# edit: the seed's "run_123" is a run this script creates and trains for 20 steps
run_id = client.create_run(base_model=MODEL).run_id
for _ in range(20):
    client.forward_backward(run_id, [{"text": "Hello there, general Kenobi."}])
    client.optim_step(run_id)

# Get specialized inference client
inference = client.inference(
    run_id=run_id,
    step=20,  # Use specific checkpoint (edit: 100 -> 20)
    batch_size=32,  # Batch size for inference
    timeout=30,
)

# Batched generation (automatic chunking)
prompts = ["Hello"] * 10  # edit: 100 -> 10
outputs = inference.batch_sample(
    prompts=prompts,
    max_tokens=50,
)

# Enable caching for repeated prompts
inference.enable_cache()
outputs = inference.sample(["Same prompt"], max_tokens=50)  # Cached on repeat

# Compare different checkpoints
inference_early = client.inference(run_id, step=10)
inference_late = client.inference(run_id, step=20)  # edit: 1000 -> 20
print(f"Early: {inference_early.sample(['Hello'], max_tokens=10)[0]!r}")
print(f"Late: {inference_late.sample(['Hello'], max_tokens=10)[0]!r}")
