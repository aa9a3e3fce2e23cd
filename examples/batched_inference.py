"""Seed 001, "Advanced Inference API / Example 1: Batched Inference" (edits: see README.md)."""

import os

from frontier_signal import SignalClient

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")

# edit: the seed's "run_123" is a run this script creates and trains for 20 steps
setup = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])
run_id = setup.create_run(base_model=MODEL).run_id
for _ in range(20):
    setup.forward_backward(run_id, [{"text": "Explain quantum computing simply."}])
    setup.optim_step(run_id)

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])

# Get specialized inference client
inference = client.inference(
    run_id=run_id,
    step=20,  # Use checkpoint at step 100 (edit: 100 -> 20)
    batch_size=32,  # Process 32 prompts at a time
    timeout=30,
)

# Batched generation (automatically chunks into batches)
prompts = ["Hello", "World"] * 5  # edit: the seed's "..." dropped, 100 -> 5 (10 prompts)
outputs = inference.batch_sample(
    prompts=prompts,
    max_tokens=50,
    temperature=0.7,
)

print(f"Generated {len(outputs)} responses")
