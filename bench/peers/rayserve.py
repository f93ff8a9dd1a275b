"""Ray Serve (bench/peers/rayserve_server.py): a deployment of {workers} replicas behind Serve's
HTTP proxy, `@serve.batch` in each, on a local Ray the script starts with two CPUs; called with
{"inputs": [[...]]} on its route, answering {"outputs": [[...]]}.

Imported by the harness in the project's venv, so it must not import ray: the server runs in its
own venv (requirements/rayserve.txt).
"""

from __future__ import annotations

from bench.peers import Peer, inputs_body, outputs_field

MAX_BATCH_SIZE = 64  # as ours: VAE_BATCHING_MAX_BATCH_SIZE
BATCH_WAIT_TIMEOUT_S = 0.0005  # as ours: VAE_BATCHING_MAX_DELAY_US=500 (Ray's default: 0.01)


PEERS = [
    Peer(
        key="rayserve",
        title="Ray Serve 2.60.0, @serve.batch, {workers} replicas",
        venv="rayserve",
        command=(
            "{python}", "-m", "bench.peers.rayserve_server", "--bundle", "{bundle}",
            "--port", "{port}", "--replicas", "{workers}", "--num-cpus", "{workers}",
            "--max-batch-size", str(MAX_BATCH_SIZE),
            "--batch-wait-timeout-s", str(BATCH_WAIT_TIMEOUT_S),
        ),
        env={"RAY_USAGE_STATS_ENABLED": "0"},
        path="/",
        body=inputs_body,
        outputs=outputs_field,
        ready_path="/",  # GET: 200 only once a replica has loaded the model
        settings={
            "versions": "ray[serve] 2.60.0, numpy 2.4.6, onnxruntime 1.32.0",
            "command": "python -m bench.peers.rayserve_server: ray.init(address='local', "
            "num_cpus={workers}, include_dashboard=False), serve.start(http_options=127.0.0.1), "
            "serve.run",
            "replicas": "num_replicas={workers}, ray_actor_options={'num_cpus': 1}, "
            f"max_ongoing_requests={MAX_BATCH_SIZE}: one actor process and one VaeOnnx each",
            "batching": f"@serve.batch(max_batch_size={MAX_BATCH_SIZE}, "
            f"batch_wait_timeout_s={BATCH_WAIT_TIMEOUT_S})",
            "logging": "Serve LoggingConfig(log_level=WARNING, enable_access_log=False); "
            "ray.init(logging_level=WARNING, log_to_driver=False); RAY_USAGE_STATS_ENABLED=0",
            "onnxruntime": "VaeOnnx: 1 intra-op thread per session (PEER_INTRA_OP_THREADS)",
        },
        start_timeout_s=300.0,
    ),
]  # fmt: skip
