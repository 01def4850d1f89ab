"""Exceptions raised by the model store. ``app/errors.py`` maps them to HTTP codes."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every model_store error."""


class NotFoundError(StoreError):
    """A model, version, alias, dataset, job or artifact does not exist."""


class ConflictError(StoreError):
    """The operation conflicts with the current state (e.g. a version still referenced)."""


class InvalidArgumentError(StoreError):
    """A name, alias or parameter is malformed."""


class ArtifactIntegrityError(StoreError):
    """A stored blob is missing or its sha256 does not match its address."""


class SchemaVersionError(StoreError):
    """The database was created by an incompatible version of this program."""


class DatasetRejected(StoreError):
    """An uploaded dataset archive failed validation; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotServableError(StoreError):
    """A version cannot serve keypoints: no pose manifest in its lineage or no ``model``
    artifact."""


class NoDetectorError(NotServableError):
    """A version needs a person detector and none is stored in its lineage nor in the
    built-in model."""
