"""The issues' targets, each a Check, judged on the seed means of the results (quality.json's
dict); a target whose tasks did not run is not judged."""

from __future__ import annotations

from typing import Any

from bench.quality.config import DIGITS_HOLDOUTS, MNIST_HOLDOUTS, PEER_NAMES
from bench.quality.figures import (
    OURS,
    Spread,
    auroc_spread,
    best_peer,
    field_spread,
    group_means,
    likelihood_runs,
    seed_runs,
    seeds_text,
    spread,
)
from bench.shared import Check

# Issue 22, on mnist-5k (default settings, 2 cores):
MNIST_ELBO_GAIN = 0.03  # held-out -ELBO at least 3% below the reference at equal wall time
MNIST_AUROC_FLOOR = 0.80  # every held-out digit, besides >= the best peer on it
MNIST_MEAN_BEFORE = 0.828  # the mean over the ten held-out digits before issue 22: beat it
# Issue 22, on 8x8 digits: no worse than before it, within seed noise. The figures before were
# one seed's (seed 0); three seeds' means move by a few thousandths of AUROC and a few
# hundredths of a nat between runs, hence the tolerances.
DIGITS_MEAN_BEFORE = 0.968  # mean AUROC over digits:holdout=0..9
DIGITS_MEAN_TOLERANCE = 0.005
DIGITS_ELBO_BEFORE = 23.64  # held-out -ELBO on digits, nats
DIGITS_ELBO_TOLERANCE = 0.01  # relative: at most 1% above it
# Issue 22: breast-cancer within 0.002 of the best peer, averaged over 5 splits (seeds 0-4).
BREAST_CANCER_SLACK = 0.002
# Issue 9, kept:
AUROC_SLACK = 0.02  # no digits K more than this below the best peer at that K
FPR_TOLERANCE = 0.015  # |FPR at the threshold - what the percentile promised|
TRAINING_LIMIT_S = 120.0  # each default model's whole `vae-train` run
# quality.json's checks
CHECK_KEYS = ("target", "measured", "ok")


def _seeds(results: dict[str, Any], task: str) -> str:
    return f"seeds {seeds_text(list(seed_runs(results, task)))}"


def _vs_best(results: dict[str, Any], task: str) -> tuple[Spread, tuple[str, Spread]] | None:
    ours, best = auroc_spread(results, task, OURS), best_peer(results, task)
    return None if ours is None or best is None else (ours, best)


def _breast_cancer(results: dict[str, Any]) -> list[Check]:
    found = _vs_best(results, "breast-cancer")
    if found is None:
        return []
    ours, (peer, best) = found
    return [
        Check.judged(
            f"breast-cancer AUROC: ours at least the best peer's - {BREAST_CANCER_SLACK} "
            "(means over seeds)",
            f"{ours.text(4)} vs {best.text(4)} ({peer}), {ours.mean - best.mean:+.4f}; "
            f"{_seeds(results, 'breast-cancer')}",
            ours.mean >= best.mean - BREAST_CANCER_SLACK - 1e-12,
        )
    ]


def _digits(results: dict[str, Any]) -> list[Check]:
    found: list[Check] = []
    means = group_means(results, DIGITS_HOLDOUTS)
    ours = None if means is None else means[OURS]
    if means is not None and ours is not None:
        floor = DIGITS_MEAN_BEFORE - DIGITS_MEAN_TOLERANCE
        found.append(
            Check.judged(
                f"digits:holdout=0..9 mean AUROC no worse than before issue 22 "
                f"({DIGITS_MEAN_BEFORE}, within {DIGITS_MEAN_TOLERANCE}: >= {floor:.3f})",
                f"{ours.text(4)}; {_seeds(results, DIGITS_HOLDOUTS[0])}",
                ours.mean >= floor - 1e-12,
            )
        )
        peers = [(p, means[p]) for p in PEER_NAMES]
        known = [(p, s) for p, s in peers if s is not None]
        if known:
            peer, best = max(known, key=lambda item: item[1].mean)
            found.append(
                Check.judged(
                    "digits:holdout=0..9 mean AUROC: ours > best peer's mean",
                    f"{ours.text(4)} vs {best.text(4)} ({peer})",
                    ours.mean > best.mean,
                )
            )
    gaps = []
    for task in DIGITS_HOLDOUTS:
        pair = _vs_best(results, task)
        if pair is not None:
            gaps.append((pair[0].mean - pair[1][1].mean, task))
    if gaps:
        worst = min(gaps)
        found.append(
            Check.judged(
                f"no digits:holdout=K more than {AUROC_SLACK} below the best peer at that K "
                "(means over seeds)",
                f"worst: {worst[1]} at {worst[0]:+.4f}",
                worst[0] >= -AUROC_SLACK,
            )
        )
    return found


def _mnist(results: dict[str, Any]) -> list[Check]:
    found: list[Check] = []
    for task in MNIST_HOLDOUTS:
        pair = _vs_best(results, task)
        if pair is None:
            continue
        ours, (peer, best) = pair
        found.append(
            Check.judged(
                f"{task} AUROC >= {MNIST_AUROC_FLOOR:.2f} and >= the best peer's (means over "
                "seeds)",
                f"{ours.text(4)} vs {best.text(4)} ({peer}); {_seeds(results, task)}",
                ours.mean >= MNIST_AUROC_FLOOR and ours.mean >= best.mean,
            )
        )
    means = group_means(results, MNIST_HOLDOUTS)
    ours_mean = None if means is None else means[OURS]
    if ours_mean is not None:
        found.append(
            Check.judged(
                f"mnist-5k:holdout=0..9 mean AUROC above before issue 22's ({MNIST_MEAN_BEFORE})",
                f"{ours_mean.text(4)}; {_seeds(results, MNIST_HOLDOUTS[0])}",
                ours_mean.mean > MNIST_MEAN_BEFORE,
            )
        )
    return found


def _elbo(results: dict[str, Any], task: str) -> tuple[Spread, Spread, str] | None:
    runs = likelihood_runs(results, task)
    ours = spread([run["ours"]["neg_elbo"] for run in runs.values()])
    reference = spread([run["reference"]["heldout"]["neg_elbo"] for run in runs.values()])
    if ours is None or reference is None:
        return None
    return ours, reference, f"seeds {seeds_text(list(runs))}"


def _likelihood(results: dict[str, Any]) -> list[Check]:
    found: list[Check] = []
    digits = _elbo(results, "digits")
    if digits is not None:
        ours, reference, seeds = digits
        ceiling = DIGITS_ELBO_BEFORE * (1 + DIGITS_ELBO_TOLERANCE)
        found.append(
            Check.judged(
                f"digits held-out -ELBO no worse than before issue 22 ({DIGITS_ELBO_BEFORE} "
                f"nats, within {DIGITS_ELBO_TOLERANCE:.0%}: <= {ceiling:.2f})",
                f"{ours.text(2)} nats (reference at equal CPU time {reference.text(2)}); {seeds}",
                ours.mean <= ceiling,
            )
        )
    mnist = _elbo(results, "mnist-5k")
    if mnist is not None:
        ours, reference, seeds = mnist
        found.append(
            Check.judged(
                f"mnist-5k held-out -ELBO at least {MNIST_ELBO_GAIN:.0%} below the reference "
                "recipe's at equal wall time (means over seeds)",
                f"{ours.text(2)} vs {reference.text(2)} nats "
                f"({ours.mean / reference.mean - 1:+.1%}); {seeds}",
                ours.mean <= (1 - MNIST_ELBO_GAIN) * reference.mean,
            )
        )
    return found


def _fpr(results: dict[str, Any], task: str) -> Check | None:
    runs = list(seed_runs(results, task).values())
    if not runs:
        return None
    scores = [run["ours"]["scores"][run["ours"]["default_score"]] for run in runs]
    promised = 1 - scores[0]["percentile"] / 100
    fpr = spread([score["test_fpr"] for score in scores])
    if fpr is None:
        return None
    items = sorted({int(score["n_test_normal"]) for score in scores})
    return Check.judged(
        f"{task}: FPR at the threshold within {FPR_TOLERANCE * 100:g} pp of {promised:.0%} "
        "(mean over seeds)",
        f"{fpr.text(2, 100, '%')} of {'-'.join(str(n) for n in items)} held-out normal items; "
        f"{_seeds(results, task)}",
        abs(fpr.mean - promised) <= FPR_TOLERANCE + 1e-12,
    )


def _training_time(results: dict[str, Any], task: str) -> Check | None:
    cpu = field_spread(results, task, lambda run: run["ours"]["run_cpu_seconds"])
    wall = field_spread(results, task, lambda run: run["ours"]["run_seconds"])
    if cpu is None or wall is None:
        return None
    if task == "mnist-5k":
        # Issue 22: "training under 2 minutes" on 2 cores, in wall seconds as a user waits.
        return Check.judged(
            f"mnist-5k: default model trains in under {TRAINING_LIMIT_S:.0f} s wall "
            "(mean over seeds)",
            f"{wall.text(1)} s wall ({cpu.text(1)} CPU s)",
            wall.mean < TRAINING_LIMIT_S,
        )
    # CPU seconds of the whole run on one thread: what it takes on an idle core of this
    # machine. The wall clock here also counts whatever else the shared machine ran.
    return Check.judged(
        f"{task}: default model trains in under {TRAINING_LIMIT_S:.0f} s (mean over seeds)",
        f"{cpu.text(1)} CPU s ({wall.text(1)} s wall)",
        cpu.mean < TRAINING_LIMIT_S,
    )


def checks(results: dict[str, Any]) -> list[Check]:
    found = [
        *_mnist(results),
        *_breast_cancer(results),
        *_digits(results),
        *_likelihood(results),
    ]
    for task in results["tasks"]:
        fpr = _fpr(results, task)
        if fpr is not None:
            found.append(fpr)
    for task in results["tasks"]:
        timing = _training_time(results, task)
        if timing is not None:
            found.append(timing)
    return found
