"""The model repository: `<root>/<name>/<version>/` bundles, validated, loaded and warmed.

Every version that validates is loaded; the unversioned routes of a name serve its pinned
version, else the newest that loaded. A bundle that fails validation is refused with a log line
saying why and the rest still serve; a repository with nothing loadable stops start-up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from bundle.manifest import MANIFEST_FILENAME
from bundle.runtime import BundleError, OnnxBundle
from service.errors import ModelNotFound
from service.runtime import Limits, ServedModel
from service.settings import ServiceSettings

log = logging.getLogger("vae_service.repository")


class RepositoryError(RuntimeError):
    """Nothing in the repository can be served; the message lists every refusal."""


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 2 < 10, and 1.9 < 1.10; digits compare as numbers, text as text."""
    parts = re.split(r"(\d+)", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


@dataclass
class ModelRepository:
    root: Path
    models: dict[str, dict[str, ServedModel]] = field(default_factory=dict)
    served_version: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    default_name: str | None = None

    @classmethod
    def load(cls, settings: ServiceSettings) -> ModelRepository:
        root = settings.model_repository
        if not root.is_dir():
            raise RepositoryError(f"model repository {root} is not a folder")
        repository = cls(root=root)
        options = session_options(settings)
        providers = settings.provider_chain()
        for missing in settings.unavailable_providers():
            log.warning(
                "execution provider %s is not available in this onnxruntime build; "
                "falling back to %s",
                missing,
                ", ".join(providers),
            )
        limits = Limits.from_settings(settings)
        for manifest_path in sorted(root.glob(f"*/*/{MANIFEST_FILENAME}")):
            bundle_dir = manifest_path.parent
            name, version = bundle_dir.parent.name, bundle_dir.name
            try:
                bundle = OnnxBundle(bundle_dir, providers=providers, session_options=options)
                if (bundle.manifest.name, bundle.manifest.version) != (name, version):
                    raise BundleError(
                        f"{bundle_dir}: model.json names {bundle.manifest.name}/"
                        f"{bundle.manifest.version}, but the folder says {name}/{version}"
                    )
                served = ServedModel(bundle, limits)
                served.warm_up()
            except (BundleError, OSError, ValueError) as error:
                repository.refused[f"{name}/{version}"] = str(error)
                log.error("refused bundle %s/%s: %s", name, version, error)
                continue
            repository.models.setdefault(name, {})[version] = served
            log.info("loaded bundle %s/%s (%s)", name, version, served.kind)
        repository._choose_served_versions(settings)
        repository._choose_default(settings)
        return repository

    def _choose_served_versions(self, settings: ServiceSettings) -> None:
        pins = settings.pins()
        for name, versions in self.models.items():
            pinned = pins.get(name)
            if pinned is not None:
                if pinned not in versions:
                    raise RepositoryError(
                        f"VAE_PINNED_VERSIONS pins {name}={pinned}, but the loaded versions "
                        f"of {name} are {sorted(versions, key=version_key)}"
                    )
                self.served_version[name] = pinned
            else:
                self.served_version[name] = max(versions, key=version_key)
        unknown = sorted(set(pins) - set(self.models))
        if unknown:
            log.warning("VAE_PINNED_VERSIONS names models that did not load: %s", unknown)

    def _choose_default(self, settings: ServiceSettings) -> None:
        if not self.models:
            reasons = "; ".join(f"{k}: {v}" for k, v in self.refused.items()) or "no bundles"
            raise RepositoryError(
                f"no loadable model in {self.root} (expected <name>/<version>/model.json): "
                f"{reasons}"
            )
        if settings.default_model is not None:
            if settings.default_model not in self.models:
                raise RepositoryError(
                    f"VAE_DEFAULT_MODEL={settings.default_model} did not load; "
                    f"loaded: {sorted(self.models)}"
                )
            self.default_name = settings.default_model
        elif len(self.models) == 1:
            self.default_name = next(iter(self.models))
        else:
            # Several models and no choice made: the top-level routes answer 404 with the
            # list, rather than silently serving an arbitrary one.
            self.default_name = None
            log.warning(
                "several models and no VAE_DEFAULT_MODEL: top-level routes need "
                "/models/{name}/...; loaded: %s",
                sorted(self.models),
            )

    def resolve(self, name: str | None, version: str | None) -> ServedModel:
        if name is None:
            if self.default_name is None:
                raise ModelNotFound(
                    "no default model: set VAE_DEFAULT_MODEL or call /models/{name}/...",
                    {"models": sorted(self.models)},
                )
            name = self.default_name
        versions = self.models.get(name)
        if versions is None:
            raise ModelNotFound(
                f"unknown model {name!r}", {"model": name, "models": sorted(self.models)}
            )
        chosen = self.served_version[name] if version is None else version
        if chosen not in versions:
            raise ModelNotFound(
                f"model {name!r} has no version {chosen!r}",
                {"model": name, "versions": sorted(versions, key=version_key)},
            )
        return versions[chosen]

    def versions_of(self, name: str) -> list[str]:
        return sorted(self.models.get(name, {}), key=version_key)

    def __iter__(self) -> Iterator[ServedModel]:
        for versions in self.models.values():
            yield from versions.values()


def session_options(settings: ServiceSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.threads_per_session()
    # Requests run concurrently in a thread pool; a single-op graph gains nothing from
    # parallel branches, so inter-op parallelism stays off.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options
