"""Engine, sessions and the schema version check (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import create_engine, event, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from model_store.errors import SchemaVersionError
from model_store.tables import MIGRATABLE_FROM, SCHEMA_VERSION, Base, SchemaInfo

logger = logging.getLogger(__name__)

_PG_SCHEMA_LOCK_KEY = 0x706F7365  # advisory lock id used while creating the schema


def as_utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes: read them as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: writers serialize up front
    # instead of failing to upgrade a read lock when two processes race.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """One engine + session factory. Safe to share between threads of one process."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    def init_schema(self) -> int:
        """Create missing tables, stamp a new database, refuse a foreign schema version.

        Returns the version the database was stamped with (:data:`SCHEMA_VERSION` for a new
        one); below it, the caller runs the data migrations and then :meth:`stamp_schema`.
        """
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_SCHEMA_LOCK_KEY})
            Base.metadata.create_all(conn)
            stamped = conn.execute(select(SchemaInfo.version).where(SchemaInfo.id == 1)).scalar()
            if stamped is None:
                conn.execute(insert(SchemaInfo).values(id=1, version=SCHEMA_VERSION))
                logger.info("created metadata schema version %d", SCHEMA_VERSION)
                return SCHEMA_VERSION
            if not MIGRATABLE_FROM <= stamped <= SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"database schema version {stamped} != supported {SCHEMA_VERSION}; "
                    "migrate or use a fresh data directory"
                )
            return int(stamped)

    def stamp_schema(self, version: int) -> None:
        """Record that the database now holds schema ``version`` (after a migration)."""
        with self.engine.begin() as conn:
            conn.execute(update(SchemaInfo).where(SchemaInfo.id == 1).values(version=version))
        logger.info("metadata schema migrated to version %d", version)

    def ping(self) -> None:
        """Raise if the database is unreachable."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
