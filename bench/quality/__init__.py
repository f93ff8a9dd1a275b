"""`make quality`: our default models and scores against what a user would try instead (issues
9 and 22).

Every task once per seed (`--seeds`, default 0,1,2; breast-cancer 0-4, the issue's five splits,
unless seeds are given), the same rows for everyone within a seed; the report gives each
figure's mean and range (min..max) over seeds, quality.json every seed's numbers:

- **Tasks** (`--tasks`, groups or names, config.TASK_GROUPS): `tables` (breast-cancer, and the
  development tables wine:holdout=0..2 and iris:holdout=0..2), `digits` (digits and
  digits:holdout=0..9, 8x8), `mnist` (mnist-5k and mnist-5k:holdout=0..9, 28x28), `likelihood`
  (digits and mnist-5k), `all`.
- **Split.** Per task and seed, the normal items are split 60/40 into a train part and a test
  part; every anomaly goes to the test part. `mnist-5k`, the likelihood task on MNIST, splits
  80/20. It is `training.data.split_dataset` with the task's `test_fraction`, the very call
  `vae-train` makes with `--test-fraction`, so our model and the peers see the same rows.
  Ours carves its validation split (early stopping and threshold calibration) out of the train
  part; the peers and the reference recipe fit on the whole train part.
- **Ours** is `run_training` with the default `TrainingConfig` (only the split fractions and
  the seed set), exported to a bundle under `bench/out/quality/`; test scores come from that
  bundle through onnxruntime, exactly what `/anomaly-score` answers.
- **Peers** are PyOD's `AutoEncoder`, `VAE`, `IForest` and `PCA` with their defaults, fitted
  on the train part (see `peer_inputs` for the two input fixes they need to produce scores at
  all) on every task with anomalies, and the classic VAE recipe (`bench/reference_vae.py`) for
  likelihood, trained for the CPU time ours took on `digits` and for the wall time ours took
  on `mnist-5k`.

Writes `bench/QUALITY.md`, `bench/quality.json` and `bench/quality.png` (and, as it goes,
`quality.partial.json` in the work directory); exits 1 when a target fails, 2 on a usage
error.

The parts: `config` (tasks, groups, splits, seeds, peers' names, options), `data` (the split,
the train part, AUROC), `peers` (PyOD's detectors), `ours` (the default model, scored through
its bundle), `reference` (the classic VAE at our training time), `figures` (what the report
reads off the results: means and ranges over seeds), `targets` (the issues' targets), `report`
(QUALITY.md, with the prose of `bench/quality_defaults.md`), `plot` (quality.png), `run`
(every task and seed), `cli` (options, main).
"""
