"""A worker's CPU time per request over real HTTP: what `make bench`'s requests/s come from,
without wrk's share of the cores or the run-to-run noise of a throughput figure.

    .venv/bin/python -m bench.server_cpu [--model default|784] [--connections 8] \
        [--seconds 8] [--rounds 2] [--route reconstruct|anomaly-score] [VAE_SETTING=value ...]

One `vae-serve` worker (VAE_WORKERS=1, every other setting its default unless given) answers
make bench's S1 request (one item as JSON, `/reconstruct`; `--route anomaly-score` scores it)
from wrk on 127.0.0.1; the figure is the worker's user + system CPU seconds (/proc) over the
requests answered, after a warm-up.
Several settings may be compared in one sitting: `A=1 vs A=2` runs each group in turn, round
after round, so drift on the machine touches them alike (`vs` alone: the defaults).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench import servers, wrk
from bench.bodies import JSON, json_inputs
from bench.models import load_model
from bench.shared import ROOT, VENV_BIN

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def measure(
    model_key: str,
    env: dict[str, str],
    connections: int,
    seconds: int,
    folder: Path,
    route: str = "reconstruct",
) -> tuple[float, float]:
    """(worker CPU us per request, requests/s) for one setting."""
    model = load_model(model_key)
    body = folder / "body.json"
    body.write_bytes(json_inputs(model.rows[:1]))
    lua = wrk.write_lua(folder / "s1.lua", body, {"Content-Type": JSON, "Accept": JSON})
    spec = servers.ServerSpec(
        "ours",
        [str(VENV_BIN / "vae-serve")],
        {
            "VAE_MODEL_REPOSITORY": str(model.repository),
            "VAE_HOST": "127.0.0.1",
            "VAE_PORT": "{port}",
            "VAE_WORKERS": "1",
            **env,
        },
        "GET",
        "/readyz",
    )
    with servers.running(spec, folder, ROOT) as server:
        url = f"{server.base_url}/{route}"
        wrk.run(url, lua, duration_s=2, connections=connections, threads=1)  # warm-up
        before = cpu_seconds(server.pid)
        result = wrk.run(url, lua, duration_s=seconds, connections=connections, threads=1)
        used = cpu_seconds(server.pid) - before
    return used / result.requests * 1e6, result.requests_per_s


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_cpu", description=__doc__)
    parser.add_argument("--model", default="default", choices=("default", "784"))
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--route",
        default="reconstruct",
        choices=("reconstruct", "anomaly-score"),
        help="the single-item JSON route (anomaly-score is what monitoring records)",
    )
    parser.add_argument("settings", nargs="*", help="VAE_X=value ..., groups split by vs")
    options = parser.parse_args(argv)
    groups: list[list[str]] = [[]]
    for item in options.settings:
        if item == "vs":
            groups.append([])
        else:
            groups[-1].append(item)
    variants = [dict(item.split("=", 1) for item in group) for group in groups]
    with tempfile.TemporaryDirectory(prefix="server-cpu-") as folder:
        for round_number in range(1, options.rounds + 1):
            for env in variants:
                us, rate = measure(
                    options.model,
                    env,
                    options.connections,
                    options.seconds,
                    Path(folder),
                    options.route,
                )
                label = " ".join(f"{k}={v}" for k, v in env.items()) or "defaults"
                print(
                    f"round {round_number} model {options.model} /{options.route} "
                    f"c={options.connections} "
                    f"{label}: {us:.1f} us of worker CPU per request ({rate:,.0f} req/s)",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
