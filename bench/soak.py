"""A bounded soak run: mixed valid, invalid and hostile requests against a real vae-serve
(issues 7 and 18), with slow and silent clients held open beside the load.

    .venv/bin/python -m bench.soak [--seconds 120] [--connections 8] [--models default[,784]]
        [--log-level info] [--out bench]

Starts `vae-serve` with its default settings (one worker per core, access log on) on 127.0.0.1,
except for a lowered VAE_MAX_BODY_BYTES so that the over-limit request is small. Every request
kind is sent once first and must get its documented status; then wrk cycles through the kinds
for --seconds while VmRSS of the server's processes is sampled every second. The generated Lua
script counts each kind's answers by status and compares every body with the probe's answer.

Writes SOAK.md and soak.json (into --out, default bench/); the raw wrk output, the Lua script,
the bodies and the server log go to bench/out/soak/. Exits 1 when any target fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import memory, servers, wrk
from bench.bodies import JSON, NPY, OCTET, json_inputs, json_number, npy_bytes, v2_binary_infer
from bench.hostile_mix import ConnectionPressure, hostile_requests
from bench.models import ROOT, BenchModel, load_model

BENCH = ROOT / "bench"
OUT = BENCH / "out" / "soak"
VENV_BIN = Path(sys.executable).parent
# Above every valid body of the mix (the largest is ~50 kB of npy for the 784-input model) and
# far below the 64 MiB default, so the over-limit kind costs 128 kB per request, not 64 MiB.
MAX_BODY_BYTES = 64 * 1024
WORKER_MAX_MB = 300.0  # issue 7, as in bench/report.py
SLOPE_MAX_MB_PER_MIN = 5.0
SETTLE_S = 10.0  # the slope is judged after this: arenas and caches fill at first
# Beside the load (bench/hostile_mix.py): connections trickling a request head, and silent
# ones, each replaced when the server cuts it off after VAE_HEADER_TIMEOUT_S (default 10 s).
TRICKLING, SILENT, HEAD_TIMEOUT_S = 40, 8, 10.0
HEALTH_MAX_MS = 100.0
NPY_ROWS = 16  # items in the npy bodies
MODEL_KEYS = ("default", "784")


# --- the mix ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix and the one status it must get."""

    key: str
    title: str
    status: int  # the documented status (README "Call it", Statuses)
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    media_type: str = JSON  # the Content-Type its answer must carry

    @property
    def valid(self) -> bool:
        return self.status < 400


def post(
    key: str,
    title: str,
    status: int,
    path: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    media_type: str = JSON,
) -> Kind:
    headers = {"Content-Type": JSON} if headers is None else headers
    return Kind(key, title, status, "POST", path, headers, body, media_type)


def json_item(numbers: Sequence[str]) -> bytes:
    return ('{"inputs":[[' + ",".join(numbers) + "]]}").encode()


def digits_kinds(model: BenchModel) -> list[Kind]:
    """The mix against the server's default model (the committed 64-input bundle)."""
    rows, name, features = model.rows, model.name, model.features
    version = model.bundle.name
    one, batch = rows[:1], rows[:64]
    numbers = [json_number(v) for v in one[0]]
    v2_body, v2_head = v2_binary_infer(batch)
    v2_json = {
        "inputs": [{"name": "x", "shape": [1, features], "datatype": "FP32",
                    "data": [float(v) for v in one[0]]}]
    }  # fmt: skip
    # The declared shape needs 64 x features x 4 bytes; binary_data_size (and the bytes that
    # follow) say 4 fewer, a client's off-by-one.
    short = np.ascontiguousarray(batch, dtype="<f4").tobytes()[:-4]
    bad_head = json.dumps(
        {"inputs": [{"name": "x", "shape": [64, features], "datatype": "FP32",
                     "parameters": {"binary_data_size": len(short)}}]},
        separators=(",", ":"),
    ).encode()  # fmt: skip
    latents = np.random.default_rng(0).standard_normal((4, 8)).round(3).tolist()
    # A real batch, just too big (about twice the limit): refused from its Content-Length.
    oversized = json_inputs(np.tile(one, (2 * MAX_BODY_BYTES // len(json_item(numbers)) + 1, 1)))
    v2_path = f"/v2/models/{name}/infer"
    return [
        post("reconstruct-json", "1 item, JSON", 200, "/reconstruct", json_item(numbers)),
        post("anomaly-json64", "64 items, JSON", 200, "/anomaly-score", json_inputs(batch)),
        post("encode-npy", f"{NPY_ROWS} items, npy in and out", 200,
             f"/models/{name}/versions/{version}/encode", npy_bytes(rows[:NPY_ROWS]),
             {"Content-Type": NPY, "Accept": NPY}, NPY),
        post("sample-seed", "n 8, seed 7", 200, "/sample", b'{"n":8,"seed":7}'),
        post("decode-json", "4 latents, JSON", 200, "/decode",
             json.dumps({"latents": latents}).encode()),
        post("v2-json", "1 item, JSON tensor", 200, v2_path, json.dumps(v2_json).encode()),
        post("v2-binary", "64 items, binary tensor in and out", 200, v2_path, v2_body,
             {"Content-Type": OCTET, "Inference-Header-Content-Length": str(v2_head)}, OCTET),
        Kind("readyz", "readiness", 200, "GET", "/readyz"),
        Kind("models", "model list", 200, "GET", "/models"),
        post("malformed-json", "JSON cut off after 40 bytes", 400, "/reconstruct",
             json_item(numbers)[:40]),
        post("wrong-features", f"{features - 1} features instead of {features}", 422,
             "/reconstruct", json_item(numbers[1:])),
        post("nan", "NaN as the first value", 422, "/reconstruct",
             json_item(["NaN", *numbers[1:]])),
        post("unknown-model", "model that is not loaded", 404,
             "/models/no-such-model/reconstruct", json_item(numbers)),
        post("empty-batch", "inputs []", 422, "/anomaly-score", b'{"inputs":[]}'),
        post("too-large", f"{len(oversized):,} bytes, limit {MAX_BODY_BYTES:,}", 413,
             "/reconstruct", oversized),
        post("wrong-content-type", "Content-Type text/plain", 415, "/reconstruct",
             json_item(numbers), {"Content-Type": "text/plain"}),
        post("not-acceptable", "Accept text/html", 406, "/reconstruct", json_item(numbers),
             {"Content-Type": JSON, "Accept": "text/html"}),
        post("v2-size-mismatch", "binary_data_size 4 bytes short of the shape", 400, v2_path,
             bad_head + short,
             {"Content-Type": OCTET, "Inference-Header-Content-Length": str(len(bad_head))}),
        # issue 18: bodies built to cost a worker as much as they can (bench/hostile_mix.py)
        *(post(h.key, h.title, h.status, h.path, h.body, h.headers)
          for h in hostile_requests(name, features)),
    ]  # fmt: skip


def image_kinds(model: BenchModel) -> list[Kind]:
    """A second model, addressed by name and by version (the server's default is the first)."""
    rows, name, version = model.rows, model.name, model.bundle.name
    return [
        post("reconstruct-784-json", "1 item, JSON", 200, f"/models/{name}/reconstruct",
             json_inputs(rows[:1])),
        post("anomaly-784-npy", f"{NPY_ROWS} items, npy in", 200,
             f"/models/{name}/versions/{version}/anomaly-score", npy_bytes(rows[:NPY_ROWS]),
             {"Content-Type": NPY}),
        post("wrong-features-784", "64 features instead of 784", 422,
             f"/models/{name}/reconstruct", json_inputs(rows[:1, :64])),
    ]  # fmt: skip


def build_kinds(models: Sequence[BenchModel]) -> list[Kind]:
    kinds: list[Kind] = []
    for model in models:
        kinds += digits_kinds(model) if model.key == "default" else image_kinds(model)
    return kinds


# --- the server ------------------------------------------------------------------------------


def soak_repository(models: Sequence[BenchModel]) -> Path:
    """The measured models and nothing else; one model reuses the bench's own copy."""
    if len(models) == 1:
        return models[0].repository
    target = BENCH / "models" / "repo-soak"
    # Copied afresh each run (a few hundred kB): a stale bundle can never be what is served.
    if target.exists():
        shutil.rmtree(target)
    for model in models:
        destination = target / model.bundle.parent.name / model.bundle.name
        shutil.copytree(model.bundle, destination, ignore=shutil.ignore_patterns("report"))
    return target


def server_spec(repository: Path, default_model: str | None, log_level: str) -> servers.ServerSpec:
    env = {
        "VAE_MODEL_REPOSITORY": str(repository.relative_to(ROOT)),
        "VAE_HOST": "127.0.0.1",
        "VAE_PORT": "{port}",
        "VAE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "VAE_LOG_LEVEL": log_level,
    }
    if default_model is not None:  # several models: the top-level routes need a default
        env["VAE_DEFAULT_MODEL"] = default_model
    cores = os.cpu_count() or 1
    settings = {
        **{k: v for k, v in env.items() if k != "VAE_PORT"},
        "VAE_WORKERS": f"unset: one per core ({cores})",
        "every other VAE_* setting": "unset (the service's defaults)",
    }
    return servers.ServerSpec(
        "soak", [str(VENV_BIN / "vae-serve")], env, "GET", "/readyz", settings=settings
    )


def process_roles(root: int) -> dict[int, str]:
    """Each process of the server's tree by what it runs (uvicorn spawns its workers)."""
    roles: dict[int, str] = {}
    for pid in memory.process_tree(root):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in command:
            roles[pid] = "worker"
        elif b"resource_tracker" in command:
            roles[pid] = "resource tracker"
        else:
            roles[pid] = "supervisor" if pid == root else "other"
    if "worker" not in roles.values() and root in roles:
        roles[root] = "worker"  # one worker: uvicorn serves in the main process
    return roles


def startups(log_path: Path) -> int:
    try:
        return log_path.read_text(errors="replace").count("Application startup complete.")
    except OSError:
        return 0


def wait_for_workers(
    server: servers.RunningServer, expected: int, log_level: str, timeout_s: float = 60.0
) -> dict[int, str]:
    """/readyz answers as soon as one worker is up; the load must meet all of them ready."""
    deadline = time.monotonic() + timeout_s
    logs_startup = log_level in ("info", "debug")
    while time.monotonic() < deadline:
        roles = process_roles(server.pid)
        workers = sum(role == "worker" for role in roles.values())
        if workers >= expected and (not logs_startup or startups(server.log_path) >= expected):
            return roles
        time.sleep(0.2)
    raise servers.ServerFailed(
        f"{expected} worker(s) not started after {timeout_s:.0f} s; log {server.log_path}:\n"
        f"{servers.log_tail(server.log_path)}"
    )


# --- probes ----------------------------------------------------------------------------------


@dataclass
class Probe:
    key: str
    status: int | None
    media_type: str | None
    problem: str | None  # None: the documented status and media type


def is_error_body(body: bytes) -> bool:
    """Both error bodies: the service's {"error": {...}} and the v2 protocol's {"error": "..."}."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and "error" in parsed


def probe(client: httpx.Client, kind: Kind) -> tuple[Probe, bytes]:
    try:
        response = client.request(kind.method, kind.path, content=kind.body, headers=kind.headers)
    except httpx.HTTPError as error:
        return Probe(kind.key, None, None, f"{type(error).__name__}: {error}"), b""
    media = response.headers.get("content-type", "").partition(";")[0].strip()
    problem = None
    if response.status_code != kind.status:
        problem = f"HTTP {response.status_code}, documented {kind.status}: {response.text[:300]}"
    elif media != kind.media_type:
        problem = f"Content-Type {media!r}, expected {kind.media_type!r}"
    elif not kind.valid and not is_error_body(response.content):
        problem = f"no error body: {response.text[:300]}"
    return Probe(kind.key, response.status_code, media, problem), response.content


def probe_all(base_url: str, kinds: Sequence[Kind], folder: Path) -> dict[str, Probe]:
    """Each kind once, before the load; its answer becomes the body every later one must match."""
    folder.mkdir(parents=True, exist_ok=True)
    probes: dict[str, Probe] = {}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        # wrk sends only the kind's own headers; httpx's defaults would make the probe differ.
        for default in ("accept", "accept-encoding", "user-agent"):
            del client.headers[default]
        for kind in kinds:
            result, body = probe(client, kind)
            probes[kind.key] = result
            (folder / f"{kind.key}.bin").write_bytes(body)
    return probes


# --- wrk -------------------------------------------------------------------------------------

LUA_TEMPLATE = """-- generated by bench/soak.py: cycle through the request kinds below.
-- One connection per wrk thread, so the answer a thread reads belongs to the request it wrote
-- last: each answer is counted under its own kind.
local kinds = {
%(kinds)s
}

local function slurp(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*all")
  file:close()
  return data
end

-- main state: a different first kind per thread; the threads are kept for done()
local threads = {}
local next_offset = 0

function setup(thread)
  thread:set("offset", next_offset)
  next_offset = next_offset + 1
  table.insert(threads, thread)
end

-- thread states. Counters are flat tables of numbers and strings (thread:get copies them).
local requests, expected = {}, {}
local position, pending = 0, nil
local skip_verify = false
sent, answers, mismatched, unattributed, samples = {}, {}, {}, {}, {}

function init(args)
  for i, kind in ipairs(kinds) do
    local headers = {Host = wrk.headers["Host"]}
    for name, value in pairs(kind.headers) do headers[name] = value end
    local body = nil
    if kind.body then body = slurp(kind.body) end
    requests[i] = wrk.format(kind.method, kind.path, headers, body)
    expected[i] = slurp(kind.expected)
  end
  position = offset %% #kinds
  -- wrk calls request() once on the first thread to check the script, and never sends it
  skip_verify = (offset == 0)
end

function request()
  local i = position %% #kinds + 1
  if skip_verify then
    skip_verify = false
    return requests[i]
  end
  position = i
  pending = i
  sent[kinds[i].key] = (sent[kinds[i].key] or 0) + 1
  return requests[i]
end

local function printable(text)
  return (string.gsub(string.sub(text or "", 1, 240), "[^%%w%%p ]", "."))
end

function response(status, headers, body)
  local i = pending
  pending = nil
  if i == nil then
    unattributed[tostring(status)] = (unattributed[tostring(status)] or 0) + 1
    return
  end
  local key = kinds[i].key .. "|" .. status
  answers[key] = (answers[key] or 0) + 1
  if status == kinds[i].status then
    if body ~= expected[i] then
      mismatched[kinds[i].key] = (mismatched[kinds[i].key] or 0) + 1
      samples[kinds[i].key .. "|body"] = samples[kinds[i].key .. "|body"] or printable(body)
    end
  elseif samples[key] == nil then
    samples[key] = printable(body)
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for _, name in ipairs({"sent", "answers", "mismatched", "unattributed"}) do
      for key, n in pairs(thread:get(name)) do
        io.write(string.format("soak\\t%%s\\t%%s\\t%%d\\n", name, key, n))
      end
    end
    for key, text in pairs(thread:get("samples")) do
      io.write(string.format("soak\\tsample\\t%%s\\t%%s\\n", key, text))
    end
  end
end
"""


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_lua(path: Path, kinds: Sequence[Kind], bodies: Path, expected: Path) -> Path:
    bodies.mkdir(parents=True, exist_ok=True)
    entries = []
    for kind in kinds:
        body = "nil"
        if kind.body is not None:
            body_path = bodies / f"{kind.key}.bin"
            body_path.write_bytes(kind.body)
            body = lua_string(str(body_path.resolve()))
        headers = ", ".join(f"[{lua_string(k)}] = {lua_string(v)}" for k, v in kind.headers.items())
        entries.append(
            f"  {{key = {lua_string(kind.key)}, method = {lua_string(kind.method)}, "
            f"path = {lua_string(kind.path)}, status = {kind.status}, body = {body}, "
            f"expected = {lua_string(str((expected / f'{kind.key}.bin').resolve()))}, "
            f"headers = {{{headers}}}}},"
        )
    path.write_text(LUA_TEMPLATE % {"kinds": "\n".join(entries)})
    return path


@dataclass
class LuaCounts:
    sent: dict[str, int] = field(default_factory=dict)
    answers: dict[str, dict[int, int]] = field(default_factory=dict)  # kind -> status -> n
    mismatched: dict[str, int] = field(default_factory=dict)
    unattributed: dict[int, int] = field(default_factory=dict)
    samples: dict[str, str] = field(default_factory=dict)  # "kind|status" -> start of a body


def parse_counts(text: str) -> LuaCounts:
    counts = LuaCounts()
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or parts[0] != "soak":
            continue
        what, key, value = parts[1], parts[2], parts[3]
        if what == "sample":
            counts.samples[key] = value
            continue
        n = int(float(value))
        if what == "sent":
            counts.sent[key] = counts.sent.get(key, 0) + n
        elif what == "answers":
            kind, _, status = key.rpartition("|")
            by_status = counts.answers.setdefault(kind, {})
            by_status[int(status)] = by_status.get(int(status), 0) + n
        elif what == "mismatched":
            counts.mismatched[key] = counts.mismatched.get(key, 0) + n
        elif what == "unattributed":
            counts.unattributed[int(key)] = counts.unattributed.get(int(key), 0) + n
    return counts


# --- memory ----------------------------------------------------------------------------------


def series_summary(t_s: list[float], values: list[float]) -> dict[str, Any]:
    settled = [(t, v) for t, v in zip(t_s, values, strict=True) if t >= SETTLE_S]
    return {
        "samples": len(values),
        "first_mb": round(values[0], 2),
        "max_mb": round(max(values), 2),
        "last_mb": round(values[-1], 2),
        "slope_mb_per_min": round(memory.slope_per_minute(t_s, values), 3),
        "slope_after_settle_mb_per_min": round(
            memory.slope_per_minute([t for t, _ in settled], [v for _, v in settled]), 3
        )
        if len(settled) >= 2
        else None,
    }


def memory_report(
    samples: list[memory.MemorySample], roles: dict[int, str], roles_after: dict[int, str]
) -> dict[str, Any]:
    """The summed RSS of the tree and each process's own, with the slope after SETTLE_S."""
    t_s = [s.t_s for s in samples]
    total = memory.summarise(samples)
    processes = []
    for pid in sorted({p for s in samples for p in s.per_process_mb}):
        points = [(s.t_s, s.per_process_mb[pid]) for s in samples if pid in s.per_process_mb]
        role = roles.get(pid) or roles_after.get(pid) or "appeared during the run"
        processes.append(
            {
                "pid": pid,
                "role": role,
                **series_summary([t for t, _ in points], [v for _, v in points]),
            }
        )
    return {
        "settle_s": SETTLE_S,
        "total": {
            **series_summary(t_s, [s.total_mb for s in samples]),
            "processes": total.processes,
            "max_pss_mb": total.max_pss_mb,
            "series_t_s": total.series_t_s,
            "series_mb": total.series_mb,
        },
        "processes": processes,
    }


# --- the server's own account -----------------------------------------------------------------

ACCESS_LINE = re.compile(r'"(?:GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH) \S+ HTTP/[\d.]+" (\d{3})')
REQUEST_LINE = '"logger":"vae_service.access"'
ERROR_LINE = re.compile(r"\b(?:ERROR|CRITICAL)\b|Traceback")
WARNING_LINE = re.compile(r"\bWARNING\b")


def scan_log(path: Path) -> dict[str, Any]:
    """Statuses from the request log (info level: the service's JSON request lines, or uvicorn's
    access log with VAE_LOG_FORMAT=text), every error and warning line."""
    statuses: dict[int, int] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        match = ACCESS_LINE.search(line)
        if REQUEST_LINE in line:
            status = int(json.loads(line)["status"])
            statuses[status] = statuses.get(status, 0) + 1
        elif match is not None:
            status = int(match.group(1))
            statuses[status] = statuses.get(status, 0) + 1
        elif ERROR_LINE.search(line):
            errors.append(line[:300])
        elif WARNING_LINE.search(line):
            warnings.append(line[:300])
    return {
        "access_log_statuses": dict(sorted(statuses.items())),
        "access_log_5xx": sum(n for s, n in statuses.items() if s >= 500),
        "error_lines": len(errors),
        "first_error_lines": errors[:20],
        "warning_lines": len(warnings),
        "first_warning_lines": warnings[:10],
    }


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Options:
    seconds: int
    connections: int
    models: list[str]
    log_level: str
    out: Path
    argv: list[str]


def kind_results(kinds: Sequence[Kind], counts: LuaCounts, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for kind in kinds:
        statuses = dict(sorted(counts.answers.get(kind.key, {}).items()))
        answered = sum(statuses.values())
        if kind.valid:
            wrong = sum(n for s, n in statuses.items() if not 200 <= s < 300)
        else:
            wrong = answered - statuses.get(kind.status, 0)
        rows.append(
            {
                "key": kind.key,
                "title": kind.title,
                "method": kind.method,
                "path": kind.path,
                "valid": kind.valid,
                "expected_status": kind.status,
                "sent": counts.sent.get(kind.key, 0),
                "answered": answered,
                "per_s": round(answered / seconds, 1) if seconds > 0 else 0.0,
                "statuses": statuses,
                "wrong_status": wrong,
                "body_mismatches": counts.mismatched.get(kind.key, 0),
                "samples": {
                    k: v for k, v in counts.samples.items() if k.startswith(kind.key + "|")
                },
            }
        )
    return rows


def check(target: str, measured: str, ok: bool) -> dict[str, str]:
    return {"target": target, "measured": measured, "status": "PASS" if ok else "FAIL"}


def judge(result: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's targets, each PASS or FAIL, from what the run collected."""
    checks: list[dict[str, str]] = []
    probes = result["probes"]
    bad_probes = [p for p in probes if p["problem"]]
    checks.append(
        check(
            "each kind answers its documented status once before the load",
            f"{len(probes) - len(bad_probes)} of {len(probes)}"
            + "".join(f"; {p['key']}: {p['problem'][:120]}" for p in bad_probes),
            not bad_probes and bool(probes),
        )
    )
    load = result.get("load")
    if load is None:
        checks.append(check("the load ran", result.get("error") or "not run", False))
        return checks
    kinds = load["kinds"]
    server_5xx = result["server_log"]["access_log_5xx"]
    client_5xx = sum(n for k in kinds for s, n in k["statuses"].items() if int(s) >= 500)
    client_5xx += sum(n for s, n in load["unattributed"].items() if int(s) >= 500)
    checks.append(
        check(
            "zero 5xx",
            f"{client_5xx} seen by wrk, {server_5xx} in the server's access log",
            client_5xx == 0 and server_5xx == 0,
        )
    )
    socket = load["wrk"]["socket_errors"]
    checks.append(
        check(
            "zero socket errors (dropped requests)",
            ", ".join(f"{k} {v}" for k, v in socket.items()),
            not any(socket.values()),
        )
    )
    unanswered = load["sent"] - load["answered"]
    checks.append(
        check(
            "every request gets an answer, but those in flight when wrk stops (one per "
            "connection at most)",
            f"{load['answered']:,} answered of {load['sent']:,} written; {unanswered} "
            f"outstanding at the stop, {load['connections']} connections; "
            f"{sum(load['unattributed'].values())} answers without a request",
            0 <= unanswered <= load["connections"] and not load["unattributed"],
        )
    )
    valid_wrong = sum(k["wrong_status"] for k in kinds if k["valid"])
    valid_total = sum(k["answered"] for k in kinds if k["valid"])
    checks.append(
        check(
            "valid kinds: every answer 2xx",
            f"{valid_wrong} of {valid_total:,} not 2xx",
            valid_wrong == 0 and valid_total > 0,
        )
    )
    invalid_wrong = sum(k["wrong_status"] for k in kinds if not k["valid"])
    invalid_total = sum(k["answered"] for k in kinds if not k["valid"])
    checks.append(
        check(
            "invalid kinds: every answer their documented 4xx",
            f"{invalid_wrong} of {invalid_total:,} otherwise",
            invalid_wrong == 0 and invalid_total > 0,
        )
    )
    mismatches = sum(k["body_mismatches"] for k in kinds)
    checks.append(
        check(
            "every answer byte for byte the probe's answer",
            f"{mismatches} differ",
            mismatches == 0,
        )
    )
    silent = [k["key"] for k in kinds if k["answered"] == 0]
    checks.append(
        check(
            "every kind was sent under load",
            "all" if not silent else "none answered: " + ", ".join(silent),
            not silent,
        )
    )
    pressure = load.get("pressure")
    if pressure is not None:
        answers = pressure["answers"]
        wrong = {s: n for s, n in answers.items() if s not in ("408", "431")}
        checks.append(
            check(
                f"slow and silent clients ({TRICKLING} trickling a head, {SILENT} silent) are "
                f"cut off after the head timeout, oversized heads refused 431",
                f"{pressure['opened']} opened, {pressure['cut_off']} cut off "
                f"({', '.join(f'{s}: {n}' for s, n in answers.items()) or 'no answers'}), "
                f"{pressure['still_open_too_long']} held past the timeout",
                pressure["still_open_too_long"] == 0 and not wrong,
            )
        )
        checks.append(
            check(
                f"/healthz under that pressure: every check answered, in < {HEALTH_MAX_MS:.0f} ms",
                f"{pressure['health_checks']} checks, {pressure['health_failures']} failed, "
                f"slowest {pressure['health_max_ms']:.1f} ms",
                pressure["health_failures"] == 0
                and pressure["health_checks"] > 0
                and pressure["health_max_ms"] < HEALTH_MAX_MS,
            )
        )
    workers = result["workers"]
    checks.append(
        check(
            "no worker died or restarted; ready after the load",
            f"workers {workers['before']} before, {workers['after']} after; "
            f"/readyz after: {workers['ready_after']}",
            workers["before"] == workers["after"]
            and bool(workers["before"])
            and workers["ready_after"] == 200,
        )
    )
    procs = [p for p in result["memory"]["processes"] if p["role"] == "worker"]
    largest = max(procs, key=lambda p: p["max_mb"]) if procs else None
    checks.append(
        check(
            f"each worker's RSS < {WORKER_MAX_MB:.0f} MB",
            ", ".join(f"pid {p['pid']} max {p['max_mb']:.1f} MB" for p in procs) or "no worker",
            largest is not None and largest["max_mb"] < WORKER_MAX_MB,
        )
    )
    total = result["memory"]["total"]
    slopes = [total["slope_after_settle_mb_per_min"]]
    slopes += [p["slope_after_settle_mb_per_min"] for p in procs]
    checks.append(
        check(
            f"RSS flat: slope within ±{SLOPE_MAX_MB_PER_MIN:.0f} MB/min after the first "
            f"{SETTLE_S:.0f} s (summed, and each worker)",
            f"summed {fmt_slope(total['slope_after_settle_mb_per_min'])}; "
            + ", ".join(
                f"worker {p['pid']} {fmt_slope(p['slope_after_settle_mb_per_min'])}" for p in procs
            ),
            all(s is not None and abs(s) < SLOPE_MAX_MB_PER_MIN for s in slopes),
        )
    )
    log = result["server_log"]
    checks.append(
        check(
            "no ERROR, CRITICAL or Traceback line in the server log",
            f"{log['error_lines']} line(s)",
            log["error_lines"] == 0,
        )
    )
    return checks


def fmt_slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} MB/min"


def run(options: Options) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("server-soak-*.log"):  # ~10 MB per 2 minutes with the access log on
        old.unlink()
    models = [load_model(key) for key in options.models]
    kinds = build_kinds(models)
    repository = soak_repository(models)
    default_model = models[0].name if len(models) > 1 else None
    spec = server_spec(repository, default_model, options.log_level)
    expected_workers = os.cpu_count() or 1
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "-m", "bench.soak", *options.argv]),
        "seconds": options.seconds,
        "connections": options.connections,
        "models": [
            {
                "key": m.key,
                "name": m.name,
                "features": m.features,
                "bundle": str(m.bundle.relative_to(ROOT)),
            }
            for m in models
        ],
        "server_settings": spec.settings,
        "nproc": os.cpu_count(),
        "kinds": [
            {
                "key": k.key,
                "title": k.title,
                "method": k.method,
                "path": k.path,
                "expected_status": k.status,
                "valid": k.valid,
                "body_bytes": len(k.body) if k.body is not None else 0,
            }
            for k in kinds
        ],
        "probes": [],
        "load": None,
    }
    lua = write_lua(OUT / "soak.lua", kinds, OUT / "bodies", OUT / "expected")
    server: servers.RunningServer | None = None
    try:
        with servers.running(spec, OUT, ROOT) as server:
            result["server_log_path"] = str(server.log_path.relative_to(ROOT))
            result["server_start_s"] = round(server.started_s, 2)
            roles = wait_for_workers(server, expected_workers, options.log_level)
            probes = probe_all(server.base_url, kinds, OUT / "expected")
            result["probes"] = [asdict(p) for p in probes.values()]
            if any(p.problem for p in probes.values()):
                result["error"] = "a probe did not get its documented answer; no load was run"
            else:
                result["load"], result["memory"], result["workers"] = load(
                    server, lua, kinds, roles, options
                )
    except (servers.ServerFailed, wrk.WrkFailed) as error:
        result["error"] = str(error)
    if server is not None:
        result["server_exit_code"] = server.process.returncode
        result["server_log"] = scan_log(server.log_path)
    return result


def load(
    server: servers.RunningServer,
    lua: Path,
    kinds: Sequence[Kind],
    roles: dict[int, str],
    options: Options,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    print(
        f"soak: {options.seconds} s, {options.connections} connections against "
        f"{server.base_url} (pid {server.pid})",
        flush=True,
    )
    sampler = memory.MemorySampler(server.pid)
    sampler.start()
    pressure = ConnectionPressure(
        server.base_url, trickling=TRICKLING, silent=SILENT, head_timeout_s=HEAD_TIMEOUT_S
    )
    pressure.start()
    raw = OUT / "wrk.txt"
    began = time.perf_counter()
    try:
        # One thread per connection: the Lua script attributes answers by thread.
        outcome = wrk.run(
            server.base_url,
            lua,
            duration_s=options.seconds,
            connections=options.connections,
            threads=options.connections,
            raw_path=raw,
        )
    finally:
        pressured = pressure.stop()
        sampler.stop()
    wall = time.perf_counter() - began
    roles_after = process_roles(server.pid)
    try:
        ready_after: int | str = httpx.get(server.base_url + "/readyz", timeout=10).status_code
    except httpx.HTTPError as error:
        ready_after = f"{type(error).__name__}"
    counts = parse_counts(raw.read_text())
    rows = kind_results(kinds, counts, outcome.duration_s)
    answered = sum(k["answered"] for k in rows)
    load_result = {
        "wrk": outcome.to_dict(),
        "wall_s": round(wall, 1),
        "connections": options.connections,
        "wrk_threads": options.connections,
        "sent": sum(counts.sent.values()),
        "answered": answered,
        "per_s": round(answered / outcome.duration_s, 1),
        "unattributed": {str(s): n for s, n in counts.unattributed.items()},
        "kinds": rows,
        "pressure": pressured,
    }
    workers = {
        "before": sorted(p for p, r in roles.items() if r == "worker"),
        "after": sorted(p for p, r in roles_after.items() if r == "worker"),
        "ready_after": ready_after,
    }
    return load_result, memory_report(sampler.samples, roles, roles_after), workers


# --- reports ---------------------------------------------------------------------------------


def status_text(statuses: dict[Any, int]) -> str:
    return ", ".join(f"{s}: {n:,}" for s, n in statuses.items()) or "none"


def verdict(result: dict[str, Any]) -> str:
    checks = result["checks"]
    passed = sum(c["status"] == "PASS" for c in checks)
    word = "PASS" if passed == len(checks) else "FAIL"
    return f"**{word}** ({passed} of {len(checks)} targets)"


def kind_rows(load: dict[str, Any]) -> list[str]:
    rows = [
        "| kind | request | documented | answered | per s | statuses | body differs |",
        "|---|---|--:|--:|--:|---|--:|",
    ]
    for k in load["kinds"]:
        flag = "" if not k["wrong_status"] else " **(wrong)**"
        rows.append(
            f"| {k['key']} ({'valid' if k['valid'] else 'invalid'}) | `{k['method']} "
            f"{k['path']}` {k['title']} | {k['expected_status']} | {k['answered']:,} "
            f"| {k['per_s']:,.1f} | {status_text(k['statuses'])}{flag} "
            f"| {k['body_mismatches']} |"
        )
    total: dict[int, int] = {}
    for k in load["kinds"]:
        for status, n in k["statuses"].items():
            total[int(status)] = total.get(int(status), 0) + n
    rows.append(
        f"| **all** | | | **{load['answered']:,}** | **{load['per_s']:,.1f}** "
        f"| {status_text(dict(sorted(total.items())))} "
        f"| {sum(k['body_mismatches'] for k in load['kinds'])} |"
    )
    return rows


def memory_rows(mem: dict[str, Any]) -> list[str]:
    settle = f"{mem['settle_s']:.0f}"
    rows = [
        f"| process | pid | first MB | max MB | last MB | slope MB/min | slope after {settle} s |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    t = mem["total"]
    rows.append(
        f"| **sum of {t['processes']}** | | {t['first_mb']:.1f} | {t['max_mb']:.1f} "
        f"| {t['last_mb']:.1f} | {t['slope_mb_per_min']:+.2f} "
        f"| {fmt_slope(t['slope_after_settle_mb_per_min'])} |"
    )
    for p in sorted(mem["processes"], key=lambda p: -p["max_mb"]):
        rows.append(
            f"| {p['role']} | {p['pid']} | {p['first_mb']:.1f} | {p['max_mb']:.1f} "
            f"| {p['last_mb']:.1f} | {p['slope_mb_per_min']:+.2f} "
            f"| {fmt_slope(p['slope_after_settle_mb_per_min'])} |"
        )
    return rows


def markdown(result: dict[str, Any]) -> str:
    kinds = result["kinds"]
    valid = sum(k["valid"] for k in kinds)
    settings = ", ".join(
        f"`{k}={v}`" if k.isupper() else f"{k}: {v}" for k, v in result["server_settings"].items()
    )
    lines = [
        "# Soak run",
        "",
        "Generated by `bench/soak.py` (`make soak`); overwritten on every run. Raw wrk output, "
        "the Lua script, the request bodies, the probes' answers and the server log: "
        "`bench/out/soak/` (not committed).",
        "",
        f"- date: {result['date']}; machine: {result['nproc']} cores, shared by the server, wrk "
        "and whatever else runs there: throughput figures are low and noisy, the counts exact",
        f"- command: `{result['command']}` (wall {result.get('wall_s', '?')} s)",
        f"- server: `vae-serve`, {settings}; ready after {result.get('server_start_s', '?')} s; "
        f"exit code after SIGTERM: {result.get('server_exit_code', '?')}",
        "- models: "
        + ", ".join(f"`{m['bundle']}` ({m['features']} inputs)" for m in result["models"]),
        f"- load: wrk, {result['connections']} connections with one thread each, "
        f"{result['seconds']} s, cycling through {len(kinds)} request kinds ({valid} valid, "
        f"{len(kinds) - valid} invalid) in a fixed order, each thread starting at a different "
        "kind. Each kind was sent once before the load; its answer (status and body) is what "
        "every answer under load must equal, byte for byte.",
        "",
        f"## Verdict: {verdict(result)}",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    for c in result["checks"]:
        cells = (c["target"], c["measured"])
        lines.append(
            "| " + " | ".join(x.replace("|", "/") for x in cells) + f" | **{c['status']}** |"
        )
    if result.get("error"):
        lines += ["", "The run stopped early:", "", "```", result["error"].strip(), "```"]
    load = result.get("load")
    if load is not None:
        w = load["wrk"]
        lines += [
            "",
            "## Requests per kind",
            "",
            *kind_rows(load),
            "",
            f"wrk: {w['requests']:,} requests in {w['duration_s']:.1f} s "
            f"({w['requests_per_s']:,.1f}/s), latency over all kinds p50 "
            f"{w['p50_ms'] or 0:.2f} ms, p99 {w['p99_ms'] or 0:.2f} ms; socket errors "
            + ", ".join(f"{k} {v}" for k, v in w["socket_errors"].items())
            + f". Written {load['sent']:,}, answered {load['answered']:,}: the difference is "
            "what was in flight when wrk stopped.",
            "",
        ]
        pressure = load.get("pressure")
        if pressure is not None:
            lines += [
                "## Slow and silent clients beside the load",
                "",
                f"`bench/hostile_mix.py`: {TRICKLING} connections trickling a request head a "
                f"byte every 0.25 s and {SILENT} that send nothing, each replaced when the server "
                f"cuts it off; an oversized head (64 KiB) every second; `/healthz` every 0.1 s "
                f"on a connection of its own. Connections opened: {pressure['opened']}, cut off "
                f"by the server: {pressure['cut_off']} (answers: "
                f"{pressure['answers'] or 'none'}); oversized heads sent: "
                f"{pressure['oversized_heads']}; health checks: {pressure['health_checks']}, "
                f"failed: {pressure['health_failures']}, slowest: "
                f"{pressure['health_max_ms']:.1f} ms.",
                "",
            ]
        samples = {k["key"]: k["samples"] for k in load["kinds"] if k["samples"]}
        if samples:
            lines += ["Unexpected answers (the first of each kind and status):", ""]
            for by_status in samples.values():
                for status_key, text in by_status.items():
                    lines.append(f"- `{status_key}`: `{text[:200]}`")
            lines.append("")
    mem = result.get("memory")
    if mem is not None:
        lines += [
            "## Memory",
            "",
            f"VmRSS from /proc every second during the load, per process of the server's tree "
            f"and summed; {mem['total']['samples']} samples. Slopes are least-squares fits; "
            f"'after {mem['settle_s']:.0f} s' leaves out the first {mem['settle_s']:.0f} s, "
            "while allocator arenas and caches fill. The summed VmRSS counts pages the "
            f"processes share once per process (max PSS sum: "
            f"{mem['total']['max_pss_mb'] or 0:.1f} MB).",
            "",
            *memory_rows(mem),
            "",
        ]
    log = result.get("server_log")
    if log is not None:
        lines += [
            "## Server log",
            "",
            "Statuses in the server's request log (probes and readiness checks included): "
            f"{status_text(log['access_log_statuses'])}. Error lines: {log['error_lines']}; "
            f"warning lines: {log['warning_lines']}.",
            "",
        ]
        shown = [*log["first_error_lines"], *log["first_warning_lines"]]
        if shown:
            lines += ["```", *shown, "```", ""]
    lines += [
        "## How to run",
        "",
        "```",
        "make soak                    # 120 s; exits non-zero when a target fails",
        "make soak SOAK_SECONDS=20    # what CI runs (with SOAK_ARGS=--out bench/out/soak-ci)",
        ".venv/bin/python -m bench.soak --seconds 120 --connections 8 --models default,784",
        "```",
        "",
        "`--models default,784` adds the 784-input image model (trained once and cached by "
        "`bench/models.py`) and its kinds, served by name and version next to the default "
        "model (`VAE_DEFAULT_MODEL` then names the default).",
        "",
    ]
    return "\n".join(lines)


def results_section(path: Path = BENCH / "soak.json") -> list[str]:
    """The short "Soak" section of RESULTS.md, from the last soak run; none without one."""
    if not path.is_file():
        return []
    result = json.loads(path.read_text())
    lines = ["## Soak", ""]
    load, mem = result.get("load"), result.get("memory")
    if load is None or mem is None:
        error = (result.get("error") or "no load").splitlines()[0]
        return [*lines, f"The last soak run ({result['date']}) failed: {error}", ""]
    kinds = load["kinds"]
    valid = [k for k in kinds if k["valid"]]
    invalid = [k for k in kinds if not k["valid"]]
    workers = [p for p in mem["processes"] if p["role"] == "worker"]
    fivexx = sum(n for k in kinds for s, n in k["statuses"].items() if int(s) >= 500)
    socket = load["wrk"]["socket_errors"]
    failed = [c["target"] for c in result["checks"] if c["status"] != "PASS"]
    lines += [
        f"`{result['command']}` ({result['date']}; the whole report is `SOAK.md`): "
        f"{result['seconds']} s of {len(kinds)} request kinds ({len(valid)} valid, "
        f"{len(invalid)} invalid) cycled over {load['connections']} connections against "
        f"vae-serve with {len(workers)} worker(s). Verdict: {verdict(result)}"
        + (": failed " + "; ".join(failed) if failed else "."),
        "",
        "| answers | per s | 5xx | socket errors | valid, not 2xx | invalid, not their 4xx "
        f"| body differs | largest worker RSS | RSS slope after {mem['settle_s']:.0f} s |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| {load['answered']:,} | {load['per_s']:,.0f} | {fivexx} | {sum(socket.values())} "
        f"| {sum(k['wrong_status'] for k in valid)} | {sum(k['wrong_status'] for k in invalid)} "
        f"| {sum(k['body_mismatches'] for k in kinds)} "
        f"| {max((p['max_mb'] for p in workers), default=0):.1f} MB "
        f"| {fmt_slope(mem['total']['slope_after_settle_mb_per_min'])} |",
        "",
    ]
    return lines


def print_summary(result: dict[str, Any]) -> None:
    load = result.get("load")
    if load is not None:
        print(f"{'kind':<22} {'want':>4} {'answered':>9} {'per s':>8}  statuses", flush=True)
        for k in load["kinds"]:
            print(
                f"{k['key']:<22} {k['expected_status']:>4} {k['answered']:>9,} "
                f"{k['per_s']:>8,.1f}  {status_text(k['statuses'])}"
                + (f"  body differs {k['body_mismatches']}" if k["body_mismatches"] else "")
            )
    if result.get("error"):
        print(f"error: {result['error']}")
    for c in result["checks"]:
        print(f"  {c['status']:<4} {c['target']}: {c['measured']}")
    print(f"soak: {verdict(result).replace('**', '')}", flush=True)


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="A bounded soak run: mixed valid and invalid requests against vae-serve on "
        "127.0.0.1; zero 5xx, zero dropped requests, flat RSS, or exit status 1. Writes "
        "SOAK.md and soak.json.",
    )
    parser.add_argument("--seconds", type=int, default=120, help="length of the load")
    parser.add_argument(
        "--connections", type=int, default=8, help="wrk connections, one wrk thread each"
    )
    parser.add_argument(
        "--models", default="default", help="default, or default,784 to add the image model"
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="VAE_LOG_LEVEL of the server (info, its default, keeps the access log on)",
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH, help="folder for SOAK.md and soak.json (default bench)"
    )
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or models[0] != "default" or any(m not in MODEL_KEYS for m in models):
        parser.error("--models: default, or default,784")
    # The slope is fitted after SETTLE_S; it needs that much again to mean anything.
    shortest = int(2 * SETTLE_S)
    if args.seconds < shortest or not 1 <= args.connections <= 64:
        parser.error(f"--seconds >= {shortest}, --connections 1..64")
    out: Path = args.out if args.out.is_absolute() else ROOT / args.out
    return Options(
        seconds=args.seconds,
        connections=args.connections,
        models=list(dict.fromkeys(models)),
        log_level=args.log_level,
        out=out,
        argv=list(argv if argv is not None else sys.argv[1:]),
    )


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    if shutil.which(wrk.WRK) is None:
        print(f"soak: {wrk.WRK} not found; install wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    began = time.perf_counter()
    result = run(options)
    result["wall_s"] = round(time.perf_counter() - began, 1)
    result["checks"] = judge(result)
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (options.out / "SOAK.md").write_text(markdown(result))
    print_summary(result)
    where = options.out.relative_to(ROOT) if options.out.is_relative_to(ROOT) else options.out
    print(f"wrote {where}/SOAK.md and {where}/soak.json ({result['wall_s']} s)", flush=True)
    return 0 if all(c["status"] == "PASS" for c in result["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
