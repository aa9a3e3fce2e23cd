"""Seed 002, "create_training_client_from_state() / Getting checkpoint path from RestClient and
restoring" (edits: see README.md)."""

import os

import hpcai
from _model import MODEL, example_training_data

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]

service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)
rest_client = service_client.create_rest_client()

# Added: a run trained one step and saved, so that it has a checkpoint to list.
source = service_client.create_lora_training_client(base_model=MODEL, rank=8)
source.forward_backward(example_training_data(), loss_fn="cross_entropy").result()
source.optim_step(hpcai.AdamParams(learning_rate=1e-4)).result()
source.save_state("step_0001").result()

# List checkpoints for a training run
training_run_id = source.model_id
print(f"Training run: {training_run_id}")
checkpoints_response = rest_client.list_checkpoints(training_run_id).result()

# Find the latest checkpoint
if checkpoints_response.checkpoints:
    latest_checkpoint = checkpoints_response.checkpoints[-1]
    checkpoint_path = latest_checkpoint.checkpoint_path
    print(f"Restoring from: {checkpoint_path}")

    # Restore training client
    training_client = service_client.create_training_client_from_state(checkpoint_path)
    print(f"Restored model ID: {training_client.model_id}")
