"""What serving a version needs, read from the store's metadata alone (no model building).

A version made by a job inherits the manifest and the ``detector`` artifact of its nearest
ancestor that has them; a version with no detector in its lineage uses the built-in model's
detector. :func:`served_version` gathers that into a :class:`ServedVersion`, which the API
(``app.serving.predictor``) and the jobs (``workers.version_pipeline``) turn into runners;
:func:`check_servable` is what the registry asks before a version may be a model's
``default``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model_store.artifacts import Blob
from model_store.errors import NoDetectorError, NotFoundError, NotServableError
from model_store.records import DEFAULT, VersionInfo
from pose_core.builtin import BUILTIN_MODEL_NAME
from pose_core.manifest_kinds import SERVABLE_KINDS
from pose_core.roles import ROLE_DETECTOR, ROLE_MODEL

if TYPE_CHECKING:  # the registry calls check_servable: no import of it at run time
    from model_store.registry_reads import RegistryReader
    from model_store.store import Store

#: Parents followed at most (a guard against a corrupt, cyclic lineage).
MAX_LINEAGE = 1000


@dataclass(frozen=True)
class ServedVersion:
    """A ready version, its effective manifest and the blobs to run."""

    version: VersionInfo
    manifest: dict[str, Any]
    model_blob: Blob
    detector_blob: Blob | None
    #: everything above comes from the version's own lineage (ready versions do not change), not
    #: from the built-in model's ``default``, which can move: the record may be cached by number
    from_lineage_only: bool = True

    def require_detector(self) -> Blob:
        """The detector blob.

        Raises:
            NoDetectorError: none in the lineage and the built-in model is not stored.
        """
        if self.detector_blob is None:
            raise NoDetectorError(
                f"{self.version.model} v{self.version.number} needs a person detector and "
                f"the built-in model {BUILTIN_MODEL_NAME!r} (which provides it) is not stored"
            )
        return self.detector_blob


def lineage(store: Store, version: VersionInfo) -> list[VersionInfo]:
    """The version and its ancestors, nearest first."""
    return _chain(store.models, version)


def served_version(store: Store, version: VersionInfo) -> ServedVersion:
    """What serving ``version`` needs: the nearest manifest, its ``model`` blob and the
    nearest ``detector`` blob (the built-in model's when the lineage has none).

    Raises:
        NotServableError: no servable manifest ``kind`` in the lineage, or no ``model``
            artifact.
    """
    return _served(store.models, version)


def check_servable(models: RegistryReader, version: VersionInfo) -> ServedVersion:
    """:func:`served_version`, and its manifest decodes
    (:func:`pose_core.inference.assemble.check_manifest`): metadata only, nothing runs.

    Raises:
        NotServableError: why ``version`` cannot serve keypoints.
    """
    from pose_core.inference.assemble import ManifestError, check_manifest

    served = _served(models, version)
    try:
        check_manifest(served.manifest)
    except ManifestError as exc:
        raise NotServableError(f"{version.model} v{version.number}: {exc}") from exc
    return served


def _chain(models: RegistryReader, version: VersionInfo) -> list[VersionInfo]:
    chain = [version]
    while chain[-1].parent is not None and len(chain) < MAX_LINEAGE:
        chain.append(models.get_version(version.model, chain[-1].parent))
    return chain


def _served(models: RegistryReader, version: VersionInfo) -> ServedVersion:
    chain = _chain(models, version)
    manifest = next((dict(v.manifest) for v in chain if v.manifest), {})
    kind = manifest.get("kind")
    if kind not in SERVABLE_KINDS:
        raise NotServableError(
            f"{version.model} v{version.number} has no pose manifest (kind {kind!r}); servable "
            f"kinds: {', '.join(SERVABLE_KINDS)}"
        )
    try:
        model_artifact = version.artifact(ROLE_MODEL)
    except NotFoundError as exc:
        raise NotServableError(str(exc)) from exc
    own_detector = _nearest_detector(chain)
    detector = own_detector or _builtin_detector(models)
    return ServedVersion(
        version,
        manifest,
        Blob(model_artifact.sha256, model_artifact.size),
        detector,
        from_lineage_only=own_detector is not None,
    )


def resolve_served(store: Store, model: str, ref: str | int) -> ServedVersion:
    """:func:`served_version` of the ready version ``ref`` (number, ``latest``, ``default`` or
    another alias).

    Raises:
        NotFoundError: no such model or ready version.
        NotServableError: see :func:`served_version`.
    """
    return served_version(store, store.models.resolve(model, ref))


def _nearest_detector(chain: list[VersionInfo]) -> Blob | None:
    for item in chain:
        for artifact in item.artifacts:
            if artifact.role == ROLE_DETECTOR:
                return Blob(artifact.sha256, artifact.size)
    return None


def _builtin_detector(models: RegistryReader) -> Blob | None:
    """The built-in model's person detector: its default version's (through its lineage),
    else that of its first ready version carrying one (the default may be an upload)."""
    try:
        default = models.resolve(BUILTIN_MODEL_NAME, DEFAULT)
    except NotFoundError:
        default = None
    if default is not None:
        found = _nearest_detector(_chain(models, default))
        if found is not None:
            return found
    try:
        versions = models.list_versions(BUILTIN_MODEL_NAME)
    except NotFoundError:
        return None
    return _nearest_detector([v for v in versions if v.status == "ready"])
