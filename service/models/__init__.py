"""Served models: a bundle wrapped with the service's limits and checks (`served_model`), and the
repository of name/version bundles loaded from disk."""
