"""Seed 000, "Exception Handling" (edits: see README.md)."""

import os

from frontier_signal import (
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    SignalAPIError,
    SignalClient,
    ValidationError,
)

client = SignalClient(api_key=os.environ["FRONTIER_SIGNAL_API_KEY"])

try:
    run = client.create_run(base_model="invalid/model")
except AuthenticationError:
    print("Invalid API key")
except ValidationError as e:
    print(f"Invalid parameters: {e.message}")
except RateLimitError:
    print("Rate limit exceeded, try again later")
except NotFoundError:
    print("Resource not found")
except SignalAPIError as e:
    print(f"API error: {e.message} (status: {e.status_code})")
