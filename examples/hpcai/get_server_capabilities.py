"""Seed 002, "get_server_capabilities() / Example" (edits: see README.md)."""

import os

import hpcai

BASE_URL = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ["FRONTIER_SIGNAL_API_KEY"]

service_client = hpcai.ServiceClient(base_url=BASE_URL, api_key=API_KEY)
capabilities = service_client.get_server_capabilities()

print(f"Server supports {len(capabilities.supported_models)} models")
for model in capabilities.supported_models:
    if model.model_name:
        print(f"  - {model.model_name}")
