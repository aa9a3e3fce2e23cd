"""Schemathesis against the live tiny-model server: /openapi.json is the contract it checks.

Every operation is fuzzed (examples, coverage and fuzzing phases, a few examples each, with a
real key) under all of schemathesis's default checks, `not_a_server_error` among them; zero
failures is the bar. Deliberate settings, each with its reason:
- `positive_data_acceptance` also takes 400 and 410: a schema-valid request can still break a
  rule no JSON schema can state (a token outside the vocabulary, a prompt over the context, a
  run that is not this key's, an ended session); the server answers those with 400 and a
  message. A 422 (the server's schema refusing what /openapi.json allows) still fails it.
- the stateful phase is off: it chains creates into deletes at random and would take minutes.
- streaming endpoints are fuzzed like the rest (their errors come before the stream starts).
"""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis")

from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.engine import Status, events  # noqa: E402

from tests.reliability.support import new_run  # noqa: E402

# A few per operation keeps the run well under a minute here; raise it for a deeper look.
MAX_EXAMPLES = int(os.environ.get("FRONTIER_SIGNAL_FUZZ_EXAMPLES", "4"))


def _config(base_url: str, key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "base-url": base_url,
            "headers": {"Authorization": f"Bearer {key}", "X-API-Key": key},
            "workers": 1,
            # A gguf export takes seconds on this CPU, more when several wait in one run's
            # queue; the contract is checked here, not latency (the default is 10 s).
            "request-timeout": 60,
            # Path parameters that take a path (`/v1/warmup/{model}`) make hypothesis throw away
            # many drawn strings; that says nothing about the server.
            "suppress-health-check": ["filter_too_much"],
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", 400, 401, 403, 404, 409, 410, 429]
                }
            },
        }
    )


def _failures(event) -> list[str]:
    found = []
    recorder = getattr(event, "recorder", None)
    if recorder is None:
        return found
    for case_id, checks in recorder.checks.items():
        for node in checks:
            if node.status == Status.FAILURE:
                failure = node.failure_info.failure if node.failure_info else None
                detail = f"{failure.title}: {failure.message}"[:300] if failure else ""
                sample = node.failure_info.code_sample[-400:] if node.failure_info else ""
                interaction = recorder.interactions.get(case_id)
                response = getattr(interaction, "response", None)
                answer = f"{response.status_code} {response.content[:300]!r}" if response else "-"
                found.append(f"{recorder.label} [{node.name}] {detail}\n  -> {answer}\n  {sample}")
    return found


def test_the_live_server_keeps_its_openapi_contract(hard_server, alice_http):
    new_run(alice_http)  # one run, so run-scoped operations see real data too
    key = alice_http.headers["X-API-Key"]
    url = f"{hard_server.base_url}/openapi.json"
    schema = schemathesis.openapi.from_url(url, config=_config(hard_server.base_url, key))
    failures, errors, finished = [], [], None
    for event in schemathesis.engine.from_schema(schema).execute():
        failures.extend(_failures(event))
        if isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.value!r}"[:400])
        if isinstance(event, events.FatalError):
            errors.append(repr(event.exception))
        if isinstance(event, events.EngineFinished):
            finished = event
            failures.extend(f"{f.operation}: {f.title}" for f in event.failures)
    assert finished is not None
    unique = sorted(set(failures))
    assert not unique and not errors, "\n".join(unique + errors)
