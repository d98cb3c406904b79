"""Copy a whole store into another database: a team moving from one SQLite file to PostgreSQL.

Every table the models define is copied row for row, ids included, in the order
their foreign keys need, in one transaction on the target: tickets keep their
numbers (the ``[#N]`` tags customers quote), and statuses, holds, the event
timeline, promises, saved replies, the outbox and the sync cursors come along.
The target's own search index is then built from the copied messages, and on
PostgreSQL the id sequences are moved past the copied ids. The source is only
read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import func, insert, select, text
from sqlmodel import SQLModel

from storage.db import Store
from storage.models import Ticket
from storage.records import StoreError

__all__ = ["copy_store"]

# Rows per INSERT; raw mail goes in smaller batches (a mail can be megabytes).
BATCH = 1000
RAW_BATCH = 50


def _aware(row: dict) -> dict:
    # SQLite hands datetimes back naive (they are stored in UTC); the models want them aware.
    return {k: v.replace(tzinfo=timezone.utc) if isinstance(v, datetime) and v.tzinfo is None else v
            for k, v in row.items()}


def copy_store(source: Store, target: Store, *, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Every row of ``source`` into ``target``, which must hold no ticket yet; rows copied, by table."""
    tables = [t for t in SQLModel.metadata.sorted_tables if t.name != "schema_migrations"]
    counts: dict[str, int] = {}
    with target.write_conn() as out:
        if out.execute(select(func.count()).select_from(Ticket.__table__)).scalar():
            raise StoreError(f"database {target.shown!r} already holds tickets: "
                             "heard migrate copies into a new, empty database")
        for table in reversed(tables):  # a sync cursor or a saved reply made there before: the copy is the store
            out.execute(table.delete())
        with source.read() as s:
            src = s.connection()
            for table in tables:
                pk = list(table.primary_key.columns)
                q = select(table).order_by(*pk)
                n = 0
                result = src.execution_options(stream_results=True).execute(q)
                for rows in result.mappings().partitions(RAW_BATCH if table.name == "raw_messages" else BATCH):
                    out.execute(insert(table), [_aware(dict(r)) for r in rows])
                    n += len(rows)
                    if progress:
                        progress(table.name, n)
                counts[table.name] = n
        if target.dialect == "postgresql":
            for table in tables:
                for col in table.primary_key.columns:
                    seq = out.execute(text("SELECT pg_get_serial_sequence(:t, :c)"),
                                      {"t": table.name, "c": col.name}).scalar()
                    if seq:
                        out.execute(text(f"SELECT setval(:s, COALESCE((SELECT max({col.name}) FROM {table.name}), 0) + 1, "
                                         "false)"), {"s": seq})
        target.search.rebuild(out)
    return counts
