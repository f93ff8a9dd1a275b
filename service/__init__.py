"""HTTP service that serves VAE model bundles."""
