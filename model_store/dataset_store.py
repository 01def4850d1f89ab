"""Immutable datasets: rows in the database, files under ``<root>/<id>/``."""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, fields
from pathlib import Path

from sqlalchemy import select

from model_store.artifacts import fsync_dir
from model_store.datasets import DatasetLimits, extract_and_validate, remove_tree
from model_store.db import Database
from model_store.errors import NotFoundError
from model_store.records import DatasetInfo
from model_store.tables import DatasetRow, utcnow


class DatasetStore:
    def __init__(self, db: Database, root: Path, limits: DatasetLimits) -> None:
        self.db = db
        self.root = root
        self.limits = limits
        self.root.mkdir(parents=True, exist_ok=True)

    def create_from_zip(self, zip_path: Path, name: str | None = None) -> DatasetInfo:
        """Validate and store a dataset zip. Nothing is kept if validation fails."""
        dataset_id = str(uuid.uuid4())
        staging = self.root / f".staging-{dataset_id}"
        staging.mkdir()
        try:
            summary = extract_and_validate(zip_path, staging, self.limits)
            final = self.root / dataset_id
            os.replace(staging, final)
            fsync_dir(self.root)
        except BaseException:
            remove_tree(staging)
            raise
        try:
            with self.db.session() as s:
                row = DatasetRow(
                    id=dataset_id, name=name, created_at=utcnow(), **asdict(summary)
                )
                s.add(row)
                s.flush()
                return _info(row)
        except BaseException:
            remove_tree(final)
            raise

    def list_datasets(self) -> list[DatasetInfo]:
        with self.db.session() as s:
            return [_info(r) for r in s.scalars(select(DatasetRow).order_by(DatasetRow.created_at))]

    def get(self, dataset_id: str) -> DatasetInfo:
        with self.db.session() as s:
            row = s.get(DatasetRow, dataset_id)
            if row is None:
                raise NotFoundError(f"dataset {dataset_id!r} not found")
            return _info(row)

    def path(self, dataset_id: str) -> Path:
        """Directory with ``images/`` and (optionally) ``annotations.json``."""
        self.get(dataset_id)
        return self.root / dataset_id

    def delete(self, dataset_id: str) -> None:
        with self.db.session() as s:
            row = s.get(DatasetRow, dataset_id)
            if row is None:
                raise NotFoundError(f"dataset {dataset_id!r} not found")
            s.delete(row)
        remove_tree(self.root / dataset_id)


def _info(row: DatasetRow) -> DatasetInfo:
    return DatasetInfo(**{f.name: getattr(row, f.name) for f in fields(DatasetInfo)})
