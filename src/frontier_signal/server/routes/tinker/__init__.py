"""The Tinker-style API (`/api/v1`, docs/tinker-api.md, docs/tinker-sdk.md): thin handlers over
`TinkerService`, `TinkerModels`, `SessionService` and `FutureService`, spoken by the hpcai 0.2.0
SDK and the official tinker 0.38 SDK (tinker-wire-protocol.md), one module per concept:

- `sessions`: the tinker start-up handshake, sessions, sampling sessions, discovery;
- `training`: models (create, info, unload, load_weights), forward(_backward), optim_step;
- `sampling`: `asample` (a future) and `sample` (synchronous);
- `checkpoints`: saving weights and the REST listing, download, publish, TTL and delete;
- `futures`: `retrieve_future` (JSON or protobuf) and `cancel_future`.

One protocol, two encodings: a protobuf forward_backward body is decoded (`tinker_proto`) into
the same pydantic body as a JSON one and runs the same handler; a finished future's result is
stored as JSON and encoded as protobuf only when the poll's `Accept` asks for it. Asynchronous
operations answer `{"request_id", "model_id"}` at once and are polled through
`retrieve_future`; a failed operation answers that poll with `{"error", "category"}` (tinker) or
400 `{"detail": message}` (hpcai). JSON keeps NaN/Infinity (the clients parse them).
"""

from __future__ import annotations

from fastapi import APIRouter

from frontier_signal.server.routes.tinker import (
    checkpoints,
    futures,
    sampling,
    sessions,
    training,
)
from frontier_signal.server.routes.tinker.common import TinkerJSONResponse

router = APIRouter()
for _module in (sessions, training, checkpoints, sampling, futures):
    router.include_router(_module.router)

__all__ = ["TinkerJSONResponse", "router"]
