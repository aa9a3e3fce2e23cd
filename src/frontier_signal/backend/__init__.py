"""The torch backend: base models, per-run LoRA adapters, losses, optimizers, sampling, checkpoints.

Knows nothing about HTTP or SQL. Imported only by the engine (server extra).
"""
