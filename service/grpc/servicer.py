"""The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`): health,
metadata, ModelInfer and Triton's bidirectional ModelStreamInfer, each a thin call into the
data plane that the REST routes use (service.dataplane.v2_infer, service.models.v2_views).

A domain error becomes its gRPC status (service.grpc.status) with the error's own message;
anything else is a bug, logged whole and answered INTERNAL "internal error". In a stream an
error answers that one request (`error_message`, as Triton does) and the stream goes on.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

from service.codecs.wire import INLINE_DECODE_BYTES, INLINE_NPY_BYTES
from service.dataplane.state import ServiceState
from service.dataplane.v2_infer import serve_message_infer
from service.errors import ModelNotFound, NotReady, RequestTimedOut, ServiceError
from service.grpc import inference_pb2 as pb
from service.grpc import inference_pb2_grpc as pb_grpc
from service.grpc.codec import (
    infer_response_message,
    message_bytes,
    read_infer_message,
)
from service.grpc.observe import REQUEST_ID_KEY, CallObserver, Context, caller_request_id
from service.grpc.payload import log_grpc_exchange
from service.grpc.status import GrpcStatus, grpc_status
from service.models.repository import ModelRepository
from service.models.v2_views import TensorSpec, V2Model, find_model
from service.observability.payload_log import PayloadLogger
from service.observability.request_context import accepted_request_id, current_request
from service.settings import ServiceSettings

log = logging.getLogger("vae_service.grpc")
T = TypeVar("T")

SERVICE_NAME = "inference.GRPCInferenceService"
DATA_TYPES = {"FP32": pb.DataType.TYPE_FP32, "FP64": pb.DataType.TYPE_FP64}
# Requests of one stream decoded and run at once, answered in the order they came, so a caller
# that sends without waiting has them run (and coalesced) together; also the bound on what one
# stream holds. Measured with one Python client sending 3,000 single items on a stream (`python
# -m bench.grpc_probes stream`), one worker: 1,777 / 1,809 req/s with 32, 1,721 / 1,685 with 1
# (the client itself is the limit there; bench.grpc_bench's G3 sends one at a time per stream).
STREAM_WINDOW = 32


def method_path(name: str) -> str:
    return f"/{SERVICE_NAME}/{name}"


def _server_version() -> str:
    try:
        return importlib.metadata.version("vae-service")
    except importlib.metadata.PackageNotFoundError:
        return "0.1.0"


def model_config(view: V2Model, settings: ServiceSettings) -> pb.ModelConfig:
    """Triton's description of a v2 model: tensors without their batch axis, the batch limit,
    and the dynamic batcher when it is on."""

    def dims(spec: TensorSpec) -> list[int]:
        return list(spec.shape[1:])

    config = pb.ModelConfig(
        name=view.name,
        platform="onnxruntime_onnx",
        backend="onnxruntime",
        max_batch_size=settings.max_batch_size,
        input=[
            pb.ModelInput(name=s.name, data_type=DATA_TYPES[s.datatype], dims=dims(s))
            for s in view.inputs
        ],
        output=[
            pb.ModelOutput(name=s.name, data_type=DATA_TYPES[s.datatype], dims=dims(s))
            for s in view.outputs
        ],
    )
    if settings.dynamic_batching:
        config.dynamic_batching.max_queue_delay_microseconds = settings.batching_max_delay_us
        config.dynamic_batching.preferred_batch_size.append(settings.batching_max_batch_size)
    return config


def _internal(what: str) -> ServiceError:
    log.exception("unhandled error in %s", what)
    return ServiceError("internal error")


async def _abort(context: Context, status: GrpcStatus) -> NoReturn:
    await context.abort(status.code, status.message, trailing_metadata=status.trailers)
    raise AssertionError("context.abort returns only by raising")  # for the type checker


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self,
        state: ServiceState,
        observer: CallObserver,
        stream_idle_s: float,
        payload_logger: PayloadLogger | None = None,
    ):
        self.state = state
        self.observer = observer
        self.stream_idle_s = stream_idle_s
        self.payload_logger = payload_logger
        self.version = _server_version()

    # --- health and metadata -------------------------------------------------------------

    async def _answer(self, name: str, context: Context, answer: Callable[[], Awaitable[T]]) -> T:
        """A unary call: observed as a request, its errors mapped to gRPC statuses."""
        peer, request_id = context.peer(), caller_request_id(context)
        with self.observer.call(method_path(name), peer, request_id) as record:
            try:
                response = await answer()
            except ServiceError as error:
                record.status = error.status
                await _abort(context, grpc_status(error))
            except Exception:
                record.status = 500
                await _abort(context, grpc_status(_internal(name)))
            record.status = 200
            context.set_trailing_metadata(((REQUEST_ID_KEY, record.request_id),))
            return response

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        async def live() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._answer("ServerLive", context, live)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        async def ready() -> pb.ServerReadyResponse:
            state = self.state
            return pb.ServerReadyResponse(ready=state.repository is not None and state.ready)

        return await self._answer("ServerReady", context, ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        async def ready() -> pb.ModelReadyResponse:
            # An unknown model or a server still loading is "not ready", as a readiness
            # check wants to hear it, not an error.
            try:
                self._resolve(request.name, request.version)
            except (ModelNotFound, NotReady):
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)

        return await self._answer("ModelReady", context, ready)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        async def metadata() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(
                name="vae-service", version=self.version, extensions=["binary_tensor_data"]
            )

        return await self._answer("ServerMetadata", context, metadata)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        async def metadata() -> pb.ModelMetadataResponse:
            repository, view = self._resolve(request.name, request.version)
            found = view.metadata(repository.versions_of(view.base))
            tensor = pb.ModelMetadataResponse.TensorMetadata
            return pb.ModelMetadataResponse(
                name=found["name"],
                versions=found["versions"],
                platform=found["platform"],
                inputs=[tensor(**spec) for spec in found["inputs"]],
                outputs=[tensor(**spec) for spec in found["outputs"]],
            )

        return await self._answer("ModelMetadata", context, metadata)

    async def ModelConfig(
        self, request: pb.ModelConfigRequest, context: Context
    ) -> pb.ModelConfigResponse:
        async def config() -> pb.ModelConfigResponse:
            view = self._resolve(request.name, request.version)[1]
            return pb.ModelConfigResponse(config=model_config(view, self.state.settings))

        return await self._answer("ModelConfig", context, config)

    def _resolve(self, name: str, version: str) -> tuple[ModelRepository, V2Model]:
        """The served repository and the v2 model a request names (an empty version: the
        served one), recorded as the request's model."""
        repository = self.state.require_ready()[0]
        view = find_model(repository, name, version or None)
        current_request().served_by(view.model.name, view.model.version)
        return repository, view

    # --- inference -----------------------------------------------------------------------

    async def _infer(self, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """One infer request through the data plane; raises ServiceError."""
        size = message_bytes(message)
        raw = len(message.raw_input_contents) > 0
        # Decoded on the event loop when small, as a REST body is (service.codecs.wire):
        # raw bytes cost a copy and a finiteness check, typed values a conversion each.
        inline = size <= (INLINE_NPY_BYTES if raw else INLINE_DECODE_BYTES)
        outcome = await serve_message_infer(
            self.state,
            message.model_name,
            message.model_version or None,
            size,
            lambda view: read_infer_message(view, message),
            inline,
        )
        began = time.perf_counter()
        response = infer_response_message(outcome.view, outcome.decoded, outcome.result)
        current_request().encode_s = time.perf_counter() - began
        return response

    async def _infer_logged(self, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """_infer, and with VAE_PAYLOAD_LOG_URL the message and its answer (or error) sent
        to the payload log, as the HTTP routes' are (service.api.payload_capture)."""
        logger = self.payload_logger
        if logger is None:
            return await self._infer(message)
        try:
            response = await self._infer(message)
        except ServiceError as error:
            log_grpc_exchange(logger, message, error.status, None, error.message)
            raise
        except Exception:
            log_grpc_exchange(logger, message, 500, None, "internal error")
            raise
        log_grpc_exchange(logger, message, 200, response, None)
        return response

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        return await self._answer("ModelInfer", context, lambda: self._infer_logged(request))

    async def _stream_one(
        self, message: pb.ModelInferRequest, peer: str
    ) -> pb.ModelStreamInferResponse:
        request_id = accepted_request_id(message.id.encode()) if message.id else None
        with self.observer.call(method_path("ModelStreamInfer"), peer, request_id) as record:
            try:
                response = await self._infer_logged(message)
            except ServiceError as error:
                record.status = error.status
                return pb.ModelStreamInferResponse(error_message=error.message)
            except Exception:
                record.status = 500
                failure = _internal("ModelStreamInfer")
                return pb.ModelStreamInferResponse(error_message=failure.message)
            record.status = 200
            return pb.ModelStreamInferResponse(infer_response=response)

    async def ModelStreamInfer(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        context: Context,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Up to STREAM_WINDOW requests in flight, answered in order; a stream that sends
        nothing for VAE_GRPC_STREAM_IDLE_TIMEOUT_S ends DEADLINE_EXCEEDED."""
        answers: asyncio.Queue[asyncio.Future[pb.ModelStreamInferResponse] | None] = asyncio.Queue()
        window = asyncio.Semaphore(STREAM_WINDOW)
        reading = self._read_stream(request_iterator, context.peer(), answers, window)
        reader = asyncio.ensure_future(reading)
        try:
            while (answer := await answers.get()) is not None:
                response = await answer
                window.release()
                yield response
            await reader  # raises what ended the reading (the idle timeout)
        except ServiceError as error:
            await _abort(context, grpc_status(error))
        finally:
            reader.cancel()
            while not answers.empty():
                left = answers.get_nowait()
                if left is not None:
                    left.cancel()

    async def _read_stream(
        self,
        requests: AsyncIterator[pb.ModelInferRequest],
        peer: str,
        answers: asyncio.Queue[asyncio.Future[pb.ModelStreamInferResponse] | None],
        window: asyncio.Semaphore,
    ) -> None:
        iterator = aiter(requests)
        watch = IdleWatch(self.stream_idle_s)
        try:
            while True:
                await window.acquire()
                watch.reading()
                try:
                    message = await anext(iterator)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not watch.timed_out:
                        raise
                    raise RequestTimedOut(
                        f"the stream sent no request for {self.stream_idle_s:g} s "
                        "(VAE_GRPC_STREAM_IDLE_TIMEOUT_S)"
                    ) from None
                watch.read()
                answers.put_nowait(asyncio.ensure_future(self._stream_one(message, peer)))
        finally:
            watch.close()
            answers.put_nowait(None)


class IdleWatch:
    """Ends a stream's reading task when one read has waited `limit` seconds: one timer per
    stream, re-armed when it fires, instead of a timeout per message (asyncio.wait_for makes
    a task for each, measurable at thousands of messages a second). Waiting for the stream's
    window to free up is not idleness: only a pending read counts."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.since: float | None = None  # when the pending read began
        self.timed_out = False
        self.timer = self.loop.call_later(limit, self._check)

    def reading(self) -> None:
        self.since = self.loop.time()

    def read(self) -> None:
        self.since = None

    def _check(self) -> None:
        waited = 0.0 if self.since is None else self.loop.time() - self.since
        if waited >= self.limit and self.task is not None:
            self.timed_out = True
            self.task.cancel()
            return
        self.timer = self.loop.call_later(self.limit - waited, self._check)

    def close(self) -> None:
        self.timer.cancel()
