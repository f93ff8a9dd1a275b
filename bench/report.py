"""Targets, RESULTS.md and results.png from the numbers http_bench collected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.shared import NOT_APPLICABLE, Check, machine_text, packages_text

SERVER_NAMES = {
    "ours": "ours (vae-serve)",
    "ours-batching": "ours, dynamic batching on",
    "baseline": "baseline (plain FastAPI, 1 worker)",
    "noop": "noop FastAPI (HTTP ceiling)",
    "in-process": "in-process onnxruntime",
}
OWN_SERVERS = frozenset(SERVER_NAMES)  # every other server is a peer (bench/peers/)
PEER_SCENARIOS = ("S1", "S6")  # single-item JSON at 8 and 64 connections
PEER_RATIO = 2.0  # issue 21: >= 2x the best peer's requests/s, p99 no worse than its


def server_name(results: dict[str, Any], server: str) -> str:
    """How RESULTS.md names a server: ours and the ceilings by role, a peer by its title."""
    if server in SERVER_NAMES:
        return SERVER_NAMES[server]
    for model in results["models"].values():
        title = model.get("server_titles", {}).get(server)
        if title:
            return str(title)
    return server


MEMORY_MAX_MB = 300.0
MEMORY_SLOPE_MB_PER_MIN = 5.0
# results.json's checks: every field of a Check, model and scenario first
CHECK_KEYS = ("model", "scenario", "target", "measured", "ratio", "status")


def find(model: dict[str, Any], scenario: str, server: str) -> dict[str, Any] | None:
    for m in model["measurements"]:
        if m["scenario"] == scenario and m["server"] == server:
            found: dict[str, Any] = m
            return found
    return None


def problem(m: dict[str, Any] | None) -> str | None:
    """Why a measurement cannot count: missing, failed, or answered with errors."""
    if m is None:
        return "not measured"
    if m["error"] and m["error"].startswith("server failed to start"):
        return f"{m['server']} failed to start (see Problems below)"
    if m["error"] or m["wrk"] is None:
        return f"{m['server']}: {(m['error'] or 'no result').splitlines()[0][:120]}"
    if m["probe"]:
        return f"{m['server']}: probe {m['probe'][:120]}"
    if m["wrk"]["errors"]:
        return f"{m['server']}: {m['wrk']['errors']} errors under load"
    return None


def ok_rps(m: dict[str, Any]) -> float:
    value: float = m["wrk"]["ok_requests_per_s"]
    return value


def ratio_check(
    model_key: str,
    scenario: str,
    target: str,
    top: dict[str, Any] | None,
    bottom: dict[str, Any] | None,
    value: str,
    minimum: float,
) -> Check:
    """top[value] / bottom[value] >= minimum; value is 'rps' or 'items'."""
    issues = [p for p in (problem(top), problem(bottom)) if p]
    if top is None or bottom is None:
        return Check(target, "; ".join(issues), NOT_APPLICABLE, model=model_key, scenario=scenario)
    if issues:
        return Check.judged(target, "; ".join(issues), False, model=model_key, scenario=scenario)
    a = ok_rps(top) if value == "rps" else float(top["items_per_s"])
    b = ok_rps(bottom) if value == "rps" else float(bottom["items_per_s"])
    ratio = a / b if b > 0 else float("inf")
    unit = "req/s" if value == "rps" else "items/s"
    shown = f"{ratio:.0%}" if minimum < 1 else f"{ratio:.2f}x"
    measured = f"{shown} ({a:,.0f} vs {b:,.0f} {unit})"
    return Check.judged(
        target, measured, ratio >= minimum, model=model_key, scenario=scenario, ratio=ratio
    )


def checks(results: dict[str, Any]) -> list[Check]:
    found: list[Check] = []
    for key, model in results["models"].items():
        ours = {s: find(model, s, "ours") for s in ("S1", "S2", "S3", "S4", "S5")}
        if ours["S1"] is not None:
            found.append(ratio_check(key, "S1", "ours >= 35% of noop requests/s", ours["S1"],
                                     find(model, "S1", "noop"), "rps", 0.35))  # fmt: skip
        for scenario in PEER_SCENARIOS:
            found += peer_checks(key, model, scenario)
        if ours["S3"] is not None:
            found.append(s3_check(key, model, ours["S3"]))
        if ours["S2"] is not None:
            found.append(ratio_check(key, "S2", "ours >= 10x baseline items/s", ours["S2"],
                                     find(model, "S2", "baseline"), "items", 10.0))  # fmt: skip
        if ours["S4"] is not None:
            on = find(model, "S4", "ours-batching")
            found.append(ratio_check(key, "S4", "batching on >= 1.2x batching off requests/s",
                                     on, ours["S4"], "rps", 1.2))  # fmt: skip
            found.append(p99_check(key, on, ours["S4"]))
        if ours["S5"] is not None:
            found.append(ratio_check(key, "S5", "v2 binary infer >= 80% of our npy route items/s",
                                     ours["S5"], ours["S3"], "items", 0.8))  # fmt: skip
    memory = results.get("memory")
    if memory:
        found.append(memory_check(memory))
    return found


def peer_measurements(model: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return [
        m
        for m in model["measurements"]
        if m["scenario"] == scenario and m["server"] not in OWN_SERVERS
    ]


def best_peer(model: dict[str, Any], scenario: str) -> dict[str, Any] | None:
    """The peer that answered the most requests/s without errors, or None."""
    counted = [m for m in peer_measurements(model, scenario) if problem(m) is None]
    return max(counted, key=ok_rps, default=None)


def peer_checks(key: str, model: dict[str, Any], scenario: str) -> list[Check]:
    """Ours against the best peer: PEER_RATIO x its requests/s, and a p99 no worse."""
    ours = find(model, scenario, "ours")
    if ours is None or not peer_measurements(model, scenario):
        return []
    best = best_peer(model, scenario)
    rps_target = f"ours >= {PEER_RATIO:g}x the best peer's requests/s"
    p99_target = "ours p99 <= the best peer's p99"
    if best is None:
        why = "no peer answered right without errors"
        return [
            Check(rps_target, why, NOT_APPLICABLE, model=key, scenario=scenario),
            Check(p99_target, why, NOT_APPLICABLE, model=key, scenario=scenario),
        ]
    rps = ratio_check(key, scenario, rps_target, ours, best, "rps", PEER_RATIO)
    rps = Check(
        rps.target,
        f"{rps.measured}, best peer: {best['server']}",
        rps.status,
        rps.model,
        rps.scenario,
        rps.ratio,
    )
    issue = problem(ours)
    p_ours, p_best = (ours["wrk"] or {}).get("p99_ms"), best["wrk"]["p99_ms"]
    if issue or p_ours is None or p_best is None:
        p99 = Check.judged(p99_target, issue or "no p99", False, model=key, scenario=scenario)
    else:
        p99 = Check.judged(
            p99_target,
            f"{p_ours:.2f} vs {p_best:.2f} ms ({best['server']})",
            p_ours <= p_best,
            model=key,
            scenario=scenario,
            ratio=p_ours / p_best if p_best > 0 else None,
        )
    return [rps, p99]


def peer_rows(results: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """Each server of the peer scenarios, ours first: requests/s, p99, and ours / it."""
    present = [s for s in PEER_SCENARIOS if peer_measurements(model, s)]
    if not present:
        return []
    header = "| server | " + " | ".join(
        f"{s} req/s | {s} p99 ms | ours / it ({s})" for s in present
    )
    rows = [header + " |", "|---|" + "--:|--:|--:|" * len(present)]

    def fastest(server: str) -> float:
        answered = [find(model, s, server) for s in present]
        return max((ok_rps(m) for m in answered if m is not None and not problem(m)), default=0)

    peer_servers = {m["server"] for s in present for m in peer_measurements(model, s)}
    servers = ["ours", *sorted(peer_servers, key=lambda server: -fastest(server))]
    for server in servers:
        cells = []
        for s in present:
            m, ours = find(model, s, server), find(model, s, "ours")
            if m is None or problem(m) is not None:
                reason = "not measured" if m is None else problem(m) or ""
                cells.append(f"n/a | n/a | {reason[:60].replace('|', '/')}")
                continue
            ratio = (
                f"{ok_rps(ours) / ok_rps(m):.2f}x"
                if ours is not None and problem(ours) is None and ok_rps(m) > 0
                else "n/a"
            )
            cells.append(f"{ok_rps(m):,.0f} | {fmt(m['wrk']['p99_ms'], 2)} | {ratio}")
        rows.append(f"| {server_name(results, server)} | " + " | ".join(cells) + " |")
    return rows


def s3_check(key: str, model: dict[str, Any], ours: dict[str, Any]) -> Check:
    target = "ours items/s >= 50% of in-process items/s at batch 64"
    batch = ours["items_per_request"]
    points = [p for p in model["in_process"] if p["batch"] == batch]
    issue = problem(ours)
    if issue or not points:
        return Check.judged(
            target, issue or "no in-process figure", False, model=key, scenario="S3"
        )
    best = max(points, key=lambda p: p["items_per_s"])
    ratio = ours["items_per_s"] / best["items_per_s"]
    measured = (
        f"{ratio:.0%} ({ours['items_per_s']:,.0f} vs {best['items_per_s']:,.0f} items/s, "
        f"in-process best at {best['intra_op_threads']} thread(s))"
    )
    return Check.judged(target, measured, ratio >= 0.5, model=key, scenario="S3", ratio=ratio)


def p99_check(key: str, on: dict[str, Any] | None, off: dict[str, Any]) -> Check:
    target = "batching on p99 <= 2x batching off p99"
    issues = [p for p in (problem(on), problem(off)) if p]
    if on is None:
        return Check(target, "; ".join(issues), NOT_APPLICABLE, model=key, scenario="S4")
    if issues:
        return Check.judged(target, "; ".join(issues), False, model=key, scenario="S4")
    p_on, p_off = on["wrk"]["p99_ms"], off["wrk"]["p99_ms"]
    if p_on is None or p_off is None or p_off <= 0:
        return Check.judged(target, "no p99 in wrk output", False, model=key, scenario="S4")
    ratio = p_on / p_off
    measured = f"{ratio:.2f}x ({p_on:.2f} vs {p_off:.2f} ms)"
    return Check.judged(target, measured, ratio <= 2.0, model=key, scenario="S4", ratio=ratio)


def memory_check(memory: dict[str, Any]) -> Check:
    # The issue's target is per worker ("RSS of a worker"); flatness is judged on the sum over
    # all server processes, which a leak in any of them would raise.
    target = (
        f"max RSS of one server process < {MEMORY_MAX_MB:.0f} MB and slope of the summed RSS "
        f"< {MEMORY_SLOPE_MB_PER_MIN:.0f} MB/min"
    )
    rss = memory.get("rss")
    if rss is None:
        return Check.judged(
            target, memory.get("error", "?"), False, model=memory["model"], scenario="memory"
        )
    measured = (
        f"max {rss['max_single_process_mb']:.1f} MB per process ({rss['max_mb']:.1f} MB summed "
        f"over {rss['processes']}), slope {rss['slope_mb_per_min']:+.2f} MB/min"
    )
    load_errors = memory["load"]["errors"]
    if load_errors:
        measured += f" ({load_errors} errors under load)"
    peak = rss["max_single_process_mb"]
    ok = peak < MEMORY_MAX_MB and abs(rss["slope_mb_per_min"]) < MEMORY_SLOPE_MB_PER_MIN
    return Check.judged(
        target,
        measured,
        ok and not load_errors,
        model=memory["model"],
        scenario="memory",
        ratio=peak,
    )


# --- markdown ----------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def error_text(m: dict[str, Any]) -> str:
    if m["wrk"] is None:
        return "**run failed**"
    w = m["wrk"]
    socket = w["socket_errors"]
    parts = []
    if w["non_2xx"]:
        parts.append(f"**{w['non_2xx']} non-2xx**")
    if any(socket.values()):
        parts.append("**socket " + ", ".join(f"{k} {v}" for k, v in socket.items() if v) + "**")
    return "; ".join(parts) or "0"


def measurement_rows(
    results: dict[str, Any], model: dict[str, Any], scenarios: dict[str, Any]
) -> list[str]:
    rows = [
        "| scenario | server | conns | items/req | requests/s | items/s | p50 ms | p99 ms "
        "| errors | note |",
        "|---|---|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for m in model["measurements"]:
        w = m["wrk"]
        note = ""
        if m["error"]:
            note = m["error"].splitlines()[0][:160]
        elif m["probe"]:
            note = f"probe: {m['probe'][:160]}"
        title = scenarios.get(m["scenario"], {}).get("title", "")
        rows.append(
            f"| {m['scenario']} {title} | {server_name(results, m['server'])} "
            f"| {m['connections']} | {m['items_per_request']} "
            f"| {fmt(w['requests_per_s'] if w else None)} | {fmt(m['items_per_s'])} "
            f"| {fmt(w['p50_ms'] if w else None, 2)} | {fmt(w['p99_ms'] if w else None, 2)} "
            f"| {error_text(m)} | {note.replace('|', '/')} |"
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    machine, options = results["machine"], results["options"]
    lines = [
        "# Benchmark results",
        "",
        "Generated by `bench/http_bench.py`; overwritten on every run. Raw wrk outputs and "
        "server logs: `bench/out/` (not committed).",
        "",
        f"- date: {results['date']}",
        f"- machine: {machine_text(machine)}",
        f"- packages: {packages_text(machine)}",
        f"- load generator: {machine['wrk']}, `-t {options['wrk_threads']}`, `--latency`, "
        f"{options['duration_s']} s per run after a {options['warmup_s']} s warm-up run that "
        "is discarded, on 127.0.0.1. **wrk shares the cores with the server under test**, so "
        "every figure is lower than on a machine with a separate client.",
        f"- command: `{results['command']}` (total {results.get('wall_s', '?')} s)",
        f"- our service ran with **{options['workers']} worker(s)** (`VAE_WORKERS`; the "
        "1-worker baseline of S2 and S4 and the noop app run 1 worker; each peer runs two "
        "cores' worth of workers, replicas or instances, as Servers says). Servers ran one at "
        "a time: each was started, warmed up, measured and stopped (SIGTERM) before the next "
        "one started.",
        "- requests/s counts every answer (wrk's figure); items/s counts 2xx answers only x "
        "items per request. Ratios use 2xx answers only; a run with errors fails its target.",
        "",
        "## Servers",
        "",
    ]
    first = next(iter(results["models"].values()), None)
    if first is not None:
        for label, settings in first["server_settings"].items():
            pretty = ", ".join(f"`{k}={v}`" if k.isupper() else f"{k}: {v}"
                               for k, v in settings.items())  # fmt: skip
            lines.append(f"- **{server_name(results, label)}**: {pretty}")
        lines.append(
            "- **in-process onnxruntime**: `bundle.runtime.OnnxBundle` with the service's "
            "`session_options` (graph optimisation all, inter-op 1, sequential), preprocess -> "
            "encoder -> decoder on mu -> invert, in the harness process with no server running; "
            f"intra-op threads 1 and 2, >= {options['inprocess_seconds']:g} s per point; the "
            "best counts as the ceiling."
        )
        lines.append(
            "- model repositories: each server loads a folder holding only the measured model."
        )
    supported = results.get("batching_supported")
    if supported is False and "S4" in results["scenarios"]:
        lines += [
            "",
            "> **Dynamic batching is not implemented by the service measured here**: "
            "`service.settings.ServiceSettings` has no `dynamic_batching` field and ignores "
            "unknown `VAE_*` variables, so the 'batching on' server ran with batching off "
            f"(env {', '.join(f'{k}={v}' for k, v in results['batching_env'].items())}).",
        ]
    failed = [
        m for model in results["models"].values() for m in model["measurements"] if m["error"]
    ]
    if failed:
        lines += ["", "## Problems", ""]
        for m in failed:
            detail = "\n".join("  > " + line for line in m["error"].strip().splitlines()[:12])
            lines += [f"- **{m['model']} {m['scenario']} {m['server']}**:", "", detail, ""]
    lines.append("")
    for key, model in results["models"].items():
        lines += [
            f"## Model `{key}`: {model['name']} ({model['features']} inputs, `{model['bundle']}`)",
            "",
            *measurement_rows(results, model, results["scenarios"]),
            "",
        ]
        against = peer_rows(results, model)
        if against:
            lines += [
                "Against the peers (single-item JSON reconstruct; each peer in its own "
                "protocol, checked for the right answer first):",
                "",
                *against,
                "",
            ]
        lines += [
            "In-process onnxruntime, reconstruct (no HTTP):",
            "",
            "| batch | intra-op threads | items/s | ms per call |",
            "|--:|--:|--:|--:|",
        ]
        for p in model["in_process"]:
            lines.append(
                f"| {p['batch']} | {p['intra_op_threads']} | {fmt(p['items_per_s'])} "
                f"| {fmt(p['mean_call_ms'], 3)} |"
            )
        starts = ", ".join(f"{k} {v} s" for k, v in model["server_start_s"].items())
        lines += ["", f"Start-up to ready: {starts}.", ""]
    lines += [
        "## Targets",
        "",
        "| model | scenario | target | measured | result |",
        "|---|---|---|---|---|",
    ]
    for c in results["checks"]:
        lines.append(
            f"| {c['model']} | {c['scenario']} | {c['target']} | "
            f"{c['measured'].replace('|', '/')} | **{c['status']}** |"
        )
    lines.append("")
    memory = results.get("memory")
    if memory:
        lines += ["## Memory", ""]
        rss = memory.get("rss")
        if rss is None:
            lines.append(f"The memory run failed: {memory.get('error')}")
        else:
            load = memory["load"]
            lines += [
                f"Our service (model `{memory['model']}`, {memory['workers']} worker(s)) under "
                f"S1-like load (single-item JSON /reconstruct, 8 connections) for "
                f"{memory['seconds']} s: {load['requests_per_s']:,.0f} requests/s, "
                f"{load['errors']} errors. VmRSS from /proc every second, summed over the "
                f"server process and its children ({rss['processes']} process(es)); "
                f"{rss['samples']} samples.",
                "",
                "| first MB | max MB | last MB | largest single process MB | max PSS sum MB "
                "| slope MB/min |",
                "|--:|--:|--:|--:|--:|--:|",
                f"| {rss['first_mb']:.1f} | {rss['max_mb']:.1f} | {rss['last_mb']:.1f} "
                f"| {rss['max_single_process_mb']:.1f} | {fmt(rss.get('max_pss_mb'))} "
                f"| {rss['slope_mb_per_min']:+.2f} |",
                "",
                "The target is per worker (the largest single process); flatness is judged "
                "on the VmRSS sum over all server processes. That sum counts the pages workers "
                "share (libraries, the interpreter) once per process, so the PSS sum (shared "
                "pages split between processes) is the better total.",
                "",
            ]
    # The soak (make soak) runs on its own; RESULTS.md carries its last figures, if any.
    from bench.soak.report import results_section

    lines += [*results_section(), "![results](results.png)", ""]
    return "\n".join(lines)


# --- plot -----------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"].values())
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(9 * len(models), 7), squeeze=False)
    own = ["ours", "ours-batching", "baseline", "noop", "in-process"]
    colors = dict(zip(own, ["#1f77b4", "#17becf", "#d62728", "#7f7f7f", "#2ca02c"], strict=True))
    peer_keys = sorted(
        {m["server"] for model in models for m in model["measurements"]} - OWN_SERVERS
    )
    palette = ["#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#393b79", "#637939"]
    colors.update({key: palette[i % len(palette)] for i, key in enumerate(peer_keys)})
    order = [*own, *peer_keys]
    for ax, model in zip(axes[0], models, strict=True):
        scenarios = sorted({m["scenario"] for m in model["measurements"]})
        values: dict[tuple[str, str], float] = {}
        for m in model["measurements"]:
            if m["items_per_s"]:
                values[(m["scenario"], m["server"])] = m["items_per_s"]
        for scenario in scenarios:  # the compute ceiling next to each scenario
            batch = next(m["items_per_request"] for m in model["measurements"]
                         if m["scenario"] == scenario)  # fmt: skip
            points = [p["items_per_s"] for p in model["in_process"] if p["batch"] == batch]
            if points and scenario != "S4":
                values[(scenario, "in-process")] = max(points)
        width = 0.8 / max(1, max(sum(1 for k in values if k[0] == s) for s in scenarios))
        labelled: set[str] = set()
        for j, scenario in enumerate(scenarios):  # each group holds only the bars it has
            present = [server for server in order if (scenario, server) in values]
            for i, server in enumerate(present):
                x = j + (i - (len(present) - 1) / 2) * width
                y = values[(scenario, server)]
                label = server_name(results, server) if server not in labelled else None
                labelled.add(server)
                ax.bar(x, y, width, label=label, color=colors[server])
                ax.annotate(f"{y:,.0f}", (x, y), ha="center", va="bottom", fontsize=7,
                            rotation=90, xytext=(0, 2), textcoords="offset points")  # fmt: skip
        positive = [v for v in values.values() if v > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_yscale("log")
            ax.set_ylim(min(positive) / 2, max(positive) * 6)
        elif positive:
            ax.set_ylim(0, max(positive) * 1.3)
        titles = results["scenarios"]
        ax.set_xticks(range(len(scenarios)))
        ax.set_xticklabels(
            [f"{s}\n{titles.get(s, {}).get('title', '').replace(' /', chr(10) + '/')}"
             for s in scenarios],
            fontsize=8,
        )  # fmt: skip
        ax.set_ylabel("items/s, 2xx only (= requests/s for single items)")
        ax.set_title(f"{model['name']} ({model['features']} inputs)")
        handles, names = ax.get_legend_handles_labels()
        rank = {server_name(results, server): i for i, server in enumerate(order)}
        ranked = sorted(zip(handles, names, strict=True), key=lambda pair: rank[pair[1]])
        ax.legend(
            [h for h, _ in ranked],
            [n for _, n in ranked],
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=2,
        )  # below the axes: with the peers, a legend inside hides the bars
        ax.grid(axis="y", alpha=0.3)
    workers = results["options"]["workers"]
    fig.suptitle(
        f"vae-serve ({workers} worker(s)) vs the peers and the ceilings; wrk shares "
        f"{results['machine']['nproc']} cores with the server"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
