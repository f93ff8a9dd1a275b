"""One served model version's monitor: its reference (bundle.reference), its window of scored
items (every worker's, service.monitoring.shared) and the report GET
/models/{name}/monitoring answers (service.monitoring.assess).

The request path only keeps its items' bytes aside (`record`, `remember`); the tests run when a
report is asked for, on at most the window's items and the reference's rows.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from bundle.reference import ReferenceData, ReferenceError, read_reference
from bundle.runtime import OnnxBundle
from service.monitoring.assess import (
    RatePromise,
    anomaly_rate,
    input_drift,
    score_drift,
    score_histogram,
)
from service.monitoring.feedback import FeedbackRing, feedback_figures, label_keys, request_keys
from service.monitoring.shared import WindowHome
from service.monitoring.window import merge_windows

log = logging.getLogger("vae_service.monitoring")

# The fixed periods the report gives the anomaly rate of (from the feedback rings, which keep
# VAE_MONITOR_FEEDBACK_ITEMS items a worker: `complete` says whether they reach back so far).
TIME_WINDOWS_S = (300, 3600)


@dataclass(frozen=True)
class MonitorSettings:
    window: int  # items per window (VAE_MONITOR_WINDOW)
    alpha: float  # each verdict's false-alarm rate on unshifted traffic (VAE_MONITOR_ALPHA)
    min_items: int  # fewer items than this get no verdict yet (VAE_MONITOR_MIN_ITEMS)
    # A report is reused for this long (VAE_MONITOR_REPORT_INTERVAL_S): its cost grows with the
    # window and the columns (5 ms for a full window of a 30-feature table, bench.monitor_cost),
    # so callers asking in a loop get one computed a second per model version and worker.
    report_interval_s: float = 1.0
    feedback_items: int = 10_000  # scored items remembered for labels (VAE_MONITOR_FEEDBACK_ITEMS)


class ModelMonitor:
    def __init__(
        self,
        name: str,
        version: str,
        score_type: str,
        promise: RatePromise,
        reference: ReferenceData | None,
        latent_dim: int,
        features: int | None,
        settings: MonitorSettings,
        feature_names: list[str] | None = None,
    ) -> None:
        self.name, self.version, self.score_type = name, version, score_type
        self.promise = promise
        self.reference = reference
        self.settings = settings
        self.features = (
            features if reference is not None and reference.features is not None else None
        )
        # Names only when there is one for each monitored column (a bundle's own promise).
        self.feature_names = (
            feature_names
            if self.features is not None
            and feature_names is not None
            and len(feature_names) == self.features
            else None
        )
        self.home = WindowHome(
            name,
            version,
            settings.window,
            latent_dim,
            self.features,
            settings.feedback_items,
            threshold=promise.threshold,
        )
        self.errors = 0  # flushes that failed (logged, never a request's failure)
        # What the request path calls, the rings' own methods (a frame less on every scored
        # request, service.monitoring.kept_aside); neither raises, a batch that does not fit
        # is counted in the ring's errors and logged:
        # record(scores, latent_mu, x_model): a scored batch of the monitored score type
        # into the drift window (x_model kept only for a table model whose reference has its
        # features); both rings flag items above the calibrated threshold themselves;
        self.record = self.home.window.record
        # remember(request_id, scores): a scoring request's items, for labels later.
        self.remember = self.home.feedback.remember
        self._last: tuple[float, dict[str, Any]] | None = None
        self._reporting = threading.Lock()  # one report at a time; the others reuse it

    def label(self, labels: list[tuple[str, int, bool]]) -> tuple[int, list[int]]:
        """Labels (request id, item, anomaly) for items some worker scored and remembers:
        how many were found, and the indexes of those that were not (too old, never scored by
        this model version, or scored by another worker moments ago and not written yet)."""
        keys, anomaly = label_keys(labels)
        found = np.zeros(len(keys), dtype=np.bool_)
        for ring in self.home.feedback_rings():
            found |= ring.label(keys, anomaly)
        self._last = None  # the next report shows them
        unknown_keys = set(keys[~found].tolist())
        bases = request_keys([request_id for request_id, _, _ in labels]).tolist()
        unknown = [
            i for i, (base, (_, item, _)) in enumerate(zip(bases, labels, strict=True))
            if (base | item) in unknown_keys
        ]  # fmt: skip
        return len(labels) - len(unknown), unknown

    def report(self) -> dict[str, Any]:
        """The window's verdicts against the reference, over every worker's items; computed
        at most once every `report_interval_s`."""
        with self._reporting:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.settings.report_interval_s:
                return self._last[1]
            report = self._compute()
            self._last = (time.monotonic(), report)
            return report

    def _compute(self) -> dict[str, Any]:
        items = merge_windows(self.home.gather(), self.settings.window)
        count = 0 if items is None else len(items)
        report: dict[str, Any] = {
            "model": self.name,
            "version": self.version,
            "score_type": self.score_type,
            "window": {"items": count, "size": self.settings.window},
            "alpha": self.settings.alpha,
            "expected_anomaly_rate": self.promise.expected,
            "calibration_items": self.promise.calibration_items,
            "threshold": self.promise.threshold,
            "anomaly_rate": None,
            "score_drift": None,
            "input_drift": None,
            "score_histogram": None,
            "feedback": None,
            "record_errors": self.record_errors(),
        }
        rings = self.home.feedback_rings()
        figures = feedback_figures([ring.labelled() for ring in rings])
        if figures["n"]:
            report["feedback"] = figures
        report["time_windows"] = self._time_windows(rings)
        reference_scores = None
        if self.reference is not None:
            reference_scores = self.reference.scores.get(self.score_type)
        if items is not None and count:
            report["window"]["from"] = float(items.seconds[0])
            report["window"]["to"] = float(items.seconds[-1])
            if reference_scores is not None:
                report["score_histogram"] = score_histogram(
                    items.scores, reference_scores, self.promise.threshold
                )
        missing = []
        if self.reference is None:
            missing.append(
                "this bundle has no reference.npz (made by a trainer before monitoring): "
                "score and input drift need one; retrain to get it"
            )
        if items is None or count < self.settings.min_items:
            missing.append(
                f"{count} scored items so far; verdicts start at {self.settings.min_items} "
                "(VAE_MONITOR_MIN_ITEMS)"
            )
            report["missing"] = missing
            return report
        alpha = self.settings.alpha
        report.update(anomaly_rate(items, self.promise, alpha))
        if reference_scores is not None:
            report["score_drift"] = score_drift(items, reference_scores, alpha)
        if self.reference is not None:
            report["input_drift"] = input_drift(items, self.reference, alpha, self.feature_names)
        if missing:
            report["missing"] = missing
        return report

    def _time_windows(self, rings: list[FeedbackRing]) -> list[dict[str, Any]]:
        """The anomaly rate of the last TIME_WINDOWS_S seconds, over every worker's ring,
        with its beta-binomial test once it holds min_items."""
        now = time.time_ns()
        periods = []
        for seconds in TIME_WINDOWS_S:
            counts = [ring.since(now - seconds * 1_000_000_000) for ring in rings]
            items = sum(c[0] for c in counts)
            flagged = sum(c[1] for c in counts)
            period: dict[str, Any] = {
                "seconds": seconds,
                "items": items,
                "complete": all(c[2] for c in counts),
                "anomaly_rate": flagged / items if items else None,
                "anomaly_rate_test": None,
            }
            if items >= self.settings.min_items:
                p_value = self.promise.p_value(flagged, items)
                period["anomaly_rate_test"] = {
                    "flagged": flagged,
                    "p_value": p_value,
                    "alert": p_value < self.settings.alpha,
                }
            periods.append(period)
        return periods

    def record_errors(self) -> int:
        """Items this worker could not record (logged; never a request's failure)."""
        return self.errors + self.home.window.errors + self.home.feedback.errors

    def flush(self) -> None:
        """Write what this worker kept aside, for the other workers to see (the app calls it
        every MONITOR_FLUSH_S; reading its own window or ring flushes it too)."""
        try:
            self.home.window.flush()
            self.home.feedback.flush()
        except Exception:
            self.errors += 1
            log.exception("monitor of %s/%s could not flush", self.name, self.version)

    def close(self) -> None:
        self.flush()
        self.home.close()


def monitor_for(bundle: OnnxBundle, settings: MonitorSettings) -> ModelMonitor:
    """The monitor of a loaded bundle. A reference that does not read (altered, truncated) is
    logged and left out: the model serves, and the report says drift cannot be judged."""
    manifest = bundle.manifest
    reference = None
    if manifest.reference is not None:
        try:
            reference = read_reference(bundle.path, manifest.reference)
        except (OSError, ReferenceError, ValueError) as error:
            log.error(
                "%s/%s: monitoring reference not used: %s", manifest.name, manifest.version, error
            )
    score_type = manifest.anomaly.default_score
    calibration = manifest.anomaly.scores[score_type]
    return ModelMonitor(
        manifest.name,
        manifest.version,
        score_type,
        RatePromise(calibration.threshold, calibration.percentile, calibration.n_samples),
        reference,
        manifest.latent_dim,
        manifest.input.feature_count,
        settings,
        manifest.input.feature_names,
    )
