"""GET /metrics against the real app: names, labels and counts after real calls.

Each app here has its own registry (no PROMETHEUS_MULTIPROC_DIR in tests), so counts start at
zero; tests/e2e/test_metrics.py checks the sums over a real two-worker server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from service.api.app import create_app
from service.dataplane.inference import Inference
from service.observability.metrics import ServiceMetrics, _HistogramBuffer, workers_share_metrics
from service.settings import ServiceSettings
from tests.service.dataplane.test_admission import _slow_plan

REPO_ROOT = Path(__file__).resolve().parents[3]
COMMITTED_BUNDLE = REPO_ROOT / "models" / "digits-vae" / "1"
DIGITS = load_digits().data[:4].tolist()
Labels = frozenset[tuple[str, str]]


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


PROTOCOL_LABELLED = ("vae_requests_total", "vae_request_duration_seconds")


def value(scraped: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    if name.startswith(PROTOCOL_LABELLED):
        labels.setdefault("protocol", "http")  # every request in these tests is HTTP
    return scraped.get((name, frozenset(labels.items())), 0.0)


def scrape(client: TestClient) -> dict[tuple[str, Labels], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(answer.text)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("metrics-repository")
    shutil.copytree(COMMITTED_BUNDLE, root / "digits-vae" / "1")
    return root


def client_for(repository: Path, **settings: Any) -> TestClient:
    return TestClient(
        create_app(ServiceSettings(model_repository=repository, **settings)),
        raise_server_exceptions=False,
    )


@pytest.fixture(scope="module", params=[True, False], ids=["fast-path", "fastapi-routes"])
def served(request: pytest.FixtureRequest, repository: Path) -> Iterator[TestClient]:
    """One app answered by each transport: the metrics must not tell them apart."""
    with client_for(repository, fast_path=request.param) as client:
        yield client


def test_requests_are_counted_by_route_template_model_and_status(served: TestClient) -> None:
    before = scrape(served)
    for _ in range(3):
        assert served.post("/reconstruct", json={"inputs": DIGITS[:2]}).status_code == 200
    assert served.post("/models/digits-vae/versions/1/encode", json={"inputs": DIGITS}).is_success
    assert served.post("/models/no-such-model/encode", json={"inputs": DIGITS}).status_code == 404
    assert served.post("/decode", json={"latents": [[0.0]]}).status_code == 422
    assert served.get("/models/digits-vae").status_code == 200
    assert served.get("/no/such/path").status_code == 404
    v2_body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": DIGITS[0]}]}
    assert served.post("/v2/models/digits-vae/infer", json=v2_body).status_code == 200
    after = scrape(served)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    requests = "vae_requests_total"
    model = "digits-vae"
    assert delta(requests, route="/reconstruct", model=model, status="200") == 3
    assert (
        delta(requests, route="/models/{name}/versions/{version}/encode", model=model, status="200")
        == 1
    )
    # an unknown model is never a label value: only names that resolved are
    assert delta(requests, route="/models/{name}/encode", model="-", status="404") == 1
    assert not any("no-such-model" in str(key) for key in after)
    assert delta(requests, route="/decode", model=model, status="422") == 1
    assert delta(requests, route="/models/{name}", model=model, status="200") == 1
    assert delta(requests, route="-", model="-", status="404") == 1  # never the raw path
    assert not any("/no/such/path" in str(key) for key in after)
    assert delta(requests, route="/v2/models/{name}/infer", model=model, status="200") == 1
    assert delta(requests, route="/metrics", model="-", status="200") == 1  # the first scrape

    assert delta("vae_items_total", route="/reconstruct", model=model) == 6
    assert delta("vae_items_total", route="/v2/models/{name}/infer", model=model) == 1
    assert delta("vae_items_total", route="/decode", model=model) == 0  # failed: no items
    duration = "vae_request_duration_seconds"
    assert delta(f"{duration}_count", route="/reconstruct", model=model) == 3
    assert delta(f"{duration}_bucket", route="/reconstruct", model=model, le="+Inf") == 3
    assert delta(f"{duration}_sum", route="/reconstruct", model=model) > 0
    # every model call: 3 reconstruct, 1 encode, 1 v2 infer; the 422 was refused before one
    assert delta("vae_inference_seconds_count", model=model) == 5
    assert delta("vae_queue_wait_seconds_count") == 5
    assert delta("vae_codec_seconds_count", stage="encode") == 5
    # decode ran for the 422 too (its body was parsed, then refused)
    assert delta("vae_codec_seconds_count", stage="decode") == 6
    assert value(after, "vae_model_info", model=model, version="1") == 1
    assert value(after, "vae_requests_in_flight") == 0  # a scrape does not count itself
    assert value(after, "vae_rejected_total", reason="overloaded") == 0
    assert value(after, "vae_rejected_total", reason="timeout") == 0


def test_flagged_anomalies_are_counted_by_model(served: TestClient) -> None:
    before = scrape(served)
    striped = np.tile([0.0, 16.0], 32).tolist()  # no digit looks like this
    answer = served.post("/anomaly-score", json={"inputs": [*DIGITS, striped, striped]})
    assert answer.status_code == 200
    flagged = sum(answer.json()["is_anomaly"])
    assert flagged >= 2
    after = scrape(served)
    counted = value(after, "vae_anomalies_total", model="digits-vae") - value(
        before, "vae_anomalies_total", model="digits-vae"
    )
    assert counted == flagged


def test_get_routes_and_refusals_before_routing_name_their_route(repository: Path) -> None:
    key = "metrics-test-key-0123456789"
    with client_for(repository, api_keys=key, cors_allow_origins="https://a.example") as client:
        assert client.post("/encode", json={"inputs": DIGITS}).status_code == 401
        wrong = {"X-API-Key": "not-the-key-0123456789"}
        assert client.get("/models/digits-vae", headers=wrong).status_code == 403
        preflight = client.options(
            "/models/digits-vae/anomaly-score",
            headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert client.get("/readyz").status_code == 200
        scraped = scrape(client)  # /metrics is open by default
    requests = "vae_requests_total"
    assert value(scraped, requests, route="/encode", model="-", status="401") == 1
    assert value(scraped, requests, route="/models/{name}", model="-", status="403") == 1
    assert (
        value(scraped, requests, route="/models/{name}/anomaly-score", model="-", status="200") == 1
    )
    assert value(scraped, requests, route="/readyz", model="-", status="200") == 1


def test_dynamic_batches_observe_their_size(repository: Path) -> None:
    # A batch runs at 8 items or after 1 s: 8 concurrent single items make one batch of 8.
    with client_for(
        repository, dynamic_batching=True, batching_max_batch_size=8,
        batching_max_delay_us=1_000_000,
    ) as client:  # fmt: skip
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda row: client.post("/reconstruct", json={"inputs": [row]}),
                    load_digits().data[:8].tolist(),
                )
            )
        assert all(answer.status_code == 200 for answer in answers)
        scraped = scrape(client)
    assert value(scraped, "vae_batch_size_sum") == 8
    batches = value(scraped, "vae_batch_size_count")
    assert 1 <= batches < 8  # merged
    assert value(scraped, "vae_batch_size_bucket", le="1.0") < batches
    assert value(scraped, "vae_items_total", route="/reconstruct", model="digits-vae") == 8
    # each request's queue wait includes the wait for its batch to fill
    assert value(scraped, "vae_queue_wait_seconds_count") == 8


def test_requests_waiting_for_a_batch_are_in_flight(repository: Path) -> None:
    # Four single items never fill a batch of 64: they wait the full second together.
    with client_for(repository, dynamic_batching=True, batching_max_delay_us=1_000_000) as client:
        with ThreadPoolExecutor(4) as pool:
            waiting = [
                pool.submit(client.post, "/reconstruct", json={"inputs": [row]}) for row in DIGITS
            ]
            seen = 0.0
            while seen < len(waiting) and not all(answer.done() for answer in waiting):
                seen = value(scrape(client), "vae_requests_in_flight")
            assert seen == len(waiting)
            assert all(answer.result().status_code == 200 for answer in waiting)
        assert value(scrape(client), "vae_requests_in_flight") == 0


def test_admission_refusals_are_counted_by_reason(repository: Path) -> None:
    with client_for(repository, request_timeout_s=1e-6, inline_max_values=0) as client:
        answers = [client.post("/reconstruct", json={"inputs": DIGITS}) for _ in range(3)]
        scraped = scrape(client)
    timed_out = sum(
        a.status_code == 503 and a.json()["error"]["code"] == "timeout" for a in answers
    )
    assert timed_out >= 1
    assert value(scraped, "vae_rejected_total", reason="timeout") == timed_out
    assert value(scraped, "vae_requests_total", route="/reconstruct", model="digits-vae",
                 status="503") == timed_out  # fmt: skip

    async def overload() -> None:
        metrics = ServiceMetrics()
        inference = Inference(
            ServiceSettings(inline_max_values=0, max_concurrency=1, max_queue=1), metrics
        )
        outcomes = await asyncio.gather(
            *(inference.run(_slow_plan(0.1)) for _ in range(5)), return_exceptions=True
        )
        inference.close()
        refused = sum(isinstance(outcome, Exception) for outcome in outcomes)
        assert refused == 3  # one runs, one waits, three are refused at once
        assert metrics.overloaded._value.get() == refused

    asyncio.run(overload())


def test_hot_reload_updates_the_loaded_versions(tmp_path: Path) -> None:
    root = tmp_path / "models"
    shutil.copytree(COMMITTED_BUNDLE, root / "digits-vae" / "1")
    with client_for(root) as client:
        assert value(scrape(client), "vae_model_info", model="digits-vae", version="1") == 1
        second = root / "digits-vae" / "2"
        shutil.copytree(root / "digits-vae" / "1", second)
        manifest = json.loads((second / "model.json").read_text())
        manifest["version"] = "2"
        (second / "model.json").write_text(json.dumps(manifest))
        assert client.post("/admin/reload").status_code == 200
        scraped = scrape(client)
        assert value(scraped, "vae_model_info", model="digits-vae", version="1") == 1
        assert value(scraped, "vae_model_info", model="digits-vae", version="2") == 1
        shutil.rmtree(root / "digits-vae" / "1")
        assert client.post("/admin/reload").status_code == 200
        scraped = scrape(client)
    assert ("vae_model_info", frozenset({("model", "digits-vae"), ("version", "1")})) not in (
        scraped
    )
    assert value(scraped, "vae_model_info", model="digits-vae", version="2") == 1


def test_metrics_off_means_no_route_and_the_same_answers(repository: Path) -> None:
    with client_for(repository, metrics=False) as client:
        assert client.get("/metrics").status_code == 404
        answer = client.post("/reconstruct", json={"inputs": DIGITS})
        assert answer.status_code == 200
        assert answer.headers["x-request-id"]


def test_openmetrics_when_asked(served: TestClient) -> None:
    answer = served.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")


def test_buffered_histogram_writes_what_observe_would() -> None:
    """The flush writes prometheus_client's own bucket and sum values: an upgrade that
    changes them fails here, not in production."""
    buckets = (0.001, 0.01, 0.1, 1.0)
    observed = [0.0, 0.001, 0.0011, 0.05, 0.1, 0.5, 1.0, 7.5, 1e9]
    direct_registry, buffered_registry = CollectorRegistry(), CollectorRegistry()
    direct = Histogram("h_seconds", "h", ["x"], buckets=buckets, registry=direct_registry)
    buffered = Histogram("h_seconds", "h", ["x"], buckets=buckets, registry=buffered_registry)
    buffer = _HistogramBuffer(buffered.labels("a"), buckets)
    for amount in observed:
        direct.labels("a").observe(amount)
        buffer.observe(amount)
    buffer.flush()
    buffer.flush()  # nothing new: writes nothing
    assert samples(generate_latest(buffered_registry).decode()) == samples(
        generate_latest(direct_registry).decode()
    )


def test_the_server_shares_a_private_folder_between_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with workers_share_metrics(2):
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.is_dir()
        assert folder.stat().st_mode & 0o777 == 0o700
    assert not folder.exists()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    with workers_share_metrics(1):  # one worker: served in-process, counted in memory
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    given = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(given))
    with workers_share_metrics(2):  # the operator's own folder is used as it is, made if need be
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(given)
        assert given.is_dir()
    assert given.is_dir()


def test_every_metric_has_its_type_and_help(served: TestClient) -> None:
    text = served.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    expected = {
        "vae_requests": "counter",
        "vae_request_duration_seconds": "histogram",
        "vae_queue_wait_seconds": "histogram",
        "vae_inference_seconds": "histogram",
        "vae_codec_seconds": "histogram",
        "vae_batch_size": "histogram",
        "vae_items": "counter",
        "vae_anomalies": "counter",
        "vae_model_info": "gauge",
        "vae_requests_in_flight": "gauge",
        "vae_rejected": "counter",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
        assert families[name].documentation
