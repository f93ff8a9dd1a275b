"""Anomaly thresholds: a percentile of held-out scores (`thresholds`), or of cross-fitted scores
when the validation split is too small for it (`crossfit`), and the scores themselves, computed
with the exported graphs as a server computes them (`scores`)."""
