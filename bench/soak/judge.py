"""The issue's targets, each a Check, judged from what a run collected (soak.json's dict)."""

from __future__ import annotations

from typing import Any

from bench.shared import Check
from bench.soak.config import (
    HEALTH_MAX_MS,
    SETTLE_S,
    SILENT,
    SLOPE_MAX_MB_PER_MIN,
    TRICKLING,
    WORKER_MAX_MB,
)


def judge(result: dict[str, Any]) -> list[Check]:
    """The issue's targets, each PASS or FAIL, from what the run collected."""
    checks: list[Check] = []
    probes = result["probes"]
    bad_probes = [p for p in probes if p["problem"]]
    checks.append(
        Check.judged(
            "each kind answers its documented status once before the load",
            f"{len(probes) - len(bad_probes)} of {len(probes)}"
            + "".join(f"; {p['key']}: {p['problem'][:120]}" for p in bad_probes),
            not bad_probes and bool(probes),
        )
    )
    load = result.get("load")
    if load is None:
        checks.append(Check.judged("the load ran", result.get("error") or "not run", False))
        return checks
    kinds = load["kinds"]
    server_5xx = result["server_log"]["access_log_5xx"]
    client_5xx = sum(n for k in kinds for s, n in k["statuses"].items() if int(s) >= 500)
    client_5xx += sum(n for s, n in load["unattributed"].items() if int(s) >= 500)
    checks.append(
        Check.judged(
            "zero 5xx",
            f"{client_5xx} seen by wrk, {server_5xx} in the server's access log",
            client_5xx == 0 and server_5xx == 0,
        )
    )
    socket = load["wrk"]["socket_errors"]
    checks.append(
        Check.judged(
            "zero socket errors (dropped requests)",
            ", ".join(f"{k} {v}" for k, v in socket.items()),
            not any(socket.values()),
        )
    )
    unanswered = load["sent"] - load["answered"]
    checks.append(
        Check.judged(
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
        Check.judged(
            "valid kinds: every answer 2xx",
            f"{valid_wrong} of {valid_total:,} not 2xx",
            valid_wrong == 0 and valid_total > 0,
        )
    )
    invalid_wrong = sum(k["wrong_status"] for k in kinds if not k["valid"])
    invalid_total = sum(k["answered"] for k in kinds if not k["valid"])
    checks.append(
        Check.judged(
            "invalid kinds: every answer their documented 4xx",
            f"{invalid_wrong} of {invalid_total:,} otherwise",
            invalid_wrong == 0 and invalid_total > 0,
        )
    )
    mismatches = sum(k["body_mismatches"] for k in kinds)
    checks.append(
        Check.judged(
            "every answer byte for byte the probe's answer",
            f"{mismatches} differ",
            mismatches == 0,
        )
    )
    silent = [k["key"] for k in kinds if k["answered"] == 0]
    checks.append(
        Check.judged(
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
            Check.judged(
                f"slow and silent clients ({TRICKLING} trickling a head, {SILENT} silent) are "
                f"cut off after the head timeout, oversized heads refused 431",
                f"{pressure['opened']} opened, {pressure['cut_off']} cut off "
                f"({', '.join(f'{s}: {n}' for s, n in answers.items()) or 'no answers'}), "
                f"{pressure['still_open_too_long']} held past the timeout",
                pressure["still_open_too_long"] == 0 and not wrong,
            )
        )
        checks.append(
            Check.judged(
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
        Check.judged(
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
        Check.judged(
            f"each worker's RSS < {WORKER_MAX_MB:.0f} MB",
            ", ".join(f"pid {p['pid']} max {p['max_mb']:.1f} MB" for p in procs) or "no worker",
            largest is not None and largest["max_mb"] < WORKER_MAX_MB,
        )
    )
    total = result["memory"]["total"]
    slopes = [total["slope_after_settle_mb_per_min"]]
    slopes += [p["slope_after_settle_mb_per_min"] for p in procs]
    checks.append(
        Check.judged(
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
        Check.judged(
            "no ERROR, CRITICAL or Traceback line in the server log",
            f"{log['error_lines']} line(s)",
            log["error_lines"] == 0,
        )
    )
    return checks


def fmt_slope(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} MB/min"


def verdict(result: dict[str, Any]) -> str:
    checks = result["checks"]
    passed = sum(c["status"] == "PASS" for c in checks)
    word = "PASS" if passed == len(checks) else "FAIL"
    return f"**{word}** ({passed} of {len(checks)} targets)"
