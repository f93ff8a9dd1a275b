"""`make quality`: our default models and scores against what a user would try instead (issue 9).

One run, one seed, the same rows for everyone:

- **Split.** Per task, the normal items are split 60/40 into a train part and a test part
  (seeded); every anomaly goes to the test part. It is `training.data.split_dataset` with
  `test_fraction=0.4`, the very call `vae-train` makes with `--test-fraction 0.4`, so our model
  and the peers see the same rows. Ours carves its validation split (early stopping and
  threshold calibration) out of the train part; the peers fit on the whole train part.
- **Ours** is `run_training` with the default `TrainingConfig` (only the split fractions and
  the seed set), exported to a bundle under `bench/out/quality/`; test scores come from that
  bundle through onnxruntime, exactly what `/anomaly-score` answers.
- **Peers** are PyOD's `AutoEncoder`, `VAE`, `IForest` and `PCA` with their defaults, fitted
  on the train part (see `peer_inputs` for the two input fixes they need to produce scores at
  all), and the classic VAE recipe (`bench/reference_vae.py`) for likelihood, trained for the
  CPU time ours took.

Writes `bench/QUALITY.md`, `bench/quality.json` and `bench/quality.png`; exits 1 when a target
of the issue fails, 2 on a usage error.

The parts: `config` (tasks, split, peers' names, options), `data` (the split, the train part,
AUROC), `peers` (PyOD's detectors), `ours` (the default model, scored through its bundle),
`reference` (the classic VAE at our CPU time), `figures` (what the report reads off the
results), `targets` (the issue's targets), `report` (QUALITY.md, with the prose of
`bench/quality_defaults.md`), `plot` (quality.png), `run` (every task), `cli` (options, main).
"""
