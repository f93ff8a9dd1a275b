"""Data larger than memory: the memory budget, memory-mapped rows, splits that stay on disk,
preprocessing fitted in chunks, and rows fed to a model in bounded batches. In-memory arrays
take the same calls."""
