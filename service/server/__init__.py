"""The process: the `vae-serve` command, uvicorn's HTTP protocol under our connection limits and
one-write answers, the container health check."""
