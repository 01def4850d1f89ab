"""Versioned model registry: models, immutable versions with lineage, artifacts, aliases.

Lifecycle of a version: :meth:`ModelRegistry.create_pending_version` (number allocated,
status ``pending``) -> :meth:`ModelRegistry.finalize_version` (every artifact written
atomically into the blob store and re-verified, then ``ready`` in one transaction) or
:meth:`ModelRegistry.mark_failed`. Only ``ready`` versions resolve, so a crash between
the two steps leaves a ``pending`` version that recovery marks ``failed``.

``latest`` is not stored: it always resolves to the highest ``ready`` number.

``default`` (what serving uses when no version is given) is a stored alias that only ever
points at a servable version (:func:`model_store.lineage.check_servable`). The model's first
servable version sets it when it becomes ready; after that only :meth:`ModelRegistry.set_alias`
moves it, whatever versions jobs or uploads add. It cannot be deleted; force-deleting the
version it points at leaves the model without one until ``set_alias`` names another.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from model_store.aliases import AliasRegistry
from model_store.artifacts import Blob
from model_store.errors import (
    ConflictError,
    InvalidArgumentError,
    StoreError,
)
from model_store.records import (
    DEFAULT,
    ArtifactInfo,
    VersionInfo,
)
from model_store.registry_reads import check_name
from model_store.tables import AliasRow, ArtifactRow, ModelRow, VersionRow, utcnow

logger = logging.getLogger(__name__)


class ModelRegistry(AliasRegistry):
    """Models and versions: create, finalize, fail, report entries, delete (reads and aliases:
    the base classes)."""

    # ----------------------------------------------------------------- models
    def delete_model(self, name: str, *, force: bool = False) -> None:
        """Delete a model and all its versions. Without ``force`` only if it has no alias
        (``default`` included: a model that serves keypoints needs ``force``)."""
        with self.db.session() as s:
            row = self._model_row(s, name)
            aliases = s.scalars(select(AliasRow.name).where(AliasRow.model_id == row.id)).all()
            if aliases and not force:
                raise ConflictError(f"model {name!r} has aliases {sorted(aliases)}; use force")
            shas = list(
                s.scalars(
                    select(ArtifactRow.sha256)
                    .join(VersionRow, ArtifactRow.version_id == VersionRow.id)
                    .where(VersionRow.model_id == row.id)
                )
            )
            s.delete(row)
        self._collect_garbage(shas)

    # --------------------------------------------------------------- versions
    def create_pending_version(
        self,
        model: str,
        *,
        format: str,
        parent: int | None = None,
        recipe: Mapping[str, Any] | None = None,
        manifest: Mapping[str, Any] | None = None,
        created_by_job: str | None = None,
    ) -> VersionInfo:
        """Allocate the next version number of ``model`` (created if new) as ``pending``."""
        check_name(model)
        for attempt in range(10):
            try:
                with self.db.session() as s:
                    model_row = self._get_or_create_model(s, model)
                    parent_id = None
                    if parent is not None:
                        parent_id = self._version_row(s, model_row, parent).id
                    number = (
                        s.scalar(
                            select(func.max(VersionRow.number)).where(
                                VersionRow.model_id == model_row.id
                            )
                        )
                        or 0
                    ) + 1
                    row = VersionRow(
                        model_id=model_row.id,
                        number=number,
                        parent_id=parent_id,
                        status="pending",
                        format=format,
                        recipe=dict(recipe) if recipe is not None else None,
                        manifest=dict(manifest) if manifest is not None else None,
                        created_by_job=created_by_job,
                        created_at=utcnow(),
                    )
                    s.add(row)
                    s.flush()
                    return self._version_info(s, row)
            except IntegrityError as exc:  # concurrent allocation of the same number
                logger.debug("version number race on %s (attempt %d): %s", model, attempt, exc)
        raise StoreError(f"could not allocate a version number for {model!r}")

    def finalize_version(
        self,
        model: str,
        number: int,
        artifacts: Mapping[str, Path],
        *,
        report: Mapping[str, Any] | None = None,
        shared: Mapping[str, ArtifactInfo] | None = None,
    ) -> VersionInfo:
        """Store every artifact file (role -> path), verify each, then mark ``ready``.

        ``shared`` (role -> an artifact of another version) references blobs already in
        the store by sha256 (re-verified, not copied), e.g. a parent's detector.
        The version becomes visible only after all blobs are durable and re-hashed.
        """
        if not artifacts:
            raise StoreError("a ready version needs at least one artifact")
        stored: dict[str, tuple[str, Blob]] = {}
        for role, path in artifacts.items():
            blob = self.blobs.put_file(path)
            self.blobs.verify(blob)
            stored[role] = (path.name, blob)
        for role, info in (shared or {}).items():
            blob = Blob(info.sha256, info.size)
            self.blobs.verify(blob)
            stored[role] = (info.filename, blob)
        ready = dataclasses.replace(
            self.get_version(model, number),
            status="ready",
            artifacts=tuple(ArtifactInfo(r, f, b.sha256, b.size) for r, (f, b) in stored.items()),
        )
        becomes_default = self._first_servable(ready)
        with self.db.session() as s:
            model_row = self._model_row(s, model)
            row = self._version_row(s, model_row, number, lock=True)
            if row.status != "pending":
                raise ConflictError(f"{model} v{number} is {row.status}, not pending")
            for role, (filename, blob) in stored.items():
                s.add(
                    ArtifactRow(
                        version_id=row.id,
                        role=role,
                        filename=filename,
                        sha256=blob.sha256,
                        size=blob.size,
                    )
                )
            if report is not None:
                row.report = dict(report)
            row.status = "ready"
            s.flush()
            if becomes_default:
                self._add_default(s, model_row, row)
            s.refresh(row)
            return self._version_info(s, row)

    def mark_failed(self, model: str, number: int, error: str) -> None:
        """Mark a pending version failed (no-op if it is already failed)."""
        with self.db.session() as s:
            row = self._version_row(s, self._model_row(s, model), number, lock=True)
            if row.status == "ready":
                raise ConflictError(f"{model} v{number} is ready; it cannot fail")
            row.status = "failed"
            row.error = error

    def fail_pending_versions_of_job(self, job_id: str, error: str) -> list[tuple[str, int]]:
        """Mark every pending version created by ``job_id`` failed; return them."""
        with self.db.session() as s:
            rows = s.scalars(
                select(VersionRow)
                .options(selectinload(VersionRow.model))
                .where(VersionRow.created_by_job == job_id, VersionRow.status == "pending")
            ).all()
            for row in rows:
                row.status = "failed"
                row.error = error
            return [(row.model.name, row.number) for row in rows]

    def set_report_entry(
        self, model: str, number: int, path: Sequence[str], value: Any
    ) -> VersionInfo:
        """Set ``report[path[0]]...[path[-1]] = value`` (reports grow, e.g. evaluations).

        Read, change and write happen in one transaction on the locked row, so two jobs
        adding different entries at the same time both keep theirs.
        """
        if not path:
            raise InvalidArgumentError("a report entry needs a non-empty key path")
        with self.db.session() as s:
            row = self._version_row(s, self._model_row(s, model), number, lock=True)
            report = copy.deepcopy(row.report or {})
            node = report
            for key in path[:-1]:
                child = node.get(key)
                node[key] = child = dict(child) if isinstance(child, dict) else {}
                node = child
            node[path[-1]] = value
            row.report = report
            s.flush()
            return self._version_info(s, row)


    def delete_version(self, model: str, number: int, *, force: bool = False) -> None:
        """Delete a version. Children or aliases (``default`` included) -> ConflictError unless
        ``force``; with ``force`` its aliases go with it (a model whose ``default`` went has
        none until :meth:`set_alias` sets it: no other version is promoted silently)."""
        with self.db.session() as s:
            model_row = self._model_row(s, model)
            row = self._version_row(s, model_row, number, lock=True)
            children = s.scalars(
                select(VersionRow.number).where(VersionRow.parent_id == row.id)
            ).all()
            aliases = s.scalars(select(AliasRow.name).where(AliasRow.version_id == row.id)).all()
            if (children or aliases) and not force:
                parts = []
                if children:
                    parts.append(f"children {sorted(children)}")
                if aliases:
                    parts.append(f"aliases {sorted(aliases)}")
                raise ConflictError(
                    f"{model} v{number} is referenced by {' and '.join(parts)}; use force"
                )
            shas = [a.sha256 for a in row.artifacts]
            s.delete(row)
        if DEFAULT in aliases:
            logger.warning("deleted %s v%d, its default: the model has none now", model, number)
        self._collect_garbage(shas)


    def _collect_garbage(self, shas: list[str]) -> None:
        """Delete blobs no artifact row references any more."""
        if not shas:
            return
        with self.db.session() as s:
            used = set(s.scalars(select(ArtifactRow.sha256).where(ArtifactRow.sha256.in_(shas))))
        for sha in set(shas) - used:
            self.blobs.delete(sha)

    @staticmethod
    def _get_or_create_model(s: Session, name: str) -> ModelRow:
        row = s.scalars(select(ModelRow).where(ModelRow.name == name)).first()
        if row is None:
            row = ModelRow(name=name, created_at=utcnow())
            s.add(row)
            s.flush()
        return row


