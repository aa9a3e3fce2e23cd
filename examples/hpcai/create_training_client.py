"""Seed 002, "create_training_client() / Creating a client for an existing model from a previous
session" (edits: see README.md)."""

import os

import hpcai
from _model import MODEL, example_training_data

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]

service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)

# You have a model_id from a previous training session
existing_model_id = service_client.create_lora_training_client(base_model=MODEL).model_id
print(f"Existing model: {existing_model_id}")

training_client = service_client.create_training_client(model_id=existing_model_id)

print(f"Client bound to model: {training_client.model_id}")

# Use the client for training
training_data = example_training_data()  # Your training data
fwd_bwd = training_client.forward_backward(training_data, loss_fn="cross_entropy")
optim = training_client.optim_step(hpcai.AdamParams(learning_rate=1e-4))

fwd_bwd.result()
optim.result()
print("Trained one step")
