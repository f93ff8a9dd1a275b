"""bench/quality/'s pure parts: --tasks and --seeds, the means and ranges over seeds, the
targets judged on a hand-made results dict, and the reference recipe's wall-clock budget."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from bench.quality.cli import parse_args
from bench.quality.config import (
    ALL_TASKS,
    BREAST_CANCER_SEEDS,
    DEFAULT_SEEDS,
    DIGITS_HOLDOUTS,
    MNIST_HOLDOUTS,
    TASK_GROUPS,
    parse_seeds,
    parse_tasks,
    task_test_fraction,
)
from bench.quality.figures import group_spread, normalise, spread
from bench.quality.merge import merge
from bench.quality.reference import training_seconds
from bench.quality.targets import checks
from bench.reference_vae import train_reference


def test_task_groups_and_names() -> None:
    assert parse_tasks("mnist") == ["mnist-5k", *MNIST_HOLDOUTS]
    assert parse_tasks("digits") == ["digits", *DIGITS_HOLDOUTS]  # the group wins
    assert parse_tasks("=digits") == ["digits"]  # the task alone
    assert parse_tasks("tables")[0] == "breast-cancer"
    assert "wine:holdout=2" in parse_tasks("tables")
    assert "iris:holdout=0" in parse_tasks("tables")
    assert parse_tasks("all") == ALL_TASKS == TASK_GROUPS["all"]
    assert len(ALL_TASKS) == len(set(ALL_TASKS)) == 1 + 3 + 3 + 11 + 11
    # order as given, each task once
    assert parse_tasks("iris:holdout=1, likelihood,digits") == [
        "iris:holdout=1",
        "digits",
        "mnist-5k",
        *DIGITS_HOLDOUTS,
    ]
    for bad in ("", "mnist-6k", "=tables", "digits:holdout=10"):
        with pytest.raises(ValueError, match="task"):
            parse_tasks(bad)
    assert task_test_fraction("mnist-5k") == 0.2
    assert task_test_fraction("mnist-5k:holdout=3") == task_test_fraction("digits") == 0.4


def test_seeds() -> None:
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3, 0-1,1") == [3, 0, 1]
    for bad in ("", "a", "2-0", "-1", "1.5"):
        with pytest.raises(ValueError, match="seed"):
            parse_seeds(bad)


def test_cli_seeds_and_breast_cancer() -> None:
    default = parse_args(["--tasks", "tables"])
    assert default.seeds == DEFAULT_SEEDS
    assert default.seeds_for("breast-cancer") == BREAST_CANCER_SEEDS
    assert default.seeds_for("wine:holdout=0") == DEFAULT_SEEDS
    narrowed = parse_args(["--seeds", "1,2"])
    assert narrowed.seeds_for("breast-cancer") == narrowed.seeds_for("mnist-5k") == [1, 2]
    single = parse_args(["--seed", "7"])
    assert single.seeds_for("breast-cancer") == single.seeds_for("digits") == [7]
    for bad in (["--seed", "1", "--seeds", "1"], ["--seeds", "x"], ["--tasks", "nope"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_spread_is_mean_and_range() -> None:
    figure = spread([0.9, 0.8, 1.0])
    assert figure is not None
    assert (figure.low, figure.high, figure.n) == (0.8, 1.0, 3)
    assert figure.mean == pytest.approx(0.9)
    assert figure.text() == "0.900 (0.800..1.000)"
    one = spread([0.5])
    assert one is not None
    assert one.text() == "0.500"
    assert spread([]) is None
    assert spread([0.5, None]) is None  # a seed without the figure: no mean over the others


# A hand-made results dict: quality.json's shape with only what the targets read.


def _run(ours: float | None, peers: dict[str, float], seconds: float = 30.0) -> dict[str, Any]:
    score: dict[str, Any] = {"percentile": 99.0, "test_fpr": 0.01, "n_test_normal": 400}
    if ours is not None:
        score["auroc"] = ours
    return {
        "ours": {
            "default_score": "recon_complexity",
            "scores": {"recon_complexity": score},
            "run_cpu_seconds": seconds,
            "run_seconds": seconds + 5,
        },
        "peers": {name: {"auroc": value} for name, value in peers.items()},
    }


def _results(
    *, mnist_ours: float, bc_ours: list[float], mnist_elbo: float, mnist_wall: float = 90.0
) -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for task in MNIST_HOLDOUTS:
        tasks[task] = {
            "seeds": {
                str(s): _run(mnist_ours + 0.01 * (s - 1), {"PyOD AutoEncoder": 0.75 + 0.01 * s})
                for s in range(3)
            }
        }
    tasks["mnist-5k"] = {"seeds": {str(s): _run(None, {}, mnist_wall) for s in range(3)}}
    tasks["breast-cancer"] = {
        "seeds": {
            str(s): _run(value, {"PyOD VAE": 0.960, "PyOD PCA": 0.950})
            for s, value in enumerate(bc_ours)
        }
    }
    likelihood = {
        "mnist-5k": {
            "seeds": {
                str(s): {
                    "ours": {"neg_elbo": mnist_elbo + s},
                    "reference": {"heldout": {"neg_elbo": 100.0 + s}},
                }
                for s in range(3)
            }
        }
    }
    return {"seeds": [0, 1, 2], "tasks": tasks, "likelihood": likelihood}


def _verdicts(results: dict[str, Any]) -> dict[str, bool]:
    return {c.target: c.ok for c in checks(results)}


def _one(verdicts: dict[str, bool], start: str) -> bool:
    found = [ok for target, ok in verdicts.items() if target.startswith(start)]
    assert len(found) == 1, (start, list(verdicts))
    return found[0]


def test_targets_pass_on_good_results() -> None:
    results = _results(mnist_ours=0.85, bc_ours=[0.96, 0.958, 0.959, 0.961, 0.957], mnist_elbo=96)
    verdicts = _verdicts(results)
    assert all(verdicts.values()), verdicts
    # one row per held-out digit, the mean, the -ELBO, breast-cancer; FPR and time per task
    assert _one(verdicts, "mnist-5k:holdout=3 AUROC")
    assert _one(verdicts, "mnist-5k:holdout=0..9 mean AUROC")
    assert _one(verdicts, "mnist-5k held-out -ELBO")
    assert _one(verdicts, "mnist-5k: default model trains in under 120 s wall")
    assert _one(verdicts, "breast-cancer AUROC")
    assert sum(t.endswith("(mean over seeds)") and "FPR" in t for t in verdicts) == 12
    # digits did not run: its targets are not judged (neither pass nor fail)
    assert not any(t.startswith("digits") for t in verdicts)


def test_targets_fail_where_the_issue_says() -> None:
    # mnist AUROC mean 0.82: above every peer and 0.80, below before issue 22's 0.828
    verdicts = _verdicts(_results(mnist_ours=0.82, bc_ours=[0.958] * 5, mnist_elbo=97.5))
    assert _one(verdicts, "mnist-5k:holdout=5 AUROC")
    assert not _one(verdicts, "mnist-5k:holdout=0..9 mean AUROC")
    # 98.5 / 101 - 1 = -2.5%: not 3% below the reference
    assert not _one(verdicts, "mnist-5k held-out -ELBO")
    # breast-cancer 0.958 vs the best peer's 0.960: exactly 0.002 below, still within
    assert _one(verdicts, "breast-cancer AUROC")
    verdicts = _verdicts(
        _results(mnist_ours=0.79, bc_ours=[0.957] * 5, mnist_elbo=90, mnist_wall=130)
    )
    assert not _one(verdicts, "mnist-5k:holdout=3 AUROC")  # below 0.80
    assert not _one(verdicts, "breast-cancer AUROC")  # 0.003 below
    assert not _one(verdicts, "mnist-5k: default model trains in under 120 s wall")  # 135 s


def test_group_mean_needs_every_task_and_seed() -> None:
    results = _results(mnist_ours=0.85, bc_ours=[0.96] * 5, mnist_elbo=96)
    figure = group_spread(results, MNIST_HOLDOUTS, "ours")
    assert figure is not None
    assert figure.n == 3
    assert (figure.low, figure.mean, figure.high) == pytest.approx((0.84, 0.85, 0.86))
    del results["tasks"][MNIST_HOLDOUTS[4]]["seeds"]["2"]
    assert group_spread(results, MNIST_HOLDOUTS, "ours") is None


def test_normalise_reads_the_one_seed_results() -> None:
    old = {
        "seed": 0,
        "tasks": {"digits": _run(None, {})},
        "likelihood": {
            "ours": {"neg_elbo": 23.6},
            "reference": {"heldout": {"neg_elbo": 23.7}, "budget_cpu_seconds": 30.0},
        },
    }
    new = normalise(old)
    assert new["seeds"] == [0]
    assert list(new["tasks"]["digits"]["seeds"]) == ["0"]
    entry = new["likelihood"]["digits"]["seeds"]["0"]
    assert entry["reference"]["budget"] == {"kind": "cpu", "seconds": 30.0}
    assert _one(_verdicts(new), "digits held-out -ELBO")


def test_reference_stops_at_its_wall_budget() -> None:
    torch.manual_seed(0)
    x = torch.rand(512, 16)
    budget = 0.3
    run = train_reference(x[:448], x[448:], budget_wall_s=budget, iwae_samples=2, seed=0)
    assert run.steps > 0
    # It stops at the first step past its allowance: a step here takes ~1 ms, so a second of
    # slack only ever matters on a machine too loaded to say anything.
    assert budget <= run.wall_seconds < budget + 1.0
    assert set(run.heldout) >= {"neg_elbo", "iwae_nll"}
    with pytest.raises(ValueError, match="budget"):
        train_reference(x, x, iwae_samples=2, seed=0)


def test_reference_budget_is_our_training_time() -> None:
    image: dict[str, Any] = {
        "search_cpu_seconds": 50.0,
        "train_seconds": 60.0,
        "search_seconds": 61.0,
        "candidates": ["mlp 90.1"],
    }
    assert training_seconds(image, "cpu") == 50.0
    assert training_seconds(image, "wall") == 60.0  # the one loop
    table = dict(image, candidates=["mlp 25.2", "linear 13.4"])
    assert training_seconds(table, "wall") == 61.0  # the whole search


def _part(results: dict[str, Any], seeds: set[str], tasks: set[str]) -> dict[str, Any]:
    """The share of a results dict that a run of those seeds and tasks would have written."""

    def keep(section: dict[str, Any]) -> dict[str, Any]:
        return {
            task: {"seeds": {s: r for s, r in entry["seeds"].items() if s in seeds}}
            for task, entry in section.items()
            if task in tasks and any(s in seeds for s in entry["seeds"])
        }

    return {
        "seeds": sorted(int(s) for s in seeds),
        "date": f"2026-12-0{min(seeds)}",
        "command": f"python -m bench.quality --seeds {','.join(sorted(seeds))}",
        "total_seconds": 10.0 * len(seeds),
        "threads": 1,
        "validation_fraction": 0.15,
        "machine": {"cpus": 2},
        "tasks": keep(results["tasks"]),
        "likelihood": keep(results["likelihood"]),
    }


def test_merged_parts_judge_as_the_whole_run() -> None:
    whole = _results(mnist_ours=0.82, bc_ours=[0.96, 0.958, 0.959, 0.961, 0.957], mnist_elbo=97)
    mnist = {"mnist-5k", *MNIST_HOLDOUTS}
    parts = [
        _part(whole, {"0"}, mnist),
        _part(whole, {"1", "2"}, mnist),
        _part(whole, {"0", "1", "2", "3", "4"}, {"breast-cancer"}),
    ]
    merged = merge(parts, "python -m bench.quality --merge a b c")
    assert merged["seeds"] == [0, 1, 2]
    assert merged["breast_cancer_seeds"] == [0, 1, 2, 3, 4]
    assert merged["total_seconds"] == 10 + 20 + 50
    assert [p["command"] for p in merged["parts"]] == [p["command"] for p in parts]
    assert len(merged["checks"]) == len(checks(whole))
    assert {c["target"]: c["ok"] for c in merged["checks"]} == _verdicts(whole)
    assert list(merged["tasks"])[:2] == ["breast-cancer", "mnist-5k"]  # the benchmark's order
    summary = merged["tasks"]["mnist-5k:holdout=3"]["summary"]["auroc"]["ours"]
    assert summary["n"] == 3
    assert summary["mean"] == pytest.approx(0.82)


def test_merge_refuses_a_seed_run_twice_and_mixed_threads() -> None:
    whole = _results(mnist_ours=0.85, bc_ours=[0.96] * 5, mnist_elbo=96)
    one = _part(whole, {"0", "1"}, {"mnist-5k:holdout=1"})
    other = _part(whole, {"1"}, {"mnist-5k:holdout=1"})
    with pytest.raises(ValueError, match="holdout=1 seed 1 is in more than one part"):
        merge([one, other], "merge")
    other = _part(whole, {"2"}, {"mnist-5k:holdout=1"})
    other["threads"] = 2
    with pytest.raises(ValueError, match="different torch threads"):
        merge([one, other], "merge")
    with pytest.raises(ValueError, match="nothing"):
        merge([], "merge")
