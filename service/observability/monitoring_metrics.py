"""The monitors' verdicts as Prometheus gauges, computed at each scrape from the same reports
GET /models/{name}/monitoring answers (every worker's window; reused for
VAE_MONITOR_REPORT_INTERVAL_S), so alerts can be written on them (deploy/k8s/
prometheus-rule.yaml). One series per loaded model version: the labels are bounded by the
repository, never by a request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from service.models.repository import ModelRepository

log = logging.getLogger("vae_service.monitoring")

LABELS = ["model", "version"]
# (metric, help, how to read it off a report); None when the report has no such figure yet.
GAUGES: list[tuple[str, str, Callable[[dict[str, Any]], float | None]]] = [
    ("vae_monitor_window_items", "Scored items in the monitoring window, over every worker",
     lambda r: r["window"]["items"]),
    ("vae_monitor_anomaly_rate", "Share of the window's items flagged as anomalies",
     lambda r: r["anomaly_rate"]),
    ("vae_monitor_expected_anomaly_rate", "Share the calibrated threshold promises to flag",
     lambda r: r["expected_anomaly_rate"]),
    ("vae_monitor_anomaly_rate_p_value",
     "Binomial test: chance of this many flags or more if the promise held",
     lambda r: _get(r, "anomaly_rate_test", "p_value")),
    ("vae_monitor_anomaly_rate_alert", "1 when the anomaly rate is above the promise (test)",
     lambda r: _flag(_get(r, "anomaly_rate_test", "alert"))),
    ("vae_monitor_score_drift_statistic", "Kolmogorov-Smirnov distance of the window's scores "
     "from the reference's", lambda r: _get(r, "score_drift", "statistic")),
    ("vae_monitor_score_drift_p_value", "Kolmogorov-Smirnov p-value of the scores",
     lambda r: _get(r, "score_drift", "p_value")),
    ("vae_monitor_score_drifted", "1 when the scores have drifted from the reference",
     lambda r: _flag(_get(r, "score_drift", "drifted"))),
    ("vae_monitor_input_drifted",
     "1 when the codes (or, for tables, the features) have drifted from the reference",
     lambda r: _flag(_get(r, "input_drift", "drifted"))),
]  # fmt: skip


def _get(report: dict[str, Any], section: str, key: str) -> Any:
    part = report.get(section)
    return None if part is None else part.get(key)


def _flag(value: bool | None) -> float | None:
    return None if value is None else float(value)


class MonitoringCollector(Collector):
    def __init__(self, repository: Callable[[], ModelRepository | None]) -> None:
        self.repository = repository

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = [GaugeMetricFamily(name, text, labels=LABELS) for name, text, _ in GAUGES]
        repository = self.repository()
        for model in repository if repository is not None else ():
            if model.monitor is None:
                continue
            try:
                report = model.monitor.report()
            except Exception:  # a scrape still answers the other metrics
                log.exception("monitoring report of %s/%s failed", model.name, model.version)
                continue
            for family, (_, _, read) in zip(families, GAUGES, strict=True):
                value = read(report)
                if value is not None:
                    family.add_metric([model.name, model.version], float(value))
        yield from families
