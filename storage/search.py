"""Full-text search over subjects, bodies and customers.

``SearchIndex`` is the interface; SQLite implements it with FTS5. A PostgreSQL
backend implements the same three methods (e.g. with a tsvector column).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import Integer, text
from sqlalchemy.engine import Connection


class SearchIndex(Protocol):
    def create(self, conn: Connection) -> None: ...

    def rebuild(self, conn: Connection) -> None:
        """Index every stored message again, from the ``messages`` table (a migration)."""

    def add(self, conn: Connection, rows: Iterable[tuple[int, int, str, str, str]]) -> None:
        """Index (message pk, ticket id, subject, body text, customer name and address)."""

    def ticket_select(self, query: str):
        """Every ticket matching ``query``, unranked, as a SELECT of ``ticket_id`` for an IN clause.

        None when the query has no words. The queue shows matches in work
        order, so ranking them (and capping the ranked list) would be wasted.
        """

    def ticket_ids(self, conn: Connection, query: str) -> set[int]:
        """Every ticket matching ``query``, as a set, for filtering a work order already sorted."""


_WORD = re.compile(r"[\w@.+-]+", re.UNICODE)


def fts5_query(query: str) -> str:
    """A person's words as a safe FTS5 query: every word must match, as a prefix."""
    words = _WORD.findall(query)
    return " ".join('"' + w.replace('"', "") + '"*' for w in words if w.strip('"'))


# The index is contentless (the text lives in ``messages``), and a row's rowid
# carries its ticket: ticket id in the high 32 bits, the message pk in the low
# ones. A search then yields ticket ids straight from the index, without a
# lookup per matching message (a common word matches most of them).
_TICKET_SHIFT = 32
_LOW = (1 << _TICKET_SHIFT) - 1


def fts_rowid(message_pk: int, ticket_id: int) -> int:
    return (ticket_id << _TICKET_SHIFT) | (message_pk & _LOW)


class SqliteFts5Index:
    def ticket_select(self, query: str):
        q = fts5_query(query)
        if not q:
            return None
        return (
            text(f"SELECT rowid >> {_TICKET_SHIFT} AS ticket_id FROM message_fts WHERE message_fts MATCH :fts_q")
            .bindparams(fts_q=q)
            .columns(ticket_id=Integer)
        )

    def ticket_ids(self, conn: Connection, query: str) -> set[int]:
        """Every ticket matching ``query``, as a set (empty when the query has no words)."""
        q = fts5_query(query)
        if not q:
            return set()
        # One JSON array instead of a row per matching message: a common word
        # matches most messages, and rows cost more to hand over than to find.
        row = conn.exec_driver_sql(
            f"SELECT json_group_array(rowid >> {_TICKET_SHIFT}) FROM message_fts WHERE message_fts MATCH ?", (q,)
        ).first()
        return set(json.loads(row[0])) if row and row[0] else set()

    def create(self, conn: Connection) -> None:
        conn.exec_driver_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5("
            "subject, body, customer, content='', tokenize='unicode61 remove_diacritics 2')"
        )

    def rebuild(self, conn: Connection) -> None:
        conn.exec_driver_sql("DROP TABLE IF EXISTS message_fts")
        self.create(conn)
        conn.exec_driver_sql(
            f"INSERT INTO message_fts (rowid, subject, body, customer) "
            f"SELECT (ticket_id << {_TICKET_SHIFT}) | (id & {_LOW}), coalesce(subject, ''), coalesce(text, ''), "
            f"coalesce(from_name, '') || ' ' || coalesce(from_addr, '') FROM messages"
        )

    def add(self, conn: Connection, rows: Iterable[tuple[int, int, str, str, str]]) -> None:
        params = [(fts_rowid(pk, tid), s, b, c) for pk, tid, s, b, c in rows]
        # In rowid order: FTS5 flushes its pending terms to a new segment whenever a
        # rowid is lower than the one before (a reply to an older ticket).
        params.sort(key=lambda p: p[0])
        if params:
            conn.exec_driver_sql("INSERT INTO message_fts (rowid, subject, body, customer) VALUES (?, ?, ?, ?)",
                                 params)


class LikeIndex:
    """Portable fallback (PostgreSQL until it has its own): substring match."""

    def ticket_select(self, query: str):
        words: Sequence[str] = _WORD.findall(query)
        if not words:
            return None
        clauses, params = [], {}
        for i, w in enumerate(words):
            params[f"w{i}"] = f"%{w.lower()}%"
            clauses.append(
                f"(lower(m.subject) LIKE :w{i} OR lower(m.text) LIKE :w{i} OR lower(m.from_addr) LIKE :w{i})"
            )
        sql = "SELECT m.ticket_id FROM messages m WHERE " + " AND ".join(clauses)
        return text(sql).bindparams(**params).columns(ticket_id=Integer)

    def ticket_ids(self, conn: Connection, query: str) -> set[int]:
        sel = self.ticket_select(query)
        return set() if sel is None else {r[0] for r in conn.execute(sel)}

    def create(self, conn: Connection) -> None:
        pass

    def rebuild(self, conn: Connection) -> None:
        pass

    def add(self, conn: Connection, rows: Iterable[tuple[int, int, str, str, str]]) -> None:
        pass


def search_index_for(dialect: str) -> SearchIndex:
    return SqliteFts5Index() if dialect == "sqlite" else LikeIndex()
