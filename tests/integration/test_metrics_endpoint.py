"""`GET /metrics` on a live server, parsed with prometheus_client's own text parser before and
after a known workload: each counter and histogram moves by exactly what was done."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TINY
from tests.integration import sdk_fixtures

one_torch_thread = sdk_fixtures.one_torch_thread
base_url = sdk_fixtures.base_url

FB = "/v1/runs/{run_id}/forward_backward"
STEP = "/v1/runs/{run_id}/optim_step"
CHAT = "/v1/chat/completions"


def scrape(http: httpx.Client) -> dict[tuple, float]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_idle(server) -> None:
    """Until the engine runs and holds nothing: every batch's observations are recorded."""
    for _ in range(600):  # bounded: 60 s
        snapshot = server.state.worker.snapshot()
        if not snapshot["running"] and not snapshot["pending"]:
            return
        time.sleep(0.1)
    raise AssertionError("the scheduler never went idle")


@pytest.fixture(scope="module")
def http(base_url, alice):
    headers = {"Authorization": f"Bearer {alice}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as client:
        yield client


def test_counters_and_histograms_move_by_exactly_the_workload(http, server, alice, caplog):
    run = http.post("/v1/runs", json={"base_model": TINY, "lora_r": 4, "seed": 1}).json()
    run_id = run["run_id"]
    wait_idle(server)
    before = scrape(http)

    tokens = 0
    for _ in range(3):
        fb = http.post(f"/v1/runs/{run_id}/forward_backward", json={"batch": [{"text": "a b c"}]})
        tokens += fb.json()["tokens"]
        assert http.post(f"/v1/runs/{run_id}/optim_step", json={}).status_code == 200
    assert http.get("/v1/runs/run_nope").status_code == 404
    chat = {"model": run_id, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    plain = http.post(CHAT, json=chat).json()
    streamed_usage = None
    with http.stream(
        "POST", CHAT, json=chat | {"stream": True, "stream_options": {"include_usage": True}}
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("data: {"):
                streamed_usage = json.loads(line[6:]).get("usage") or streamed_usage
    wait_idle(server)
    after = scrape(http)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    for route in (FB, STEP):
        labels = {"face": "signal", "route": route}
        assert moved("frontier_http_requests_total", status="200", **labels) == 3
        assert moved("frontier_http_request_duration_seconds_count", **labels) == 3
        assert moved("frontier_http_request_duration_seconds_bucket", le="+Inf", **labels) == 3
    not_found = {"face": "signal", "route": "/v1/runs/{run_id}", "status": "404"}
    assert moved("frontier_http_requests_total", **not_found) == 1
    assert moved("frontier_http_requests_total", face="openai", route=CHAT, status="200") == 2

    fb_kind = {"kind": "forward_backward"}
    assert moved("frontier_scheduler_wait_seconds_count", **fb_kind) == 3
    assert moved("frontier_engine_batch_size_count", **fb_kind) == 3
    assert moved("frontier_engine_batch_size_sum", **fb_kind) == 3  # one run: batches of 1
    assert moved("frontier_engine_tokens_total", **fb_kind) == tokens
    assert moved("frontier_engine_tokens_per_second_count", **fb_kind) == 3
    generated = plain["usage"]["completion_tokens"] + streamed_usage["completion_tokens"]
    assert moved("frontier_engine_tokens_total", kind="sample") == generated
    assert moved("frontier_sampling_time_to_first_token_seconds_count") == 1  # the streamed one
    # optimizer-step batches count no tokens (the observer once failed on every one of them)
    assert "observer failed" not in caplog.text

    # One sampler checkpoint per step, and a training one at step 2 (checkpoint_every=2).
    assert moved("frontier_checkpoint_write_seconds_count", kind="sampler") == 3
    assert moved("frontier_checkpoint_write_seconds_count", kind="training") == 1
    step0 = server.state.store.list_checkpoints(run_id, "sampler")[0]
    assert step0.step == 0  # every sampler adapter of a run has the same size
    assert moved("frontier_checkpoint_bytes_sum", kind="sampler") == 3 * step0.size

    assert value(after, "frontier_runs_loaded") >= 1
    assert value(after, "frontier_base_models_loaded") == 1
    assert value(after, "frontier_process_resident_memory_bytes") > 50 * 2**20
    assert value(after, "frontier_scheduler_queue_depth") == 0
    assert value(after, "frontier_cuda_memory_allocated_bytes") == 0  # CPU here

    text = http.get("/metrics").text
    tenant = server.state.store.find_key(alice).tenant_id
    for secret in (run_id, alice, alice[:12], tenant):
        assert secret not in text


def test_metrics_needs_no_key_and_counts_unrouted_paths_under_one_label(base_url):
    assert httpx.get(base_url + "/no/such/path").status_code == 404
    with httpx.Client(base_url=base_url) as http:
        samples = scrape(http)
    assert (
        value(samples, "frontier_http_requests_total", face="ops", route="unmatched", status="404")
        >= 1
    )
    assert not any("/no/such/path" in str(labels) for _, labels in samples)


def test_the_docs_list_every_metric_and_the_grafana_dashboard_uses_only_real_ones(http):
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    scraped = text_string_to_metric_families(http.get("/metrics").text)
    families = {f.name for f in scraped if not f.name.endswith("_created")}  # creation times

    def family(name: str) -> str:
        return re.sub(r"_(total|bucket|sum|count)$", "", name)

    table = re.findall(
        r"^\| `(frontier_[a-z_]+)` \|", (docs / "observability.md").read_text(), re.M
    )
    assert {family(name) for name in table} == families
    grafana = json.loads((docs / "grafana-dashboard.json").read_text())
    used = {
        family(name)
        for panel in grafana["panels"]
        for target in panel["targets"]
        for name in re.findall(r"frontier_[a-z_]+", target["expr"])
    }
    assert used and used <= families
