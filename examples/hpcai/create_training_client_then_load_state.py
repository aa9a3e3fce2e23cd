"""Seed 002, "create_training_client() / Creating a client without model_id, then loading a
checkpoint" (edits: see README.md).

hpcai 0.2.0 cannot run this example: its TrainingClient asserts on the client, before sending
anything, that a model_id is set. The script shows that refusal and exits 0.
"""

import os

import hpcai
from _model import MODEL, example_training_data

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]

service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)

# Added: a real checkpoint to load (a fresh run saved at step 0).
saved = service_client.create_lora_training_client(base_model=MODEL, rank=8)
CHECKPOINT_PATH = saved.save_state("step_0010").result().path
print(f"Checkpoint: {CHECKPOINT_PATH}")

# Create client without model_id
training_client = service_client.create_training_client(model_id=None)

# Load checkpoint to bind the model
try:
    load_future = training_client.load_state(CHECKPOINT_PATH)
    load_future.result()
except AssertionError as error:
    print(f"hpcai refuses load_state without a model_id: {error}")
    raise SystemExit(0) from None

print(f"Model loaded: {training_client.model_id}")

# Now you can use it for training
training_data = example_training_data()  # Your training data
result = training_client.forward_backward(training_data, loss_fn="cross_entropy")
result.result()
