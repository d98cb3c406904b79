"""The promise ledger and the auto-close rule: pure functions with an explicit ``now``.

Every acknowledgement is a promise ("I will handle this by <deadline>").

* kept: handled (a human reply, or solved/closed by a person) at or before the deadline;
* broken: the deadline came with no reply, or the reply came after it;
* at_risk: no reply yet, the deadline is still ahead but within the margin;
* open: no reply yet, the deadline is further away than the margin;
* updated: replaced by an update (a new deadline) before it was due.

Pending tickets (waiting on the customer) get one polite check-in after
``checkin_after_days`` business days of silence and are closed after
``close_after_days``; any customer reply restarts the clock.

:mod:`storage.ledger` reads the facts from the database and calls these;
:mod:`mail.ack` calls :func:`pending_action` in housekeeping.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Literal

from storage.deadlines import BusinessHours

__all__ = [
    "PromiseState", "KEPT", "BROKEN", "AT_RISK", "OPEN", "UPDATED", "STATES",
    "promise_state", "broken_delay", "ledger_summary", "pending_action", "pending_close_at",
]

PromiseState = Literal["kept", "broken", "at_risk", "open", "updated"]
PendingAction = Literal["checkin", "close"]
KEPT, BROKEN, AT_RISK, OPEN, UPDATED = "kept", "broken", "at_risk", "open", "updated"
STATES = (KEPT, BROKEN, AT_RISK, OPEN, UPDATED)


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime not allowed here: {dt!r}")
    return dt.astimezone(timezone.utc)


def _handled(handled_at: datetime | None, made_at: datetime | None) -> datetime | None:
    """The handling that counts for a promise: none before the promise was made."""
    if handled_at is None or (made_at is not None and _utc(handled_at) < _utc(made_at)):
        return None
    return _utc(handled_at)


def promise_state(
    *,
    deadline: datetime,
    handled_at: datetime | None,
    now: datetime,
    at_risk_margin: timedelta,
    made_at: datetime | None = None,
    superseded_at: datetime | None = None,
) -> PromiseState:
    """The state of one promise at ``now``; every datetime aware.

    A reply exactly at the deadline keeps the promise. With no reply, the
    promise is broken from the deadline itself on (the queue's header counts
    it the same way). A reply recorded after ``now`` (clock skew between
    agents) counts as given: the ledger reflects what was sent; one before
    ``made_at`` does not keep a promise made after it. "At risk" starts
    exactly ``at_risk_margin`` before the deadline. An update (``superseded_at``)
    before the reply replaces the promise: honest ("updated") when it came
    before the deadline, broken when after.
    """
    d, n = _utc(deadline), _utc(now)
    h = _handled(handled_at, made_at)
    if superseded_at is not None and (h is None or _utc(superseded_at) <= h):
        return UPDATED if _utc(superseded_at) <= d else BROKEN
    if h is not None:
        return KEPT if h <= d else BROKEN
    if n >= d:
        return BROKEN
    if d - n <= at_risk_margin:
        return AT_RISK
    return OPEN


def broken_delay(*, deadline: datetime, handled_at: datetime | None, now: datetime,
                 superseded_at: datetime | None = None, made_at: datetime | None = None) -> timedelta:
    """How late a broken promise is (reply or update - deadline; still counting, now - deadline, without)."""
    end = _handled(handled_at, made_at) or superseded_at or now
    return max(_utc(end) - _utc(deadline), timedelta(0))


def ledger_summary(
    promises: Iterable[Mapping[str, datetime | None] | Sequence[datetime | None]],
    now: datetime,
    *,
    at_risk_margin: timedelta = timedelta(hours=1),
) -> dict[str, object]:
    """Counts for ``heard report``.

    Each promise is a mapping with ``deadline``, ``handled_at`` and optionally
    ``made_at`` and ``superseded_at`` (the ledger's rows), or a
    ``(deadline, handled_at)`` pair. Returns ``made``, one count per state and
    ``median_broken_delay``: the median of how late broken promises are,
    None when none is broken.
    """
    counts = dict.fromkeys(STATES, 0)
    delays: list[timedelta] = []
    made = 0
    for p in promises:
        facts = dict(p) if isinstance(p, Mapping) else {"deadline": p[0], "handled_at": p[1]}
        kw = dict(deadline=facts["deadline"], handled_at=facts.get("handled_at"),
                  superseded_at=facts.get("superseded_at"), made_at=facts.get("made_at"))
        made += 1
        state = promise_state(**kw, now=now, at_risk_margin=at_risk_margin)
        counts[state] += 1
        if state == BROKEN:
            delays.append(broken_delay(**kw, now=now))
    return {"made": made, **counts, "median_broken_delay": statistics.median(delays) if delays else None}


def _silence_start(pending_since: datetime, last_customer_reply_at: datetime | None) -> datetime:
    # A customer reply normally reopens the ticket; one older than pending_since is ignored.
    if last_customer_reply_at is not None and _utc(last_customer_reply_at) > _utc(pending_since):
        return last_customer_reply_at
    return pending_since


def _grace(close_after_days: int, checkin_after_days: float) -> float:
    """Business days a check-in leaves the customer to answer before the close (at least one)."""
    return max(1, close_after_days - checkin_after_days)


def pending_action(
    *,
    pending_since: datetime,
    checkin_at: datetime | None,
    now: datetime,
    hours: BusinessHours,
    close_after_days: int = 5,
    checkin_after_days: float = 3,
    checkin_allowed: bool = True,
    last_customer_reply_at: datetime | None = None,
) -> PendingAction | None:
    """"checkin", "close" or None for a ticket waiting on the customer.

    Silence is counted in business days from the later of ``pending_since``
    and the customer's last reply. One polite check-in after
    ``checkin_after_days``; a check-in sent before the silence started does
    not count (the customer answered it). Closed after ``close_after_days``,
    and never sooner than the rest of that grace after the check-in (a late
    check-in still gives the customer time to answer) -- never without a
    check-in, unless none can go out (an automated sender, the per-customer
    window): then it closes on time without one.
    """
    if close_after_days < 1:
        raise ValueError("auto-close needs at least one business day")
    if not 0 < checkin_after_days < close_after_days:
        raise ValueError("the check-in comes after some silence and before the close")
    start = _silence_start(pending_since, last_customer_reply_at)
    if checkin_at is not None and _utc(checkin_at) < _utc(start):
        checkin_at = None
    day = hours.day_length
    waited = hours.business_time_between(start, now) / day
    if checkin_at is None:
        if checkin_allowed:
            return "checkin" if waited >= checkin_after_days else None
        return "close" if waited >= close_after_days else None
    since_checkin = hours.business_time_between(checkin_at, now) / day
    if waited >= close_after_days and since_checkin >= _grace(close_after_days, checkin_after_days):
        return "close"
    return None


def pending_close_at(*, pending_since: datetime, checkin_at: datetime, hours: BusinessHours,
                     close_after_days: int = 5, checkin_after_days: float = 3) -> datetime:
    """When a ticket checked in on at ``checkin_at`` will be closed without a reply (for the check-in's words)."""
    day = hours.day_length
    return max(hours.add_business_time(pending_since, day * close_after_days),
               hours.add_business_time(checkin_at, day * _grace(close_after_days, checkin_after_days)))
