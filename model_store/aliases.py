"""Aliases of the registry: user aliases and ``default`` (what serving uses), which only ever
points at a servable version (:func:`model_store.lineage.check_servable`); ``latest`` is
computed, never stored (see :mod:`model_store.registry`)."""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from model_store.errors import (
    ConflictError,
    InvalidArgumentError,
    NotFoundError,
)
from model_store.lineage import check_servable
from model_store.records import (
    DEFAULT,
    LATEST,
    VersionInfo,
)
from model_store.registry_reads import ALIAS_RE, RegistryReader
from model_store.tables import AliasRow, ModelRow, VersionRow, utcnow

logger = logging.getLogger(__name__)


class AliasRegistry(RegistryReader):
    """Setting and deleting aliases, and the ``default`` a model's first servable version gets."""

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
