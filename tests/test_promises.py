"""Table tests for storage.promises: the promise ledger's states and summary, and auto-close.

One rule each: storage.ledger reads the facts from the database and calls
these; mail.ack's housekeeping calls pending_action."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from storage.deadlines import BusinessHours
from storage.promises import (
    AT_RISK, BROKEN, KEPT, OPEN, UPDATED, ledger_summary, pending_action, pending_close_at, promise_state,
)

BER = ZoneInfo("Europe/Berlin")
H = BusinessHours(tz=BER)
DL = datetime(2026, 11, 24, 14, 0, tzinfo=BER)
HOUR = timedelta(hours=1)
S = timedelta(seconds=1)


@pytest.mark.parametrize("label, replied_at, now, expected", [
    ("reply well before", DL - 3 * HOUR, DL - 2 * HOUR, KEPT),
    ("reply exactly at the deadline", DL, DL + HOUR, KEPT),
    ("reply one second late", DL + S, DL + HOUR, BROKEN),
    ("reply late, seen before the deadline (skew)", DL + S, DL - HOUR, BROKEN),
    ("kept stays kept long after", DL - S, DL + timedelta(days=30), KEPT),
    ("no reply, far away", None, DL - 2 * HOUR, OPEN),
    ("no reply, one second outside the margin", None, DL - HOUR - S, OPEN),
    ("no reply, exactly at the margin", None, DL - HOUR, AT_RISK),
    ("no reply, inside the margin", None, DL - timedelta(minutes=5), AT_RISK),
    ("no reply, one second before the deadline", None, DL - S, AT_RISK),
    # Broken from the deadline itself, as the queue's header counts it (promise_deadline <= now).
    ("no reply, at the deadline", None, DL, BROKEN),
    ("no reply, one second past", None, DL + S, BROKEN),
    ("no reply, other time zone", None, datetime(2026, 11, 24, 13, 0, 1, tzinfo=timezone.utc), BROKEN),
])
def test_promise_state_boundaries(label, replied_at, now, expected):
    assert promise_state(deadline=DL, handled_at=replied_at, now=now, at_risk_margin=HOUR) == expected, label


# A promise made Monday 10:00 UTC, due four hours later; the ledger's 2 h margin.
MADE = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
DUE = MADE + 4 * HOUR


@pytest.mark.parametrize("handled, superseded, now, expected", [
    (MADE + HOUR, None, MADE + 10 * HOUR, KEPT),  # a reply before the deadline
    (DUE, None, MADE + 10 * HOUR, KEPT),  # on the dot counts
    (DUE + HOUR, None, MADE + 10 * HOUR, BROKEN),  # answered, but late
    (None, None, MADE + HOUR, OPEN),
    (None, None, DUE - HOUR, AT_RISK),  # inside the 2 h margin
    (None, None, DUE, BROKEN),  # the deadline passed with no reply
    (None, MADE + 3 * HOUR, MADE + 10 * HOUR, UPDATED),  # a new deadline before it was due
    (None, DUE + HOUR, MADE + 10 * HOUR, BROKEN),  # an update after the deadline does not un-break it
    (MADE - HOUR, None, DUE + HOUR, BROKEN),  # a reply before the promise does not keep it
    (MADE + 5 * HOUR, MADE + 2 * HOUR, MADE + 10 * HOUR, UPDATED),  # updated first, then answered
])
def test_promise_state_with_updates(handled, superseded, now, expected):
    assert promise_state(made_at=MADE, deadline=DUE, handled_at=handled, superseded_at=superseded, now=now,
                         at_risk_margin=2 * HOUR) == expected


def test_zero_margin_is_never_at_risk_before_the_deadline():
    assert promise_state(deadline=DL, handled_at=None, now=DL - S, at_risk_margin=timedelta(0)) == OPEN
    assert promise_state(deadline=DL, handled_at=None, now=DL, at_risk_margin=timedelta(0)) == BROKEN


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError):
        promise_state(deadline=DL, handled_at=None, now=datetime(2026, 11, 24, 12), at_risk_margin=HOUR)


def test_ledger_summary():
    now = DL
    promises = [
        (DL - 5 * HOUR, DL - 6 * HOUR),        # kept
        (DL - 5 * HOUR, DL - 5 * HOUR),        # kept, at the deadline
        (DL - 5 * HOUR, DL - 4 * HOUR),        # broken by 1h
        (DL - 5 * HOUR, None),                 # broken by 5h, still open
        (DL - 10 * HOUR, DL - 7 * HOUR),       # broken by 3h
        (DL + timedelta(minutes=30), None),    # at risk
        (DL + 5 * HOUR, None),                 # open
    ]
    assert ledger_summary(promises, now) == {
        "made": 7, "kept": 2, "broken": 3, "at_risk": 1, "open": 1, "updated": 0,
        "median_broken_delay": 3 * HOUR,
    }


def test_ledger_summary_of_ledger_rows_with_updates():
    rows = [
        {"made_at": MADE, "deadline": DUE, "handled_at": MADE + HOUR, "superseded_at": None},  # kept
        {"made_at": MADE, "deadline": DUE, "handled_at": None, "superseded_at": MADE + HOUR},  # updated
        {"made_at": MADE, "deadline": DUE, "handled_at": None, "superseded_at": DUE + 2 * HOUR},  # broken, 2 h
        {"made_at": MADE, "deadline": DUE, "handled_at": MADE - HOUR, "superseded_at": None},  # broken, 6 h so far
    ]
    got = ledger_summary(rows, DUE + 6 * HOUR, at_risk_margin=2 * HOUR)
    assert got == {"made": 4, "kept": 1, "broken": 2, "at_risk": 0, "open": 0, "updated": 1,
                   "median_broken_delay": 4 * HOUR}


def test_ledger_summary_empty_and_margin():
    assert ledger_summary([], DL) == {
        "made": 0, "kept": 0, "broken": 0, "at_risk": 0, "open": 0, "updated": 0, "median_broken_delay": None,
    }
    got = ledger_summary([(DL + 2 * HOUR, None)], DL, at_risk_margin=3 * HOUR)
    assert got["at_risk"] == 1 and got["median_broken_delay"] is None


# Pending since Monday 23 Nov 10:00 Berlin. Close after 5 business days (Monday 30 Nov 10:00),
# check in after 2.5 (Wednesday 25 Nov 14:00); a check-in leaves at least 2.5 business days.
P = datetime(2026, 11, 23, 10, 0, tzinfo=BER)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=BER)


@pytest.mark.parametrize("label, last_reply, checkin, now, expected", [
    ("just pending", None, None, at(23, 11), None),
    ("just before the check-in point", None, None, at(25, 13, 59), None),
    ("the check-in point: check in", None, None, at(25, 14), "checkin"),
    ("checked in, silence continues", None, at(25, 14), at(27, 12), None),
    ("window over with a check-in: close", None, at(25, 14), at(30, 10), "close"),
    ("window not quite over", None, at(25, 14), at(30, 9, 59), None),
    ("window over, no check-in yet: check in first", None, None, at(30, 10), "checkin"),
    ("late check-in gets its grace", None, at(30, 10), at(1, 16, month=12), None),
    ("late check-in, the grace later: close", None, at(30, 10), at(2, 14, month=12), "close"),
    ("customer replied: clock restarts", at(26, 10), at(25, 14), at(30, 10), None),
    ("customer replied; old check-in does not count", at(26, 10), at(25, 14), at(30, 14), "checkin"),
    ("reply older than pending is ignored", at(20, 10), None, at(25, 14), "checkin"),
    ("Sunday night after a silent week: check in", None, None, at(29, 23), "checkin"),
])
def test_pending_action_berlin(label, last_reply, checkin, now, expected):
    got = pending_action(pending_since=P, last_customer_reply_at=last_reply, checkin_at=checkin,
                         now=now, hours=H, close_after_days=5, checkin_after_days=2.5)
    assert got == expected, label


# Monday 23 November 2026, 10:00 UTC; business hours Mon-Fri 09-17 UTC; the defaults (close 5, check in 3).
MON = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
UTC_HOURS = BusinessHours()


def test_the_product_uses_this_rule():
    # The defaults table (close 5, check in 3, check-in not allowed) is in test_autoclose.py, through mail.ack.
    from mail.ack import pending_action as used_by_housekeeping

    assert used_by_housekeeping is pending_action
    assert pending_action(pending_since=MON, checkin_at=None, now=MON + 7 * DAY, hours=UTC_HOURS,
                          checkin_allowed=False) == "close"


def test_auto_close_weekend_is_not_silence():
    # Pending Friday 16:00, close after 2 business days, check in after 1 (Monday 16:00).
    fri = datetime(2026, 11, 27, 16, 0, tzinfo=BER)
    kw = dict(pending_since=fri, hours=H, close_after_days=2, checkin_after_days=1)
    assert pending_action(checkin_at=None, now=datetime(2026, 11, 29, 23, 0, tzinfo=BER), **kw) is None
    assert pending_action(checkin_at=None, now=datetime(2026, 11, 30, 15, 59, tzinfo=BER), **kw) is None
    assert pending_action(checkin_at=None, now=datetime(2026, 11, 30, 16, 0, tzinfo=BER), **kw) == "checkin"
    sent = datetime(2026, 11, 30, 16, 0, tzinfo=BER)
    assert pending_action(checkin_at=sent, now=datetime(2026, 12, 1, 16, 0, tzinfo=BER), **kw) == "close"
    assert pending_action(checkin_at=sent, now=datetime(2026, 12, 1, 15, 59, tzinfo=BER), **kw) is None
    assert pending_close_at(pending_since=fri, checkin_at=sent, hours=H, close_after_days=2,
                            checkin_after_days=1) == datetime(2026, 12, 1, 16, 0, tzinfo=BER)


def test_pending_close_at_gives_a_late_check_in_its_grace():
    assert pending_close_at(pending_since=MON, checkin_at=MON + 3 * DAY, hours=UTC_HOURS) == MON + 7 * DAY
    assert pending_close_at(pending_since=MON, checkin_at=MON + 7 * DAY, hours=UTC_HOURS) == MON + 9 * DAY


@pytest.mark.parametrize("kw", [dict(close_after_days=0), dict(checkin_after_days=5), dict(checkin_after_days=0)])
def test_pending_action_rejects_nonsense(kw):
    with pytest.raises(ValueError):
        pending_action(pending_since=P, checkin_at=None, now=P, hours=H, **kw)
