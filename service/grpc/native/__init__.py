"""gRPC over HTTP/2 framed here: the transport of `VAE_GRPC_SERVER=native`.

grpcio's asyncio server costs ~150-210 us of a core a call before any of our work; framed here,
the same canned ModelInfer through the same generated handlers costs ~40 us:
`python -m bench.grpc_probes ceiling --server native|grpcio`, one process, perf_analyzer at 8
callers, 22,852 and 23,446 calls a second against grpcio's 6,243 and 6,989 (alternate runs, one
sitting). This package hosts the very handlers grpcio hosts (the generated `add_*_to_server`
functions, grpcio's interceptors, health and reflection servicers) on an asyncio Protocol, so
there is one implementation of every method whichever transport carries it.

Layers, each a module: `frames` (HTTP/2 frames, settings and error codes), `headers` (header
blocks read with the `hpack` library, answers' blocks written as constant bytes), `calls` (one
call: its context, its handler run, its messages), `connection` (one client's connection:
frames in, streams, flow control, every bound), `server` (listening, handlers, draining).
"""
