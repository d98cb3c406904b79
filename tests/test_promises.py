"""Table tests for storage.promises: the promise ledger and auto-close."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from storage.deadlines import BusinessHours
from storage.promises import auto_close_due, ledger_summary, promise_state

BER = ZoneInfo("Europe/Berlin")
H = BusinessHours(tz=BER)
DL = datetime(2026, 11, 24, 14, 0, tzinfo=BER)
HOUR = timedelta(hours=1)
S = timedelta(seconds=1)


@pytest.mark.parametrize("label, replied_at, now, expected", [
    ("reply well before", DL - 3 * HOUR, DL - 2 * HOUR, "kept"),
    ("reply exactly at the deadline", DL, DL + HOUR, "kept"),
    ("reply one second late", DL + S, DL + HOUR, "broken"),
    ("reply late, seen before the deadline (skew)", DL + S, DL - HOUR, "broken"),
    ("kept stays kept long after", DL - S, DL + timedelta(days=30), "kept"),
    ("no reply, far away", None, DL - 2 * HOUR, "open"),
    ("no reply, one second outside the margin", None, DL - HOUR - S, "open"),
    ("no reply, exactly at the margin", None, DL - HOUR, "at_risk"),
    ("no reply, inside the margin", None, DL - timedelta(minutes=5), "at_risk"),
    ("no reply, at the deadline", None, DL, "at_risk"),
    ("no reply, one second past", None, DL + S, "broken"),
    ("no reply, other time zone", None, datetime(2026, 11, 24, 13, 0, 1, tzinfo=timezone.utc), "broken"),
])
def test_promise_state_boundaries(label, replied_at, now, expected):
    assert promise_state(deadline=DL, replied_at=replied_at, now=now, at_risk_margin=HOUR) == expected, label


def test_zero_margin_is_never_at_risk_before_the_deadline():
    assert promise_state(deadline=DL, replied_at=None, now=DL - S, at_risk_margin=timedelta(0)) == "open"
    assert promise_state(deadline=DL, replied_at=None, now=DL, at_risk_margin=timedelta(0)) == "at_risk"


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError):
        promise_state(deadline=DL, replied_at=None, now=datetime(2026, 11, 24, 12), at_risk_margin=HOUR)


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
        "made": 7, "kept": 2, "broken": 3, "at_risk": 1, "open": 1,
        "median_broken_delay": 3 * HOUR,
    }


def test_ledger_summary_empty_and_margin():
    assert ledger_summary([], DL) == {
        "made": 0, "kept": 0, "broken": 0, "at_risk": 0, "open": 0, "median_broken_delay": None,
    }
    got = ledger_summary([(DL + 2 * HOUR, None)], DL, at_risk_margin=3 * HOUR)
    assert got["at_risk"] == 1 and got["median_broken_delay"] is None


# Pending since Monday 23 Nov 10:00; 5 business days = 40 business hours.
P = datetime(2026, 11, 23, 10, 0, tzinfo=BER)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=BER)


@pytest.mark.parametrize("label, last_reply, checkin, now, expected", [
    ("just pending", None, None, at(23, 11), "none"),
    ("just before half the window", None, None, at(25, 13, 59), "none"),
    ("half the window: check in", None, None, at(25, 14), "checkin"),
    ("checked in, silence continues", None, at(25, 14), at(27, 12), "none"),
    ("window over with a check-in: close", None, at(25, 14), at(30, 10), "close"),
    ("window not quite over", None, at(25, 14), at(30, 9, 59), "none"),
    ("window over, no check-in yet: check in first", None, None, at(30, 10), "checkin"),
    ("late check-in gets a business day", None, at(30, 10), at(30, 16), "none"),
    ("late check-in, a business day later: close", None, at(30, 10),
     datetime(2026, 12, 1, 10, 0, tzinfo=BER), "close"),
    ("customer replied: clock restarts", at(26, 10), at(25, 14), at(30, 10), "none"),
    ("customer replied; old check-in does not count", at(26, 10), at(25, 14),
     datetime(2026, 11, 30, 14, 0, tzinfo=BER), "checkin"),
    ("reply older than pending is ignored", at(20, 10), None, at(25, 14), "checkin"),
    ("Sunday night after a silent week: check in", None, None, at(29, 23), "checkin"),
])
def test_auto_close_due(label, last_reply, checkin, now, expected):
    got = auto_close_due(pending_since=P, last_customer_reply_at=last_reply, checkin_sent_at=checkin,
                         now=now, hours=H, days=5)
    assert got == expected, label


def test_auto_close_weekend_is_not_silence():
    # Pending Friday 16:00, 1 business day window: half is Monday 12:00 (1h Fri + 3h Mon).
    fri = datetime(2026, 11, 27, 16, 0, tzinfo=BER)
    kw = dict(pending_since=fri, last_customer_reply_at=None, hours=H, days=1)
    assert auto_close_due(checkin_sent_at=None, now=datetime(2026, 11, 29, 23, 0, tzinfo=BER), **kw) == "none"
    assert auto_close_due(checkin_sent_at=None, now=datetime(2026, 11, 30, 12, 0, tzinfo=BER), **kw) == "checkin"
    sent = datetime(2026, 11, 30, 12, 0, tzinfo=BER)
    assert auto_close_due(checkin_sent_at=sent, now=datetime(2026, 11, 30, 16, 0, tzinfo=BER), **kw) == "close"
    assert auto_close_due(checkin_sent_at=sent, now=datetime(2026, 11, 30, 15, 59, tzinfo=BER), **kw) == "none"


def test_auto_close_rejects_zero_days():
    with pytest.raises(ValueError):
        auto_close_due(pending_since=P, last_customer_reply_at=None, checkin_sent_at=None, now=P, hours=H, days=0)
