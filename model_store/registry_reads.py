"""The read side of the model registry (:class:`RegistryReader`): models, versions and
``latest`` / alias resolution, and the row -> record mapping the write side shares. The
registry itself (:class:`model_store.registry.ModelRegistry`) adds the writes, aliases
through :class:`model_store.aliases.AliasRegistry`."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from model_store.artifacts import ArtifactStore, Blob
from model_store.db import Database
from model_store.errors import (
    InvalidArgumentError,
    NotFoundError,
    NotServableError,
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
from model_store.tables import AliasRow, ModelRow, VersionRow

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")


def check_name(name: str, what: str = "model name") -> str:
    if not NAME_RE.match(name):
        raise InvalidArgumentError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_' or '-' (max 128)"
        )
    return name


class RegistryReader:
    """Queries of the registry; every result is an immutable record."""

    def __init__(self, db: Database, blobs: ArtifactStore) -> None:
        self.db = db
        self.blobs = blobs

    def list_models(self) -> list[ModelInfo]:
        with self.db.session() as s:
            rows = s.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._model_info(s, row) for row in rows]

    def get_model(self, name: str) -> ModelInfo:
        with self.db.session() as s:
            return self._model_info(s, self._model_row(s, name))

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
            return self._version_info(s, self._resolve_row(s, model, ref))

    def resolve_identity(self, model: str, ref: str | int) -> tuple[int, str]:
        """The number of the ready version :meth:`resolve` gives and an identity no other
        version ever has (row id and creation time: numbers restart when a model is deleted and
        made again), without the rest of its record (serving resolves on every request)."""
        with self.db.session() as s:
            row = self._resolve_row(s, model, ref)
            return row.number, f"{row.id}@{row.created_at.isoformat()}"

    def _resolve_row(self, s: Session, model: str, ref: str | int) -> VersionRow:
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
        return row

    def artifact_path(self, model: str, ref: str | int, role: str = "model") -> Path:
        """Path of a verified artifact blob of a ready version (sha256 re-checked)."""
        info = self.resolve(model, ref).artifact(role)
        return self.blobs.verify(Blob(info.sha256, info.size))

    def is_servable(self, version: VersionInfo) -> bool:
        """Whether ``version`` is ready and can serve keypoints (could be the ``default``)."""
        if version.status != "ready":
            return False
        try:
            check_servable(self, version)
        except NotServableError:
            return False
        return True

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
