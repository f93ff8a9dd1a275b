"""What a run collected, summed up: answers per kind, the memory series, the server's log."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import memory
from bench.soak.config import SETTLE_S
from bench.soak.kinds import Kind
from bench.soak.lua import LuaCounts


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
