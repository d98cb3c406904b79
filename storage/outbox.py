"""The outbox: every outgoing message, its exact bytes, and where its delivery stands.

States (brief, section 4)::

    queued -> sending -> sent | failed | unknown      (and queued/failed/unknown -> cancelled)

A row is claimed (``queued -> sending``) in its own committed transaction
before SMTP is spoken, with the claiming process (``host:pid``) and time, so
a row left in ``sending`` by a process that died is found and turned into
``unknown``: never resent without a check. Only the Sent folder (by
Message-ID) or the agent (``retry``) can move ``unknown`` on.

Callers get plain dicts, never ORM rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone, tzinfo

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import Connection

from storage.db import Store
from storage.ledger import promise_of_outbox, withdraw_promise
from storage.lifecycle import Change
from storage.models import Outbox
from storage.tickets import append_event

O = Outbox.__table__

STATES = ("queued", "sending", "sent", "failed", "unknown", "cancelled")
# What `heard outbox` lists by default: everything not settled.
OPEN_STATES = ("queued", "sending", "failed", "unknown")
RETRYABLE = ("failed", "unknown", "cancelled", "queued")
CANCELLABLE = ("queued", "failed", "unknown")


class OutboxError(ValueError):
    """A refused outbox action, one line, saying what to do."""


_LIST_COLUMNS = [
    O.c.id, O.c.ticket_id, O.c.kind, O.c.message_id, O.c.mail_from, O.c.recipients, O.c.state,
    O.c.attempts, O.c.next_attempt_at, O.c.last_error, O.c.refused, O.c.agent, O.c.created_at,
    O.c.sent_at, O.c.sent_copy,
]


def insert_outbox(
    conn: Connection,
    *,
    ticket_id: int,
    kind: str,
    message_id: str,
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    agent: str,
    now: datetime,
) -> int:
    """A queued row, inside the caller's transaction (the one that changes the ticket)."""
    return conn.execute(
        insert(O).values(
            ticket_id=ticket_id, kind=kind, message_id=message_id, mail_from=mail_from,
            recipients=" ".join(recipients), raw=raw, state="queued", attempts=0, agent=agent,
            created_at=now, refused="", sent_copy=False,
        )
    ).inserted_primary_key[0]


def outbox_rows(conn: Connection, *, states: tuple[str, ...] | None = OPEN_STATES, ticket_id: int | None = None,
                limit: int = 1000) -> list[dict]:
    q = select(*_LIST_COLUMNS)
    if states:
        q = q.where(O.c.state.in_(states))
    if ticket_id is not None:
        q = q.where(O.c.ticket_id == ticket_id)
    return [dict(r) for r in conn.execute(q.order_by(O.c.id).limit(limit)).mappings()]


def outbox_row(conn: Connection, outbox_id: int, *, with_raw: bool = False) -> dict:
    cols = [*_LIST_COLUMNS, O.c.raw] if with_raw else _LIST_COLUMNS
    row = conn.execute(select(*cols).where(O.c.id == outbox_id)).mappings().first()
    if row is None:
        raise OutboxError(f"no outbox message {outbox_id}: `heard outbox --all` lists them")
    return dict(row)


def outbox_counts(conn: Connection) -> dict[str, int]:
    q = select(O.c.state, func.count()).group_by(O.c.state)
    counts = {s: 0 for s in STATES}
    counts.update({state: n for state, n in conn.execute(q)})
    return counts


def due_ids(conn: Connection, *, now: datetime, limit: int = 10_000) -> list[int]:
    """Queued rows whose time has come, oldest first."""
    q = (
        select(O.c.id)
        .where(O.c.state == "queued")
        .where((O.c.next_attempt_at.is_(None)) | (O.c.next_attempt_at <= now))
        .order_by(O.c.id)
        .limit(limit)
    )
    return [r[0] for r in conn.execute(q)]


def next_due_at(conn: Connection) -> datetime | None:
    """When the earliest deferred row becomes due (None: nothing deferred)."""
    return conn.execute(select(func.min(O.c.next_attempt_at)).where(O.c.state == "queued")).scalar()


# -- the sending side: claim, then exactly one outcome -----------------------------------
def _set_claim(conn: Connection, outbox_id: int, owner: str | None, at: datetime | None) -> None:
    # claimed_by/claimed_at come from migration 0004 (not on the SQLModel class).
    stmt = text("UPDATE outbox SET claimed_by = :o, claimed_at = :t WHERE id = :i").bindparams(
        bindparam("t", type_=O.c.sent_at.type)
    )
    conn.execute(stmt, {"o": owner, "t": at, "i": outbox_id})


# The drain's per-message statements are built once: constructing Core statements per message
# cost more than the SMTP round trips they bracket.
_TIME = O.c.sent_at.type  # the store's own timestamp type, so text() binds store what Core would


def _stmt(sql: str, *times: str):
    return text(sql).bindparams(*[bindparam(t, type_=_TIME) for t in times])


_CLAIM = _stmt(
    "UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_by = :o, claimed_at = :t "
    "WHERE id = :i AND state = 'queued'", "t",
)  # claimed_by/claimed_at: migration 0004
_SENT = _stmt(
    "UPDATE outbox SET state = 'sent', sent_at = :t, refused = :r, last_error = :e, next_attempt_at = NULL "
    "WHERE id = :i AND state IN ('sending', 'unknown')", "t",
)
_FAILED = _stmt(
    "UPDATE outbox SET state = 'failed', last_error = :e, refused = :r, next_attempt_at = NULL "
    "WHERE id = :i AND state = 'sending'"
)
_DEFERRED = _stmt(
    "UPDATE outbox SET state = 'queued', last_error = :e, next_attempt_at = :t, attempts = attempts - :undo "
    "WHERE id = :i AND state = 'sending'", "t",
)
_UNKNOWN = _stmt("UPDATE outbox SET state = 'unknown', last_error = :e WHERE id = :i AND state = 'sending'")


def claim_row(conn: Connection, outbox_id: int, *, owner: str, now: datetime) -> bool:
    """queued -> sending, atomically (another process may be draining too). False: not ours to send."""
    return conn.execute(_CLAIM, {"o": owner, "t": now, "i": outbox_id}).rowcount == 1


def claim(store: Store, outbox_id: int, *, owner: str, now: datetime) -> bool:
    with store.write_conn() as conn:
        return claim_row(conn, outbox_id, owner=owner, now=now)


def rows_for_sending(conn: Connection, ids: list[int]) -> list[dict]:
    """The envelope and exact bytes of these rows, in id order (read before claiming them one by one)."""
    q = select(O.c.id, O.c.ticket_id, O.c.kind, O.c.message_id, O.c.mail_from, O.c.recipients, O.c.raw,
               O.c.attempts, O.c.created_at).where(O.c.id.in_(ids)).order_by(O.c.id)
    return [dict(r) for r in conn.execute(q).mappings()]


def mark_sent(conn: Connection, outbox_id: int, *, now: datetime, refused: str = "", note: str | None = None) -> bool:
    """The server took it. Wins over ``unknown``: a slow sender presumed dead was not."""
    return conn.execute(_SENT, {"t": now, "r": refused, "e": note, "i": outbox_id}).rowcount == 1


def mark_failed(conn: Connection, outbox_id: int, *, error: str, refused: str = "") -> bool:
    return conn.execute(_FAILED, {"e": error, "r": refused, "i": outbox_id}).rowcount == 1


def mark_deferred(conn: Connection, outbox_id: int, *, error: str, next_attempt_at: datetime,
                  count_attempt: bool = True) -> bool:
    """A temporary failure before the message was handed over: queued again, later."""
    params = {"e": error, "t": next_attempt_at, "undo": 0 if count_attempt else 1, "i": outbox_id}
    return conn.execute(_DEFERRED, params).rowcount == 1


def mark_unknown(conn: Connection, outbox_id: int, *, error: str) -> bool:
    return conn.execute(_UNKNOWN, {"e": error, "i": outbox_id}).rowcount == 1


class SendLedger:
    """The drain's bookkeeping, one write transaction per message: the last outcome and the next claim.

    On SQLite (the embedded default) the statements run on the driver's cursor:
    going through the SQL layer per statement cost more than the SMTP round
    trips it brackets. Elsewhere they run as prepared ``text()`` statements.
    """

    def __init__(self, store: Store):
        self.conn = store.engine.execution_options(sqlite_begin="IMMEDIATE").connect()
        self.fast = store.dialect == "sqlite"
        if self.fast:
            dialect = self.conn.dialect
            self._time = _TIME.dialect_impl(dialect).bind_processor(dialect) or (lambda v: v)
            self._cur = self.conn.connection.dbapi_connection.cursor()

    @contextmanager
    def transaction(self) -> Iterator["SendLedger"]:
        if not self.fast:
            with self.conn.begin():
                yield self
            return
        self._cur.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self._cur.execute("ROLLBACK")
            raise
        self._cur.execute("COMMIT")

    def _run(self, stmt, params: dict, times: tuple[str, ...] = ()) -> bool:
        if not self.fast:
            return self.conn.execute(stmt, params).rowcount == 1
        for t in times:
            params[t] = self._time(params[t])
        self._cur.execute(stmt.text, params)
        return self._cur.rowcount == 1

    def claim(self, outbox_id: int, *, owner: str, now: datetime) -> bool:
        return self._run(_CLAIM, {"o": owner, "t": now, "i": outbox_id}, ("t",))

    def sent(self, outbox_id: int, *, now: datetime, refused: str = "", note: str | None = None) -> bool:
        return self._run(_SENT, {"t": now, "r": refused, "e": note, "i": outbox_id}, ("t",))

    def failed(self, outbox_id: int, *, error: str, refused: str = "") -> bool:
        return self._run(_FAILED, {"e": error, "r": refused, "i": outbox_id})

    def deferred(self, outbox_id: int, *, error: str, next_attempt_at: datetime) -> bool:
        return self._run(_DEFERRED, {"e": error, "t": next_attempt_at, "undo": 0, "i": outbox_id}, ("t",))

    def unknown(self, outbox_id: int, *, error: str) -> bool:
        return self._run(_UNKNOWN, {"e": error, "i": outbox_id})

    def close(self) -> None:
        if self.fast:
            self._cur.close()
        self.conn.close()


def sending_claims(conn: Connection) -> list[dict]:
    """Rows in ``sending`` with who claimed them and when."""
    q = text("SELECT id, claimed_by, claimed_at FROM outbox WHERE state = 'sending' ORDER BY id").columns(
        claimed_at=O.c.sent_at.type
    )
    return [dict(r) for r in conn.execute(q).mappings()]


INTERRUPTED = (
    "the sending process stopped while talking to the SMTP server, so the message may or may not have "
    "gone out: heard checks the Sent folder; `heard outbox retry {id}` sends it again"
)


def recover_interrupted(store: Store, *, is_dead: Callable[[str | None, datetime | None], bool]) -> list[int]:
    """Rows left in ``sending`` by a dead process become ``unknown``; returns their ids."""
    changed: list[int] = []
    with store.write_conn() as conn:
        for row in sending_claims(conn):
            if is_dead(row["claimed_by"], row["claimed_at"]):
                if mark_unknown(conn, row["id"], error=INTERRUPTED.format(id=row["id"])):
                    changed.append(row["id"])
    return changed


def unknown_to_check(conn: Connection, *, now: datetime) -> list[dict]:
    """``unknown`` rows whose next Sent-folder check is due."""
    q = (
        select(O.c.id, O.c.message_id, O.c.ticket_id)
        .where(O.c.state == "unknown")
        .where((O.c.next_attempt_at.is_(None)) | (O.c.next_attempt_at <= now))
        .order_by(O.c.id)
    )
    return [dict(r) for r in conn.execute(q).mappings()]


def note_unknown_checked(conn: Connection, outbox_id: int, *, error: str, next_check_at: datetime) -> None:
    conn.execute(
        update(O).where(O.c.id == outbox_id, O.c.state == "unknown")
        .values(last_error=error, next_attempt_at=next_check_at)
    )


def mark_found_in_sent(conn: Connection, outbox_id: int, *, folder: str, now: datetime) -> bool:
    """``unknown`` -> ``sent``: its Message-ID is in the Sent folder."""
    res = conn.execute(
        update(O).where(O.c.id == outbox_id, O.c.state == "unknown")
        .values(state="sent", sent_at=now, sent_copy=True, next_attempt_at=None,
                last_error=f"found in {folder} by Message-ID after an interrupted send")
    )
    return res.rowcount == 1


def sent_without_copy(conn: Connection, *, since: datetime, limit: int = 500) -> list[dict]:
    """Sent rows whose copy is not yet in the Sent folder."""
    q = (
        select(O.c.id, O.c.raw, O.c.sent_at)
        .where(O.c.state == "sent", O.c.sent_copy.is_(False), O.c.sent_at >= since)
        .order_by(O.c.id)
        .limit(limit)
    )
    return [dict(r) for r in conn.execute(q).mappings()]


def mark_copied(conn: Connection, outbox_ids: list[int]) -> None:
    if outbox_ids:
        conn.execute(update(O).where(O.c.id.in_(outbox_ids)).values(sent_copy=True))


# -- the agent's actions -------------------------------------------------------------------
def retry(store: Store, outbox_id: int, *, actor: str, now: datetime, reason: str | None = None) -> dict:
    """Queue a failed, unknown or cancelled message again, now: the agent says "send it"."""
    with store.write_conn() as conn:
        row = outbox_row(conn, outbox_id)
        if row["state"] not in RETRYABLE:
            raise OutboxError(_why_not(row, "retry"))
        if row["kind"] in ("ack", "update") and not promise_of_outbox(conn, outbox_id):
            raise OutboxError(
                f"outbox #{outbox_id} is an acknowledgement whose promise was withdrawn when it was "
                f"{row['state']}: its deadline is stale; acknowledge the ticket again for a fresh one "
                "(a in the queue, or `heard ack`)"
                if row["kind"] == "ack" else
                f"outbox #{outbox_id} is an update whose promise was withdrawn when it was {row['state']}: "
                f"send a new one (u on the ticket, or `heard update {row['ticket_id']}`)")
        conn.execute(
            update(O).where(O.c.id == outbox_id)
            .values(state="queued", next_attempt_at=None, last_error=None, refused="")
        )
        _set_claim(conn, outbox_id, None, None)
        why = reason or f"the agent asked to send outbox #{outbox_id} again (it was {row['state']})"
        append_event(conn, row["ticket_id"], Change("outbox", row["state"], "queued", why, actor, now))
    row["state"] = "queued"
    return row


def cancel(store: Store, outbox_id: int, *, actor: str, now: datetime, reason: str | None = None,
           tz: tzinfo = timezone.utc) -> dict:
    """Never send this message (queued, failed or unknown).

    An acknowledgement or update that never goes out made no promise: the ledger withdraws it
    (``tz``: the business time zone, for the timeline's words).
    """
    with store.write_conn() as conn:
        row = outbox_row(conn, outbox_id)
        if row["state"] not in CANCELLABLE:
            raise OutboxError(_why_not(row, "cancel"))
        conn.execute(update(O).where(O.c.id == outbox_id).values(state="cancelled", next_attempt_at=None))
        why = reason or f"the agent cancelled outbox #{outbox_id} ({row['kind']}); it will not be sent"
        append_event(conn, row["ticket_id"], Change("outbox", row["state"], "cancelled", why, actor, now))
        withdraw_promise(conn, outbox_id, now=now, actor=actor, why=f"outbox #{outbox_id} cancelled", tz=tz)
    row["state"] = "cancelled"
    return row


def _why_not(row: dict, action: str) -> str:
    state, oid = row["state"], row["id"]
    if state == "sent":
        return f"outbox #{oid} was already sent{' at ' + str(row['sent_at'])[:16] if row['sent_at'] else ''}: nothing to {action}"
    if state == "sending":
        return f"outbox #{oid} is being sent right now: wait for the result (`heard outbox`)"
    if state == "cancelled":
        return f"outbox #{oid} is already cancelled: `heard outbox retry {oid}` queues it again"
    return f"outbox #{oid} is {state}: cannot {action} it"


def backoff(attempts: int, *, base: timedelta = timedelta(minutes=1), cap: timedelta = timedelta(hours=1)) -> timedelta:
    """1, 2, 4, ... minutes after each temporary failure, at most an hour."""
    return min(base * (2 ** max(attempts - 1, 0)), cap)
