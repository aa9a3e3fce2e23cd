"""The base model the examples train: SmolLM2 by default; the tests set the tiny model."""

import os

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "HuggingFaceTB/SmolLM2-135M-Instruct")
