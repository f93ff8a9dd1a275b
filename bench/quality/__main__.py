"""`python -m bench.quality`: see bench/quality/__init__.py."""

from __future__ import annotations

from bench.quality.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
