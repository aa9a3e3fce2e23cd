"""The service layer: the rules (tenants, keys, runs, checkpoints, requests) and the SQL store.

It sits between the HTTP routes and the engine's scheduler; it knows nothing about HTTP.
"""
