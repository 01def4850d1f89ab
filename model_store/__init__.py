"""Versioned storage: SQL metadata (models, versions, aliases, datasets, jobs) and
content-addressed artifact blobs. No model-building code lives here."""

from model_store.errors import (
    ArtifactIntegrityError,
    ConflictError,
    DatasetRejected,
    InvalidArgumentError,
    NotFoundError,
    SchemaVersionError,
    StoreError,
)
from model_store.records import ArtifactInfo, DatasetInfo, JobInfo, ModelInfo, VersionInfo
from model_store.store import Store, open_store

__all__ = [
    "ArtifactInfo",
    "ArtifactIntegrityError",
    "ConflictError",
    "DatasetInfo",
    "DatasetRejected",
    "InvalidArgumentError",
    "JobInfo",
    "ModelInfo",
    "NotFoundError",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "VersionInfo",
    "open_store",
]
