"""Full-text search over subjects, bodies and customers.

``SearchIndex`` is the interface. SQLite implements it with FTS5; PostgreSQL
with a table of each message's words as FTS5 cuts them (lower case, accents
off), so a search means the same on both: every word must match, as a prefix,
accents ignored, all in one message. Chinese and Japanese are written without
spaces, so each of their characters is indexed as a word of its own and a
query's run of them is a phrase: "ダウンロード" finds "請求書のPDFをダウンロード".
A query that is one ticket number ("#12" or "12") finds that ticket too.
"""

from __future__ import annotations

import json
import re
import unicodedata
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


# Han, kana (with the long-vowel mark and half-width kana) and the iteration mark: scripts written
# without spaces, where a run of characters is a whole sentence to unicode61, so a word inside it
# could never match.
_UNSPACED = re.compile(r"[\u3005\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f]")


def spaced_words(text: str) -> str:
    """``text`` with each Chinese or Japanese character set apart as a word of its own, as the index
    holds it ("請求書のPDF" -> " 請  求  書  の PDF")."""
    if text.isascii():
        return text
    return _UNSPACED.sub(r" \g<0> ", text)


def fts5_query(query: str) -> str:
    """A person's words as a safe FTS5 query: every word must match, as a prefix."""
    words = _WORD.findall(query)
    # A word without a letter or a digit ("." or "+") is no word to FTS5 either: left out, so a query of
    # only such words is "nothing to search for", as on PostgreSQL. A run of CJK characters is a phrase
    # of one-character words, as the index holds them.
    return " ".join('"' + spaced_words(w.replace('"', "")) + '"*' for w in words if _TOKEN.search(w))


_TICKET_NUMBER = re.compile(r"\s*#?\s*(\d{1,18})\s*")


def ticket_number(query: str) -> int | None:
    """The ticket a query of one number names ("#12", "12"), as agents write ticket numbers."""
    m = _TICKET_NUMBER.fullmatch(query)
    return int(m.group(1)) if m and int(m.group(1)) < 2**63 else None


def _or_ticket(sql: str, query: str, params: dict):
    """``sql`` (a SELECT of ticket_id) as a text clause, with the ticket the query numbers added."""
    n = ticket_number(query)
    if n is not None:
        sql += " UNION ALL SELECT :ticket_no AS ticket_id"
        params = {**params, "ticket_no": n}
    return text(sql).bindparams(**params).columns(ticket_id=Integer)


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
        return _or_ticket(f"SELECT rowid >> {_TICKET_SHIFT} AS ticket_id FROM message_fts WHERE message_fts MATCH :fts_q",
                          query, {"fts_q": q})

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
        found = set(json.loads(row[0])) if row and row[0] else set()
        if (n := ticket_number(query)) is not None:
            found.add(n)
        return found

    def create(self, conn: Connection) -> None:
        conn.exec_driver_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS message_fts USING fts5("
            "subject, body, customer, content='', tokenize='unicode61 remove_diacritics 2')"
        )

    def rebuild(self, conn: Connection) -> None:
        self.create(conn)
        # Emptied, not dropped: the table keeps its settings (automerge, migration 0007).
        conn.exec_driver_sql("INSERT INTO message_fts (message_fts) VALUES ('delete-all')")
        conn.connection.dbapi_connection.create_function(  # type: ignore[union-attr]
            "heard_spaced_words", 1, spaced_words, deterministic=True)
        conn.exec_driver_sql(
            f"INSERT INTO message_fts (rowid, subject, body, customer) "
            f"SELECT (ticket_id << {_TICKET_SHIFT}) | (id & {_LOW}), heard_spaced_words(coalesce(subject, '')), "
            f"heard_spaced_words(coalesce(text, '')), "
            f"heard_spaced_words(coalesce(from_name, '') || ' ' || coalesce(from_addr, '')) FROM messages"
        )

    def add(self, conn: Connection, rows: Iterable[tuple[int, int, str, str, str]]) -> None:
        params = [(fts_rowid(pk, tid), spaced_words(s), spaced_words(b), spaced_words(c))
                  for pk, tid, s, b, c in rows]
        # In rowid order: FTS5 flushes its pending terms to a new segment whenever a
        # rowid is lower than the one before (a reply to an older ticket).
        params.sort(key=lambda p: p[0])
        if params:
            conn.exec_driver_sql("INSERT INTO message_fts (rowid, subject, body, customer) VALUES (?, ?, ?, ?)",
                                 params)


_MARKS = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def fold(text: str) -> str:
    """Lower case and accents off ("Jörg Müller" -> "jorg muller"), as the index and a query see words.

    Lower case and canonical decomposition only, as FTS5 (remove_diacritics 2) does: "ß", "¼" and "ﬁ" stay
    as they are, so "gross" finds "Groß" on neither database.
    """
    if text.isascii():
        return text.lower()
    return _MARKS.sub("", unicodedata.normalize("NFD", text)).lower()


_TOKEN = re.compile(r"[^\W_]+")  # letters and digits: what FTS5's unicode61 tokenizer keeps as a word


def tokens(text: str) -> list[str]:
    """The words of ``text`` as FTS5's unicode61 tokenizer cuts them (punctuation, symbols and ``_`` split
    words), folded: "Re: [#12] E-5021 @bigcorp.example" -> ["re", "12", "e", "5021", "bigcorp", "example"]."""
    return _TOKEN.findall(fold(spaced_words(text)))


class _SelectIndex:
    """An index whose searches are a ``ticket_select``: the set of matches is that SELECT's rows."""

    def ticket_ids(self, conn: Connection, query: str) -> set[int]:
        sel = self.ticket_select(query)  # type: ignore[attr-defined]
        return set() if sel is None else {r[0] for r in conn.execute(sel)}


class FoldedTextIndex(_SelectIndex):
    """PostgreSQL: each message's subject, text and customer as its folded words, one space between
    them, in ``search_text``. A query means what it means to FTS5: each word of it is a phrase of
    tokens (``E-5021`` is "e" then "5021", ``@bigcorp.example`` is "bigcorp" then "example"), the last
    one a prefix, and every word must match in one message. A phrase is a ``LIKE '% e 5021%'``; the
    tokens hold letters and digits only, so no query can make a pattern of its own. Every search
    scans the table: fine for the mailboxes of a team; SQLite's FTS5 index is the fast one."""

    _BATCH = 500

    def create(self, conn: Connection) -> None:
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS search_text (message_pk BIGINT PRIMARY KEY, ticket_id BIGINT NOT NULL, "
            "body TEXT NOT NULL)")
        conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_search_text_ticket ON search_text (ticket_id)")

    def rebuild(self, conn: Connection) -> None:
        conn.exec_driver_sql("DELETE FROM search_text")
        last = 0
        while True:
            rows = conn.execute(
                text("SELECT id, ticket_id, subject, text, from_name, from_addr FROM messages WHERE id > :last "
                     "ORDER BY id LIMIT :n"), {"last": last, "n": self._BATCH}).all()
            if not rows:
                return
            self.add(conn, [(pk, tid, s or "", b or "", f"{name or ''} {addr or ''}")
                            for pk, tid, s, b, name, addr in rows])
            last = rows[-1][0]

    def add(self, conn: Connection, rows: Iterable[tuple[int, int, str, str, str]]) -> None:
        params = [{"p": pk, "t": tid, "b": " " + " ".join(tokens(f"{s}\n{b}\n{c}")) + " "}
                  for pk, tid, s, b, c in rows]
        if params:
            conn.execute(text("INSERT INTO search_text (message_pk, ticket_id, body) VALUES (:p, :t, :b) "
                              "ON CONFLICT (message_pk) DO NOTHING"), params)

    def ticket_select(self, query: str):
        phrases: Sequence[list[str]] = [t for t in (tokens(w) for w in _WORD.findall(query)) if t]
        if not phrases:
            return None
        params = {f"w{i}": "% " + " ".join(t) + "%" for i, t in enumerate(phrases)}
        where = " AND ".join(f"body LIKE :w{i}" for i in range(len(phrases)))
        return _or_ticket(f"SELECT ticket_id FROM search_text WHERE {where}", query, params)


class LikeIndex(_SelectIndex):
    """Portable fallback for other databases: substring match."""

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
        return _or_ticket("SELECT m.ticket_id FROM messages m WHERE " + " AND ".join(clauses), query, params)

    def create(self, conn: Connection) -> None:
        pass

    def rebuild(self, conn: Connection) -> None:
        pass

    def add(self, conn: Connection, rows: Iterable[tuple[int, int, str, str, str]]) -> None:
        pass


def search_index_for(dialect: str) -> SearchIndex:
    if dialect == "sqlite":
        return SqliteFts5Index()
    return FoldedTextIndex() if dialect == "postgresql" else LikeIndex()
