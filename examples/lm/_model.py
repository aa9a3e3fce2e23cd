"""The model the LM examples chat with: the bundled tiny model unless set otherwise."""

import os

MODEL = os.environ.get("FRONTIER_SIGNAL_EXAMPLE_MODEL", "frontier-signal/tiny-llama")
