"""Benchmark harness: this service against an obvious FastAPI baseline and the ceilings.

Run `python -m bench.http_bench --help`; results land in bench/RESULTS.md, results.json and
results.png, raw wrk outputs in bench/out/.
"""
