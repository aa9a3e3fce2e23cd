"""Seed 001, "Advanced Inference API / Example 2: Caching for Repeated Prompts" (see README.md)."""

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
inference = client.inference(run_id=run_id, step=20)  # edit: 100 -> 20

# Enable caching
inference.enable_cache()

# First call hits the API
outputs = inference.sample(
    prompts=["What is the capital of France?"],
    max_tokens=50,
)

# Second call returns cached result (instant)
outputs = inference.sample(
    prompts=["What is the capital of France?"],
    max_tokens=50,
)

# Check cache stats
stats = inference.get_cache_stats()
print(f"Cache size: {stats['cache_size']}")

# Clear cache when done
inference.clear_cache()
