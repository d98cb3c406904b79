"""Opening the store: engine set-up, transactions and named migrations.

SQLite is the embedded default (WAL, a busy timeout, ``BEGIN IMMEDIATE`` for
writes so several processes can share one file). Code here sticks to what
PostgreSQL also runs; the SQLite-only parts (pragmas, FTS5) sit behind
``dialect`` checks and the ``SearchIndex`` interface.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection
from sqlmodel import Session, SQLModel

from storage import models  # noqa: F401  (registers the tables)
from storage.search import SearchIndex, search_index_for


class StoreError(RuntimeError):
    """A one-line problem with the database, with what to do about it."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def database_url(database: str) -> str:
    """A config value (a path or an SQLAlchemy URL) as a URL."""
    if "://" in database:
        return database
    path = Path(os.path.expanduser(database))
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - trivial
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=15000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Store:
    """The ticket store: one per process (or per thread-worker family)."""

    def __init__(self, database: str, *, migrate: bool = True):
        self.url = database_url(database)
        kwargs = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        try:
            self.engine = create_engine(self.url, **kwargs)
        except Exception as exc:
            raise StoreError(f"cannot use database {database!r}: {exc}; check [storage] database") from None
        self.dialect = self.engine.dialect.name
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self.search: SearchIndex = search_index_for(self.dialect)
        if migrate:
            try:
                self.migrate()
            except StoreError:
                raise
            except Exception as exc:
                raise StoreError(f"cannot open database {database!r}: {exc}") from None

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite): commits on success."""
        with Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def write_conn(self) -> Iterator[Connection]:
        """A Core connection in one write transaction, for bulk work (the sync)."""
        with self._writer.begin() as conn:
            yield conn

    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self.write_conn() as conn:
            SQLModel.metadata.tables["schema_migrations"].create(conn, checkfirst=True)
            done = {row[0] for row in conn.execute(text("SELECT name FROM schema_migrations"))}
        for name, step in MIGRATIONS:
            if name in done:
                continue
            with self.write_conn() as conn:
                step(self, conn)
                conn.execute(
                    text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                    {"n": name, "t": utcnow()},
                )
            applied.append(name)
        return applied

    def close(self) -> None:
        self.engine.dispose()


def _initial(store: Store, conn: Connection) -> None:
    names = ["customers", "tickets", "messages", "raw_messages", "message_locations", "sync_state", "events"]
    SQLModel.metadata.create_all(conn, tables=[SQLModel.metadata.tables[n] for n in names])


def _search(store: Store, conn: Connection) -> None:
    store.search.create(conn)


def _outbox_and_promises(store: Store, conn: Connection) -> None:
    names = ["outbox", "promises", "saved_replies"]
    SQLModel.metadata.create_all(conn, tables=[SQLModel.metadata.tables[n] for n in names])


def _outbox_claims(store: Store, conn: Connection) -> None:
    # Who is sending a row, and since when: a row left in `sending` by a dead process becomes `unknown`.
    add_column(conn, "outbox", "claimed_by", "VARCHAR")
    add_column(conn, "outbox", "claimed_at", "TIMESTAMP")


def _sent_headers(store: Store, conn: Connection) -> None:
    SQLModel.metadata.tables["sent_headers"].create(conn, checkfirst=True)


def _search_by_ticket(store: Store, conn: Connection) -> None:
    # The full-text index keys its rows by ticket (see storage/search.py): index everything again.
    store.search.rebuild(conn)


def add_column(conn: Connection, table: str, column: str, ddl_type: str) -> None:
    """For later migrations: add a column unless a fresh schema already has it."""
    if column not in {c["name"] for c in inspect(conn).get_columns(table)}:
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl_type}"))


# Named, ordered, each applied once in its own transaction. Append only.
MIGRATIONS: list[tuple[str, Callable[[Store, Connection], None]]] = [
    ("0001_initial", _initial),
    ("0002_search", _search),
    ("0003_outbox_promises", _outbox_and_promises),
    ("0004_outbox_claims", _outbox_claims),
    ("0005_sent_headers", _sent_headers),
    ("0006_search_by_ticket", _search_by_ticket),
]
