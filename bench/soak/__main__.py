"""`python -m bench.soak`: see bench/soak/__init__.py."""

from __future__ import annotations

from bench.soak.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
