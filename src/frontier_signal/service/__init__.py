"""The service layer: the rules (tenants, keys, runs, checkpoints, requests) and the SQL store.

It sits between the HTTP routes and the engine worker (typed operations, engine/worker.py); it
knows nothing about HTTP.
"""
