"""The promise ledger and the auto-close rule: pure functions with an explicit ``now``.

Every acknowledgement is a promise ("I will handle this by <deadline>").

* kept: a human reply went out at or before the deadline;
* broken: the deadline passed with no reply, or the reply came after it;
* at_risk: no reply yet, the deadline is still ahead but within the margin;
* open: no reply yet, the deadline is further away than the margin.

Pending tickets (waiting on the customer) get one polite check-in about
half-way through the silence window and are closed after ``days`` business
days of silence; any customer reply restarts the clock.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta, timezone
from typing import Iterable, Literal

from storage.deadlines import BusinessHours

__all__ = ["PromiseState", "promise_state", "ledger_summary", "auto_close_due"]

PromiseState = Literal["kept", "at_risk", "broken", "open"]
AutoClose = Literal["none", "checkin", "close"]


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime not allowed here: {dt!r}")
    return dt.astimezone(timezone.utc)


def promise_state(
    *,
    deadline: datetime,
    replied_at: datetime | None,
    now: datetime,
    at_risk_margin: timedelta,
) -> PromiseState:
    """The state of one promise at ``now``.

    A reply exactly at the deadline keeps the promise; the promise breaks at
    the first instant after the deadline. A reply recorded after ``now``
    (clock skew between agents) counts as given: the ledger reflects what was
    sent. "At risk" starts exactly ``at_risk_margin`` before the deadline.
    """
    d, n = _utc(deadline), _utc(now)
    if replied_at is not None:
        return "kept" if _utc(replied_at) <= d else "broken"
    if n > d:
        return "broken"
    if d - n <= at_risk_margin:
        return "at_risk"
    return "open"


def ledger_summary(
    promises: Iterable[tuple[datetime, datetime | None]],
    now: datetime,
    *,
    at_risk_margin: timedelta = timedelta(hours=1),
) -> dict[str, object]:
    """Counts for ``heard report``.

    ``promises`` are ``(deadline, replied_at)`` pairs. Returns ``made``,
    ``kept``, ``broken``, ``at_risk``, ``open`` and ``median_broken_delay``:
    the median of how late broken promises are (reply - deadline, or
    now - deadline while still unanswered), None when none is broken.
    """
    counts = {"kept": 0, "broken": 0, "at_risk": 0, "open": 0}
    delays: list[timedelta] = []
    made = 0
    for deadline, replied_at in promises:
        made += 1
        state = promise_state(deadline=deadline, replied_at=replied_at, now=now, at_risk_margin=at_risk_margin)
        counts[state] += 1
        if state == "broken":
            end = replied_at if replied_at is not None else now
            delays.append(_utc(end) - _utc(deadline))
    return {
        "made": made,
        **counts,
        "median_broken_delay": statistics.median(delays) if delays else None,
    }


def auto_close_due(
    *,
    pending_since: datetime,
    last_customer_reply_at: datetime | None,
    checkin_sent_at: datetime | None,
    now: datetime,
    hours: BusinessHours,
    days: int = 5,
) -> AutoClose:
    """What to do with a ticket pending on the customer.

    Silence is counted in business time from the later of ``pending_since``
    and the customer's last reply (a customer reply normally reopens the
    ticket; one older than ``pending_since`` is ignored). After half of
    ``days`` business days of silence, one check-in ("checkin"); a check-in
    sent before the silence started does not count (the customer answered
    it). After ``days`` business days, "close" -- but never without a
    check-in first: when none was sent, "checkin" now, and "close" only once
    it has had one business day (or half the window, if shorter) to be read.
    """
    if days < 1:
        raise ValueError("auto-close needs at least one business day")
    start = pending_since
    if last_customer_reply_at is not None and _utc(last_customer_reply_at) > _utc(start):
        start = last_customer_reply_at
    window = hours.day_length * days
    silent = hours.business_time_between(start, now)
    checked = checkin_sent_at is not None and _utc(checkin_sent_at) >= _utc(start)
    if not checked:
        return "checkin" if silent >= window / 2 else "none"
    if silent < window:
        return "none"
    grace = min(hours.day_length, window / 2)
    if hours.business_time_between(checkin_sent_at, now) < grace:
        return "none"
    return "close"
