"""Every route describes its success answer: a `response_model` (a pydantic model of its JSON)
or, for answers that are not one JSON shape (server-sent events, files, Prometheus text, a 204,
a future's JSON-or-protobuf result), `responses=` content with a schema. Checked on the routes
themselves and on what `/openapi.json` publishes."""

from __future__ import annotations

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from frontier_signal.server.app import create_app
from frontier_signal.service.settings import ServiceSettings


def _app(tmp_path):
    return create_app(ServiceSettings(data_dir=tmp_path, no_auth=True))


def _routes(routes):
    """Every route, also inside included routers (FastAPI may keep them nested)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner.routes)
        else:
            yield route


def _described(route: APIRoute) -> bool:
    model = route.response_model
    if isinstance(model, type) and issubclass(model, BaseModel):
        return True
    for status, answer in (route.responses or {}).items():
        if not str(status).startswith("2"):
            continue
        if str(status) == "204":
            return True
        content = answer.get("content") or {}
        if content and all(entry.get("schema") for entry in content.values()):
            return True
    return False


def test_every_route_declares_a_response_model_or_described_content(tmp_path):
    routes = [r for r in _routes(_app(tmp_path).routes) if isinstance(r, APIRoute)]
    published = [r for r in routes if r.include_in_schema]
    assert len(published) > 60  # every face is there (a broken walk would pass vacuously)
    missing = [f"{sorted(r.methods)} {r.path}" for r in published if not _described(r)]
    assert missing == [], f"routes without a described 2xx answer: {missing}"


def _json_schema_is_specific(schema: dict, components: dict) -> bool:
    """A named model (a $ref to a component with properties), or a union of shapes; not a
    bare `{"type": "object"}` that says nothing."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return bool(components.get(name, {}).get("properties"))
    return bool(schema.get("anyOf") or schema.get("oneOf"))


def test_openapi_json_describes_every_success_answer(tmp_path):
    spec = TestClient(_app(tmp_path)).get("/openapi.json").json()
    components = spec["components"]["schemas"]
    vague = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            answers = {k: v for k, v in operation["responses"].items() if k.startswith("2")}
            where = f"{method.upper()} {path}"
            if not answers:
                vague.append(f"{where}: no 2xx")
            for status, answer in answers.items():
                content = answer.get("content", {})
                if status == "204":
                    continue
                if not content:
                    vague.append(f"{where}: {status} has no content")
                for media_type, entry in content.items():
                    schema = entry.get("schema") or {}
                    if not schema:
                        vague.append(f"{where}: {status} {media_type} has no schema")
                    elif media_type == "application/json" and not _json_schema_is_specific(
                        schema, components
                    ):
                        vague.append(f"{where}: {status} JSON is {schema}")
    assert vague == [], "\n".join(vague)


def test_the_models_keep_every_key_a_route_sends(tmp_path):
    """`extra="allow"` on the response models: a key the model does not declare still reaches
    the client (declaring a model must not change a wire shape)."""
    from frontier_signal.server.schemas.openai_responses import ChatMessage

    message = ChatMessage.model_validate(
        {"role": "assistant", "content": "hi", "refusal": None, "audio": None}
    )
    assert message.model_dump(exclude_unset=True) == {
        "role": "assistant",
        "content": "hi",
        "refusal": None,
        "audio": None,
    }
