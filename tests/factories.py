"""Fill a real store through the real ingest path (no hand-written rows)."""

from __future__ import annotations

import hashlib
import itertools
from datetime import datetime, timedelta, timezone

from storage.db import Store
from storage.ingest import Ingest, NewMessage

_seq = itertools.count(1)
BASE = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


def new_message(subject="Help", from_addr="ann@cust.example", text="It fails.", *, refs=(), date=None, **kw) -> NewMessage:
    n = next(_seq)
    mid = kw.pop("message_id", f"m{n}@cust.example")
    raw = f"Message-ID: <{mid}>\r\nFrom: {from_addr}\r\nSubject: {subject}\r\n\r\n{text}\r\n".encode()
    return NewMessage(
        raw=raw, content_hash=hashlib.sha256(raw).hexdigest(), message_id=mid, refs=list(refs),
        subject=subject, from_addr=from_addr, from_name=kw.pop("from_name", from_addr.split("@")[0].title()),
        date=date or BASE + timedelta(minutes=n), text=text, **kw,
    )


def add_ticket(store: Store, subject="Help", from_addr="ann@cust.example", text="It fails.", **kw) -> int:
    with store.write_conn() as conn:
        ing = Ingest(conn, store.search, datetime.now(timezone.utc))
        tid = ing.add(new_message(subject, from_addr, text, **kw), None, "new ticket")
        ing.flush()
    return tid


def add_reply(store: Store, ticket_id: int, to_message_id: str, text="More details.", from_addr="ann@cust.example", **kw) -> None:
    with store.write_conn() as conn:
        ing = Ingest(conn, store.search, datetime.now(timezone.utc))
        ing.add(new_message("Re: Help", from_addr, text, refs=[to_message_id], **kw), ticket_id, f"In-Reply-To <{to_message_id}>")
        ing.flush()
