"""The store's plain values, and a store that opens on a thread; the standard library only.

Importing SQLAlchemy and SQLModel takes about half a second, longer than
`heard sync` needs to connect, log in and start fetching. This module lets
the sync start without them:

* ``NewMessage`` (a parsed message as plain values), ``StoreError`` and
  ``utcnow``, which the parsing process and the command line need before,
  or without, the database layer;
* :class:`OpeningStore`: a :class:`storage.db.Store` opened on a thread,
  with the sync cursor readable before it is open (plain ``sqlite3``, for a
  SQLite database that already exists).

``storage.db`` and ``storage.ingest`` re-export what they used to define.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from storage.db import Store


# ``heard doctor`` mails the support address to itself; that mail is stored like any other
# but needs nobody's work, so its ticket starts closed.
CHECK_MAIL_RULE = "heard doctor round trip"
CHECK_MAIL_CLOSED = "heard doctor's round-trip check: it needs no answer"


class StoreError(RuntimeError):
    """A one-line problem with the database, with what to do about it."""


class DatabaseUnreachable(StoreError):
    """The database stopped answering (a PostgreSQL server stopped or restarted, a lost network,
    SQLite's file locked past the busy timeout): the same action may work once it is back."""


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class NewMessage:
    """A fetched, parsed message, as plain values."""

    raw: bytes
    content_hash: str
    message_id: str | None
    refs: list[str]  # In-Reply-To first, then References (newest first)
    subject: str
    from_addr: str
    from_name: str
    date: datetime
    date_offset_minutes: int | None = None
    direction: str = "in"
    automated_reason: str | None = None
    text: str = ""
    html_only: bool = False
    attachments_json: str = "[]"
    defects: str = ""
    vague_reason: str | None = None
    tier: str | None = None
    auto_submitted: bool = False  # our own mail sent by a program (an acknowledgement), not by a person
    # A delivery report: the Message-IDs of the mail it reports on, and whether it says delivery failed.
    reports: list[str] = field(default_factory=list)
    undelivered: bool = False
    # Where it came from; None for our own outgoing mail.
    folder: str | None = None
    uidvalidity: int | None = None
    uid: int | None = None


def sqlite_path(database: str) -> Path | None:
    """The file of a SQLite database given as in ``[storage] database``; None for other databases."""
    if "://" not in database:
        return Path(os.path.expanduser(database))
    parts = urlsplit(database)
    if parts.scheme.split("+", 1)[0] != "sqlite" or not parts.path or parts.path in ("/", "/:memory:"):
        return None
    return Path(unquote(parts.path[1:]))  # sqlite:///relative, sqlite:////absolute


class OpeningStore:
    """A :class:`storage.db.Store` opened on a thread once :meth:`start` is called.

    :meth:`get` waits for it (and raises what opening raised, a
    ``StoreError`` with what to do). Until it is open, :meth:`sync_state` and
    :meth:`known_uids` read the sync cursor with ``sqlite3`` straight from
    the file, so the sync can decide what to fetch, fork its parsing process
    and start fetching while the thread imports SQLAlchemy; they return None
    when that cannot be done (another database, a file that cannot be read),
    and the caller waits for the store instead.
    """

    def __init__(self, database: str):
        self.database = database
        self._store: Store | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._open, name="heard-open-store", daemon=True)
                self._thread.start()

    def _open(self) -> None:
        try:
            from storage.db import Store

            self._store = Store(self.database)
        except BaseException as exc:  # handed to whoever waits in get()
            self._error = exc

    @property
    def ready(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def get(self) -> Store:
        self.start()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._store is not None
        return self._store

    def _read(self, sql: str, params: tuple) -> list[tuple] | None:
        path = sqlite_path(self.database)
        if path is None:
            return None
        if not path.exists():
            return []  # a new database: nothing synced yet
        try:
            conn = sqlite3.connect(str(path), timeout=15)
        except sqlite3.Error:
            return None
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            # A database file the store has not set up yet has no cursor in it.
            return [] if "no such table" in str(exc) else None
        except sqlite3.Error:
            return None
        finally:
            conn.close()

    def sync_state(self, folder: str) -> tuple[dict | None] | None:
        """``(state,)``: the folder's cursor as ``storage.ingest.sync_state`` returns it; None: wait for the store."""
        if self.ready:
            return None
        rows = self._read("SELECT uidvalidity, last_uid, uidnext FROM sync_state WHERE folder = ?", (folder,))
        if rows is None:
            return None
        if not rows:
            return (None,)
        uidvalidity, last_uid, uidnext = rows[0]
        return ({"folder": folder, "uidvalidity": uidvalidity, "last_uid": last_uid, "uidnext": uidnext},)

    def known_uids(self, folder: str, uidvalidity: int) -> set[int] | None:
        """As ``storage.ingest.known_uids``; None: wait for the store."""
        if self.ready:
            return None
        rows = self._read("SELECT uid FROM message_locations WHERE folder = ? AND uidvalidity = ?",
                          (folder, uidvalidity))
        return None if rows is None else {r[0] for r in rows}
