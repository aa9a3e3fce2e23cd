"""Which server process runs a request: `requests.owner` is `host:pid:token`, so that several
processes can share one database and a starting one forgets only the unfinished requests of
processes that died. A process on another host cannot be checked; it counts as alive."""

from __future__ import annotations

import os
import socket
import uuid

_PROCESS_TOKEN = uuid.uuid4().hex[:12]


def process_owner() -> str:
    """This process, as recorded in `requests.owner`: `host:pid:token` (the token tells a
    process from an earlier one that had the same pid, as pid 1 in a container)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


def owner_alive(owner: str | None) -> bool:
    """Whether the process that recorded a request may still be running it. Processes of
    other hosts cannot be checked: they count as alive."""
    if owner is None:
        return False
    if owner == process_owner():
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():  # our pid, another token: an earlier process, gone
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def same_host(owner: str | None) -> bool:
    return owner is not None and owner.partition(":")[0] == socket.gethostname()
