"""The gRPC server of one worker: the inference service, the standard health service (for
Kubernetes' `grpc:` probes) and server reflection (so `grpcurl` needs no .proto), on
VAE_GRPC_PORT. Every worker binds the same port with SO_REUSEPORT and the kernel spreads
connections over them, as it spreads HTTP connections (one process per core, no hop between
processes: measured in bench/RESULTS.md).

Started once the worker's models are loaded, stopped first when it shuts down: health turns
NOT_SERVING, new calls are refused, and calls in flight (streams included) get
VAE_SHUTDOWN_DRAIN_S to finish before they are cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from service.dataplane.api_keys import ApiKeys
from service.dataplane.reload import reload_dir_from_environment
from service.dataplane.state import ServiceState
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as pb_grpc
from service.grpc.auth import ApiKeyInterceptor
from service.grpc.native.placement import Placement
from service.grpc.native.server import NativeServer
from service.grpc.observe import CallObserver
from service.grpc.servicer import SERVICE_NAME, InferenceServicer
from service.observability.metrics import ServiceMetrics
from service.observability.payload_log import PayloadLogger
from service.observability.request_lines import RequestLines
from service.settings import ServiceSettings

log = logging.getLogger("vae_service.grpc")

# HTTP/2 streams one connection may hold open at once (gRPC's own default is unbounded).
MAX_STREAMS_PER_CONNECTION = 100
HEALTH_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
REFLECTION_NAME = reflection.SERVICE_NAME

# Reflection answers from our descriptor pool (service/grpc/inference_pb2.py keeps its own, so
# a process may also import tritonclient): the health and reflection services' files join it.
for _module in (health_pb2, reflection_pb2):
    try:
        pb.POOL.FindFileByName(_module.DESCRIPTOR.name)
    except KeyError:
        pb.POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _placement(settings: ServiceSettings) -> Placement | None:
    """This worker's place among the workers sharing the port, when connections are balanced:
    only under `vae-serve` with several workers (their private folder holds the table)."""
    folder = reload_dir_from_environment()
    workers = settings.worker_count()
    if not settings.grpc_balance_connections or folder is None or workers < 2:
        return None
    placement = Placement.join(folder, workers)
    if placement is None:
        log.warning("gRPC: no free row in the placement table; connections not balanced")
    return placement


@dataclass
class GrpcServer:
    server: grpc.aio.Server | NativeServer
    health: health.aio.HealthServicer
    port: int

    async def stop(self, grace_s: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


async def start_grpc_server(
    state: ServiceState,
    settings: ServiceSettings,
    metrics: ServiceMetrics | None,
    request_lines: RequestLines | None,
    payload_logger: PayloadLogger | None = None,
) -> GrpcServer | None:
    """The worker's gRPC server, started; None when VAE_GRPC_PORT is 0."""
    if settings.grpc_port == 0:
        return None
    observer = CallObserver(metrics, request_lines)
    interceptors: list[grpc.aio.ServerInterceptor] = []
    keys = ApiKeys(settings.api_key_list())
    if keys:
        open_paths, open_prefixes = settings.open_paths()
        interceptors.append(ApiKeyInterceptor(keys, open_paths, open_prefixes, observer))
    server: grpc.aio.Server | NativeServer
    if settings.grpc_server == "native":
        server = NativeServer(
            interceptors,
            max_message=settings.max_body_bytes,
            max_calls=settings.grpc_max_concurrent_rpcs,
            max_connections=settings.max_connections,
            message_wait_s=settings.grpc_stream_idle_timeout_s,
            body_budget=state.inference.body_budget if state.inference is not None else None,
            placement=_placement(settings),
        )
    else:
        server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.so_reuseport", 1),
                # A message over the body limit is refused by grpcio before it is parsed
                # (RESOURCE_EXHAUSTED); each model's own, lower limit is checked after.
                ("grpc.max_receive_message_length", settings.max_body_bytes),
                ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
            ],
            maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs,
        )
    servicer = InferenceServicer(
        state, observer, settings.grpc_stream_idle_timeout_s, payload_logger
    )
    # The native server offers what these functions call (its docstring); grpcio's types
    # know only grpcio's servers.
    host: Any = server
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, host)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, host)
    names = (SERVICE_NAME, HEALTH_NAME, REFLECTION_NAME)
    # enable_server_reflection picks the asyncio servicer for grpcio's asyncio server only.
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]
        reflection.aio.ReflectionServicer(names, pool=pb.POOL), host
    )
    address = bind_address(settings.host, settings.grpc_port)
    if isinstance(server, NativeServer):
        port = await server.start(settings.host, settings.grpc_port)
    else:
        port = server.add_insecure_port(address)
        if port == 0:
            raise RuntimeError(f"gRPC could not bind {address} (VAE_GRPC_PORT)")
        await server.start()
    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, serving)
    log.info("gRPC (Open Inference Protocol, %s) on %s", settings.grpc_server, address)
    return GrpcServer(server, health_servicer, port)
