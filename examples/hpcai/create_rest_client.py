"""Seed 002, "create_rest_client() / Example" (edits: see README.md)."""

import os

import hpcai
from _model import MODEL

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]

service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)
TRAINING_RUN_ID = service_client.create_lora_training_client(base_model=MODEL).model_id

rest_client = service_client.create_rest_client()

# Use RestClient methods
checkpoints_response = rest_client.list_checkpoints(TRAINING_RUN_ID).result()
training_run = rest_client.get_training_run(TRAINING_RUN_ID).result()
print(f"Checkpoints of {TRAINING_RUN_ID}: {len(checkpoints_response.checkpoints)}")
print(f"Training run: {training_run.training_run_id}")
