"""Seed 002, "create_training_client_from_state() / Resuming training from a saved checkpoint"
(edits: see README.md)."""

import os

import hpcai
from _model import MODEL, example_training_data

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]

service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)

# Added: a run trained one step and saved as "step_0010", the checkpoint to resume from.
source = service_client.create_lora_training_client(base_model=MODEL, rank=8)
source.forward_backward(example_training_data(), loss_fn="cross_entropy").result()
source.optim_step(hpcai.AdamParams(learning_rate=1e-4)).result()
model_id = source.model_id
print(f"Source model ID: {model_id}")
print(f"Saved: {source.save_state('step_0010').result().path}")

CHECKPOINT_PATH = f"hpcai://{model_id}/training/step_0010"

training_client = service_client.create_training_client_from_state(CHECKPOINT_PATH)

print(f"Restored model ID: {training_client.model_id}")

# Continue training
training_data = example_training_data()  # Your training data
fwd_bwd = training_client.forward_backward(training_data, loss_fn="cross_entropy")
optim = training_client.optim_step(hpcai.AdamParams(learning_rate=1e-4))

fwd_bwd.result()
optim.result()

# Clean up
training_client.unload_model().result()
