"""Load driver for the replicas behind the balancer (scripts/replicas-smoke.sh).

Threads send a fixed mix of deterministic POSTs (encode, reconstruct, anomaly-score, seeded
sample) over keep-alive connections and check every answer: status 200, the body byte-equal to
the first answer to the same request, the request's own X-Request-ID echoed back. Which replica
answered, and whether a retry carried it, come from the balancer's X-Upstream header (every
replica tried, the last one answered: deploy/compose/lb/nginx.conf).

An event (`--event-at 6 --event "podman kill ..."`) runs a command mid-load; counts are then
split at the moment it returned. Exit 1 on any failed or wrong answer, or a missed expectation.

  python3 scripts/replica_load.py http://127.0.0.1:8080 --requests 300 \\
      --replica r1=10.89.0.2 --replica r2=10.89.0.3 --expect-all
  python3 scripts/replica_load.py URL --seconds 18 --event-at 6 --event "podman kill NAME" \\
      --replica NAME=10.89.0.3 ... --expect-gone NAME

Bounded in count and time (it stops by itself); standard library only, like smoke_endpoints.py.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlsplit

# An 8x8 "digit" in the default model's units (0..16); any fixed input would do.
PROBE = [float((i * 7 + i // 8) % 17) for i in range(64)]
MIX: list[tuple[str, bytes]] = [
    ("/encode", json.dumps({"inputs": [PROBE]}).encode()),
    ("/reconstruct", json.dumps({"inputs": [PROBE]}).encode()),
    ("/anomaly-score", json.dumps({"inputs": [PROBE]}).encode()),
    ("/sample", json.dumps({"n": 2, "seed": 7}).encode()),
]
REQUEST_TIMEOUT_S = 10.0
HARD_MAX_REQUESTS = 200_000  # a ceiling even when only --seconds bounds the run


@dataclass(frozen=True)
class Result:
    started: float  # seconds since the run began
    latency: float
    request_id: str
    failure: str | None  # None: a correct answer
    upstream: str | None  # the replica's address:port that answered, when one did
    retries: int  # how many times the balancer sent it again before that answer


class Driver:
    def __init__(self, base: str, references: dict[str, bytes], interval: float) -> None:
        parts = urlsplit(base)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.references = references
        self.interval = interval  # seconds between two requests of one thread; 0: no pause
        self.results: list[Result] = []
        self.lock = threading.Lock()
        self.begin = time.monotonic()
        # A prefix new in every run, so a run's request ids are its own in the logs.
        self.run_id = f"load{os.getpid():x}{int(time.time()) % 100000:x}"

    def run_thread(self, index: int, deadline: float, budget: list[int]) -> None:
        connection: http.client.HTTPConnection | None = None
        sent = 0
        due = time.monotonic()
        while time.monotonic() < deadline:
            # Paced: a steady rate, not as fast as the machine allows; after a stall, no burst
            # to catch up.
            due = max(due + self.interval, time.monotonic() - self.interval)
            time.sleep(max(0.0, due - time.monotonic()))
            with self.lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            path, body = MIX[(index + sent) % len(MIX)]
            request_id = f"{self.run_id}-{index}-{sent}"
            sent += 1
            if connection is None:
                connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=REQUEST_TIMEOUT_S
                )
            start = time.monotonic()
            failure, upstream, retries = self.one(connection, path, body, request_id)
            if failure is not None:  # a fresh connection for the next request
                connection.close()
                connection = None
            latency = time.monotonic() - start
            result = Result(start - self.begin, latency, request_id, failure, upstream, retries)
            with self.lock:
                self.results.append(result)
        if connection is not None:
            connection.close()

    def one(
        self, connection: http.client.HTTPConnection, path: str, body: bytes, request_id: str
    ) -> tuple[str | None, str | None, int]:
        headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read()
        except http.client.IncompleteRead:
            # Headers came, the body stopped short: the replica died mid-answer, after the
            # balancer had passed its headers on, so no balancer can retry it.
            return "answer cut short", None, 0
        except (OSError, http.client.HTTPException) as error:
            return f"{type(error).__name__}", None, 0
        tried = [a.strip() for a in (response.getheader("X-Upstream") or "").split(",")]
        upstream = tried[-1] or None
        retries = len(tried) - 1
        if response.status != 200:
            return f"status {response.status}", upstream, retries
        if response.getheader("X-Request-ID") != request_id:
            return "X-Request-ID not echoed", upstream, retries
        if answer != self.references[path]:
            return "answer differs from the reference", upstream, retries
        return None, upstream, retries


def references(base: str) -> dict[str, bytes]:
    """The answer to each request of the mix, fetched once; every later answer must equal it."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port or 80, timeout=REQUEST_TIMEOUT_S
    )
    answers = {}
    for path, body in MIX:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise SystemExit(f"reference {path}: status {response.status}: {answer[:200]!r}")
        answers[path] = answer
    connection.close()
    return answers


class Event:
    """A command run once, mid-load, in its own thread; when it returned splits the counts."""

    def __init__(self, command: str, at: float, begin: float) -> None:
        self.command = command
        self.at = at
        self.begin = begin
        self.returned_at: float | None = None
        self.code: int | None = None
        self.thread = threading.Thread(target=self.fire, daemon=True)

    def fire(self) -> None:
        time.sleep(max(0.0, self.begin + self.at - time.monotonic()))
        done = subprocess.run(shlex.split(self.command), capture_output=True, check=False)
        self.returned_at = time.monotonic() - self.begin
        self.code = done.returncode


def percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def summarise(
    results: list[Result], names: dict[str, str], event: Event | None, elapsed: float
) -> dict[str, object]:
    def name(upstream: str) -> str:
        return names.get(upstream.rsplit(":", 1)[0], upstream)

    split = event.returned_at if event is not None else None
    # Split by when a request was sent: one sent after the event returned saw its effect.
    before = Counter(
        name(r.upstream)
        for r in results
        if r.upstream and r.failure is None and (split is None or r.started < split)
    )
    after = Counter(
        name(r.upstream)
        for r in results
        if r.upstream and r.failure is None and split is not None and r.started >= split
    )
    latencies = [r.latency for r in results]
    summary: dict[str, object] = {
        "requests": len(results),
        "failures": sum(r.failure is not None for r in results),
        "failure_kinds": dict(Counter(r.failure for r in results if r.failure is not None)),
        # the first few, to find in the balancer's and the replicas' logs
        "failed_request_ids": [r.request_id for r in results if r.failure is not None][:10],
        # answered only after the balancer sent them again (to another replica)
        "retried": sum(r.retries > 0 for r in results),
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(results) / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {
            "p50": round(1000 * statistics.median(latencies), 1) if latencies else 0.0,
            "p99": round(1000 * percentile(latencies, 0.99), 1),
            "max": round(1000 * max(latencies, default=0.0), 1),
        },
    }
    key = "per_replica" if event is None else "per_replica_before_event"
    summary[key] = dict(sorted(before.items()))
    if event is not None:
        summary["event"] = {
            "command": event.command,
            "at_s": event.at,
            "returned_at_s": None if split is None else round(split, 2),
            "exit_code": event.code,
        }
        summary["per_replica_after_event"] = dict(sorted(after.items()))
        if split is not None:
            late = [r for r in results if r.started >= split - 1.0]
            summary["retried_from_1s_before_event"] = sum(r.retries > 0 for r in late)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the balancer, e.g. http://127.0.0.1:8080")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--requests", type=int, default=0, help="stop after this many (0: none)")
    parser.add_argument("--seconds", type=float, default=60.0, help="stop after this long")
    parser.add_argument(
        "--rate", type=float, default=0.0, help="requests/s over all threads (0: unpaced)"
    )
    parser.add_argument("--event", help="command to run mid-load, e.g. 'podman kill NAME'")
    parser.add_argument("--event-at", type=float, default=5.0, help="seconds into the run")
    parser.add_argument(
        "--replica", action="append", default=[], metavar="NAME=IP", help="name an address"
    )
    parser.add_argument(
        "--expect-all",
        action="store_true",
        help="every named replica answers at least --min-share of an even share",
    )
    parser.add_argument("--min-share", type=float, default=0.5)
    parser.add_argument(
        "--expect-gone", metavar="NAME", help="NAME answers nothing sent after the event returned"
    )
    parser.add_argument("--json-out", help="also write the summary here")
    args = parser.parse_args(argv)
    names = {}  # address -> replica name
    for pair in args.replica:
        replica, _, address = pair.partition("=")
        names[address] = replica

    interval = args.threads / args.rate if args.rate > 0 else 0.0
    driver = Driver(args.base, references(args.base), interval)
    budget = [args.requests if args.requests > 0 else HARD_MAX_REQUESTS]
    deadline = driver.begin + args.seconds
    event = Event(args.event, args.event_at, driver.begin) if args.event else None
    threads = [
        threading.Thread(target=driver.run_thread, args=(i, deadline, budget))
        for i in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    if event is not None:
        event.thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - driver.begin
    if event is not None:
        event.thread.join(timeout=30)
    summary = summarise(driver.results, names, event, elapsed)
    print(json.dumps(summary, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(summary, out, indent=2)
    return 1 if problems(summary, args, names, event) else 0


def problems(
    summary: dict[str, object], args: argparse.Namespace, names: dict[str, str], event: Event | None
) -> list[str]:
    found: list[str] = []
    if summary["failures"]:
        found.append(f"{summary['failures']} failed requests: {summary['failure_kinds']}")
    if event is not None and (event.code != 0 or event.returned_at is None):
        found.append(f"the event command did not succeed (exit {event.code})")
    counts = summary.get("per_replica") or summary.get("per_replica_before_event")
    assert isinstance(counts, dict)
    if args.expect_all and not names:
        found.append("--expect-all needs the replicas named with --replica")
    elif args.expect_all:
        total = sum(counts.values())
        fair = total / len(names)
        for replica in sorted(names.values()):
            if counts.get(replica, 0) < args.min_share * fair:
                found.append(
                    f"{replica} answered {counts.get(replica, 0)} of {total} "
                    f"(less than {args.min_share:.0%} of an even share, {fair:.0f})"
                )
    if args.expect_gone:
        after = summary.get("per_replica_after_event")
        if not isinstance(after, dict):
            found.append("--expect-gone needs --event")
        elif after.get(args.expect_gone, 0):
            found.append(f"{args.expect_gone} still answered {after[args.expect_gone]} requests")
        elif not after:
            found.append("no request was answered after the event")
    for problem in found:
        print(f"FAIL: {problem}", file=sys.stderr)
    return found


if __name__ == "__main__":
    raise SystemExit(main())
