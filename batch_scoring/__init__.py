"""Offline batch scoring: `vae-score BUNDLE INPUT OUTPUT` scores a file of any size with the code
the service scores with (bundle.runtime: the mean path and `path_scores`), in chunks of bounded
memory, resumably, and writes Parquet or CSV.

Layers, each a module: `chunks` (what flows: a chunk of rows and its bad rows), `sources` (npy,
CSV and Parquet read in chunks), `scorer` (one chunk -> result columns), `parts` (each finished
chunk a file, and the job's record, so that a rerun redoes none), `job` (the plan: chunk size
from the memory setting, processes, progress), `cli`. On Apache Spark: `record_batches` (one
Arrow batch of a table or of image files -> the same rows scored, or why not) and `spark` (the
bundle broadcast, `mapInArrow` on the executors, `score_dataframe`, the command's Spark job).
"""
