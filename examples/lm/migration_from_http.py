"""Seed 003, "Migration Guide / From Direct Modal/Synth Calls" (Before and After; see README.md)."""

import asyncio
import os

import httpx
from _model import MODEL

from frontier_signal.lm import create_chat_completion_async

api_key = os.environ["FRONTIER_SIGNAL_API_KEY"]
base_url = os.environ.get("FRONTIER_SIGNAL_BASE_URL", "http://127.0.0.1:8000")
messages = [{"role": "user", "content": "Hello!"}]

# Before (Direct HTTP)
response = httpx.post(
    f"{base_url}/v1/chat/completions",
    headers={"Authorization": f"Bearer {api_key}"},
    json={"model": MODEL, "messages": messages, "max_tokens": 20},
    timeout=60,
)
print(f"Before: HTTP {response.status_code}")


# After (Signal Client)
async def main():
    response = await create_chat_completion_async(model=MODEL, messages=messages, max_tokens=20)
    print(f"After: {response['object']}")


asyncio.run(main())
