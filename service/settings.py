"""Every setting of the service, from `VAE_*` environment variables or `vae-serve` flags.

One pydantic-settings class: a bad value fails start-up with a message naming the variable,
never a surprise under load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import onnxruntime as ort
from pydantic import Field, field_validator
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
        None, description="model served at the top-level routes; default: the only one"
    )
    pinned_versions: str = Field(
        "",
        description="name=version pairs, comma-separated, served instead of the newest version "
        "('none': no pins)",
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
        64 * 1024 * 1024, ge=1024, description="largest request body in bytes (413 above)"
    )
    max_json_depth: int = Field(32, ge=2, description="deepest JSON nesting accepted (422 above)")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level of the service and uvicorn"
    )

    @field_validator("workers", "intra_op_threads", "executor_threads", mode="before")
    @classmethod
    def _auto_threads(cls, value: object) -> object:
        # "auto" spells the default explicitly, for environments (compose files) that cannot
        # leave a variable empty.
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator("pinned_versions", mode="before")
    @classmethod
    def _no_pins(cls, value: object) -> object:
        return "" if isinstance(value, str) and value.strip().lower() == "none" else value

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
