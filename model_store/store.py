"""The facade every process opens once: ``open_store(database_url, data_dir)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_store.artifacts import ArtifactStore
from model_store.dataset_store import DatasetStore
from model_store.datasets import DatasetLimits
from model_store.db import Database
from model_store.jobs import JobStore
from model_store.registry import ModelRegistry
from model_store.tables import SCHEMA_VERSION


@dataclass
class Store:
    db: Database
    blobs: ArtifactStore
    models: ModelRegistry
    jobs: JobStore
    datasets: DatasetStore
    data_dir: Path

    @property
    def scratch_dir(self) -> Path:
        """Same-filesystem scratch space for uploads and worker temp files."""
        path = self.data_dir / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        self.db.dispose()


def open_store(
    database_url: str,
    data_dir: Path,
    *,
    limits: DatasetLimits | None = None,
    init_schema: bool = True,
) -> Store:
    """Open (and by default create or check) the metadata schema and the data folders."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(database_url)
    stamped = db.init_schema() if init_schema else SCHEMA_VERSION
    blobs = ArtifactStore(data_dir / "artifacts")
    blobs.sweep_temp_files()
    store = Store(
        db=db,
        blobs=blobs,
        models=ModelRegistry(db, blobs),
        jobs=JobStore(db),
        datasets=DatasetStore(db, data_dir / "datasets", limits or DatasetLimits()),
        data_dir=data_dir,
    )
    if stamped < SCHEMA_VERSION:
        _migrate(store, stamped)
    return store


def _migrate(store: Store, stamped: int) -> None:
    """Data migrations from schema ``stamped`` (each step is idempotent, so processes that
    open an old database at the same time all finish it)."""
    if stamped < 2:
        store.models.backfill_defaults()  # the lowest ready servable version of each model
    store.db.stamp_schema(SCHEMA_VERSION)
