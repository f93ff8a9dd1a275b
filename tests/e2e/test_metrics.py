"""Metrics and request logs of a real `vae-serve --workers 2` on 127.0.0.1.

Requests land on either worker; a scrape lands on either worker too, and must count every
request of both (prometheus_client's multiprocess mode, in the private folder vae-serve makes).
The process's output must hold one JSON line per request, whichever worker answered it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import load_digits

from tests.e2e.processes import REPO_ROOT, running_server

DIGIT = {"inputs": load_digits().data[:1].tolist()}
ROUTE = "/reconstruct"
AT_LEAST = 40  # requests, and more until both workers have answered some
AT_MOST = 400


class OutputLines:
    """Reads a process's output as it comes: the pipe never fills, the lines are at hand."""

    def __init__(self, process: subprocess.Popen[str]):
        assert process.stdout is not None
        self.stream = process.stdout
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.stream:
            self.lines.append(line)

    def request_lines(self) -> list[dict[str, Any]]:
        parsed = (json.loads(line) for line in list(self.lines) if line.startswith("{"))
        return [line for line in parsed if line.get("logger") == "vae_service.access"]


def request_counts(base: str) -> tuple[float, float, float]:
    """(requests to ROUTE answered 200, items of them, requests in flight) from one scrape."""
    text = httpx.get(f"{base}/metrics", timeout=10).text
    found = {"requests": 0.0, "items": 0.0, "in_flight": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "vae_requests_total" and labels == {
                "route": ROUTE, "model": "digits-vae", "status": "200", "protocol": "http"
            }:  # fmt: skip
                found["requests"] = sample.value
            elif sample.name == "vae_items_total" and labels.get("route") == ROUTE:
                found["items"] = sample.value
            elif sample.name == "vae_requests_in_flight":
                found["in_flight"] = sample.value
    return found["requests"], found["items"], found["in_flight"]


def send(base: str, index: int) -> str:
    # A new connection each time (no keep-alive): the kernel hands each to either worker.
    answer = httpx.post(f"{base}{ROUTE}", json=DIGIT, headers={"X-Request-ID": f"e2e-{index}"})
    assert answer.status_code == 200
    return answer.headers["X-Request-ID"]


def test_two_workers_are_counted_together_and_log_a_line_per_request(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    shutil.copytree(REPO_ROOT / "models" / "digits-vae" / "1", repository / "digits-vae" / "1")
    env = {"VAE_WORKERS": "2", "VAE_LOG_LEVEL": "info", "VAE_LOG_FORMAT": "json"}
    echoed: list[str] = []
    with running_server(env, repository) as (base, process):
        output = OutputLines(process)
        with ThreadPoolExecutor(4) as pool:
            while len(echoed) < AT_MOST:
                start = len(echoed)
                echoed += pool.map(lambda i: send(base, i), range(start, start + 8))
                answered_by = {
                    line["pid"] for line in output.request_lines() if line["route"] == ROUTE
                }
                if len(echoed) >= AT_LEAST and len(answered_by) == 2:
                    break
        assert echoed == [f"e2e-{i}" for i in range(len(echoed))]
        # Each worker writes its counts within a second; then every scrape, whichever worker
        # answers it, sees all of them, and none in flight (a scrape does not count itself).
        deadline = time.monotonic() + 15
        while request_counts(base) != (len(echoed), len(echoed), 0.0):
            assert time.monotonic() < deadline, request_counts(base)
            time.sleep(0.2)
        for _ in range(6):
            assert request_counts(base) == (len(echoed), len(echoed), 0.0)
    output.thread.join(timeout=30)

    assert process.returncode == 0
    printed = [line for line in output.lines if line.strip()]
    for line in printed:  # every line, the service's and uvicorn's, is one JSON object
        assert isinstance(json.loads(line), dict), line
    served = [line for line in output.request_lines() if line["route"] == ROUTE]
    assert sorted(line["request_id"] for line in served) == sorted(echoed)  # one line each
    assert len({line["pid"] for line in served}) == 2
    for entry in served:
        assert entry["status"] == 200
        assert entry["model"] == "digits-vae"
        assert entry["items"] == 1
        assert entry["latency_ms"] > 0
