"""Work a request is waiting for, cancelled when its client goes away.

Starlette runs a non-streaming handler to its end even after the client has closed the
connection, and nothing reads what it returns. For generation that is the engine's time: a
fuzzed `sample` of 1,024 prompts x 16,384 tokens that its client gave up on after 60 s kept the
engine busy for minutes, and every request behind it (a `save_state` among them) timed out. So
the generating routes (Signal `sample` and `embeddings`, OpenAI completions without `stream`)
await their work through `unless_disconnected`: it also listens for the ASGI `http.disconnect`
message (the request body has been read by then, so the next message is that one), and the
first of the two to finish wins. Cancelling the work cancels the engine operation
(engine/worker.py: a queued one never runs, a generation stops at its next decode slice). The
answer then goes nowhere; it is logged as 499, nginx's "client closed request".

Calls that change state do not use it: the request log runs them as tasks of their own that
finish and are recorded whoever waits (service/requests.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import HTTPException, Request

T = TypeVar("T")

CLIENT_CLOSED = 499


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`await work`, unless the client disconnects first: then the work is cancelled and an
    HTTPException(499) ends the request."""
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        listener.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise HTTPException(CLIENT_CLOSED, "the client closed the request; its work was cancelled")
    return task.result()
