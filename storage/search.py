"""Full-text search over subjects, bodies and customers.

``SearchIndex`` is the interface; SQLite implements it with FTS5. A PostgreSQL
backend implements the same three methods (e.g. with a tsvector column).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol

from sqlalchemy import Integer, text
from sqlalchemy.engine import Connection


class SearchIndex(Protocol):
    def create(self, conn: Connection) -> None: ...

    def add(self, conn: Connection, rows: Iterable[tuple[int, str, str, str]]) -> None:
        """Index (message pk, subject, body text, customer name and address)."""

    def ticket_select(self, query: str):
        """Every ticket matching ``query``, unranked, as a SELECT of ``ticket_id`` for an IN clause.

        None when the query has no words. The queue shows matches in work
        order, so ranking them (and capping the ranked list) would be wasted.
        """


_WORD = re.compile(r"[\w@.+-]+", re.UNICODE)


def fts5_query(query: str) -> str:
    """A person's words as a safe FTS5 query: every word must match, as a prefix."""
    words = _WORD.findall(query)
    return " ".join('"' + w.replace('"', "") + '"*' for w in words if w.strip('"'))


class SqliteFts5Index:
    def ticket_select(self, query: str):
        q = fts5_query(query)
        if not q:
            return None
        return (
            text("SELECT m.ticket_id FROM message_fts f JOIN messages m ON m.id = f.rowid "
                 "WHERE message_fts MATCH :fts_q")
            .bindparams(fts_q=q)
            .columns(ticket_id=Integer)
        )

    def create(self, conn: Connection) -> None:
        conn.exec_driver_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5("
            "subject, body, customer, content='', tokenize='unicode61 remove_diacritics 2')"
        )

    def add(self, conn: Connection, rows: Iterable[tuple[int, str, str, str]]) -> None:
        params = [{"r": r, "s": s, "b": b, "c": c} for r, s, b, c in rows]
        if params:
            conn.execute(
                text("INSERT INTO message_fts (rowid, subject, body, customer) VALUES (:r, :s, :b, :c)"),
                params,
            )


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

    def create(self, conn: Connection) -> None:
        pass

    def add(self, conn: Connection, rows: Iterable[tuple[int, str, str, str]]) -> None:
        pass


def search_index_for(dialect: str) -> SearchIndex:
    return SqliteFts5Index() if dialect == "sqlite" else LikeIndex()
