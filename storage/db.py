"""Opening the store: engine set-up, transactions and named migrations.

SQLite is the embedded default (WAL, a busy timeout, ``BEGIN IMMEDIATE`` for
writes so several processes can share one file). Code here sticks to what
PostgreSQL also runs; the SQLite-only parts (pragmas, FTS5) sit behind
``dialect`` checks and the ``SearchIndex`` interface.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlmodel import Session, SQLModel

from storage import models  # noqa: F401  (registers the tables)
from storage.records import DatabaseUnreachable, StoreError, utcnow  # noqa: F401  (defined without SQLAlchemy)
from storage.search import SearchIndex, search_index_for




def database_url(database: str) -> str:
    """A config value (a path or an SQLAlchemy URL) as a URL.

    ``postgresql://`` (or ``postgres://``) without a driver means psycopg 3, the one heard installs
    (SQLAlchemy's default for it would be psycopg2).
    """
    if "://" in database:
        scheme, rest = database.split("://", 1)
        if scheme in ("postgresql", "postgres"):
            return f"postgresql+psycopg://{rest}"
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


WRITE_LOCK = 0x6865617264  # "heard": the PostgreSQL advisory lock every write transaction holds
WRITE_LOCK_WAIT = "60s"  # how long a write waits for another one before it gives up (SQLite: busy_timeout)


def _configure_postgresql(engine: Engine) -> None:
    """Write transactions run one at a time, as SQLite's ``BEGIN IMMEDIATE`` makes them there.

    heard's writes read, decide and write (is this message stored yet? is this ticket still
    unacknowledged? does this agent hold a ticket already?). Under PostgreSQL's READ COMMITTED two
    of them could decide on the same state at once: two syncs storing one new mail (the second
    died on a duplicate key), two acknowledgements to one customer, an agent holding two tickets.
    A transaction-level advisory lock taken at BEGIN serializes the writers (not the readers);
    each statement after it sees what the writer before it committed.
    """

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection):
        if conn.get_execution_options().get("sqlite_begin") == "IMMEDIATE":  # a write transaction
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{WRITE_LOCK_WAIT}'")
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")


def shown_url(database: str) -> str:
    """The database as an error line may show it: a password in a URL becomes ***."""
    if "://" not in database:
        return database
    try:
        from sqlalchemy.engine import make_url

        return make_url(database).render_as_string(hide_password=True)
    except Exception:
        return database.split("://", 1)[0] + "://…"


def _first_line(exc: BaseException) -> str:
    """An error's own words, without SQLAlchemy's "Background on this error" link or the SQL."""
    orig = getattr(exc, "orig", None)  # the driver's error inside SQLAlchemy's wrapper
    return (str(orig or exc).strip().splitlines() or [type(exc).__name__])[0]


def _postgres_hint(said: str) -> str:
    """What to do about a PostgreSQL server that would not let heard in, from what the server said."""
    pgpass = "~/.pgpass (or PGPASSFILE, PGPASSWORD)"
    if re.search(r'database ".*" does not exist', said):
        return ("create it on the server (createdb, or CREATE DATABASE as a user who may), "
                "or fix the database name in [storage] database")
    if re.search(r'role ".*" does not exist', said):
        return "fix the user in [storage] database, or create that role on the server"
    if "no password supplied" in said:
        return f"the server wants a password: put it in {pgpass} for this host, port, database and user"
    if "password authentication failed" in said:
        return f"fix the password for this user in {pgpass}, or the user in [storage] database"
    if "no pg_hba.conf entry" in said:
        return "the server does not let this user in from here: its pg_hba.conf needs a line for it"
    if "Connection refused" in said or "failed to resolve host" in said or "timeout expired" in said:
        return "check the host and port in [storage] database, and that PostgreSQL runs there"
    return "check [storage] database, and that the database server runs and lets this user in"


_ENGINES: weakref.WeakSet = weakref.WeakSet()  # every store's engine, for close_all_stores


def close_all_stores() -> None:
    """Close the connections of every store this process still has open (at exit).

    On SQLite the last connection to close copies the WAL into the database
    file and removes it, which leaves the file complete and synced to disk.
    """
    for engine in list(_ENGINES):  # a store may be gone while its engine waits for the collector
        engine.dispose()


class Store:
    """The ticket store: one per process (or per thread-worker family)."""

    def __init__(self, database: str, *, migrate: bool = True):
        try:
            self.url = database_url(database)
        except OSError as exc:
            raise StoreError(f"cannot create the folder for database {database!r} ({exc.strerror or exc}): "
                             "check [storage] database") from None
        if self.url.startswith("sqlite:///") and Path(self.url.removeprefix("sqlite:///")).is_dir():
            folder = Path(self.url.removeprefix("sqlite:///"))
            raise StoreError(f"database {database!r} is a folder: give [storage] database a file in it, "
                             f"e.g. {folder / 'heard.db'}")
        kwargs: dict = {}
        if self.url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
        elif self.url.startswith("postgresql"):
            # Times are stored as timestamptz and always handed over aware: the session's zone only
            # decides how PostgreSQL prints them, and UTC keeps any naive value meaning UTC too.
            kwargs["connect_args"] = {"options": "-c timezone=UTC"}
            kwargs["pool_pre_ping"] = True  # a server restarted under a long-running app or watcher
        self.shown = shown = shown_url(database)
        try:
            self.engine = create_engine(self.url, **kwargs)
        except ModuleNotFoundError as exc:
            raise StoreError(f"database {shown!r} needs the {exc.name} driver: pip install 'heard[postgres]' "
                             "(make installs it)" if "psycopg" in (exc.name or "") else
                             f"cannot use database {shown!r}: {exc}; check [storage] database") from None
        except Exception as exc:
            raise StoreError(f"cannot use database {shown!r}: {_first_line(exc)}; check [storage] database") from None
        self.dialect = self.engine.dialect.name
        _ENGINES.add(self.engine)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        elif self.dialect == "postgresql":
            _configure_postgresql(self.engine)
        # Write transactions: BEGIN IMMEDIATE on SQLite, the write lock on PostgreSQL.
        self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        self._bulk: _BulkLoad | None = None
        self.search: SearchIndex = search_index_for(self.dialect)
        if migrate:
            try:
                self._migrate_at_open()
            except StoreError as exc:
                if not isinstance(exc, DatabaseUnreachable):
                    raise
                first = _first_line(exc.__cause__ or exc)
                if self.dialect != "sqlite":
                    what = _postgres_hint(first)
                elif "unable to open" in first:  # not a lock: a file this user cannot create or open
                    what = "check [storage] database: heard must be able to create and write that file"
                else:
                    what = "another heard may be writing: try again"
                raise StoreError(f"cannot open database {shown!r}: {first}; {what}") from None
            except Exception as exc:
                what = ("check [storage] database, or move the file aside and run heard sync again"
                        if self.dialect == "sqlite" else _postgres_hint(_first_line(exc)))
                raise StoreError(f"cannot open database {shown!r}: {_first_line(exc)}; {what}") from None

    @contextmanager
    def _answering(self) -> Iterator[None]:
        """A database that stops answering is one line (a DatabaseUnreachable), not a traceback.

        PostgreSQL stopped or restarted under the app or ``heard sync --watch``, a network gone, SQLite's
        file locked past the busy timeout: the caller reports it and may try again (the pool checks a
        connection before handing it out, so the first try after the server is back works).
        """
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            first = _first_line(exc)
            if self.dialect == "sqlite":
                raise DatabaseUnreachable(f"database {self.shown!r}: {first}") from exc
            raise DatabaseUnreachable(f"database {self.shown!r} is unreachable: {first}") from exc

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._answering(), Session(self.engine, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction (``BEGIN IMMEDIATE`` on SQLite): commits on success."""
        with self._answering(), Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def write_conn(self, *, bulk: bool = False) -> Iterator[Connection]:
        """A Core connection in one write transaction, for bulk work (the sync).

        ``bulk``: one of a run of large transactions inside :meth:`bulk_load`,
        on its connection, whose commits leave checkpointing to its thread.
        """
        load = self._bulk if bulk else None
        if load is None or not load.writing.acquire(blocking=False):  # none, or in use by another thread
            with self._answering(), self._writer.begin() as conn:
                yield conn
            return
        try:
            load.before_begin()
            with self._answering(), load.conn.begin():
                yield load.conn
            load.committed()
        finally:
            load.writing.release()

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """While a run of large write transactions goes in (an initial sync), checkpoint on a thread.

        SQLite checkpoints (copies the WAL's pages into the database file and
        fsyncs both) inside the commit that takes the WAL past 1,000 pages: with
        batches of several MB, in every commit, on the writing thread. Here
        ``write_conn(bulk=True)`` transactions run on one connection that does
        not checkpoint in its commits, and whose page cache (``BULK_CACHE``)
        holds a whole batch and the indexes it touches; a thread with its own
        connection runs a PASSIVE checkpoint (it never waits for, nor blocks,
        a reader or a writer, in any process) after each of their commits,
        while the writer goes on with its next batch (SQLite releases the GIL).

        The WAL only starts over when a write transaction begins with all of
        it copied, which a writer that never pauses does not give: so once it
        holds ``WAL_BOUND`` bytes, the next bulk transaction first copies the
        little the thread has not (the last batch), and the WAL starts over
        in it. The connection gets its usual settings back at the end, so other
        writes, here or in other processes, are unaffected. Elsewhere than
        SQLite this does nothing.
        """
        if self.dialect != "sqlite" or self._bulk is not None:
            yield
            return
        self._bulk = _BulkLoad(self)
        try:
            yield
        finally:
            bulk, self._bulk = self._bulk, None
            with bulk.writing:  # a bulk transaction still running on another thread
                bulk.stop()

    def _migrate_at_open(self, attempts: int = 3) -> None:
        # Several processes setting up one new file at once (two agents, or the app and
        # `heard sync`): SQLite can answer "database is locked" at once there, without waiting
        # out the busy timeout (while the file turns into WAL). Each step is applied at most
        # once (migrate checks inside its write transaction), so trying again is safe.
        for attempt in range(attempts):
            try:
                self.migrate()
                return
            except (OperationalError, DatabaseUnreachable) as exc:
                if attempt == attempts - 1 or "database is locked" not in str(exc):
                    raise
                self.engine.dispose()
                time.sleep(0.2 * (attempt + 1))

    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self.write_conn() as conn:  # a write: one process at a time (BEGIN IMMEDIATE, or the write lock)
            SQLModel.metadata.tables["schema_migrations"].create(conn, checkfirst=True)
            done = {row[0] for row in conn.execute(text("SELECT name FROM schema_migrations"))}
        for name, step in MIGRATIONS:
            if name in done:
                continue
            with self.write_conn() as conn:
                # Another process opening the same new database may have applied it since we
                # looked: the write transaction (BEGIN IMMEDIATE) makes this check and the step one.
                if conn.execute(text("SELECT 1 FROM schema_migrations WHERE name = :n"), {"n": name}).first():
                    continue
                step(self, conn)
                conn.execute(
                    text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                    {"n": name, "t": utcnow()},
                )
            applied.append(name)
        return applied

    def close(self) -> None:
        self.engine.dispose()


WAL_BOUND = 32 * 1024 * 1024  # bytes of WAL a bulk load lets accumulate before it starts over
MAX_BEHIND = 3  # bulk commits not yet checkpointed before the writer checkpoints itself
BULK_CACHE = 8 * 1024 * 1024  # bytes of page cache for the bulk writer (SQLite's default: 2 MB)


class _BulkLoad:
    """The bulk writer's connection, and a thread with its own: a PASSIVE checkpoint after each commit."""

    def __init__(self, store: Store):
        self.writing = threading.Lock()  # the writer connection is in a transaction
        self.conn = store._writer.connect()
        try:
            dbapi = self.conn.connection.dbapi_connection
            self._saved = {k: dbapi.execute(f"PRAGMA {k}").fetchone()[0] for k in ("wal_autocheckpoint", "cache_size")}
            dbapi.execute("PRAGMA wal_autocheckpoint=0")
            dbapi.execute(f"PRAGMA cache_size={-(BULK_CACHE // 1024)}")
            self._raw = store.engine.raw_connection()
        except BaseException:
            self.conn.invalidate()
            self.conn.close()
            raise
        self._db = self._raw.driver_connection
        self._bound = max(1000, WAL_BOUND // self._db.execute("PRAGMA page_size").fetchone()[0])  # pages
        self._lock = threading.Lock()  # one checkpoint at a time on our connection
        self._wake = threading.Condition()
        self._commits = 0  # bulk commits so far
        self._copied = 0  # of them, those the last checkpoint started after
        self._wal_pages = 0  # as of the last checkpoint
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="heard-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        with self._wake:
            self._commits += 1
            self._wake.notify()

    def before_begin(self) -> None:
        """Past the bound: copy what is left, so the transaction about to begin starts the WAL over.

        Also when the thread has fallen a few commits behind: the WAL's size
        is known as of the last checkpoint, so the bound holds to within as
        many batches.
        """
        if self._wal_pages >= self._bound or self._commits - self._copied >= MAX_BEHIND:
            self._checkpoint(restarting=True)

    def _checkpoint(self, *, restarting: bool = False) -> None:
        with self._lock:
            upto = self._commits
            if upto == self._copied:
                return  # another checkpoint got here first
            try:
                _busy, wal_pages, copied = self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except Exception:  # an optimisation only: SQLite checkpoints again with the next write
                return
            self._copied = upto
            # All of it copied before the writer begins: its first write starts the WAL over.
            self._wal_pages = 0 if restarting and copied == wal_pages else wal_pages

    def _run(self) -> None:
        if sys.platform.startswith("linux"):  # where a thread has a niceness of its own
            try:
                # Copying pages can wait; the writer (the sync's critical path) should not.
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + 5)
            except OSError:
                pass
        while True:
            with self._wake:
                while self._commits == self._copied and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
            self._checkpoint()

    def stop(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify()
        self._thread.join()
        self._raw.close()
        try:
            dbapi = self.conn.connection.dbapi_connection
            for k, v in self._saved.items():
                dbapi.execute(f"PRAGMA {k}={v}")
        except Exception:  # not back to normal: not back to the pool either
            self.conn.invalidate()
        self.conn.close()


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


def _search_merges_eight(store: Store, conn: Connection) -> None:
    # FTS5 merges a level's segments once it holds `automerge` of them (4 by default), so every
    # indexed word is rewritten about log4(batches) times as a sync commits batch after batch.
    # Merging 8 at a time does about two thirds of that work (an initial sync of 10,000 messages:
    # 1.0 -> 0.65 s of indexing CPU), and searches of 100,000 messages are as fast as before.
    if store.dialect == "sqlite":
        conn.exec_driver_sql("INSERT INTO message_fts (message_fts, rank) VALUES ('automerge', 8)")


def _wide_imap_numbers(store: Store, conn: Connection) -> None:
    # UIDVALIDITY, UIDs and MODSEQs are unsigned: a server's UIDVALIDITY over 2**31 did not fit a
    # PostgreSQL INTEGER (SQLite's integers are 64-bit already; new tables are created BIGINT).
    if store.dialect == "postgresql":
        for table, columns in (("message_locations", ("uidvalidity", "uid")),
                               ("sync_state", ("uidvalidity", "last_uid", "uidnext", "highestmodseq"))):
            for column in columns:
                conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE BIGINT"))


def _search_outside_sqlite(store: Store, conn: Connection) -> None:
    # Other databases get an index of their own too (storage/search.py: each message's words as FTS5
    # cuts them): made and filled here for a database created before it existed.
    if store.dialect != "sqlite":
        store.search.create(conn)
        store.search.rebuild(conn)


def _search_cjk_characters(store: Store, conn: Connection) -> None:
    # Chinese and Japanese characters are indexed one by one (storage/search.py: spaced_words), so a
    # word in the middle of a Japanese sentence can be found: index everything again.
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
    ("0007_search_merges_eight", _search_merges_eight),
    ("0008_wide_imap_numbers", _wide_imap_numbers),
    ("0009_search_outside_sqlite", _search_outside_sqlite),
    ("0010_search_cjk_characters", _search_cjk_characters),
]
