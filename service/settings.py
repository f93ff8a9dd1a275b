"""Every setting of the service, from `VAE_*` environment variables or `vae-serve` flags.

One pydantic-settings class: a bad value fails start-up with a message naming the variable,
never a surprise under load.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

import onnxruntime as ort
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


class ServiceSettings(BaseSettings):
    # env_ignore_empty: `VAE_X=` (as compose writes an unset ${VAR:-}) means "use the default".
    model_config = SettingsConfigDict(
        env_prefix="VAE_", extra="ignore", frozen=True, env_ignore_empty=True
    )

    model_repository: Path = Field(
        Path("models"), description="folder of <name>/<version>/ bundles to serve"
    )
    host: str = Field("127.0.0.1", description="address to bind; 0.0.0.0 only inside a container")
    port: int = Field(8000, ge=1, le=65535, description="TCP port")
    workers: int | None = Field(
        None,
        ge=1,
        le=64,
        description="uvicorn worker processes; default ('auto'): one per core. Measured "
        "(bench/RESULTS.md): equal for single items, twice the throughput for batches",
    )
    default_model: str | None = Field(
        None,
        description="model served at the top-level routes; unset ('none'): the only model "
        "in the repository, and with several the top-level routes answer 404 naming them",
    )
    pinned_versions: str = Field(
        "",
        description="name=version pairs, comma-separated, served instead of the newest version "
        "('none': no pins)",
    )
    reload_interval_s: float = Field(
        0.0,
        ge=0,
        le=86_400,
        description="every N seconds each worker compares the repository's files (a few stat "
        "calls per bundle) and reloads when they changed; 0: no polling, reload with "
        "POST /admin/reload",
    )
    providers: str = Field(
        "cpu",
        description="onnxruntime execution providers in order of preference, e.g. cuda,cpu; "
        "an unavailable one is skipped with a warning",
    )
    intra_op_threads: int | None = Field(
        None,
        ge=1,
        description="onnxruntime threads per session; default ('auto'): 1. Measured "
        "(bench/RESULTS.md): for models of this size, parallel requests beat parallel "
        "kernels, and idle pool threads spin on cores the requests need",
    )
    executor_threads: int | None = Field(
        None, ge=1, le=256, description="threads running model work; default ('auto'): cores"
    )
    inline_max_values: int = Field(
        4096,
        ge=0,
        description="requests touching at most this many numbers (items x features) run on "
        "the event loop: a thread handoff costs more than such a small model call "
        "(bench/RESULTS.md); 0 sends everything to the executor",
    )
    coalesce_inline_calls: bool = Field(
        True,
        description="inline model calls ready in the same event-loop turn, to the same model "
        "with the same parameters, run as one onnxruntime call (each waits one loop turn; "
        "service.dataplane.coalescing); false: each runs alone, best for callers that never "
        "overlap",
    )
    fast_path: bool = Field(
        True,
        description="answer the array routes from a raw ASGI path ahead of FastAPI's router "
        "(same code, less per-request overhead); false routes them through FastAPI",
    )
    dynamic_batching: bool = Field(
        False, description="merge concurrent requests to one model into one onnxruntime call"
    )
    batching_max_batch_size: int = Field(
        64, ge=1, description="items at which a dynamic batch runs without waiting"
    )
    batching_max_delay_us: int = Field(
        500,
        ge=0,
        le=1_000_000,
        description="longest a request waits for others to join its batch, microseconds",
    )
    max_batch_size: int = Field(4096, ge=1, description="most items in one request (413 above)")
    max_sample_n: int = Field(1024, ge=1, description="largest n for /sample (413 above)")
    max_reconstruct_samples: int = Field(
        64, ge=1, description="largest samples K for /reconstruct (413 above)"
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="largest request body in bytes (413 above); each route's own limit is "
        "lower when its model needs less: batch limit x numbers per item x bytes per number "
        "(32 in JSON, 8 in npy), plus 64 KiB",
    )
    max_body_buffer_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="bytes of request bodies one worker holds at once, gRPC messages arriving "
        "or waiting included; a request whose body would pass it gets 503 with Retry-After "
        "(gRPC: RESOURCE_EXHAUSTED with the retry hint), so slow uploads cannot add up "
        "without bound",
    )
    max_json_depth: int = Field(
        32, ge=2, le=512, description="deepest JSON nesting accepted (422 above)"
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="request line and headers together, in bytes (431 above). Counted while "
        "they arrive, before authentication",
    )
    max_headers: int = Field(100, ge=8, le=10_000, description="header lines (431 above)")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="a connection must send a whole request head (request line and headers) "
        "within this many seconds of opening, or of starting the request; else it is "
        "answered 408 and closed (slow or silent clients)",
    )
    keep_alive_timeout_s: int = Field(
        5,
        ge=1,
        le=3600,
        description="an idle keep-alive connection is closed after this many seconds",
    )
    max_connections: int = Field(
        512,
        ge=1,
        le=100_000,
        description="open connections per worker; one more is answered 503 with Retry-After "
        "and closed at once",
    )
    grpc_port: int = Field(
        8001,
        ge=0,
        le=65535,
        description="TCP port of the Open Inference Protocol over gRPC (Triton's and KServe's "
        "8001), on VAE_HOST, shared by every worker (SO_REUSEPORT); 0: no gRPC",
    )
    grpc_server: Literal["native", "grpcio"] = Field(
        "native",
        description="what carries gRPC: HTTP/2 framed by the service itself "
        "(service/grpc/native/: the same handlers at a fraction of grpcio's cost a call), or "
        "grpcio's asyncio server",
    )
    grpc_balance_connections: bool = Field(
        True,
        description="a worker that accepts a gRPC connection while it holds more than another "
        "worker passes it on (native transport, VAE_WORKERS > 1), so long-lived connections "
        "spread over the cores; false: where the kernel's hash puts them",
    )
    grpc_max_concurrent_rpcs: int = Field(
        1024,
        ge=1,
        le=100_000,
        description="gRPC calls (streams included) a worker holds at once; one more is "
        "answered RESOURCE_EXHAUSTED at once",
    )
    grpc_stream_idle_timeout_s: float = Field(
        60.0,
        gt=0,
        le=86_400,
        description="a ModelStreamInfer stream that sends no request for this long is ended "
        "(DEADLINE_EXCEEDED), so an abandoned stream frees its slot",
    )
    monitoring: bool = Field(
        True,
        description="keep a window of each model version's scored items and judge it against "
        "the bundle's reference (GET /models/{name}/monitoring); false: nothing is recorded",
    )
    monitor_window: int = Field(
        500,
        ge=10,
        le=100_000,
        description="scored items per monitoring window, over every worker (the most recent); "
        "memory per model version and worker: 17 + 4 x (latent + table features) bytes an item",
    )
    monitor_alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="each monitoring verdict's false-alarm rate on traffic like the reference",
    )
    monitor_min_items: int = Field(
        50,
        ge=1,
        le=100_000,
        description="scored items a window needs before monitoring gives verdicts",
    )
    monitor_report_interval_s: float = Field(
        1.0,
        ge=0,
        le=3600,
        description="a monitoring report is computed at most this often per model version and "
        "worker; asked sooner, the last one is answered (0: computed every time)",
    )
    monitor_feedback_items: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="scored items each worker remembers per model version by request id, for "
        "POST /models/{name}/feedback to label (26 bytes each: key, time, score, flag, label)",
    )
    payload_log_url: str | None = Field(
        None,
        description="send each inference request and its answer as CloudEvents (HTTP, binary "
        "mode) to this http(s) URL, from a bounded queue; none: off",
    )
    payload_log_queue: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="payload log events a worker holds for sending; past it new ones are "
        "dropped and counted, never the request",
    )
    payload_log_max_bytes: int = Field(
        64 * 1024,
        ge=0,
        le=1 << 30,
        description="a request or answer body above this is logged without its data; the "
        "queue then holds at most VAE_PAYLOAD_LOG_QUEUE x this (64 MiB by default)",
    )
    payload_log_timeout_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="how long a payload log event may take to send before it counts as failed",
    )
    max_image_pixels: int = Field(
        4 * 1024 * 1024,
        ge=1,
        # Pillow's own decompression-bomb guard starts at 89 M pixels; ours must refuse first.
        le=80_000_000,
        description="most pixels (width x height, summed over a multipart upload) one request "
        "may decode, checked on the image headers before decoding (413 above)",
    )
    max_concurrency: int | None = Field(
        None,
        ge=1,
        le=100_000,
        description="model calls a worker runs at once; more wait in the queue. Default "
        "('auto'): the executor threads, times the batch size when dynamic batching is on",
    )
    max_queue: int = Field(
        128,
        ge=0,
        le=100_000,
        description="model calls a worker lets wait for a free slot; past it a request gets "
        "503 with Retry-After at once instead of queueing without bound",
    )
    request_timeout_s: float = Field(
        30.0,
        ge=0,
        description="longest a request may take from its arrival, reading its body included, "
        "before it is answered (408 while the body is still arriving, else 503; 0: no limit); "
        "a model call already running in a thread finishes but its answer is dropped",
    )
    retry_after_s: int = Field(
        1, ge=0, le=3600, description="Retry-After seconds sent with 503 overload answers"
    )
    shutdown_drain_s: int = Field(
        30,
        ge=0,
        le=3600,
        description="on SIGTERM, how long in-flight requests may take to finish before the "
        "worker closes their connections",
    )
    api_keys: SecretStr = Field(
        SecretStr(""),
        description="API keys, comma-separated (several for rotation); empty or 'none': no "
        "authentication. Sent as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'",
    )
    api_keys_file: Path | None = Field(
        None,
        description="file with one API key per line (e.g. a mounted secret); added to "
        "VAE_API_KEYS. 'none': no file",
    )
    auth_open_paths: str = Field(
        "/healthz,/readyz,/v2/health/live,/v2/health/ready,/metrics,/,/ui/*",
        description="paths answered without a key when keys are set, comma-separated; a "
        "trailing * matches a prefix (e.g. /docs*); 'none': every path needs a key. The web "
        "page (/ and its files under /ui/) holds no data: it asks for a key to call the API. "
        "/metrics holds counts, never data, and scrapers rarely carry keys",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="serve without API keys on an address other than loopback (127.0.0.1, "
        "::1); without it, such a server refuses to start unless keys are set. Logged as a "
        "warning at every start",
    )
    cors_allow_origins: str = Field(
        "",
        description="origins allowed to call from a browser, comma-separated, or *; empty or "
        "'none': CORS off (browsers block cross-origin calls)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level of the service and uvicorn"
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        description="json: every log line one JSON object, and one line per request (request "
        "id, route, model, status, latency) in place of uvicorn's access log, for a log "
        "collector; text: plain lines and uvicorn's access log, for a person at a terminal. "
        "Request lines are written at info level",
    )
    metrics: bool = Field(
        True,
        description="count requests, latency, queueing, model and codec time, batch sizes and "
        "anomalies, served in Prometheus text format at GET /metrics; false: no /metrics",
    )

    @field_validator("workers", "intra_op_threads", "executor_threads", "max_concurrency",
                     mode="before")  # fmt: skip
    @classmethod
    def _auto_limits(cls, value: object) -> object:
        # "auto" spells the default explicitly, for environments (compose files) that cannot
        # leave a variable empty.
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator(
        "pinned_versions", "auth_open_paths", "cors_allow_origins", "api_keys", mode="before"
    )
    @classmethod
    def _none_means_empty(cls, value: object) -> object:
        # 'none' spells "empty" for environments (compose files) that cannot leave it empty.
        return "" if isinstance(value, str) and value.strip().lower() == "none" else value

    @field_validator("payload_log_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL, or none")
        return value

    @field_validator("api_keys_file", "default_model", "payload_log_url", mode="before")
    @classmethod
    def _none_means_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, value: str) -> str:
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = [name for name in names if name not in PROVIDER_NAMES]
        if not names or unknown:
            raise ValueError(
                f"unknown provider(s) {unknown or value!r}; use a comma-separated list of "
                f"{', '.join(PROVIDER_NAMES)}"
            )
        return ",".join(names)

    @field_validator("pinned_versions")
    @classmethod
    def _pairs(cls, value: str) -> str:
        for pair in filter(None, (p.strip() for p in value.split(","))):
            name, sep, version = pair.partition("=")
            if not sep or not name.strip() or not version.strip():
                raise ValueError(f"pinned version {pair!r} must look like name=version")
        return value

    def pins(self) -> dict[str, str]:
        pairs = (p.strip().partition("=") for p in self.pinned_versions.split(",") if p.strip())
        return {name.strip(): version.strip() for name, _, version in pairs}

    def provider_chain(self) -> list[str]:
        """Requested providers that this onnxruntime build has; CPU always closes the chain."""
        available = set(ort.get_available_providers())
        chain = [PROVIDER_NAMES[name] for name in self.providers.split(",")]
        usable = [name for name in chain if name in available]
        if "CPUExecutionProvider" not in usable:
            usable.append("CPUExecutionProvider")
        return usable

    def unavailable_providers(self) -> list[str]:
        available = set(ort.get_available_providers())
        return [
            PROVIDER_NAMES[name]
            for name in self.providers.split(",")
            if PROVIDER_NAMES[name] not in available
        ]

    def worker_count(self) -> int:
        return self.workers if self.workers is not None else max(1, os.cpu_count() or 1)

    def inference_threads(self) -> int:
        if self.executor_threads is not None:
            return self.executor_threads
        return max(1, os.cpu_count() or 1)

    def threads_per_session(self) -> int:
        return self.intra_op_threads if self.intra_op_threads is not None else 1

    def concurrency_limit(self) -> int:
        if self.max_concurrency is not None:
            return self.max_concurrency
        threads = self.inference_threads()
        # A dynamic batch holds one slot per request it carries.
        return threads * self.batching_max_batch_size if self.dynamic_batching else threads

    def open_paths(self) -> tuple[frozenset[str], tuple[str, ...]]:
        """(exact paths, prefixes) answered without an API key."""
        entries = [p.strip() for p in self.auth_open_paths.split(",") if p.strip()]
        exact = frozenset(p for p in entries if not p.endswith("*"))
        prefixes = tuple(p[:-1] for p in entries if p.endswith("*"))
        return exact, prefixes

    def binds_loopback_only(self) -> bool:
        """Whether only this machine can reach the server (127.0.0.0/8, ::1, localhost)."""
        host = self.host.strip().strip("[]")
        if host.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a host name may resolve to any address

    def authentication_refusal(self, keys: list[str]) -> str | None:
        """Why a server with these keys must not start, or None: without keys it runs open, so
        it binds loopback only unless VAE_ALLOW_UNAUTHENTICATED says otherwise, out loud."""
        if keys or self.binds_loopback_only() or self.allow_unauthenticated:
            return None
        return (
            f"no API keys (VAE_API_KEYS, VAE_API_KEYS_FILE) and VAE_HOST is {self.host}: every "
            "route, /admin/reload included, would be open to anyone who reaches it. Set keys, "
            "or VAE_ALLOW_UNAUTHENTICATED=true to serve openly on purpose"
        )

    def cors_origins(self) -> list[str]:
        return [o.strip() for o in self.cors_allow_origins.split(",") if o.strip()]

    def api_key_list(self) -> list[str]:
        """Every configured key. Raises ApiKeyError, whose message never holds a key."""
        keys = [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text().splitlines()
            except OSError as error:
                raise ApiKeyError(
                    f"VAE_API_KEYS_FILE {self.api_keys_file}: {error.strerror}"
                ) from None
            from_file = [
                line.strip() for line in lines if line.strip() and not line.startswith("#")
            ]
            if not from_file:
                # Asked for keys and got none (an empty or unmounted secret): fail closed.
                raise ApiKeyError(
                    f"VAE_API_KEYS_FILE {self.api_keys_file} holds no keys; refusing to serve "
                    "without the keys it was meant to hold"
                )
            keys += from_file
        for index, key in enumerate(keys, start=1):
            if len(key) < MIN_API_KEY_LENGTH:
                raise ApiKeyError(
                    f"API key #{index} has {len(key)} characters; use at least "
                    f"{MIN_API_KEY_LENGTH} (e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(32))')"
                )
            if any(ch.isspace() for ch in key):
                raise ApiKeyError(f"API key #{index} contains whitespace")
        return keys


# Short keys can be guessed by trying; 16 random characters cannot.
MIN_API_KEY_LENGTH = 16


class ApiKeyError(ValueError):
    """A configured API key is unusable; the message names it by position, never by value."""
