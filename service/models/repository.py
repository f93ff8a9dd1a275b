"""The model repository: `<root>/<name>/<version>/` bundles, validated, loaded and warmed.

Every version that validates is loaded; the unversioned routes of a name serve its pinned
version, else the newest that loaded. A bundle that fails validation is refused with a log line
saying why and the rest still serve; a repository with nothing loadable stops start-up.

`ModelRepository.reload` builds the next repository from the previous one (hot reload, driven
by `service.dataplane.reload`): a bundle whose files did not change keeps its loaded, warmed copy, new
ones are loaded and warmed, removed ones are dropped. Folders whose name starts with a dot are
skipped: the trainer builds a bundle in a hidden staging folder and renames it into place.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from bundle.manifest import MANIFEST_FILENAME
from bundle.runtime import BundleError, OnnxBundle
from service.errors import ModelNotFound, ServiceError, excerpt
from service.monitoring.monitor import MonitorSettings, monitor_for
from service.models.served_model import Limits, ServedModel
from service.settings import ServiceSettings

log = logging.getLogger("vae_service.repository")


class RepositoryError(RuntimeError):
    """Nothing in the repository can be served; the message lists every refusal."""


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 2 < 10, and 1.9 < 1.10; digits compare as numbers, text as text."""
    parts = re.split(r"(\d+)", version)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p)


# One file of a bundle folder as stat sees it: (name, inode, size, mtime_ns, ctime_ns). The
# inode catches a file replaced by rename, ctime a rewrite that restored the old mtime (cp -p).
FileStamp = tuple[str, int, int, int, int]
# Every plain file directly in a bundle folder (model.json, the graphs, external weights);
# report/ is left out: plots do not change what is served.
Fingerprint = tuple[FileStamp, ...]


def bundle_folders(root: Path) -> dict[str, Path]:
    """Bundle key ("name/version") -> folder, for each `<root>/<name>/<version>/model.json`."""
    found: dict[str, Path] = {}
    for manifest_path in sorted(root.glob(f"*/*/{MANIFEST_FILENAME}")):
        folder = manifest_path.parent
        if folder.name.startswith(".") or folder.parent.name.startswith("."):
            continue  # a bundle still being written (trainer staging), or a parked one
        found[f"{folder.parent.name}/{folder.name}"] = folder
    return found


def fingerprint(folder: Path) -> Fingerprint:
    """Cheap (a few stat calls): decides whether a bundle must be looked at again."""
    stamps: list[FileStamp] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file():
                    st = entry.stat()
                    stamps.append(
                        (entry.name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
                    )
    except OSError:
        return ()  # vanished while we looked; the next look sees what became of it
    return tuple(sorted(stamps))


def repository_fingerprint(root: Path) -> dict[str, Fingerprint]:
    """What `ModelRepository.fingerprints` would hold after loading `root` now."""
    return {key: fingerprint(folder) for key, folder in bundle_folders(root).items()}


@dataclass
class RepositoryChanges:
    """What one reload did, bundle keys ("name/version") in each list."""

    loaded: list[str] = field(default_factory=list)  # new on disk, validated, warmed
    replaced: list[str] = field(default_factory=list)  # changed on disk; the new copy serves
    unloaded: list[str] = field(default_factory=list)  # gone from disk
    kept: list[str] = field(default_factory=list)  # the loaded copy goes on serving
    refused: list[str] = field(default_factory=list)  # looked at in this reload and refused
    # name -> (version served before, version served now); None: not served
    served: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    default_model: tuple[str | None, str | None] | None = None

    @property
    def changed(self) -> bool:
        """Whether anything that requests see changed."""
        return bool(
            self.loaded or self.replaced or self.unloaded or self.served or self.default_model
        )


@dataclass
class ModelRepository:
    root: Path
    models: dict[str, dict[str, ServedModel]] = field(default_factory=dict)
    served_version: dict[str, str] = field(default_factory=dict)
    # "name/version" -> why its files on disk are not served. A key can also be in `models`:
    # files changed in place and refused, while the copy loaded before goes on serving.
    refused: dict[str, str] = field(default_factory=dict)
    default_name: str | None = None
    # "name/version" -> the files as they were when last looked at, loaded or refused
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: ServiceSettings) -> ModelRepository:
        return _build(settings, None)[0]

    def reload(self, settings: ServiceSettings) -> tuple[ModelRepository, RepositoryChanges]:
        """The next repository, built from this one, which it never modifies. Raises
        RepositoryError when the result could not serve (nothing loadable, VAE_DEFAULT_MODEL
        or a pin unsatisfied): then this one should go on serving."""
        return _build(settings, self)

    def loaded(self, key: str) -> ServedModel | None:
        name, _, version = key.partition("/")
        return self.models.get(name, {}).get(version)

    def stale(self) -> list[str]:
        """Loaded copies still serving although their files on disk were refused."""
        return [key for key in self.refused if self.loaded(key) is not None]

    def _add(self, model: ServedModel) -> None:
        self.models.setdefault(model.name, {})[model.version] = model

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
            log.warning("%s", no_default_model_message(sorted(self.models)))

    def resolve(self, name: str | None, version: str | None) -> ServedModel:
        if name is None:
            if self.default_name is None:
                raise ModelNotFound(
                    no_default_model_message(sorted(self.models)), {"models": sorted(self.models)}
                )
            name = self.default_name
        versions = self.models.get(name)
        if versions is None:
            raise ModelNotFound(
                f"unknown model {excerpt(name)}",
                {"model": excerpt(name), "models": sorted(self.models)},
            )
        chosen = self.served_version[name] if version is None else version
        if chosen not in versions:
            raise ModelNotFound(
                f"model {excerpt(name)} has no version {excerpt(chosen)}",
                {"model": name, "versions": sorted(versions, key=version_key)},
            )
        return versions[chosen]

    def versions_of(self, name: str) -> list[str]:
        return sorted(self.models.get(name, {}), key=version_key)

    def __iter__(self) -> Iterator[ServedModel]:
        for versions in self.models.values():
            yield from versions.values()


class _BundleLoader:
    """Opens bundle folders with the settings' providers, session options and limits."""

    def __init__(self, settings: ServiceSettings, *, warn: bool):
        self.options = session_options(settings)
        self.providers = settings.provider_chain()
        self.limits = Limits.from_settings(settings)
        self.monitoring = (
            MonitorSettings(
                settings.monitor_window,
                settings.monitor_alpha,
                settings.monitor_min_items,
                settings.monitor_report_interval_s,
                settings.monitor_feedback_items,
            )
            if settings.monitoring
            else None
        )
        if warn:  # once per process start, not again at each reload
            for missing in settings.unavailable_providers():
                log.warning(
                    "execution provider %s is not available in this onnxruntime build; "
                    "falling back to %s",
                    missing,
                    ", ".join(self.providers),
                )

    def open(self, folder: Path) -> OnnxBundle:
        """Validated (schema, sha256 of the graphs, graph signatures, folder = name/version),
        sessions created, not yet warmed."""
        name, version = folder.parent.name, folder.name
        bundle = OnnxBundle(folder, providers=self.providers, session_options=self.options)
        if (bundle.manifest.name, bundle.manifest.version) != (name, version):
            raise BundleError(
                f"{folder}: model.json names {bundle.manifest.name}/"
                f"{bundle.manifest.version}, but the folder says {name}/{version}"
            )
        return bundle

    def serve(self, bundle: OnnxBundle) -> ServedModel:
        served = ServedModel(bundle, self.limits)
        served.warm_up()
        if self.monitoring is not None:  # after the warm-up, which is no traffic
            served.monitor = monitor_for(bundle, self.monitoring)
        return served


# What a bad bundle raises on the way in; anything else is logged with its traceback (a bug),
# yet still only refuses that bundle: one bundle never takes the others down.
_EXPECTED_REFUSALS = (BundleError, OSError, ValueError, ServiceError)


def _build(
    settings: ServiceSettings, previous: ModelRepository | None
) -> tuple[ModelRepository, RepositoryChanges]:
    root = settings.model_repository
    if not root.is_dir():
        raise RepositoryError(f"model repository {root} is not a folder")
    loader = _BundleLoader(settings, warn=previous is None)
    repository = ModelRepository(root=root)
    changes = RepositoryChanges()
    for key, folder in bundle_folders(root).items():
        # Stamped before reading: a change made while loading shows at the next look.
        stamp = fingerprint(folder)
        repository.fingerprints[key] = stamp
        old = previous.loaded(key) if previous is not None else None
        if previous is not None and previous.fingerprints.get(key) == stamp:
            # Nothing changed since the last look: the same outcome, without the work.
            if old is not None:
                repository._add(old)
                changes.kept.append(key)
            if key in previous.refused:
                repository.refused[key] = previous.refused[key]
            continue
        try:
            bundle = loader.open(folder)
            if old is not None and bundle.manifest == old.manifest:
                # Touched or copied over with the same content (the graphs matched the same
                # checksums): the warmed copy goes on serving.
                repository._add(old)
                changes.kept.append(key)
                if previous is not None and key in previous.refused:
                    log.info("the files of %s match its loaded copy again", key)
                continue
            served = loader.serve(bundle)
        except Exception as error:
            if not isinstance(error, _EXPECTED_REFUSALS):
                log.exception("unexpected error loading %s", key)
            repository.refused[key] = str(error)
            changes.refused.append(key)
            if old is not None:
                repository._add(old)
                changes.kept.append(key)
                log.error(
                    "refused the changed files of %s: %s; the copy loaded before goes on "
                    "serving until the process restarts: fix or remove the bundle",
                    key,
                    error,
                )
            else:
                log.error("refused bundle %s: %s", key, error)
            continue
        repository._add(served)
        if old is None:
            changes.loaded.append(key)
            log.info("loaded bundle %s (%s)", key, served.kind)
        else:
            changes.replaced.append(key)
            log.info("reloaded bundle %s: its files changed on disk (%s)", key, served.kind)
    if previous is not None:
        for key in sorted(set(previous.fingerprints) - set(repository.fingerprints)):
            if previous.loaded(key) is not None:
                changes.unloaded.append(key)
                log.info("unloaded bundle %s: its folder is gone", key)
        for key in (*changes.unloaded, *changes.replaced):
            gone = previous.loaded(key)
            if gone is not None and gone.monitor is not None:
                gone.monitor.close()  # its window file; requests still in flight may record
    repository._choose_served_versions(settings)
    repository._choose_default(settings)
    if previous is not None:
        for name in sorted(set(previous.served_version) | set(repository.served_version)):
            before, after = previous.served_version.get(name), repository.served_version.get(name)
            if before != after:
                changes.served[name] = (before, after)
                log.info("model %s: now serving version %s (was %s)", name, after, before)
        if previous.default_name != repository.default_name:
            changes.default_model = (previous.default_name, repository.default_name)
            log.info(
                "default model is now %s (was %s)", repository.default_name, previous.default_name
            )
    return repository, changes


def session_options(settings: ServiceSettings) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = settings.threads_per_session()
    # Requests run concurrently in a thread pool; a single-op graph gains nothing from
    # parallel branches, so inter-op parallelism stays off.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # onnxruntime's CPU arena keeps the largest batch's tensors for good: after a burst of
    # 4096-item requests a worker stayed ~30 MiB larger. Without it tensors come from malloc,
    # which gives them back (service.dataplane.memory); single items and batches of 64 and 4096 ran as
    # fast either way (181 us, 332 us, 11-12.6 ms in-process: docs/security.md).
    options.enable_cpu_mem_arena = False
    return options


def no_default_model_message(names: list[str]) -> str:
    """What the top-level routes answer when several models are served and none is named the
    default: which ones, and exactly what to set."""
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return (
        f"no default model: {len(names)} models are served ({shown}); start the service with "
        f"VAE_DEFAULT_MODEL={names[0]} (or another of them) for the top-level routes, or call "
        "/models/{name}/... with the model's name"
    )
