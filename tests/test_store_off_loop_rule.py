"""The rule of docs/server.md ("Store"): no store call runs on the event loop.

In the server and the services, an `async def` reaches the store only through a worker thread
(`await asyncio.to_thread(store.method, ...)`, the ledger's awaitables, or a plain `def` route that
FastAPI runs in its threadpool). This test reads the source: a direct call of a store method, or
of a synchronous service method that calls the store (found by following the calls), inside an
`async def` fails it. The few calls that stay on the loop on purpose are listed with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "frontier_signal"
FILES = sorted((SRC / "service").glob("*.py")) + sorted((SRC / "server").rglob("*.py"))
# Receivers of service calls in the routes and services (`self.runs.run_row`, `state(r).x.y`).
SERVICE_ROOTS = {"self", "service", "app", "serving", "models", "sessions", "runs"}
SERVICE_ROOTS |= {"state()", "_state()", "_service()"}
# Names too common to follow (`dict.get`, `task.cancel`); their store-bound users are covered by
# the direct `.store.` check where they call it.
GENERIC = {"get", "list", "info", "cancel", "create", "model", "close", "submit", "metrics", "run"}
ALLOWED = {
    # Shutdown: the server no longer answers requests.
    ("server/app.py", "lifespan", "state.store.close"),
    # A cancelled request's outcome is written at once, before the cancellation propagates.
    ("service/requests.py", "_execute", "self.ledger.record_now"),
    ("service/futures.py", "_finished", "self.ledger.record_now"),
}


def _chain(node: ast.AST) -> list[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Call):  # `state(request).runs`: the function's name
        node = node.func
        parts.append((node.id if isinstance(node, ast.Name) else "") + "()")
    else:
        parts.append(node.id if isinstance(node, ast.Name) else "")
    return parts[::-1]


def _own_calls(function: ast.AST) -> list[ast.Call]:
    """Calls in `function`'s own body (not in functions or lambdas defined inside it)."""
    calls, stack = [], list(ast.iter_child_nodes(function))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            calls.append(node)
        stack.extend(ast.iter_child_nodes(node))
    return calls


def _functions():
    for path in FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield path.relative_to(SRC).as_posix(), node


def _store_bound(chain: list[str], bound: set[str]) -> bool:
    if "store" in chain[:-1] or chain[-2:-1] == ["ledger"] and chain[-1] == "record_now":
        return True
    return chain[-1] in bound and chain[0] in SERVICE_ROOTS and len(chain) > 1


def _bound_names() -> set[str]:
    """Synchronous methods that call the store, directly or through each other."""
    sync = [f for _, f in _functions() if isinstance(f, ast.FunctionDef)]
    bound: set[str] = set()
    while True:
        more = {
            f.name
            for f in sync
            if f.name not in bound | GENERIC
            and any(_store_bound(_chain(c.func), bound) for c in _own_calls(f))
        }
        if not more:
            return bound
        bound |= more


def test_no_store_call_runs_on_the_event_loop():
    bound = _bound_names()
    assert {"run_row", "model_row", "sample_source", "resolve", "heartbeat"} <= bound
    found = []
    for path, function in _functions():
        if not isinstance(function, ast.AsyncFunctionDef):
            continue
        for call in _own_calls(function):
            chain = _chain(call.func)
            name = ".".join(chain)
            if _store_bound(chain, bound) and (path, function.name, name) not in ALLOWED:
                found.append(f"{path}:{call.lineno} in async {function.name}: {name}(...)")
    assert not found, (
        "store calls on the event loop; wrap them in `await asyncio.to_thread(...)` or make the "
        "route a plain `def` (docs/server.md, Store):\n" + "\n".join(sorted(found))
    )
