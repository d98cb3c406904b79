"""IMAP → store: fetch new mail with BODY.PEEK[] in batches, thread it, commit raw bytes and cursor together.

Rules (brief, section 4): a message is (folder, UIDVALIDITY, UID); flags are
never touched (the folder is opened read-only, bodies fetched with PEEK); a
batch's raw bytes, tickets and cursor commit in one transaction, so a kill at
any moment only re-fetches the uncommitted batch; identical bytes are stored
once (content hash), so a UIDVALIDITY change or lost state re-links instead
of duplicating; a message the parser chokes on is stored raw and flagged.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mail.config import Config
from mail.convert import PARALLEL_MIN, MessageConverter, _parse_pool, _worker_convert, close_parse_pool
from mail.imap import MailServerError, connect_imap, folder_problem, idle_check, network_error, quietly_close
from mail.parse import bounded_id
from mail.threads import thread_decision
from storage.records import DatabaseUnreachable, NewMessage, OpeningStore, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from datetime import datetime

    from storage.db import Store
    from storage.ingest import Ingest

# storage.ingest (and with it SQLAlchemy) is imported inside the functions that write: this
# module loads without it, so `heard sync` connects and fetches while the store opens.


BATCH = 250  # messages per FETCH, and per transaction
BATCH_BYTES = 8 * 1024 * 1024  # and about this much mail at most: up to 8 batches are in memory at once
LARGE = 256 * 1024  # messages over this are sized before fetching; smaller ones are counted as SMALL
SMALL = 16 * 1024
Progress = Callable[[int, int], None]


@dataclass
class SyncSummary:
    folder: str = "INBOX"
    new_messages: int = 0
    tickets_created: int = 0
    tickets_updated: int = 0
    automated: int = 0
    quarantined: int = 0
    duplicates: int = 0
    reopened: int = 0
    uidvalidity_changed: bool = False
    new_ticket_ids: list[int] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.new_messages} new messages, {self.tickets_created} tickets created, "
            f"{self.tickets_updated} tickets updated, {self.automated} automated, "
            f"{self.quarantined} quarantined"
            + (f", {self.duplicates} already stored" if self.duplicates else "")
            + (", UIDVALIDITY changed: re-linked" if self.uidvalidity_changed else "")
        )


def ingest_batch(store: Store, converter: MessageConverter, items: list[tuple[NewMessage, list[str], list[str]]],
                 *, cursor: dict | None = None, now: datetime | None = None) -> Ingest:
    """Thread and store a batch in one transaction; ``cursor`` commits with it."""
    from storage.ingest import Ingest

    now = now or utcnow()
    with store.write_conn(bulk=True) as conn:
        ing = Ingest(conn, store.search, now)
        ids, tags = [], []
        for m, irt, refs in items:
            ids.extend(irt)
            ids.extend(refs)
            ids.extend(m.reports)
        ing.prefetch(ids, [m.content_hash for m, _, _ in items], tags, [m.from_addr for m, _, _ in items])
        ing.prefetch_sent_parents(ids)
        for m, irt, refs in items:
            if ing.duplicate_of(m.content_hash) is not None:
                ing.add(m, None, "")
                continue
            tid, reason = thread_decision(
                in_reply_to=irt,
                references=refs,
                subject=m.subject,
                ticket_for_message_id=ing.ticket_for_message_id,
                ticket_exists=ing.ticket_exists,
                sent_parents=ing.sent_parents,
                # A copy of our own mail (sent to the support address) may carry any ticket's tag.
                sender=m.from_addr,
                ticket_people=None if m.direction == "out" else ing.ticket_people,
                reports=m.reports,
            )
            ing.add(m, tid, reason)
        ing.flush()
        if cursor:
            ing.set_cursor(cursor.pop("folder"), **cursor)
    return ing


_UID = re.compile(rb"UID (\d+)")
_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_IDATE = re.compile(rb'INTERNALDATE "([^"]+)"')


def fetch_raw(client: IMAPClient, uids: list[int]) -> dict[int, tuple[bytes, bytes | None]]:
    """UID FETCH (UID INTERNALDATE BODY.PEEK[]), read straight off the connection.

    imapclient's generic response parser, and even imaplib's per-line
    bookkeeping, cost more than parsing the mail itself. Here the command goes
    out on imaplib's socket and the reply is read from its buffered file: each
    literal is taken as is, and only UID and INTERNALDATE are read around it.
    Anything unexpected (a body sent as a quoted string) falls back to
    imapclient for the UIDs concerned.
    """
    imap = client._imap
    tag = imap._new_tag()
    imap.tagged_commands.pop(tag, None)  # we read the completion ourselves
    uid_set = ",".join(map(str, uids)).encode()
    imap.send(tag + b" UID FETCH " + uid_set + b" (UID INTERNALDATE BODY.PEEK[])\r\n")
    read_line, read = imap.file.readline, imap.file.read
    out: dict[int, tuple[bytes, bytes | None]] = {}
    while True:
        line = read_line()
        if not line:
            raise ConnectionResetError("the server closed the connection during FETCH")
        if line.startswith(tag):
            status = line[len(tag) + 1 :].split(b" ", 1)[0]
            if status != b"OK":
                raise IMAPClientError(f"FETCH failed: {line.decode(errors='replace').strip()}")
            break
        while line.endswith(b"}\r\n"):
            lit = _LITERAL.search(line)
            if lit is None:
                break
            raw = read(int(lit.group(1)))
            rest = read_line()
            meta = line + rest
            if b"BODY[]" in line[lit.start() - 8 : lit.start()]:
                _fetched(out, meta, raw)
            line = rest
    missing = [u for u in uids if u not in out]
    if missing:
        for uid, data in client.fetch(missing, [b"BODY.PEEK[]", b"INTERNALDATE"]).items():
            body = data.get(b"BODY[]")
            if body is not None:
                idate = data.get(b"INTERNALDATE")
                out[uid] = (body, idate.strftime("%d-%b-%Y %H:%M:%S %z").encode() if idate else None)
    return out


def _fetched(out: dict, meta: bytes, raw: bytes) -> None:
    uid = _UID.search(meta)
    if uid:
        idate = _IDATE.search(meta)
        out[int(uid.group(1))] = (raw, idate.group(1) if idate else None)


def _opened(store: Store | OpeningStore) -> Store:
    return store.get() if isinstance(store, OpeningStore) else store


def sync_once(
    store: Store | OpeningStore,
    cfg: Config,
    *,
    client: IMAPClient | None = None,
    progress: Progress | None = None,
    batch: int = BATCH,
) -> SyncSummary:
    """Fetch what is new in the configured folder; safe to kill at any moment.

    ``store`` may be an :class:`OpeningStore` not yet started (`heard sync`):
    its opening thread starts once the parsing process has forked, and
    fetching and parsing begin while it loads; batches are stored once it is open.
    """
    own_client = client is None
    folder = cfg.imap.folder
    summary = SyncSummary(folder=folder)
    try:
        if client is None:
            client = connect_imap(cfg.imap)
        sent = sent_folder_for_threading(cfg)
        if sent and sent != folder:
            sync_sent_headers(_opened(store), client, sent)
        converter = MessageConverter(cfg)
        _sync_folder(store, cfg, client, summary, converter, progress=progress, batch=batch)
        if sent and sent != folder:
            from mail.sent import bring_in_sent_replies  # mail.sent builds on this module

            bring_in_sent_replies(_opened(store), client, sent, converter, reselect=folder)
        return summary
    except (OSError, IMAPClientError) as exc:
        err = network_error(cfg.imap, exc, connected=True)
        _record_error(store, folder, str(err))
        raise err from None
    except MailServerError as exc:
        _record_error(store, folder, str(exc))
        raise
    finally:
        if own_client and client is not None:
            try:
                client.logout()
            except Exception:
                pass


def _sync_folder(store: Store | OpeningStore, cfg: Config, client: IMAPClient, summary: SyncSummary,
                 converter: MessageConverter, *, progress: Progress | None, batch: int) -> SyncSummary:
    """:func:`sync_once` for the configured folder (which turns errors into one line)."""
    folder = cfg.imap.folder
    try:
        info = client.select_folder(folder, readonly=True)  # EXAMINE: \Seen untouched
    except IMAPClientError as exc:
        raise MailServerError(folder_problem(client, folder, cfg.imap.host, exc)) from None
    uidvalidity = int(info.get(b"UIDVALIDITY", 0))
    uidnext = int(info.get(b"UIDNEXT", 0) or 0)
    modseq = info.get(b"HIGHESTMODSEQ")
    modseq = int(modseq) if modseq is not None else None
    state = _sync_state(store, folder)
    if state and state["uidvalidity"] == uidvalidity and uidnext and state["uidnext"] == uidnext:
        _touch(_opened(store), folder, uidvalidity, state["last_uid"], uidnext, modseq)
        return summary  # nothing new: one round trip after login
    last_uid = 0
    if state and state["uidvalidity"] == uidvalidity:
        last_uid = state["last_uid"]
    elif state and state["uidvalidity"]:
        summary.uidvalidity_changed = True  # the summary line says so ("UIDVALIDITY changed: re-linked")
    uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
    if uids:
        have = _known_uids(store, folder, uidvalidity)
        todo = [u for u in uids if u not in have]
    else:
        todo = []
    created: set[int] = set()
    updated: set[int] = set()
    total = len(todo)
    done = 0
    if progress:
        progress(0, total)
    sizes = _large_sizes(client, todo)
    chunks = plan_batches(todo, sizes, batch=batch)

    def parse_chunk(chunk: list[int], fetched: dict):
        # A UID missing from the reply was expunged between SEARCH and FETCH.
        batch_ = [(uid, *fetched[uid]) for uid in chunk if uid in fetched]
        cursor = dict(folder=folder, uidvalidity=uidvalidity, last_uid=chunk[-1],
                      uidnext=uidnext if chunk is chunks[-1] else 0, highestmodseq=modseq)
        if pool is None:
            items = converter.convert_fetched(batch_)
            result = lambda: items  # noqa: E731
        else:
            future = pool.submit(_worker_convert, batch_)

            def result():
                got = future.result()
                for m, _, _ in got:
                    m.raw = fetched[m.uid][0]
                return got
        def finish():
            items = result()
            for m, _, _ in items:
                m.folder, m.uidvalidity = folder, uidvalidity
            return items, cursor
        return finish

    def store_chunk(items: list, cursor: dict, count: int) -> None:
        nonlocal done
        r = ingest_batch(_opened(store), converter, items, cursor=cursor).result
        summary.new_messages += r.new_messages
        summary.automated += r.automated
        summary.quarantined += r.quarantined
        summary.duplicates += r.duplicates
        summary.reopened += len(r.reopened)
        created.update(r.tickets_created)
        updated.update(r.tickets_updated)
        done += count
        if progress:
            progress(done, total)

    pool = _parse_pool(converter) if total >= PARALLEL_MIN else None
    opening = isinstance(store, OpeningStore)
    if opening:
        store.start()  # after the fork: the child never sees the thread that imports SQLAlchemy

    def bulk():
        # A single batch commits once: no checkpoints to move off the storing thread.
        return _opened(store).bulk_load() if len(chunks) > 1 else contextlib.nullcontext()

    try:
        # While the store opens, parsed batches wait for it: a few more of them than otherwise.
        _pipeline(chunks, fetch=lambda chunk: fetch_raw(client, chunk), parse=parse_chunk, store=store_chunk,
                  storing=bulk, ahead=OPENING_AHEAD if opening else 2,
                  weights=[sum(sizes.get(uid, SMALL) for uid in chunk) for chunk in chunks])
    finally:
        if pool is not None:
            close_parse_pool(pool)
    if not todo:
        _touch(_opened(store), folder, uidvalidity, max([last_uid, *uids]), uidnext, modseq)
    summary.tickets_created = len(created)
    summary.tickets_updated = len(updated - created)
    summary.new_ticket_ids = sorted(created)
    return summary


def plan_batches(uids: list[int], sizes: dict[int, int], *, batch: int = BATCH,
                 budget: int | None = None) -> list[list[int]]:
    """Cut UIDs (in order) into batches of at most ``batch`` messages and about ``budget`` bytes.

    ``sizes`` has the size of each large message; the others count as
    ``SMALL``. A message bigger than the budget is a batch of its own. A few
    batches are in memory at once (fetched, parsing, waiting to be stored), so
    this is what bounds the sync's memory on a mailbox of big attachments.
    """
    budget = BATCH_BYTES if budget is None else budget
    chunks: list[list[int]] = []
    chunk: list[int] = []
    held = 0
    for uid in uids:
        size = sizes.get(uid, SMALL)
        if chunk and (len(chunk) >= batch or held + size > budget):
            chunks.append(chunk)
            chunk, held = [], 0
        chunk.append(uid)
        held += size
    if chunk:
        chunks.append(chunk)
    return chunks


def _large_sizes(client: IMAPClient, uids: list[int]) -> dict[int, int]:
    """The sizes of the messages over ``LARGE`` among ``uids``: one SEARCH, then one small FETCH if any."""
    if len(uids) <= 1:
        return {}
    large = sorted(set(client.search(["UID", f"{uids[0]}:{uids[-1]}", "LARGER", str(LARGE)])) & set(uids))
    if not large:
        return {}
    return {uid: int(data.get(b"RFC822.SIZE", 0)) for uid, data in client.fetch(large, [b"RFC822.SIZE"]).items()}


OPENING_AHEAD = 4  # parsed batches that may wait for a store still opening (about 12 MB of mail)


def _sync_state(store: Store | OpeningStore, folder: str) -> dict | None:
    if isinstance(store, OpeningStore):
        early = store.sync_state(folder)
        if early is not None:
            return early[0]
    from storage.ingest import sync_state

    with _opened(store).read() as s:
        return sync_state(s.connection(), folder)


def _known_uids(store: Store | OpeningStore, folder: str, uidvalidity: int) -> set[int]:
    if isinstance(store, OpeningStore):
        early = store.known_uids(folder, uidvalidity)
        if early is not None:
            return early
    from storage.ingest import known_uids

    with _opened(store).read() as s:
        return known_uids(s.connection(), folder, uidvalidity)


IN_FLIGHT_BYTES = 6 * BATCH_BYTES  # mail fetched and not yet stored, at most (one batch always may be)


def _pipeline(chunks: list[list[int]], *, fetch, parse, store,
              storing: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
              ahead: int = 2, weights: list[int] | None = None, budget: int = IN_FLIGHT_BYTES) -> None:
    """Fetch, parse and store batches on three threads, stored strictly in UID order.

    Fetching waits on the network and storing mostly runs inside SQLite (FTS
    tokenising, page writes), both outside the GIL, so they overlap with
    parsing. Each batch still commits its raw bytes and its cursor together,
    in order, so a kill at any point loses at most the uncommitted batches.

    ``storing()`` is entered on the storing thread around all the stores
    (it may wait for the store to open); up to ``ahead`` parsed batches
    queue for it.

    ``weights`` (about how many bytes each chunk is) bound the memory: a
    chunk is fetched only while the chunks fetched and not yet stored weigh
    no more than ``budget`` with it, or when none are. Batches of ordinary
    mail are never held back; a run of messages with large attachments
    (a batch of their own each) goes through one or a few at a time instead
    of filling every queue.
    """
    if not chunks:
        return
    fetched_q: queue.Queue = queue.Queue(maxsize=2)
    parsed_q: queue.Queue = queue.Queue(maxsize=ahead)
    failed = threading.Event()
    errors: list[BaseException] = []
    done = object()
    weights = weights or [0] * len(chunks)
    room = threading.Condition()
    in_flight = 0

    def reserve(weight: int) -> bool:
        nonlocal in_flight
        with room:
            while in_flight and in_flight + weight > budget:
                if failed.is_set():
                    return False
                room.wait(0.1)
            in_flight += weight
            return True

    def release(weight: int) -> None:
        nonlocal in_flight
        with room:
            in_flight -= weight
            room.notify()

    def put(q: queue.Queue, item) -> bool:
        while not failed.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetcher() -> None:
        try:
            for chunk, weight in zip(chunks, weights):
                if not reserve(weight) or not put(fetched_q, (chunk, weight, fetch(chunk))):
                    return
            put(fetched_q, done)
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)
            failed.set()

    def writer() -> None:
        try:
            with storing():
                while not failed.is_set():
                    try:
                        item = parsed_q.get(timeout=0.1)
                    except queue.Empty:
                        continue
                    if item is done:
                        return
                    finish, count, weight = item
                    store(*finish(), count)
                    release(weight)
        except BaseException as exc:
            errors.append(exc)
            failed.set()

    threads = [threading.Thread(target=fetcher, name="heard-fetch", daemon=True),
               threading.Thread(target=writer, name="heard-store", daemon=True)]
    for t in threads:
        t.start()
    try:
        while not failed.is_set():
            try:
                item = fetched_q.get(timeout=0.1)
            except queue.Empty:
                continue
            if item is done:
                put(parsed_q, done)
                break
            chunk, weight, fetched = item
            if not put(parsed_q, (parse(chunk, fetched), len(chunk), weight)):
                break
    except BaseException:
        failed.set()
        raise
    finally:
        for t in threads:
            t.join()
    if errors:
        raise errors[0]


def sent_folder_for_threading(cfg: Config) -> str:
    """Where our sent mail lives: ``[imap] sent_folder``, else ``[smtp] sent_folder``."""
    return cfg.imap.sent_folder or (cfg.smtp.sent_folder if cfg.smtp else "")


_HEADER_IDS = re.compile(rb"<([^<>\s]+@[^<>\s]+)>")


def header_part(data: dict) -> bytes:
    """The header block of a ``BODY.PEEK[HEADER.FIELDS (...)]`` fetch; servers echo the field
    list in their own order, so whichever HEADER part came."""
    return next((v for k, v in data.items() if k.startswith(b"BODY[HEADER")), b"") or b""


def header_ids(head: bytes) -> tuple[str | None, list[str]]:
    """(Message-ID, the ids it answers) from a header block."""
    at = head.lower().find(b"message-id:")
    mid = _HEADER_IDS.search(head, at) if at >= 0 else None
    message_id = bounded_id(mid.group(1).decode("ascii", "replace")) if mid else None
    ids = [bounded_id(m.decode("ascii", "replace")) for m in _HEADER_IDS.findall(head)]
    return message_id, list(dict.fromkeys(i for i in ids if i != message_id))


def sync_sent_headers(store: Store, client: IMAPClient, folder: str, *, batch: int = 2000) -> int:
    """Index the threading headers of the Sent folder; bodies are not fetched. New ones counted.

    A reply the agent sent from webmail or another client is not in the store,
    and a customer client that sets only In-Reply-To to it would otherwise
    start a new ticket.
    """
    try:
        info = client.select_folder(folder, readonly=True)
    except IMAPClientError:
        return 0  # no such folder (yet): nothing to index
    from storage.ingest import Ingest, record_sent_headers, sync_state

    key = f"sent:{folder}"
    uidvalidity = int(info.get(b"UIDVALIDITY", 0))
    uidnext = int(info.get(b"UIDNEXT", 0) or 0)
    with store.read() as s:
        state = sync_state(s.connection(), key)
    if state and state["uidvalidity"] == uidvalidity and uidnext and state["uidnext"] == uidnext:
        return 0
    last = state["last_uid"] if state and state["uidvalidity"] == uidvalidity else 0
    uids = sorted(u for u in client.search(["UID", f"{last + 1}:*"]) if u > last)
    count = 0
    for start in range(0, len(uids), batch) or [0]:
        chunk = uids[start : start + batch]
        rows = []
        if chunk:
            fetched = client.fetch(chunk, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)]"])
            for data in fetched.values():
                message_id, parents = header_ids(header_part(data))
                if message_id is not None:
                    rows.append((message_id, parents))
        with store.write_conn() as conn:
            record_sent_headers(conn, rows)
            Ingest(conn, store.search, utcnow()).set_cursor(
                key, uidvalidity=uidvalidity, last_uid=chunk[-1] if chunk else last,
                uidnext=uidnext if start + batch >= len(uids) else 0, highestmodseq=None,
            )
        count += len(rows)
    return count


def _touch(store: Store, folder: str, uidvalidity: int, last_uid: int, uidnext: int, modseq: int | None) -> None:
    from storage.ingest import Ingest

    with store.write_conn() as conn:
        Ingest(conn, store.search, utcnow()).set_cursor(
            folder, uidvalidity=uidvalidity, last_uid=last_uid, uidnext=uidnext, highestmodseq=modseq
        )


def _record_error(store: Store | OpeningStore, folder: str, error: str) -> None:
    try:
        from storage.ingest import record_sync_error

        with _opened(store).write_conn() as conn:
            record_sync_error(conn, folder, error)
    except Exception:  # the store itself may be the problem; the caller reports the error
        pass


# Under IDLE, a quiet mailbox is synced (and housekept) this often anyway, in seconds.
RESYNC_EVERY = 60.0
QUIT_WAIT = 2.0  # seconds the server gets to answer DONE and LOGOUT when the watcher stops


@dataclass
class WatchStatus:
    mode: str  # idle | polling | offline
    error: str | None = None  # what went wrong
    summary: SyncSummary | None = None
    retry_in: int | None = None  # seconds until the next try, while offline
    database: bool = False  # the error is the database's (it stopped answering), not the mail server's

    @property
    def message(self) -> str | None:
        """The error as shown to a person, with the retry it is waiting for."""
        if self.error and self.retry_in is not None:
            return f"{self.error} (retrying in {self.retry_in} s)"
        return self.error


def watch(
    store: Store,
    cfg: Config,
    *,
    stop: threading.Event,
    on_status: Callable[[WatchStatus], None] = lambda s: None,
    poll_interval: float | None = None,
    idle_timeout: float = 25 * 60,
    max_backoff: float = 300.0,
    progress: Progress | None = None,
    resync_every: float = RESYNC_EVERY,
) -> None:
    """Keep syncing: IMAP IDLE when offered, polling otherwise; reconnect with backoff.

    Under IDLE a quiet mailbox still gets a sync (one EXAMINE) and an ``on_status`` every
    ``resync_every`` seconds: what runs after a sync (check-ins, auto-close, ``[ack] auto`` for a
    customer whose quick reply did not come) depends on the clock, not only on new mail.
    """
    backoff = 1.0
    poll_interval = poll_interval or cfg.imap.poll_interval
    while not stop.is_set():
        client = None
        idling = False
        try:
            client = connect_imap(cfg.imap)
            idle = cfg.imap.idle and b"IDLE" in client.capabilities()
            mode = "idle" if idle else "polling"
            on_status(WatchStatus(mode, summary=sync_once(store, cfg, client=client, progress=progress)))
            synced = time.monotonic()
            backoff = 1.0
            while not stop.is_set():
                if idle:
                    client.idle()
                    idling = True
                    started = time.monotonic()
                    changed = False
                    while not stop.is_set() and time.monotonic() - started < min(idle_timeout, resync_every):
                        responses = idle_check(client, 0.5)  # a server that went away raises here
                        if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                            changed = True
                            break
                    client.idle_done()
                    idling = False
                    if stop.is_set():
                        break
                    if not changed and time.monotonic() - synced < resync_every:
                        client.noop()
                        continue
                else:
                    if stop.wait(poll_interval):
                        break
                on_status(WatchStatus(mode, summary=sync_once(store, cfg, client=client, progress=progress)))
                synced = time.monotonic()
        except (MailServerError, OSError, IMAPClientError, DatabaseUnreachable) as exc:
            # A database server stopped or restarted is waited out like a mail server gone away.
            msg = (str(exc) if isinstance(exc, (MailServerError, DatabaseUnreachable))
                   else str(network_error(cfg.imap, exc, connected=True)))
            on_status(WatchStatus("offline", error=msg, retry_in=int(backoff),
                                  database=isinstance(exc, DatabaseUnreachable)))
            stop.wait(backoff)
            backoff = min(backoff * 2, max_backoff)
        finally:
            if client is not None:
                _leave(client, idling=idling)


def _leave(client: IMAPClient, *, idling: bool) -> None:
    """Log out, briefly: also when ctrl+c (KeyboardInterrupt) came in the middle of IDLE.

    A LOGOUT sent during IDLE is not a command the server reads (it waits for DONE), so the
    reply never came and ctrl+c on `heard sync --watch` hung until the read timed out.
    """
    try:
        client.socket().settimeout(QUIT_WAIT)
        if idling:
            client.idle_done()
    except Exception:
        pass
    quietly_close(client)
