"""The training engine (server extra): validation, rendering, batching over the torch backend.

Import `Engine` from `frontier_signal.engine.engine`; the types and errors here import no torch.
"""
