"""Seed 003, "API Reference / Clients / SyncSynthClient" (edits: see README.md)."""

from _model import MODEL

from frontier_signal.lm import LMClient

with LMClient() as client:
    response = client.chat_completions_create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=20
    )
    print(f"Sync answer: {response['choices'][0]['message']['content']!r}")
