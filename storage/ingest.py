"""The sync's write path: messages in, tickets created or updated, in bulk.

One ``Ingest`` lives for one batch inside one write transaction, so the raw
bytes, the tickets and the folder cursor commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter

from sqlalchemy import DateTime, bindparam, case, func, insert, select, text, update
from sqlalchemy.engine import Connection

from storage.lifecycle import Status, customer_reply_reopens
from storage.records import CHECK_MAIL_CLOSED, CHECK_MAIL_RULE
from storage.records import NewMessage  # noqa: F401  (defined without SQLAlchemy, used from here)
from storage.models import Customer, Event, Message, MessageLocation, RawMessage, SentHeader, SyncState, Ticket

T_TICKET = Ticket.__table__
T_MESSAGE = Message.__table__
T_CUSTOMER = Customer.__table__
T_EVENT = Event.__table__
T_RAW = RawMessage.__table__
T_LOC = MessageLocation.__table__
T_SYNC = SyncState.__table__
T_SENT = SentHeader.__table__

SYNC_ACTOR = "heard sync"
NO_ADDRESS = " (no address)"  # ends the customer key of a sender known only by name
MAX_NAME_KEY = 200  # characters of a name kept in such a key (the store indexes it)


def customer_key(address: str, name: str, content_hash: str) -> str:
    """Who a new ticket's customer is: their address, or, for mail that came without one, their name.

    Every such mail once went to one customer, "(unknown sender)": strangers shared "their tickets".
    A name alone ("From: Jane Doe") keys "Jane Doe (no address)"; mail without even a name is a
    customer of its own. No key but an address has an "@": nothing is ever sent to one.
    """
    if address:
        return address
    name = " ".join(name.replace("@", " ").split())[:MAX_NAME_KEY]
    if name:
        return name + NO_ADDRESS
    return f"(unknown sender of mail {content_hash[:12]})"


@dataclass(slots=True)
class _TicketState:
    status: str
    created: bool
    count: int = 0
    last_customer_at: datetime | None = None
    updated_at: datetime | None = None
    reopen_reason: str | None = None
    answered_reason: str | None = None
    flagged: bool = False


@dataclass
class IngestResult:
    new_messages: int = 0
    duplicates: int = 0
    tickets_created: set[int] = field(default_factory=set)
    tickets_updated: set[int] = field(default_factory=set)
    automated: int = 0
    quarantined: int = 0
    reopened: set[int] = field(default_factory=set)


# Statements built once: SQLAlchemy's compiled cache then makes each executemany cheap.
_BUMP_TICKET = (
    update(T_TICKET)
    .where(T_TICKET.c.id == bindparam("tid"))
    .values(
        message_count=T_TICKET.c.message_count + bindparam("n"),
        updated_at=case((T_TICKET.c.updated_at < bindparam("u"), bindparam("u")), else_=T_TICKET.c.updated_at),
        last_customer_at=func.coalesce(bindparam("lc"), T_TICKET.c.last_customer_at),
        flagged=T_TICKET.c.flagged | bindparam("f"),
    )
)
_REOPEN = (
    update(T_TICKET)
    .where(T_TICKET.c.id == bindparam("tid"))
    .values(status=Status.OPEN.value, pending_since=None)
)


class Ingest:
    """Collects a batch in memory and writes it with a handful of set-based statements.

    New tickets and customers get their ids up front (the next free ids, safe
    inside the write transaction that SQLite's BEGIN IMMEDIATE serialises), so
    callers learn a ticket's id at once and the rows still go in as one insert.
    """

    def __init__(self, conn: Connection, search, now: datetime):
        self.conn = conn
        self.search = search
        self.now = now
        self.result = IngestResult()
        self._ids: dict[str, int] = {}  # Message-ID -> ticket
        self._hashes: dict[str, int] = {}  # content hash -> message pk (or -1 if pending)
        self._tickets: dict[int, _TicketState] = {}
        self._customers: dict[str, int] = {}
        self._pending: list[NewMessage] = []
        self._pending_meta: list[tuple[int, str]] = []  # (ticket id, thread reason)
        self._locations: list[dict] = []
        self._dupe_locs: list[tuple[str, str, int, int]] = []
        self._new_customers: list[dict] = []
        self._new_tickets: list[dict] = []
        self._events: list[dict] = []  # events of tickets created in this batch
        self._tier_updates: list[dict] = []
        self._next_ids: dict[str, int] = {}
        self._sent_parents: dict[str, list[str]] = {}
        self._explicit_ids = conn.dialect.name == "sqlite"

    # -- lookups, prefetched per batch -------------------------------------------------
    def prefetch(self, message_ids: Iterable[str], hashes: Iterable[str], ticket_ids: Iterable[int],
                 addresses: Iterable[str] = ()) -> None:
        ids = [i for i in set(message_ids) if i not in self._ids]
        for mid, tid in self._lookup(T_MESSAGE.c.message_id, T_MESSAGE.c.ticket_id, values=ids):
            self._ids.setdefault(mid, tid)
        hs = [h for h in set(hashes) if h not in self._hashes]
        for h, pk in self._lookup(T_MESSAGE.c.content_hash, T_MESSAGE.c.id, values=hs):
            self._hashes[h] = pk
        addrs = [a for a in set(addresses) if a not in self._customers]
        for addr, cid in self._lookup(T_CUSTOMER.c.address, T_CUSTOMER.c.id, values=addrs):
            self._customers[addr] = cid
        self._load_tickets(set(ticket_ids) | set(self._ids.values()))

    def _lookup(self, key, *columns, values: list):
        """Rows (key, *columns) of the key's table whose key is one of ``values``, 500 at a time.

        On SQLite as plain SQL to the driver: these run for every batch of a
        sync, and SQLAlchemy's handling of an IN list of hundreds of values
        cost more than the lookups. The columns must need no result conversion.
        """
        if not values:
            return
        if not self._explicit_ids:  # not SQLite
            for chunk in _chunks(values, 500):
                yield from self.conn.execute(select(key, *columns).where(key.in_(chunk)))
            return
        quote = self.conn.dialect.identifier_preparer.quote
        head = (f"SELECT {', '.join(quote(c.name) for c in (key, *columns))} FROM {quote(key.table.name)} "
                f"WHERE {quote(key.name)} IN (")
        # The driver's own cursor, in this connection's transaction: its rows are plain tuples.
        driver = self.conn.connection.driver_connection
        for chunk in _chunks(values, 500):
            yield from driver.execute(head + ", ".join("?" * len(chunk)) + ")", tuple(chunk))

    def _load_tickets(self, ids: set[int]) -> None:
        missing = [i for i in ids if i not in self._tickets]
        for tid, status, flagged in self._lookup(T_TICKET.c.id, T_TICKET.c.status, T_TICKET.c.flagged, values=missing):
            self._tickets[tid] = _TicketState(status=status, created=False, flagged=bool(flagged))

    def ticket_for_message_id(self, message_id: str) -> int | None:
        return self._ids.get(message_id)

    def prefetch_sent_parents(self, message_ids: Iterable[str]) -> None:
        """Load what our Sent-folder messages among ``message_ids`` replied to (and those ids' tickets)."""
        ids = [i for i in set(message_ids) if i not in self._ids and i not in self._sent_parents]
        parents: set[str] = set()
        for mid, refs in self._lookup(T_SENT.c.message_id, T_SENT.c.parents, values=ids):
            self._sent_parents[mid] = refs.split()
            parents.update(self._sent_parents[mid])
        if parents:
            self.prefetch(parents, (), ())

    def sent_parents(self, message_id: str) -> list[str]:
        return self._sent_parents.get(message_id, [])

    def ticket_exists(self, ticket_id: int) -> bool:
        self._load_tickets({ticket_id})
        return ticket_id in self._tickets

    def ticket_people(self, ticket_id: int) -> set[str]:
        """The addresses of a ticket's customer and of everyone who wrote in it (for a ``[#N]`` tag)."""
        people = {m.from_addr for m, (tid, _) in zip(self._pending, self._pending_meta) if tid == ticket_id}
        for row in self._new_tickets:  # created in this batch, not inserted yet (SQLite)
            if row["id"] == ticket_id:
                people.update(a for a, cid in self._customers.items() if cid == row["customer_id"])
                return people - {""}
        customer = (select(T_CUSTOMER.c.address).join(T_TICKET, T_CUSTOMER.c.id == T_TICKET.c.customer_id)
                    .where(T_TICKET.c.id == ticket_id))
        wrote = select(T_MESSAGE.c.from_addr).where(T_MESSAGE.c.ticket_id == ticket_id).distinct()
        people.update(r[0] for r in self.conn.execute(customer.union(wrote)))
        return people - {"", None}

    def duplicate_of(self, content_hash: str) -> int | None:
        return self._hashes.get(content_hash)

    # -- writes -------------------------------------------------------------------------
    def add_location(self, message_pk: int, folder: str, uidvalidity: int, uid: int) -> None:
        self._locations.append({"message_pk": message_pk, "folder": folder, "uidvalidity": uidvalidity, "uid": uid})

    def add(self, m: NewMessage, ticket_id: int | None, thread_reason: str) -> int:
        """Queue one message; a message that starts a ticket gets its ticket id now."""
        if m.content_hash in self._hashes:
            pk = self._hashes[m.content_hash]
            self.result.duplicates += 1
            if pk >= 0 and m.folder is not None:
                self.add_location(pk, m.folder, m.uidvalidity, m.uid)
            elif m.folder is not None:
                # Same bytes twice in one batch: link the location once the first is inserted.
                self._dupe_locs.append((m.content_hash, m.folder, m.uidvalidity, m.uid))
            return ticket_id or 0
        self._hashes[m.content_hash] = -1
        if ticket_id is not None and ticket_id not in self._tickets:
            self._load_tickets({ticket_id})
        if ticket_id is None or ticket_id not in self._tickets:
            ticket_id = self._create_ticket(m)
        state = self._tickets[ticket_id]
        state.count += 1
        if state.updated_at is None or m.date > state.updated_at:
            state.updated_at = m.date
        if m.direction == "in" and not m.automated_reason:  # a human customer wrote
            if state.last_customer_at is None or m.date > state.last_customer_at:
                state.last_customer_at = m.date
            if not state.created and customer_reply_reopens(state.status):
                state.reopen_reason = f"the customer replied ({m.from_addr}, {m.date:%Y-%m-%d %H:%M} UTC)"
        elif m.undelivered and thread_reason.startswith("delivery report") and customer_reply_reopens(state.status):
            # Our mail never reached them: waiting on their answer (or closing the ticket) would wait forever.
            state.reopen_reason = state.reopen_reason or (
                f"a delivery report says our mail was not delivered ({m.from_addr}, {m.date:%Y-%m-%d %H:%M} UTC)"
            )
        elif (m.direction == "out" and m.folder is not None and not (m.auto_submitted or m.automated_reason)
              and state.status == Status.NEW.value and (not state.created or state.count > 1)):
            # A person answered from another mail client (found in its Sent folder, or a copy sent to the
            # support address; heard's own replies have no folder): someone is on it, it is no longer new.
            state.answered_reason = state.answered_reason or (
                f"answered outside heard ({m.from_name or m.from_addr}, {m.date:%Y-%m-%d %H:%M} UTC)"
            )
        if m.defects:
            state.flagged = True
            self.result.quarantined += 1
        if m.automated_reason:
            self.result.automated += 1
        if not state.created:
            self.result.tickets_updated.add(ticket_id)
        if m.message_id:
            self._ids.setdefault(m.message_id, ticket_id)
        self._pending.append(m)
        self._pending_meta.append((ticket_id, thread_reason))
        self.result.new_messages += 1
        return ticket_id

    def _next_id(self, table) -> int:
        name = table.name
        if name not in self._next_ids:
            self._next_ids[name] = (self.conn.execute(select(func.max(table.c.id))).scalar() or 0) + 1
        value = self._next_ids[name]
        self._next_ids[name] = value + 1
        return value

    def _customer_id(self, address: str, name: str, tier: str | None) -> int:
        if address not in self._customers:
            row = self.conn.execute(select(T_CUSTOMER.c.id).where(T_CUSTOMER.c.address == address)).first()
            if row:
                self._customers[address] = row[0]
        if address in self._customers:
            cid = self._customers[address]
            if tier:
                self._tier_updates.append({"cid": cid, "tier": tier})
            return cid
        values = {"address": address, "name": name, "first_seen_at": self.now, "tier": tier}
        if self._explicit_ids:
            cid = values["id"] = self._next_id(T_CUSTOMER)
            self._new_customers.append(values)
        else:  # PostgreSQL: let the sequence pick
            cid = self.conn.execute(insert(T_CUSTOMER).values(**values)).inserted_primary_key[0]
        self._customers[address] = cid
        return cid

    def _create_ticket(self, m: NewMessage) -> int:
        cid = self._customer_id(customer_key(m.from_addr, m.from_name, m.content_hash), m.from_name, m.tier)
        check_mail = m.automated_reason == CHECK_MAIL_RULE
        status = Status.CLOSED.value if check_mail else Status.NEW.value
        values = {
            "subject": m.subject, "status": status, "priority": "normal", "customer_id": cid,
            "created_at": m.date, "updated_at": m.date, "message_count": 0,
            "automated_reason": m.automated_reason, "vague_reason": m.vague_reason, "flagged": False,
            "last_customer_at": None,
        }
        if self._explicit_ids:
            tid = values["id"] = self._next_id(T_TICKET)
            self._new_tickets.append(values)
        else:
            self._flush_customers()
            tid = self.conn.execute(insert(T_TICKET).values(**values)).inserted_primary_key[0]
        self._tickets[tid] = _TicketState(status=status, created=True)
        if check_mail:
            self._events.append({"ticket_id": tid, "at": self.now, "actor": SYNC_ACTOR, "kind": "status",
                                 "old": Status.NEW.value, "new": status, "reason": CHECK_MAIL_CLOSED})
        self.result.tickets_created.add(tid)
        return tid

    def _flush_customers(self) -> None:
        if self._new_customers:
            self.conn.execute(insert(T_CUSTOMER), self._new_customers)
            self._new_customers.clear()
        if self._tier_updates:
            self.conn.execute(
                update(T_CUSTOMER).where(T_CUSTOMER.c.id == bindparam("cid")).values(tier=bindparam("tier")),
                self._tier_updates,
            )
            self._tier_updates.clear()

    def flush(self) -> None:
        self._flush_customers()
        if self._new_tickets:
            # New tickets go in complete (count, dates, flags), so they need no update below.
            for row in self._new_tickets:
                st = self._tickets[row["id"]]
                row.update(message_count=st.count, updated_at=st.updated_at or row["updated_at"],
                           last_customer_at=st.last_customer_at, flagged=st.flagged)
                st.count = 0
                st.created = False
            insert_rows(self.conn, T_TICKET, self._new_tickets)
            self._new_tickets.clear()
        if self._pending:
            rows = [
                {
                    "ticket_id": tid,
                    "message_id": m.message_id,
                    "content_hash": m.content_hash,
                    "direction": m.direction,
                    "from_addr": m.from_addr,
                    "from_name": m.from_name,
                    "subject": m.subject,
                    "date": m.date,
                    "date_offset_minutes": m.date_offset_minutes,
                    "automated_reason": m.automated_reason,
                    "thread_reason": reason,
                    "text": m.text,
                    "html_only": m.html_only,
                    "attachments": m.attachments_json,
                    "defects": m.defects,
                    "references": " ".join(m.refs),
                    "created_at": self.now,
                }
                for m, (tid, reason) in zip(self._pending, self._pending_meta)
            ]
            if self._explicit_ids:
                first = self._next_id(T_MESSAGE)
                pks = list(range(first, first + len(rows)))
                self._next_ids[T_MESSAGE.name] = first + len(rows)
                for pk, row in zip(pks, rows):
                    row["id"] = pk
                insert_rows(self.conn, T_MESSAGE, rows)
            else:
                pks = [
                    r[0]
                    for r in self.conn.execute(
                        insert(T_MESSAGE).returning(T_MESSAGE.c.id, sort_by_parameter_order=True), rows
                    )
                ]
            insert_raw(self.conn, [(pk, m.raw) for pk, m in zip(pks, self._pending)])
            for pk, m in zip(pks, self._pending):
                self._hashes[m.content_hash] = pk
                if m.folder is not None:
                    self.add_location(pk, m.folder, m.uidvalidity, m.uid)
            self.search.add(
                self.conn,
                ((pk, tid, m.subject, m.text, f"{m.from_name} {m.from_addr}")
                 for pk, m, (tid, _) in zip(pks, self._pending, self._pending_meta)),
            )
            self._pending.clear()
            self._pending_meta.clear()
        for h, folder, uv, uid in self._dupe_locs:
            self.add_location(self._hashes[h], folder, uv, uid)
        self._dupe_locs.clear()
        if self._locations:
            self._insert_locations()
        self._update_tickets()

    def _insert_locations(self) -> None:
        # A location already recorded (a re-fetch after a crash) is not an error.
        if self.conn.dialect.name == "sqlite":
            insert_rows(self.conn, T_LOC, self._locations, verb="INSERT OR IGNORE")
        else:  # PostgreSQL
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            self.conn.execute(pg_insert(T_LOC).on_conflict_do_nothing(), self._locations)
        self._locations.clear()

    def _update_tickets(self) -> None:
        bumps, reopens, events = [], [], self._events
        self._events = []
        for tid, st in self._tickets.items():
            if st.count:
                bumps.append({"tid": tid, "n": st.count, "u": st.updated_at, "lc": st.last_customer_at,
                              "f": st.flagged})
            if st.reopen_reason or st.answered_reason:
                reopens.append({"tid": tid})
                events.append({"ticket_id": tid, "at": self.now, "actor": SYNC_ACTOR, "kind": "status",
                               "old": st.status, "new": Status.OPEN.value,
                               "reason": st.reopen_reason or st.answered_reason})
                if st.reopen_reason:
                    self.result.reopened.add(tid)
                st.status = Status.OPEN.value
            st.count = 0
            st.reopen_reason = None
            st.answered_reason = None
            st.updated_at = None
            st.last_customer_at = None
        if bumps:
            self.conn.execute(_BUMP_TICKET, bumps)
        if reopens:
            self.conn.execute(_REOPEN, reopens)
        if events:
            self.conn.execute(insert(T_EVENT), events)

    def set_cursor(self, folder: str, *, uidvalidity: int, last_uid: int, uidnext: int, highestmodseq: int | None) -> None:
        values = {
            "uidvalidity": uidvalidity,
            "last_uid": last_uid,
            "uidnext": uidnext,
            "highestmodseq": highestmodseq,
            "synced_at": self.now,
            "last_error": None,
        }
        res = self.conn.execute(update(T_SYNC).where(T_SYNC.c.folder == folder).values(**values))
        if res.rowcount == 0:
            self.conn.execute(insert(T_SYNC).values(folder=folder, **values))


# Raw mail over this goes into SQLite a piece at a time: bound as a parameter, SQLite copies it
# twice while it stores it (the bound value, then the row), which for a 60 MB mail was 130 MB more.
STREAMED_RAW = 1024 * 1024
RAW_PIECE = 1024 * 1024


def insert_raw(conn: Connection, rows: list[tuple[int, bytes]]) -> None:
    """The raw bytes of messages just inserted, as ``(message pk, raw)``."""
    big = [(pk, raw) for pk, raw in rows if len(raw) > STREAMED_RAW] if conn.dialect.name == "sqlite" else []
    if big:
        rows = [(pk, raw) for pk, raw in rows if len(raw) <= STREAMED_RAW]
    insert_rows(conn, T_RAW, [{"message_pk": pk, "raw": raw} for pk, raw in rows])
    if not big:
        return
    # message_pk is the table's rowid: room for each first, then its bytes written into it in place.
    conn.exec_driver_sql(f"INSERT INTO {T_RAW.name} (message_pk, raw) VALUES (?, zeroblob(?))",
                         [(pk, len(raw)) for pk, raw in big])
    db = conn.connection.driver_connection
    for pk, raw in big:
        view = memoryview(raw)
        with db.blobopen(T_RAW.name, "raw", pk) as blob:
            for at in range(0, len(view), RAW_PIECE):
                blob.write(view[at : at + RAW_PIECE])


def insert_rows(conn: Connection, table, rows: list[dict], *, verb: str = "INSERT") -> None:
    """Many rows of the same keys into ``table``: on SQLite straight to the driver.

    The sync inserts tens of thousands of rows a minute; SQLAlchemy's per-row
    parameter handling cost more than SQLite's work on the small tables. The
    columns' own bind processors still convert each value (dates, booleans).
    ``verb`` is SQLite's (``INSERT OR IGNORE``); other databases get a plain insert.
    """
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(insert(table), rows)
        return
    cols = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    sql = (f"{verb} INTO {quote(table.name)} ({', '.join(quote(c) for c in cols)}) "
           f"VALUES ({', '.join('?' * len(cols))})")
    conn.exec_driver_sql(sql, _bound_rows(conn, table, cols, rows))


def _bound_rows(conn: Connection, table, cols: list[str], rows: list[dict]) -> list:
    """The rows as parameter sequences, each value through its column's bind processor."""
    procs = [(i, _bind_processor(table.c[c].type, conn.dialect)) for i, c in enumerate(cols)]
    procs = [(i, p) for i, p in procs if p]
    if len(cols) == 1:
        (c,) = cols
        return [(r[c],) for r in rows] if not procs else [(None if r[c] is None else procs[0][1](r[c]),) for r in rows]
    get = itemgetter(*cols)
    if not procs:
        return [get(r) for r in rows]
    data = []
    last = [(i, p, None, None) for i, p in procs]  # per column: the last value and what it became
    for r in rows:
        values = list(get(r))
        for k, (i, p, seen, done) in enumerate(last):
            v = values[i]
            if v is None:
                continue
            if v is not seen:  # the same object again (the batch's `created_at`): no need to convert it twice
                done = p(v)
                last[k] = (i, p, v, done)
            values[i] = done
        data.append(tuple(values))  # SQLAlchemy takes tuples
    return data


def _utc_text(value: datetime) -> str:
    """An aware datetime as UTC text, as SQLite's DATETIME stores it ('2026-11-23 10:00:00.000000')."""
    if value.tzinfo is not UTC:
        if value.utcoffset() is None:
            raise ValueError("Datetime values must have timezone information")
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:-6]  # without its '+00:00'


_SAMPLES = (datetime(2026, 11, 23, 10, 0, tzinfo=UTC), datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
            datetime.fromisoformat("2026-03-29T02:30:00.123456+05:45"))
_FAST_BIND: dict = {}  # (column type class, dialect class) -> processor


def _bind_processor(type_, dialect):
    """The column type's bind processor; for an aware-datetime column, a faster one giving the same text.

    A sync binds tens of thousands of dates, and SQLAlchemy's processor for
    them (a type decorator's conversion to UTC, then a format with a dict of
    the fields) was a tenth of the storing thread's Python. The faster one is
    used only where it gives what the type's own does, as checked on samples.
    """
    proc = type_._cached_bind_processor(dialect)
    if proc is None or type_._type_affinity is not DateTime:
        return proc
    key = (type(type_), type(dialect))
    fast = _FAST_BIND.get(key)
    if fast is None:
        try:
            same = all(_utc_text(v) == proc(v) for v in _SAMPLES)
        except Exception:
            same = False
        fast = _FAST_BIND[key] = _utc_text if same else False
    return fast or proc


def record_sent_headers(conn: Connection, rows: list[tuple[str, list[str]]]) -> None:
    """Remember (Message-ID, the ids it replied to) for messages in our Sent folder."""
    if not rows:
        return
    values = [{"message_id": mid, "parents": " ".join(parents)} for mid, parents in rows]
    if conn.dialect.name == "sqlite":
        conn.execute(insert(T_SENT).prefix_with("OR IGNORE"), values)
    else:
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(T_SENT).on_conflict_do_nothing(), values)


def sync_state(conn: Connection, folder: str) -> dict | None:
    row = conn.execute(select(T_SYNC).where(T_SYNC.c.folder == folder)).mappings().first()
    return dict(row) if row else None


def record_sync_error(conn: Connection, folder: str, error: str | None) -> None:
    res = conn.execute(update(T_SYNC).where(T_SYNC.c.folder == folder).values(last_error=error))
    if res.rowcount == 0:
        conn.execute(insert(T_SYNC).values(folder=folder, last_error=error))


def known_uids(conn: Connection, folder: str, uidvalidity: int) -> set[int]:
    q = text("SELECT uid FROM message_locations WHERE folder = :f AND uidvalidity = :v")
    return {r[0] for r in conn.execute(q, {"f": folder, "v": uidvalidity})}


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]
