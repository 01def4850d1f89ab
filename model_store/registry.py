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
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from model_store.artifacts import ArtifactStore, Blob
from model_store.db import Database
from model_store.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
    NotServableError,
    StoreError,
)
from model_store.lineage import check_servable
from model_store.records import (
    DEFAULT,
    LATEST,
    MAX_VERSION_NUMBER,
    ArtifactInfo,
    ModelInfo,
    VersionInfo,
    version_number,
)
from model_store.tables import AliasRow, ArtifactRow, ModelRow, VersionRow, utcnow

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "model name") -> str:
    if not NAME_RE.match(name):
        raise InvalidArgumentError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (max 128)"
        )
    return name


class ModelRegistry:
    def __init__(self, db: Database, blobs: ArtifactStore) -> None:
        self.db = db
        self.blobs = blobs

    # ----------------------------------------------------------------- models
    def list_models(self) -> list[ModelInfo]:
        with self.db.session() as s:
            rows = s.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._model_info(s, row) for row in rows]

    def get_model(self, name: str) -> ModelInfo:
        with self.db.session() as s:
            return self._model_info(s, self._model_row(s, name))

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

    def list_versions(self, model: str) -> list[VersionInfo]:
        with self.db.session() as s:
            model_row = self._model_row(s, model)
            rows = s.scalars(
                select(VersionRow)
                .where(VersionRow.model_id == model_row.id)
                .order_by(VersionRow.number)
            ).all()
            return [self._version_info(s, row) for row in rows]

    def get_version(self, model: str, number: int) -> VersionInfo:
        """Any version, whatever its status."""
        with self.db.session() as s:
            return self._version_info(s, self._version_row(s, self._model_row(s, model), number))

    def resolve(self, model: str, ref: str | int) -> VersionInfo:
        """A ready version from a number, a numeric string, ``latest``, ``default`` or a user
        alias."""
        with self.db.session() as s:
            model_row = self._model_row(s, model)
            row: VersionRow | None
            number = version_number(ref)
            if number is not None:
                row = self._version_row(s, model_row, number)
            elif ref == LATEST:
                row = s.scalars(
                    select(VersionRow)
                    .where(VersionRow.model_id == model_row.id, VersionRow.status == "ready")
                    .order_by(VersionRow.number.desc())
                    .limit(1)
                ).first()
                if row is None:
                    raise NotFoundError(f"model {model!r} has no ready version")
            else:
                alias = s.scalars(
                    select(AliasRow).where(AliasRow.model_id == model_row.id, AliasRow.name == ref)
                ).first()
                if alias is None and ref == DEFAULT:
                    raise NotFoundError(
                        f"model {model!r} has no default version (none of its versions serves "
                        "keypoints, or the default's version was deleted): set its 'default' "
                        "alias, or name a version"
                    )
                if alias is None:
                    raise NotFoundError(f"model {model!r} has no version or alias {ref!r}")
                row = s.get(VersionRow, alias.version_id)
                assert row is not None
            if row.status != "ready":
                raise NotFoundError(f"{model} v{row.number} is {row.status}, not ready")
            return self._version_info(s, row)

    def artifact_path(self, model: str, ref: str | int, role: str = "model") -> Path:
        """Path of a verified artifact blob of a ready version (sha256 re-checked)."""
        info = self.resolve(model, ref).artifact(role)
        return self.blobs.verify(Blob(info.sha256, info.size))

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

    # ---------------------------------------------------------------- aliases
    def set_alias(self, model: str, alias: str, number: int) -> VersionInfo:
        """Point ``alias`` at a ready version (creating or moving it in one call).

        ``set_alias(model, DEFAULT, number)`` is how a version is promoted to what serving
        uses; the version must be servable.

        Raises:
            NotServableError: ``alias`` is ``default`` and the version cannot serve keypoints.
        """
        if alias == LATEST:
            raise ConflictError("'latest' is maintained automatically")
        if not ALIAS_RE.match(alias):
            raise InvalidArgumentError(f"invalid alias {alias!r}")
        if alias == DEFAULT:
            target = self.get_version(model, number)
            if target.status == "ready":
                check_servable(self, target)
        with self.db.session() as s:
            model_row = self._model_row(s, model)
            row = self._version_row(s, model_row, number)
            if row.status != "ready":
                raise ConflictError(f"{model} v{number} is {row.status}; aliases need ready")
            existing = s.scalars(
                select(AliasRow).where(AliasRow.model_id == model_row.id, AliasRow.name == alias)
            ).first()
            if existing is None:
                s.add(AliasRow(model_id=model_row.id, name=alias, version_id=row.id))
            else:
                existing.version_id = row.id
                existing.updated_at = utcnow()
            s.flush()
            return self._version_info(s, row)

    def delete_alias(self, model: str, alias: str) -> None:
        if alias == LATEST:
            raise ConflictError("'latest' is maintained automatically")
        if alias == DEFAULT:
            raise ConflictError(
                f"'default' is what serving uses for {model!r}: move it to another version"
            )
        with self.db.session() as s:
            model_row = self._model_row(s, model)
            existing = s.scalars(
                select(AliasRow).where(AliasRow.model_id == model_row.id, AliasRow.name == alias)
            ).first()
            if existing is None:
                raise NotFoundError(f"model {model!r} has no alias {alias!r}")
            s.delete(existing)

    def backfill_defaults(self) -> dict[str, int]:
        """Give every model without ``default`` its lowest ready servable version, if any
        (for metadata written before ``default`` existed); returns what was set."""
        found: dict[str, int] = {}
        for info in self.list_models():
            if info.default is not None:
                continue
            servable = [v for v in self.list_versions(info.name) if self.is_servable(v)]
            if servable:
                with self.db.session() as s:
                    model_row = self._model_row(s, info.name)
                    row = self._version_row(s, model_row, servable[0].number)
                    if self._add_default(s, model_row, row):
                        found[info.name] = row.number
        if found:
            logger.info("default versions set for existing models: %s", found)
        return found

    def is_servable(self, version: VersionInfo) -> bool:
        """Whether ``version`` is ready and can serve keypoints (could be the ``default``)."""
        if version.status != "ready":
            return False
        try:
            check_servable(self, version)
        except NotServableError:
            return False
        return True

    # ---------------------------------------------------------------- helpers
    def _first_servable(self, ready: VersionInfo) -> bool:
        """Whether ``ready`` (about to be ready) is its model's first servable version and
        the model has no ``default``."""
        info = self.get_model(ready.model)
        if info.default is not None or not self.is_servable(ready):
            return False
        others = (v for v in self.list_versions(ready.model) if v.number != ready.number)
        return not any(self.is_servable(v) for v in others)

    @staticmethod
    def _add_default(s: Session, model_row: ModelRow, row: VersionRow) -> bool:
        """Point ``default`` at ``row`` unless the model has one (a concurrent writer may
        have set it first); returns whether it did."""
        existing = s.scalars(
            select(AliasRow.id).where(AliasRow.model_id == model_row.id, AliasRow.name == DEFAULT)
        ).first()
        if existing is not None:
            return False
        try:
            with s.begin_nested():
                s.add(AliasRow(model_id=model_row.id, name=DEFAULT, version_id=row.id))
        except IntegrityError:
            return False
        return True

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

    @staticmethod
    def _model_row(s: Session, name: str) -> ModelRow:
        row = s.scalars(select(ModelRow).where(ModelRow.name == name)).first()
        if row is None:
            raise NotFoundError(f"model {name!r} not found")
        return row

    @staticmethod
    def _version_row(s: Session, model: ModelRow, number: int, lock: bool = False) -> VersionRow:
        if not 1 <= number <= MAX_VERSION_NUMBER:  # out of the column's range: no such row
            raise NotFoundError(f"model {model.name!r} has no version {number}")
        query = select(VersionRow).where(
            VersionRow.model_id == model.id, VersionRow.number == number
        )
        if lock:
            query = query.with_for_update()
        row = s.scalars(query).first()
        if row is None:
            raise NotFoundError(f"model {model.name!r} has no version {number}")
        return row

    def _model_info(self, s: Session, row: ModelRow) -> ModelInfo:
        latest = s.scalar(
            select(func.max(VersionRow.number)).where(
                VersionRow.model_id == row.id, VersionRow.status == "ready"
            )
        )
        count = s.scalar(select(func.count()).where(VersionRow.model_id == row.id)) or 0
        aliases = {
            name: number
            for name, number in s.execute(
                select(AliasRow.name, VersionRow.number)
                .join(VersionRow, AliasRow.version_id == VersionRow.id)
                .where(AliasRow.model_id == row.id)
            )
        }
        default = aliases.get(DEFAULT)
        if latest is not None:
            aliases[LATEST] = latest
        return ModelInfo(
            name=row.name,
            created_at=row.created_at,
            latest=latest,
            version_count=count,
            aliases=aliases,
            default=default,
        )

    def _version_info(self, s: Session, row: VersionRow) -> VersionInfo:
        parent = s.get(VersionRow, row.parent_id) if row.parent_id is not None else None
        aliases = list(s.scalars(select(AliasRow.name).where(AliasRow.version_id == row.id)))
        if row.status == "ready":
            latest = s.scalar(
                select(func.max(VersionRow.number)).where(
                    VersionRow.model_id == row.model_id, VersionRow.status == "ready"
                )
            )
            if latest == row.number:
                aliases.append(LATEST)
        model_name = s.scalar(select(ModelRow.name).where(ModelRow.id == row.model_id))
        assert model_name is not None
        return VersionInfo(
            model=model_name,
            number=row.number,
            status=row.status,
            format=row.format,
            parent=parent.number if parent is not None else None,
            recipe=row.recipe,
            manifest=row.manifest,
            report=row.report,
            error=row.error,
            created_at=row.created_at,
            created_by_job=row.created_by_job,
            artifacts=tuple(
                ArtifactInfo(a.role, a.filename, a.sha256, a.size) for a in row.artifacts
            ),
            aliases=tuple(sorted(aliases)),
        )
