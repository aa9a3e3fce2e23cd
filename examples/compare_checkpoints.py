"""Seed 001, "Advanced Inference API / Example 3: Different Checkpoints" (see README.md)."""

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

# Compare outputs at different training steps
inference_early = client.inference(run_id=run_id, step=10)
inference_late = client.inference(run_id=run_id, step=20)  # edit: 1000 -> 20

prompt = "Explain quantum computing"

output_early = inference_early.sample([prompt], max_tokens=100)
output_late = inference_late.sample([prompt], max_tokens=100)

print("Early checkpoint:", output_early[0])
print("Late checkpoint:", output_late[0])
