"""Seed 002, "create_lora_training_client() / Custom LoRA configuration for attention-only
fine-tuning" (edits: see README.md)."""

import os

import hpcai
from _model import MODEL

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]
service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)

training_client = service_client.create_lora_training_client(
    base_model=MODEL,
    rank=64,
    seed=42,
    train_mlp=False,
    train_attn=True,  # only fine tune on attention layers
    train_unembed=False,
)

training_run = service_client.create_rest_client().get_training_run(training_client.model_id)
print(f"LoRA rank: {training_run.result().lora_rank}")
