"""Replies sent from elsewhere (webmail, a phone, another client), brought into their tickets.

Before the inbox, ``heard sync`` indexes the threading headers of the whole
Sent folder (:func:`mail.sync.sync_sent_headers`), so a customer's answer to
such a reply still joins its ticket. After the inbox,
:func:`bring_in_sent_replies` stores in full the Sent messages that answer a
ticket's mail and that heard did not send itself. The ticket then shows the
whole conversation: not a customer writing "I don't understand what you
mean" to nobody. The reply counts as a human reply: the ticket's last reply,
and the promise it keeps.

Sent mail that answers no ticket (personal mail, a new conversation started
from the support address) is never read beyond its threading headers and
never starts a ticket. The messages and the cursor commit in one
transaction, and identical bytes are stored once, so a kill at any moment
followed by another sync brings each reply in exactly once.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from mail.sync import MessageConverter, fetch_raw, header_ids, header_part
from mail.threads import thread_decision
from storage.db import Store, utcnow
from storage.ingest import Ingest, NewMessage, sync_state
from storage.ledger import settle_replied
from storage.tickets import note_replied_at

__all__ = ["bring_in_sent_replies", "cursor_key"]

_HEADERS = b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES SUBJECT)]"


def cursor_key(folder: str) -> str:
    return f"sent-replies:{folder}"


_AUTO = re.compile(rb"^auto-submitted:[ \t]*([^\r\n]*)", re.I | re.M)


def _auto_submitted(raw: bytes) -> str | None:
    """``Auto-Submitted`` of our own message (a vacation notice, a server's reply), else None."""
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = _AUTO.search(head)
    value = m.group(1).strip().decode("ascii", "replace").lower() if m else "no"
    return None if value.startswith("no") else f"Auto-Submitted: {value}"


def _subject(head: bytes) -> str:
    for line in head.decode("utf-8", "replace").splitlines():
        if line.lower().startswith("subject:"):
            return line[8:].strip()
    return ""


def bring_in_sent_replies(store: Store, client: IMAPClient, folder: str, converter: MessageConverter,
                          *, reselect: str | None = None, batch: int = 200, now: datetime | None = None) -> int:
    """Store the Sent messages up to the indexed headers that answer a ticket; the number stored.

    Selects ``folder`` read-only only when it has messages not looked at yet
    (no round trip otherwise), then ``reselect`` again. Sent messages heard already has
    (it sent them, or an earlier run brought them in) are skipped by
    Message-ID and by their bytes.
    """
    key = cursor_key(folder)
    with store.read() as s:
        conn = s.connection()
        headers = sync_state(conn, f"sent:{folder}")
        mine = sync_state(conn, key)
    if not headers or not headers["uidvalidity"]:
        return 0
    uidvalidity, upto = headers["uidvalidity"], headers["last_uid"]
    start = mine["last_uid"] if mine and mine["uidvalidity"] == uidvalidity else 0
    if start >= upto:
        return 0
    try:
        info = client.select_folder(folder, readonly=True)
    except IMAPClientError:
        return 0
    try:
        if int(info.get(b"UIDVALIDITY", 0)) != uidvalidity:
            return 0  # renumbered since the headers were indexed: the next sync re-indexes first
        uids = sorted(u for u in client.search(["UID", f"{start + 1}:{upto}"]) if start < u <= upto)
        stored = 0
        for i in range(0, len(uids), batch) or [0]:
            chunk = uids[i:i + batch]
            last = upto if i + batch >= len(uids) else chunk[-1]
            stored += _bring_in_chunk(store, client, folder, uidvalidity, chunk, last, converter, now or utcnow())
        return stored
    finally:
        if reselect:
            client.select_folder(reselect, readonly=True)


def _bring_in_chunk(store: Store, client: IMAPClient, folder: str, uidvalidity: int, chunk: list[int],
                    last: int, converter: MessageConverter, now: datetime) -> int:
    heads: dict[int, tuple[str | None, list[str], str]] = {}
    if chunk:
        for uid, data in client.fetch(chunk, [_HEADERS]).items():
            head = header_part(data)
            mid, parents = header_ids(head)
            heads[uid] = (mid, parents, _subject(head))
    ids = [i for mid, parents, _ in heads.values() for i in ([mid] if mid else []) + parents]
    with store.read() as s:
        look = Ingest(s.connection(), store.search, now)
        look.prefetch(ids, (), ())
        wanted = []
        for uid, (mid, parents, subject) in sorted(heads.items()):
            if mid and look.ticket_for_message_id(mid) is not None:
                continue  # heard sent it (or already brought it in)
            tid, _ = thread_decision(in_reply_to=[], references=list(reversed(parents)), subject=subject,
                                     ticket_for_message_id=look.ticket_for_message_id,
                                     ticket_exists=look.ticket_exists)
            if tid is not None:
                wanted.append(uid)
    items: list[tuple[NewMessage, list[str], list[str]]] = []
    if wanted:  # bodies fetched outside the write transaction: nobody waits on the network
        fetched = fetch_raw(client, wanted)
        batch = [(uid, *fetched[uid]) for uid in wanted if uid in fetched]  # gone if expunged meanwhile
        for m, irt, refs in converter.convert_fetched(batch):
            m.direction = "out"  # ours, whichever of our addresses it was sent from
            m.automated_reason = _auto_submitted(m.raw)
            m.vague_reason = None
            m.folder, m.uidvalidity = folder, uidvalidity
            items.append((m, irt, refs))
    with store.write_conn() as conn:
        ing = Ingest(conn, store.search, now)
        ing.prefetch([i for m, irt, refs in items for i in [*irt, *refs, *([m.message_id] if m.message_id else [])]],
                     [m.content_hash for m, _, _ in items], ())
        replied: dict[int, datetime] = {}
        count = 0
        for m, irt, refs in items:
            if ing.duplicate_of(m.content_hash) is not None:
                ing.add(m, None, "")  # the same bytes already stored: only its place in Sent is new
                continue
            if m.message_id and ing.ticket_for_message_id(m.message_id) is not None:
                continue
            tid, reason = thread_decision(in_reply_to=irt, references=refs, subject=m.subject,
                                          ticket_for_message_id=ing.ticket_for_message_id,
                                          ticket_exists=ing.ticket_exists)
            if tid is None:
                continue
            ing.add(m, tid, f"{reason} (our reply, from the Sent folder)")
            count += 1
            if m.automated_reason is None:
                at = m.date.astimezone(timezone.utc) if m.date.tzinfo else m.date.replace(tzinfo=timezone.utc)
                replied[tid] = max(replied.get(tid, at), at)
        ing.flush()
        for tid, at in replied.items():
            note_replied_at(conn, tid, at)
        if replied:
            settle_replied(conn, now=now, ticket_ids=list(replied))
        ing.set_cursor(cursor_key(folder), uidvalidity=uidvalidity, last_uid=last, uidnext=0, highestmodseq=None)
    return count
