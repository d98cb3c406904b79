"""The promise ledger: every acknowledgement is a promise, and the ledger says whether it was kept.

A promise (a ``promises`` row) is made when an acknowledgement or an update is
queued, in the same transaction as its outbox row. Its state is computed, never
stored, from the first time the ticket was *handled* after the promise was
made: the first human reply we sent (an outgoing message that is not one of
our automatic ones, and not cancelled or failed in the outbox), or the ticket
being solved or closed by a person.

    kept, broken, at_risk, open, updated -- the rule is
    :func:`storage.promises.promise_state`; this module only reads the facts.

``tickets.promise_deadline`` mirrors the promise in force (the queue sorts and
counts from it); :func:`settle_replied` clears it once the ticket is handled.

Callers get plain dicts; every function taking ``now`` uses it, never a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Connection

from storage.deadlines import format_deadline_short
from storage.lifecycle import ACTIVE, Change, Status
from storage.promises import (  # noqa: F401  (the states are part of this module's vocabulary)
    AT_RISK,
    BROKEN,
    KEPT,
    OPEN,
    STATES,
    UPDATED,
    broken_delay,
    ledger_summary,
    promise_state,
)
from storage.models import Customer, Event, Message, Outbox, Promise, Ticket
from storage.tickets import append_event

T = Ticket.__table__
C = Customer.__table__
M = Message.__table__
E = Event.__table__
O = Outbox.__table__
P = Promise.__table__

AUTOMATIC_KINDS = ("ack", "update", "checkin", "close")
# Statuses a person sets when the work is done: they count as handling the promise.
HANDLED_STATUSES = (Status.SOLVED.value, Status.CLOSED.value)
HOUSEKEEPING_ACTOR = "heard housekeeping"


def as_utc(dt: datetime | None) -> datetime | None:
    """Datetimes come back from SQLite naive (they are stored in UTC)."""
    if dt is None:
        return None
    return dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


# -- reading ---------------------------------------------------------------------------------
def _human_replies(conn: Connection, ticket_ids: Iterable[int]) -> dict[int, list[datetime]]:
    """Times of the human replies we sent, per ticket, oldest first."""
    ids = sorted(set(ticket_ids))
    out: dict[int, list[datetime]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        q = (
            select(M.c.ticket_id, M.c.date)
            .select_from(M.outerjoin(O, O.c.message_id == M.c.message_id))
            .where(M.c.ticket_id.in_(chunk), M.c.direction == "out", M.c.automated_reason.is_(None))
            .where(or_(O.c.id.is_(None), and_(O.c.kind == "reply", O.c.state.not_in(("cancelled", "failed")))))
        )
        for tid, date in conn.execute(q):
            out.setdefault(tid, []).append(as_utc(date))
        q = (
            select(E.c.ticket_id, E.c.at)
            .where(E.c.ticket_id.in_(chunk), E.c.kind == "status", E.c.new.in_(HANDLED_STATUSES))
            .where(E.c.actor != HOUSEKEEPING_ACTOR)
        )
        for tid, at in conn.execute(q):
            out.setdefault(tid, []).append(as_utc(at))
    for times in out.values():
        times.sort()
    return out


def _first_after(times: list[datetime], after: datetime) -> datetime | None:
    return next((t for t in times if t >= after), None)


_PROMISE_COLUMNS = [P.c.id, P.c.ticket_id, P.c.agent, P.c.made_at, P.c.deadline, P.c.outbox_id,
                    P.c.superseded_by, P.c.update_reason]


def _facts(conn: Connection, rows: list[dict]) -> list[dict]:
    """Promise rows with what their state depends on: ``handled_at`` and ``superseded_at``."""
    handled = _human_replies(conn, (r["ticket_id"] for r in rows))
    made_by_id: dict[int, datetime] = {}
    successors = [r["superseded_by"] for r in rows if r["superseded_by"]]
    for start in range(0, len(successors), 500):
        q = select(P.c.id, P.c.made_at).where(P.c.id.in_(successors[start:start + 500]))
        made_by_id.update({pid: as_utc(at) for pid, at in conn.execute(q)})
    out = []
    for r in rows:
        r = dict(r)
        r["made_at"], r["deadline"] = as_utc(r["made_at"]), as_utc(r["deadline"])
        r["handled_at"] = _first_after(handled.get(r["ticket_id"], []), r["made_at"])
        r["superseded_at"] = made_by_id.get(r["superseded_by"]) if r["superseded_by"] else None
        out.append(r)
    return out


def _with_states(conn: Connection, rows: list[dict], *, now: datetime, at_risk_margin: timedelta) -> list[dict]:
    out = _facts(conn, rows)
    for r in out:
        facts = dict(deadline=r["deadline"], handled_at=r["handled_at"], superseded_at=r["superseded_at"],
                     made_at=r["made_at"])
        r["state"] = promise_state(**facts, now=now, at_risk_margin=at_risk_margin)
        r["delay"] = broken_delay(**facts, now=now) if r["state"] == BROKEN else None
    return out


def promises_of(conn: Connection, ticket_id: int, *, now: datetime,
                at_risk_margin: timedelta = timedelta(hours=2)) -> list[dict]:
    """Every promise made on a ticket, oldest first, with its state."""
    rows = [dict(r) for r in conn.execute(
        select(*_PROMISE_COLUMNS).where(P.c.ticket_id == ticket_id).order_by(P.c.made_at, P.c.id)).mappings()]
    return _with_states(conn, rows, now=now, at_risk_margin=at_risk_margin)


def promise_in_force(conn: Connection, ticket_id: int, *, now: datetime,
                     at_risk_margin: timedelta = timedelta(hours=2)) -> dict | None:
    """The latest promise not replaced by an update, with its state; None when none was made."""
    rows = [p for p in promises_of(conn, ticket_id, now=now, at_risk_margin=at_risk_margin) if not p["superseded_by"]]
    return rows[-1] if rows else None


def updates_sent(conn: Connection, ticket_id: int) -> int:
    """How many updates (new deadlines) the customer of this ticket was sent."""
    q = select(P.c.id).where(P.c.ticket_id == ticket_id, P.c.update_reason.is_not(None))
    return len(conn.execute(q).all())


@dataclass
class LedgerReport:
    since: datetime | None
    until: datetime | None
    made: int = 0
    kept: int = 0
    broken: int = 0
    at_risk: int = 0
    open: int = 0
    updated: int = 0
    median_broken_delay: timedelta | None = None

    def as_dict(self) -> dict:
        def iso(dt):
            return dt.isoformat().replace("+00:00", "Z") if dt else None

        return {
            "since": iso(self.since), "until": iso(self.until), "made": self.made, "kept": self.kept,
            "broken": self.broken, "at_risk": self.at_risk, "open": self.open, "updated": self.updated,
            "median_broken_delay_minutes": (round(self.median_broken_delay.total_seconds() / 60)
                                            if self.median_broken_delay is not None else None),
        }


def ledger_report(conn: Connection, *, now: datetime, since: datetime | None = None, until: datetime | None = None,
                  at_risk_margin: timedelta = timedelta(hours=2)) -> LedgerReport:
    """Promises made in [since, until): how many were kept, broken, and how late the broken ones were."""
    q = select(*_PROMISE_COLUMNS)
    if since is not None:
        q = q.where(P.c.made_at >= since.astimezone(timezone.utc))
    if until is not None:
        q = q.where(P.c.made_at < until.astimezone(timezone.utc))
    rows = _facts(conn, [dict(r) for r in conn.execute(q.order_by(P.c.id)).mappings()])
    return LedgerReport(since=since, until=until, **ledger_summary(rows, now, at_risk_margin=at_risk_margin))


# -- writing (inside the caller's transaction, with the outbox row) --------------------------
def record_promise(
    conn: Connection,
    ticket_id: int,
    *,
    agent: str,
    deadline: datetime,
    outbox_id: int | None,
    now: datetime,
    event: Change,
    update_reason: str | None = None,
) -> int:
    """A new promise in force: replaces the one before it, mirrors it on the ticket, logs ``event``.

    The customer's automatic-mail stamp is set too (every acknowledgement and
    update is automatic mail).
    """
    pid = conn.execute(
        insert(P).values(ticket_id=ticket_id, agent=agent, made_at=now, deadline=deadline, outbox_id=outbox_id,
                         update_reason=update_reason)
    ).inserted_primary_key[0]
    conn.execute(
        update(P).where(P.c.ticket_id == ticket_id, P.c.id != pid, P.c.superseded_by.is_(None))
        .values(superseded_by=pid)
    )
    values: dict = {"promise_deadline": deadline, "updated_at": now}
    if update_reason is None:
        values["acknowledged_at"] = now
    conn.execute(update(T).where(T.c.id == ticket_id).values(**values))
    stamp_automatic_mail(conn, ticket_id, now=now)
    append_event(conn, ticket_id, event)
    return pid


def stamp_automatic_mail(conn: Connection, ticket_id: int, *, now: datetime) -> None:
    """The customer of ``ticket_id`` was just sent automatic mail: the per-customer window starts now."""
    cid = select(T.c.customer_id).where(T.c.id == ticket_id).scalar_subquery()
    conn.execute(update(C).where(C.c.id == cid).values(last_automatic_at=now))


def promise_of_outbox(conn: Connection, outbox_id: int) -> bool:
    """Whether the acknowledgement or update of this outbox row stands as a promise."""
    return conn.execute(select(P.c.id).where(P.c.outbox_id == outbox_id).limit(1)).first() is not None


def withdraw_promise(conn: Connection, outbox_id: int, *, now: datetime, actor: str, why: str,
                     tz: tzinfo = timezone.utc) -> bool:
    """The acknowledgement or update of outbox row ``outbox_id`` will not reach the customer (cancelled,
    or refused by the server): its promise was never made. In the caller's transaction.

    The promise row goes; the one it replaced (an update's acknowledgement) is in force again; a ticket
    left without any promise is unacknowledged again (the review offers it once more); the customer's
    automatic-mail stamp goes back to the last automatic mail that is still to reach them. The
    timeline records it. False when the row made no promise (a reply, a check-in, already withdrawn).
    """
    row = conn.execute(select(P.c.id, P.c.ticket_id, P.c.deadline, P.c.superseded_by, P.c.update_reason)
                       .where(P.c.outbox_id == outbox_id)).mappings().first()
    if row is None:
        return False
    pid, tid = row["id"], row["ticket_id"]
    conn.execute(P.delete().where(P.c.id == pid))
    if row["superseded_by"] is None:  # it was in force: the one it replaced is again
        conn.execute(update(P).where(P.c.superseded_by == pid).values(superseded_by=None))
    else:  # a later update replaced it: that one now replaces what this one did
        conn.execute(update(P).where(P.c.superseded_by == pid).values(superseded_by=row["superseded_by"]))
    in_force = conn.execute(select(P.c.deadline).where(P.c.ticket_id == tid, P.c.superseded_by.is_(None))
                            .order_by(P.c.made_at.desc(), P.c.id.desc())).first()
    values: dict = {"promise_deadline": in_force[0] if in_force else None, "updated_at": now}
    if conn.execute(select(P.c.id).where(P.c.ticket_id == tid).limit(1)).first() is None:
        values["acknowledged_at"] = None
    status, cid = conn.execute(select(T.c.status, T.c.customer_id).where(T.c.id == tid)).one()
    if status not in {s.value for s in ACTIVE}:
        values["promise_deadline"] = None
    conn.execute(update(T).where(T.c.id == tid).values(**values))
    last = conn.execute(
        select(O.c.created_at).join(T, T.c.id == O.c.ticket_id)
        .where(T.c.customer_id == cid, O.c.kind.in_(AUTOMATIC_KINDS), O.c.state.not_in(("cancelled", "failed")),
               O.c.id != outbox_id)
        .order_by(O.c.created_at.desc()).limit(1)
    ).first()
    conn.execute(update(C).where(C.c.id == cid).values(last_automatic_at=last[0] if last else None))
    what = "update" if row["update_reason"] is not None else "acknowledgement"
    short = lambda dt: format_deadline_short(as_utc(dt), tz) if dt is not None else None  # noqa: E731
    append_event(conn, tid, Change("promise", short(row["deadline"]), short(in_force[0]) if in_force else None,
                                   f"{what} not sent ({why}): its promise was never made", actor, now))
    return True


def settle_replied(conn: Connection, *, now: datetime, ticket_ids: Iterable[int] | None = None) -> list[int]:
    """Clear ``tickets.promise_deadline`` where the promise in force was handled; the tickets changed.

    The reply path sets ``last_reply_at``; the queue must then stop showing the
    promise as at risk or broken. Also drops a deadline left on a ticket that
    is no longer in the queue (solved, closed, waiting on the customer).
    """
    q = select(T.c.id, T.c.status, T.c.promise_deadline).where(T.c.promise_deadline.is_not(None))
    if ticket_ids is not None:
        q = q.where(T.c.id.in_(list(ticket_ids)))
    rows = conn.execute(q).all()
    if not rows:
        return []
    handled = _human_replies(conn, [r[0] for r in rows])
    made: dict[int, datetime] = {}
    for start in range(0, len(rows), 500):
        chunk = [r[0] for r in rows[start:start + 500]]
        q = select(P.c.ticket_id, P.c.made_at).where(P.c.ticket_id.in_(chunk), P.c.superseded_by.is_(None))
        for tid, at in conn.execute(q):
            made[tid] = max(made.get(tid, as_utc(at)), as_utc(at))
    done = []
    active = {s.value for s in ACTIVE}
    for tid, status, _deadline in rows:
        since = made.get(tid)
        if status not in active or (since is not None and _first_after(handled.get(tid, []), since) is not None):
            done.append(tid)
    if done:
        conn.execute(update(T).where(T.c.id.in_(done)).values(promise_deadline=None))
    return done


# -- history for honest deadlines -------------------------------------------------------------
def take_to_solve_spans(conn: Connection, *, since: datetime, limit: int = 200) -> list[tuple[datetime, datetime]]:
    """(taken, solved) pairs for the most recent solves since ``since``: the handling-time history.

    A ticket is *taken* by a holder event naming an agent; it is *solved* by a
    status event to ``solved``. Each solve pairs with the latest take before
    it on the same ticket; a solve nobody took does not count.
    """
    since_utc = since.astimezone(timezone.utc)
    solves = conn.execute(
        select(E.c.ticket_id, E.c.at).where(E.c.kind == "status", E.c.new == Status.SOLVED.value, E.c.at >= since_utc)
        .order_by(E.c.at.desc()).limit(limit)
    ).all()
    if not solves:
        return []
    ids = sorted({tid for tid, _ in solves})
    takes: dict[int, list[datetime]] = {}
    for start in range(0, len(ids), 500):
        q = select(E.c.ticket_id, E.c.at).where(
            E.c.ticket_id.in_(ids[start:start + 500]), E.c.kind == "holder", E.c.new.is_not(None))
        for tid, at in conn.execute(q):
            takes.setdefault(tid, []).append(as_utc(at))
    spans = []
    for tid, at in solves:
        solved = as_utc(at)
        before = [t for t in takes.get(tid, []) if t <= solved]
        if before:
            spans.append((max(before), solved))
    return spans


def in_progress_since(conn: Connection) -> list[datetime]:
    """When each ticket held by an agent now was taken (its latest holder event): the work in progress."""
    held = select(T.c.id).where(T.c.holder.is_not(None), T.c.status.in_([s.value for s in ACTIVE]))
    q = (
        select(E.c.ticket_id, E.c.at)
        .where(E.c.ticket_id.in_(held.scalar_subquery()), E.c.kind == "holder", E.c.new.is_not(None))
    )
    taken: dict[int, datetime] = {}
    for tid, at in conn.execute(q):
        taken[tid] = max(taken.get(tid, as_utc(at)), as_utc(at))
    return sorted(taken.values())


def arrivals(conn: Connection, *, since: datetime) -> list[datetime]:
    """When tickets from people (not automated mail) arrived: how fast mail is coming in."""
    q = select(T.c.created_at).where(T.c.automated_reason.is_(None), T.c.created_at >= since.astimezone(timezone.utc))
    return [as_utc(r[0]) for r in conn.execute(q)]


def work_order_rows(conn: Connection) -> dict[int, dict]:
    """Every queue ticket with what its place in the work order depends on (``storage.tickets.queue_order``)."""
    q = (
        select(T.c.id, T.c.promise_deadline, T.c.priority, C.c.tier, T.c.created_at, T.c.automated_reason)
        .join(C, C.c.id == T.c.customer_id)
        .where(T.c.status.in_([s.value for s in ACTIVE]))
    )
    out = {}
    for r in conn.execute(q).mappings():
        r = dict(r)
        r["promise_deadline"], r["created_at"] = as_utc(r["promise_deadline"]), as_utc(r["created_at"])
        out[r["id"]] = r
    return out


def tier_arrivals(conn: Connection, *, since: datetime) -> list[datetime]:
    """When tickets from customers with a tier arrived (they jump the queue)."""
    q = (
        select(T.c.created_at).join(C, C.c.id == T.c.customer_id)
        .where(C.c.tier.is_not(None), T.c.created_at >= since.astimezone(timezone.utc))
    )
    return [as_utc(r[0]) for r in conn.execute(q)]


# -- candidates for acknowledgement, check-in and auto-close -------------------------------------
def unacknowledged_since(conn: Connection, *, since: datetime) -> list[int]:
    """Queue tickets whose mail came in at or after ``since`` and that had no acknowledgement and no reply."""
    since = since.astimezone(timezone.utc)
    q = select(T.c.id).where(
        T.c.status.in_([s.value for s in ACTIVE]),
        T.c.updated_at >= since,  # (status, updated_at) is indexed; a ticket is updated when created
        T.c.created_at >= since,
        T.c.acknowledged_at.is_(None),
        T.c.last_reply_at.is_(None),
        T.c.automated_reason.is_(None),
    )
    return sorted(r[0] for r in conn.execute(q))


def queue_flags(conn: Connection) -> dict[int, bool]:
    """Every queue ticket: whether it waits for an agent (nobody holds it, and it is not automated mail)."""
    q = select(T.c.id, T.c.holder, T.c.automated_reason).where(T.c.status.in_([s.value for s in ACTIVE]))
    return {tid: not holder and not automated for tid, holder, automated in conn.execute(q)}


def waiting_rows(conn: Connection, ticket_ids: Iterable[int] | None = None) -> list[dict]:
    """Queue tickets with what acknowledging them needs: the customer, their stamp, their last message."""
    q = (
        select(T.c.id, T.c.subject, T.c.status, T.c.holder, T.c.acknowledged_at, T.c.last_reply_at,
               T.c.promise_deadline, T.c.automated_reason, T.c.created_at, C.c.id.label("customer_id"),
               C.c.address.label("customer"), C.c.name.label("customer_name"), C.c.tier,
               C.c.last_automatic_at)
        .join(C, C.c.id == T.c.customer_id)
        .where(T.c.status.in_([s.value for s in ACTIVE]))
    )
    if ticket_ids is not None:
        q = q.where(T.c.id.in_(list(ticket_ids)))
    rows = [dict(r) for r in conn.execute(q).mappings()]
    _attach_last_customer_message(conn, rows)
    for r in rows:
        for k in ("acknowledged_at", "last_reply_at", "promise_deadline", "created_at", "last_automatic_at"):
            r[k] = as_utc(r[k])
    return rows


def automatic_mail_to_domains(conn: Connection, *, since: datetime) -> dict[str, list[tuple[str, datetime]]]:
    """Automatic mail (acknowledgements, updates, check-ins, closing notices) that went or is going out since
    ``since``, by the recipient's mail domain: ``{domain: [(address, when), ...]}``, ``when`` the time it
    was sent (or queued, while not sent yet). What the mail-loop guard looks at: an auto-responder that
    answers from a new address each time is one domain."""
    q = (
        select(O.c.recipients, O.c.sent_at, O.c.created_at)
        .where(O.c.kind.in_(AUTOMATIC_KINDS), O.c.state.not_in(("cancelled", "failed")), O.c.created_at >= since)
    )
    out: dict[str, list[tuple[str, datetime]]] = {}
    for recipients, sent_at, created_at in conn.execute(q):
        for addr in (recipients or "").split():
            domain = addr.rpartition("@")[2].lower()
            if domain:
                out.setdefault(domain, []).append((addr.lower(), as_utc(sent_at or created_at)))
    return out


def _attach_last_customer_message(conn: Connection, rows: list[dict]) -> None:
    ids = [r["id"] for r in rows]
    last: dict[int, dict] = {}
    for start in range(0, len(ids), 500):
        q = (
            select(M.c.ticket_id, M.c.date, M.c.date_offset_minutes, M.c.automated_reason, M.c.subject)
            .where(M.c.ticket_id.in_(ids[start:start + 500]), M.c.direction == "in")
            .order_by(M.c.date, M.c.id)
        )
        for r in conn.execute(q).mappings():
            prev = last.get(r["ticket_id"])
            # The customer's own (human) message wins over an auto-reply that came after it.
            if prev is None or r["automated_reason"] is None or prev["automated_reason"] is not None:
                last[r["ticket_id"]] = dict(r)
    for r in rows:
        m = last.get(r["id"])
        r["date_offset_minutes"] = m["date_offset_minutes"] if m else None
        r["date_offset_seen_at"] = as_utc(m["date"]) if m else None  # when that offset was the customer's
        r["last_message_automated"] = m["automated_reason"] if m else None
        r["last_subject"] = m["subject"] if m else r["subject"]


def pending_rows(conn: Connection) -> list[dict]:
    """Tickets waiting on the customer, with when they started waiting, any check-in since, and the
    outbox state of our last reply (``reply_state``: a customer is silent on a reply only once it was sent)."""
    q = (
        select(T.c.id, T.c.subject, T.c.pending_since, T.c.updated_at, T.c.automated_reason,
               C.c.address.label("customer"), C.c.name.label("customer_name"), C.c.last_automatic_at)
        .join(C, C.c.id == T.c.customer_id)
        .where(T.c.status == Status.PENDING.value)
    )
    rows = [dict(r) for r in conn.execute(q).mappings()]
    ids = [r["id"] for r in rows]
    checkins: dict[int, list[datetime]] = {}
    last_reply: dict[int, tuple[int, str]] = {}
    for start in range(0, len(ids), 500):
        q = select(O.c.ticket_id, O.c.created_at).where(
            O.c.ticket_id.in_(ids[start:start + 500]), O.c.kind == "checkin", O.c.state != "cancelled")
        for tid, at in conn.execute(q):
            checkins.setdefault(tid, []).append(as_utc(at))
        q = select(O.c.ticket_id, O.c.id, O.c.state).where(
            O.c.ticket_id.in_(ids[start:start + 500]), O.c.kind == "reply")
        for tid, oid, state in conn.execute(q):
            if tid not in last_reply or oid > last_reply[tid][0]:
                last_reply[tid] = (oid, state)
    for r in rows:
        r["pending_since"] = as_utc(r["pending_since"] or r["updated_at"])
        # The outbox state of our last reply through heard (None: no reply of ours in the outbox).
        r["reply_state"] = last_reply.get(r["id"], (None, None))[1]
        r["last_automatic_at"] = as_utc(r["last_automatic_at"])
        r["checkin_at"] = _first_after(sorted(checkins.get(r["id"], [])), r["pending_since"])
    return rows
