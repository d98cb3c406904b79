"""The ticket lifecycle: states, priorities, allowed moves, and the reason each move needs.

Pure: plain values in, an ``Change`` out (which the store appends to the event
log). A move without a reason is refused, whoever asks and however small.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    NEW = "new"
    OPEN = "open"
    PENDING = "pending"  # waiting on the customer
    ON_HOLD = "on_hold"
    SOLVED = "solved"
    CLOSED = "closed"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


PRIORITY_RANK = {Priority.URGENT: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}

STATUS_LABELS = {
    Status.NEW: "new",
    Status.OPEN: "open",
    Status.PENDING: "waiting on customer",
    Status.ON_HOLD: "on hold",
    Status.SOLVED: "solved",
    Status.CLOSED: "closed",
}

# Which states a ticket may move to from each state.
ALLOWED: dict[Status, frozenset[Status]] = {
    Status.NEW: frozenset({Status.OPEN, Status.PENDING, Status.ON_HOLD, Status.SOLVED, Status.CLOSED}),
    Status.OPEN: frozenset({Status.PENDING, Status.ON_HOLD, Status.SOLVED, Status.CLOSED}),
    Status.PENDING: frozenset({Status.OPEN, Status.ON_HOLD, Status.SOLVED, Status.CLOSED}),
    Status.ON_HOLD: frozenset({Status.OPEN, Status.PENDING, Status.SOLVED, Status.CLOSED}),
    Status.SOLVED: frozenset({Status.OPEN, Status.CLOSED}),
    Status.CLOSED: frozenset({Status.OPEN}),
}

# States that still need work from an agent (the queue).
ACTIVE = frozenset({Status.NEW, Status.OPEN, Status.ON_HOLD})
# States a customer reply brings back to the queue.
REOPENED_BY_CUSTOMER = frozenset({Status.PENDING, Status.SOLVED, Status.CLOSED})


class LifecycleError(ValueError):
    """A refused change; the message is one line a person can act on."""


class ReasonRequired(LifecycleError):
    pass


class TransitionNotAllowed(LifecycleError):
    pass


@dataclass(frozen=True, slots=True)
class Change:
    """One entry for the append-only event log."""

    kind: str  # status | priority | holder | ack | promise | reply | note | ...
    old: str | None
    new: str | None
    reason: str
    actor: str
    at: datetime


def _require_reason(reason: str | None, what: str) -> str:
    text = " ".join((reason or "").split())
    if not text:
        raise ReasonRequired(f"{what} needs a reason: say why, so the next person knows")
    return text


def parse_status(value: str) -> Status:
    key = value.strip().lower().replace(" ", "_").replace("-", "_")
    aliases = {"waiting": Status.PENDING, "hold": Status.ON_HOLD, "onhold": Status.ON_HOLD}
    if key in aliases:
        return aliases[key]
    try:
        return Status(key)
    except ValueError:
        names = ", ".join(s.value for s in Status)
        raise LifecycleError(f"unknown status {value!r}: use one of {names}") from None


def parse_priority(value: str) -> Priority:
    try:
        return Priority(value.strip().lower())
    except ValueError:
        names = ", ".join(p.value for p in Priority)
        raise LifecycleError(f"unknown priority {value!r}: use one of {names}") from None


def transition(current: Status | str, target: Status | str, *, reason: str | None, actor: str, now: datetime) -> Change:
    """Move a ticket from ``current`` to ``target``; refused without a reason or when not allowed."""
    cur, tgt = Status(current), Status(target)
    text = _require_reason(reason, f"{STATUS_LABELS[cur]} → {STATUS_LABELS[tgt]}")
    if tgt == cur:
        raise TransitionNotAllowed(f"the ticket is already {STATUS_LABELS[cur]}")
    if tgt not in ALLOWED[cur]:
        raise TransitionNotAllowed(f"a {STATUS_LABELS[cur]} ticket cannot become {STATUS_LABELS[tgt]}; reopen it first")
    return Change("status", cur.value, tgt.value, text, actor, now)


def change_priority(current: Priority | str, target: Priority | str, *, reason: str | None, actor: str, now: datetime) -> Change:
    cur, tgt = Priority(current), Priority(target)
    text = _require_reason(reason, f"priority {cur.value} → {tgt.value}")
    if cur == tgt:
        raise TransitionNotAllowed(f"the priority is already {cur.value}")
    return Change("priority", cur.value, tgt.value, text, actor, now)


def change_holder(current: str | None, target: str | None, *, reason: str | None, actor: str, now: datetime) -> Change:
    """Take, release or reassign a ticket."""
    if target is not None and not target.strip():
        raise TransitionNotAllowed("say who gets the ticket: an agent's name (releasing it is `heard release`)")
    what = "releasing the ticket" if target is None else f"assigning to {target}"
    text = _require_reason(reason, what)
    if current == target:
        if target is None:
            raise TransitionNotAllowed("nobody holds the ticket: there is nothing to release")
        raise TransitionNotAllowed(f"{target} already holds the ticket")
    return Change("holder", current, target, text, actor, now)


def customer_reply_reopens(current: Status | str) -> bool:
    return Status(current) in REOPENED_BY_CUSTOMER
