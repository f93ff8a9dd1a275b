"""A bounded soak run: mixed valid, invalid and hostile requests against a real vae-serve
(issues 7 and 18), with slow and silent clients held open beside the load.

    .venv/bin/python -m bench.soak [--seconds 120] [--connections 8] [--models default[,784]]
        [--log-level info] [--out bench]

Starts `vae-serve` with its default settings (one worker per core, access log on) on 127.0.0.1,
except for a lowered VAE_MAX_BODY_BYTES so that the over-limit request is small. Every request
kind is sent once first and must get its documented status; then wrk cycles through the kinds
for --seconds while VmRSS of the server's processes is sampled every second. The generated Lua
script counts each kind's answers by status and compares every body with the probe's answer.

Writes SOAK.md and soak.json (into --out, default bench/); the raw wrk output, the Lua script,
the bodies and the server log go to bench/out/soak/. Exits 1 when any target fails.

The parts: `config` (paths, limits, targets), `kinds` (the requests), `server` (starting
vae-serve, its processes), `probe` (each kind once), `lua` (wrk's script and its counts), `run`
(one run end to end), `analysis` (answers, memory, the server log), `judge` (the targets),
`report` (SOAK.md and RESULTS.md's section), `cli` (options and main).
"""
