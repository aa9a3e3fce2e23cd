"""Seed 002, "create_lora_training_client() / Basic usage with default LoRA configuration"
(edits: see README.md)."""

import os

import hpcai
from _model import MODEL

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]

service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)
training_client = service_client.create_lora_training_client(base_model=MODEL)

print(f"Created model ID {training_client.model_id}")
