"""Table tests for storage.deadlines: business hours, promises, tiers, words."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from storage.deadlines import (
    BusinessHours,
    answered_within,
    beyond_horizon,
    remaining_work,
    reply_wait,
    HandlingModel,
    TierSpec,
    expected_handling_time,
    format_deadline,
    format_deadline_short,
    Jumpers,
    jumper_rates,
    parse_duration,
    parse_tiers,
    promise_deadline,
    round_into_business_hours,
    round_up_to_hour,
    slotted_deadline,
    surge_jumpers,
    tier_for,
    Ahead,
)

BER = ZoneInfo("Europe/Berlin")
TOKYO = ZoneInfo("Asia/Tokyo")
H = BusinessHours(tz=BER)  # Mon-Fri 09:00-17:00 Berlin, no holidays
XMAS = BusinessHours(tz=BER, holidays=frozenset({date(2026, 12, 24), date(2026, 12, 25)}))
DE = BusinessHours.from_config(
    ["mon", "tue", "wed", "thu", "fri"], "09:00-17:00", "Europe/Berlin",
    country="DE", now=datetime(2026, 1, 1, tzinfo=BER),
)
QUICK = timedelta(minutes=2)  # handling so short the minimum decides


def b(*args: int) -> datetime:
    return datetime(*args, tzinfo=BER)


# --------------------------------------------------------------- business hours


def test_from_config_parses_days_hours_zone_and_holidays():
    h = BusinessHours.from_config(["Mon", "tue", "wednesday"], "08:30-16:00", "Asia/Tokyo", holidays=["2026-05-05"])
    assert h.days == frozenset({0, 1, 2})
    assert (h.start, h.end) == (time(8, 30), time(16, 0))
    assert h.tz == TOKYO
    assert h.holidays == frozenset({date(2026, 5, 5)})
    assert h.day_length == timedelta(hours=7, minutes=30)


def test_from_config_country_with_subdivision():
    by = BusinessHours.from_config(hours="09:00-17:00", timezone="Europe/Berlin", country="DE-BY",
                                   now=datetime(2026, 1, 1, tzinfo=BER))
    assert date(2026, 1, 6) in by.holidays  # Epiphany: Bavaria only
    assert date(2026, 1, 6) not in DE.holidays
    assert {date(2026, 4, 3), date(2026, 4, 6), date(2025, 12, 25), date(2027, 1, 1)} <= DE.holidays


@pytest.mark.parametrize("kwargs", [
    {"days": ["mon", "funday"]},
    {"hours": "9-5"},
    {"hours": "17:00-09:00"},
    {"days": []},
])
def test_from_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        BusinessHours.from_config(**kwargs)


@pytest.mark.parametrize("dt, open_", [
    (b(2026, 11, 24, 9, 0), True),       # opening instant
    (b(2026, 11, 24, 16, 59), True),
    (b(2026, 11, 24, 17, 0), False),     # closing instant
    (b(2026, 11, 24, 8, 59), False),
    (b(2026, 11, 28, 12, 0), False),     # Saturday
    (datetime(2026, 11, 24, 8, 0, tzinfo=timezone.utc), True),  # 09:00 Berlin
])
def test_is_open(dt, open_):
    assert H.is_open(dt) is open_


@pytest.mark.parametrize("hours, dt, expected", [
    (H, b(2026, 11, 24, 10, 30), b(2026, 11, 24, 10, 30)),
    (H, b(2026, 11, 24, 7, 0), b(2026, 11, 24, 9, 0)),
    (H, b(2026, 11, 27, 18, 0), b(2026, 11, 30, 9, 0)),       # Friday 18:00 -> Monday
    (XMAS, b(2026, 12, 23, 17, 0), b(2026, 12, 28, 9, 0)),    # holidays then weekend
    (DE, b(2026, 4, 2, 17, 30), b(2026, 4, 7, 9, 0)),         # Easter via the holidays package
])
def test_next_open(hours, dt, expected):
    assert hours.next_open(dt) == expected


@pytest.mark.parametrize("hours, start, delta, expected", [
    (H, b(2026, 11, 24, 10, 0), timedelta(hours=2), b(2026, 11, 24, 12, 0)),
    (H, b(2026, 11, 24, 16, 0), timedelta(hours=1), b(2026, 11, 24, 17, 0)),   # lands on closing: stays
    (H, b(2026, 11, 24, 16, 0), timedelta(hours=2), b(2026, 11, 25, 10, 0)),
    (H, b(2026, 11, 27, 18, 0), timedelta(hours=1), b(2026, 11, 30, 10, 0)),   # Friday evening
    (H, b(2026, 11, 24, 23, 30), timedelta(minutes=30), b(2026, 11, 25, 9, 30)),
    (H, b(2026, 11, 24, 10, 0), timedelta(hours=16), b(2026, 11, 26, 10, 0)),
    (XMAS, b(2026, 12, 23, 16, 30), timedelta(hours=1), b(2026, 12, 28, 9, 30)),
    (H, b(2026, 10, 23, 16, 0), timedelta(hours=2), b(2026, 10, 26, 10, 0)),   # across DST end
    (H, b(2026, 3, 27, 16, 0), timedelta(hours=2), b(2026, 3, 30, 10, 0)),     # across DST start
    (H, b(2026, 11, 24, 10, 0), timedelta(0), b(2026, 11, 24, 10, 0)),
])
def test_add_business_time(hours, start, delta, expected):
    got = hours.add_business_time(start, delta)
    assert got == expected
    assert got.utcoffset() == expected.utcoffset()
    assert hours.business_time_between(start, got) == delta


def test_business_time_between_is_signed_and_skips_closed_time():
    a, z = b(2026, 11, 27, 16, 0), b(2026, 11, 30, 10, 0)
    assert H.business_time_between(a, z) == timedelta(hours=2)
    assert H.business_time_between(z, a) == -timedelta(hours=2)
    assert H.business_time_between(b(2026, 11, 28, 1), b(2026, 11, 29, 23)) == timedelta(0)


def test_naive_datetimes_are_rejected():
    with pytest.raises(ValueError):
        H.is_open(datetime(2026, 11, 24, 10))


# -------------------------------------------------------------- handling time


def test_expected_handling_time_needs_enough_history():
    configured = timedelta(minutes=15)
    few = [timedelta(minutes=m) for m in range(1, 20)]
    assert expected_handling_time(few, configured) == configured
    many = [timedelta(minutes=m) for m in range(1, 22)]  # 21 samples, median 11
    assert expected_handling_time(many, configured) == timedelta(minutes=11)
    assert expected_handling_time(few, configured, min_history=5) == timedelta(minutes=10)


def test_handling_model_from_typical_is_heavy_tailed():
    m = HandlingModel.from_typical(timedelta(minutes=15))
    assert m.median == timedelta(minutes=15)
    assert timedelta(minutes=24) < m.mean < timedelta(minutes=25)   # 15 * e^0.5
    assert m.sd > m.mean
    assert m.p90 > timedelta(minutes=50)


def test_handling_model_from_history_learns_and_falls_back():
    configured = timedelta(minutes=15)
    assert HandlingModel.from_history([timedelta(minutes=5)] * 3, configured) == HandlingModel.from_typical(configured)
    hist = [timedelta(minutes=10)] * 30 + [timedelta(minutes=120)] * 3
    m = HandlingModel.from_history(hist, configured)
    assert m.samples == 33
    assert m.median == timedelta(minutes=10)
    assert m.mean >= timedelta(minutes=(300 + 360) / 33)  # at least the sample mean


# ------------------------------------------------------------------ promises


def deadline(now, position=0, agents=1, handling=QUICK, hours=H, minimum=timedelta(hours=1), tier_max=None, **kw):
    return promise_deadline(now=now, position=position, agents=agents, handling=handling,
                            hours=hours, minimum=minimum, tier_max=tier_max, **kw)


@pytest.mark.parametrize("label, now, hours, expected", [
    ("empty queue: now + minimum, rounded", b(2026, 11, 24, 10, 20), H, b(2026, 11, 24, 12, 0)),
    ("exactly on the hour stays", b(2026, 11, 24, 10, 0), H, b(2026, 11, 24, 11, 0)),
    ("ends at closing time", b(2026, 11, 24, 15, 40), H, b(2026, 11, 24, 17, 0)),
    ("spills into the next morning", b(2026, 11, 24, 16, 30), H, b(2026, 11, 25, 10, 0)),
    ("late-night mail", b(2026, 11, 24, 23, 30), H, b(2026, 11, 25, 10, 0)),
    ("Friday 18:00", b(2026, 11, 27, 18, 0), H, b(2026, 11, 30, 10, 0)),
    ("Saturday", b(2026, 11, 28, 11, 0), H, b(2026, 11, 30, 10, 0)),
    ("holidays from a list", b(2026, 12, 23, 16, 30), XMAS, b(2026, 12, 28, 10, 0)),
    ("holidays from a country (Easter)", b(2026, 4, 2, 17, 30), DE, b(2026, 4, 7, 10, 0)),
    ("across the DST end", b(2026, 10, 23, 16, 30), H, b(2026, 10, 26, 10, 0)),
    ("across the DST start", b(2026, 3, 27, 16, 30), H, b(2026, 3, 30, 10, 0)),
    ("a UTC now", datetime(2026, 11, 24, 9, 20, tzinfo=timezone.utc), H, b(2026, 11, 24, 12, 0)),
])
def test_promise_deadline_short_queue(label, now, hours, expected):
    got = deadline(now, hours=hours)
    assert got == expected, label
    assert got.tzinfo == BER and got.utcoffset() == expected.utcoffset()


def test_empty_queue_with_real_handling_times_is_later_than_the_minimum():
    # One heavy-tailed ticket in progress can take a while: not just now + 1h.
    now = b(2026, 11, 24, 10, 20)
    got = deadline(now, handling=timedelta(minutes=15))
    assert b(2026, 11, 24, 12, 0) <= got <= b(2026, 11, 24, 14, 0)


@pytest.mark.parametrize("label, now, position, tier_max, expected", [
    ("cap binds; rounding down to the quarter keeps the contract",
     b(2026, 11, 24, 13, 20), 30, timedelta(hours=2), b(2026, 11, 24, 15, 15)),
    ("cap on the hour", b(2026, 11, 24, 9, 0), 30, timedelta(hours=2), b(2026, 11, 24, 11, 0)),
    ("cap across the night", b(2026, 11, 24, 16, 0), 30, timedelta(hours=2), b(2026, 11, 25, 10, 0)),
    ("cap across the weekend", b(2026, 11, 27, 20, 0), 30, timedelta(hours=2), b(2026, 11, 30, 11, 0)),
    # One ticket in progress (unknown for how long), then this one's own handling.
    ("cap does not bind on a short queue", b(2026, 11, 24, 10, 20), 0, timedelta(hours=8),
     b(2026, 11, 24, 14, 0)),
])
def test_tier_max_caps_the_promise(label, now, position, tier_max, expected):
    got = deadline(now, position=position, handling=timedelta(minutes=15), tier_max=tier_max)
    assert got == expected, label
    assert H.business_time_between(now, got) <= tier_max


@pytest.mark.parametrize("agents", [1, 3])
def test_long_queue_is_honest_about_the_sum(agents):
    now = b(2026, 11, 24, 10, 0)
    model = HandlingModel.from_typical(timedelta(minutes=15))
    got = deadline(now, position=200, agents=agents, handling=model)
    waited = H.business_time_between(now, got)
    expected_mean = model.mean * 201 / agents
    assert expected_mean < waited < expected_mean * 1.6
    assert H.is_open(got) or got.time() == time(17, 0)
    assert got.minute == 0


def test_long_queue_three_agents_is_sooner_than_one():
    now = b(2026, 11, 24, 10, 0)
    one = deadline(now, position=200, agents=1, handling=timedelta(minutes=15))
    three = deadline(now, position=200, agents=3, handling=timedelta(minutes=15))
    assert three < one
    assert one - now > timedelta(days=7)


def test_deadline_grows_with_position_and_jumpers():
    now = b(2026, 11, 24, 10, 0)
    prev = None
    for pos in (0, 1, 2, 5, 10, 20, 50, 100):
        d = deadline(now, position=pos, handling=timedelta(minutes=15))
        assert prev is None or d >= prev
        prev = d
    calm = deadline(now, position=40, handling=timedelta(minutes=15))
    jumpy = deadline(now, position=40, handling=timedelta(minutes=15), jumpers_per_hour=0.5)
    assert jumpy > calm


def test_deadlines_are_always_inside_business_hours_on_the_hour():
    start = b(2026, 10, 21, 0, 7)
    for i in range(0, 24 * 9 * 4):
        now = start + timedelta(minutes=15 * i)
        for pos in (0, 3, 17):
            d = deadline(now, position=pos, hours=DE, handling=timedelta(minutes=15))
            assert d > now
            assert d.minute == 0 and d.second == 0
            assert DE.is_open(d) or d.timetz().replace(tzinfo=None) == time(17, 0)
            assert DE.is_open_day(d.date())


def test_the_state_of_the_desk_shapes_the_promise():
    now = b(2026, 11, 24, 10, 0)
    model = HandlingModel.from_typical(timedelta(minutes=15))
    kw = dict(position=4, agents=1, handling=model)
    unknown = reply_wait(**kw)
    fresh = reply_wait(in_progress=[timedelta(0)], **kw)
    stuck = reply_wait(in_progress=[timedelta(hours=3)], **kw)
    free = reply_wait(in_progress=[], **kw)
    assert fresh == unknown  # unknown reads as a ticket just taken
    assert free < fresh < stuck  # a ticket three hours in is likely a long one
    # Nobody ahead and an agent free: just the ticket's own handling (its 84th percentile).
    assert reply_wait(position=0, agents=2, handling=model, in_progress=[timedelta(minutes=5)], z=1.0) == \
        timedelta(seconds=math.ceil(15 * 60 * math.e))
    assert deadline(now, handling=model, position=4, in_progress=[timedelta(hours=3)]) >= \
        deadline(now, handling=model, position=4, in_progress=[])


@pytest.mark.parametrize("elapsed", [timedelta(0), timedelta(minutes=10), timedelta(hours=1), timedelta(hours=8)])
def test_remaining_work_grows_with_time_in_progress(elapsed):
    model = HandlingModel.from_typical(timedelta(minutes=15))
    mean, var = remaining_work(elapsed, model)
    later, _ = remaining_work(elapsed + timedelta(minutes=30), model)
    assert 0 < mean < later and var > 0
    if elapsed == timedelta(0):
        assert mean == pytest.approx(model.mean.total_seconds())


def test_long_queues_are_relatively_tighter_than_short_ones():
    model = HandlingModel.from_typical(timedelta(minutes=15))
    mean = model.mean.total_seconds()
    short = reply_wait(position=1, agents=1, handling=model).total_seconds() / (3 * mean)
    long = reply_wait(position=99, agents=1, handling=model).total_seconds() / (101 * mean)
    assert long < 1.6 and 2.5 < short  # quantile / mean: the sum of many tickets spreads less


@pytest.mark.parametrize("label, now, position, in_progress, expected", [
    ("free agent, nobody ahead", b(2026, 11, 24, 10, 0), 0, [], True),
    ("busy agent, nobody ahead", b(2026, 11, 24, 10, 0), 0, [timedelta(minutes=5)], False),
    ("two ahead", b(2026, 11, 24, 10, 0), 2, [], False),
    ("free agent, but closing at 17:00", b(2026, 11, 24, 16, 30), 0, [], False),
    ("free agent, Saturday", b(2026, 11, 28, 10, 0), 0, [], False),
])
def test_answered_within_the_minimum(label, now, position, in_progress, expected):
    # At z = 1: about 84% sure.
    got = answered_within(now=now, within=timedelta(hours=1), position=position, agents=1,
                          handling=timedelta(minutes=15), hours=H, in_progress=in_progress, z=1.0)
    assert got is expected, label


@pytest.mark.parametrize("label, position, in_progress, within, expected", [
    ("busy agent, nobody ahead: likely within the hour", 0, [timedelta(minutes=5)], timedelta(hours=1), True),
    ("two ahead: likely within two hours", 2, [], timedelta(hours=2), True),
    ("three ahead: not likely within the hour", 3, [], timedelta(hours=1), False),
    ("six ahead: not within two hours", 6, [], timedelta(hours=2), False),
])
def test_answered_within_defaults_to_more_likely_than_not(label, position, in_progress, within, expected):
    got = answered_within(now=b(2026, 11, 24, 10, 0), within=within, position=position, agents=1,
                          handling=timedelta(minutes=15), hours=H, in_progress=in_progress)
    assert got is expected, label


def test_promise_deadline_rejects_bad_input():
    now = b(2026, 11, 24, 10, 0)
    for kw in ({"position": -1}, {"agents": 0}, {"tier_max": timedelta(0)}):
        with pytest.raises(ValueError):
            deadline(now, **kw)
    with pytest.raises(ValueError):
        deadline(datetime(2026, 11, 24, 10, 0))


# ------------------------------------------------------------------ rounding


@pytest.mark.parametrize("dt, expected", [
    (b(2026, 11, 24, 14, 0), b(2026, 11, 24, 14, 0)),
    (b(2026, 11, 24, 14, 0, 1), b(2026, 11, 24, 15, 0)),
    (b(2026, 11, 24, 14, 59), b(2026, 11, 24, 15, 0)),
    (b(2026, 11, 24, 23, 30), b(2026, 11, 25, 0, 0)),
])
def test_round_up_to_hour(dt, expected):
    assert round_up_to_hour(dt) == expected


@pytest.mark.parametrize("dt, expected", [
    (b(2026, 11, 24, 17, 0), b(2026, 11, 24, 17, 0)),     # closing time is fine
    (b(2026, 11, 24, 16, 20), b(2026, 11, 24, 17, 0)),
    (b(2026, 11, 24, 17, 30), b(2026, 11, 25, 10, 0)),    # 09:00 + 30 min, rounded up
    (b(2026, 11, 27, 17, 30), b(2026, 11, 30, 10, 0)),    # Friday -> Monday
    (b(2026, 11, 24, 19, 0), b(2026, 11, 25, 11, 0)),
    (b(2026, 11, 28, 12, 0), b(2026, 11, 30, 9, 0)),      # Saturday: the opening
    (b(2026, 11, 24, 8, 15), b(2026, 11, 24, 9, 0)),
])
def test_round_into_business_hours(dt, expected):
    assert round_into_business_hours(dt, H) == expected


def test_round_into_business_hours_with_closing_off_the_hour():
    h = BusinessHours(tz=BER, end=time(17, 30))
    assert round_into_business_hours(b(2026, 11, 24, 17, 10), h) == b(2026, 11, 24, 17, 30)


# ------------------------------------------------------------------- words


@pytest.mark.parametrize("dl, offset, agent_tz, expected", [
    (b(2026, 11, 24, 14, 0), None, BER, "Tuesday 24 November, 14:00 CET"),
    (b(2026, 7, 7, 9, 0), None, BER, "Tuesday 7 July, 09:00 CEST"),
    (b(2026, 11, 24, 14, 0), 60, BER, "Tuesday 24 November, 14:00 your time"),
    (b(2026, 11, 24, 14, 0), 540, BER, "Tuesday 24 November, 22:00 your time"),     # Tokyo customer
    (b(2026, 11, 24, 17, 0), 540, BER, "Wednesday 25 November, 01:00 your time"),
    (b(2026, 11, 24, 14, 0), -300, BER, "Tuesday 24 November, 08:00 your time"),    # New York
    (b(2026, 11, 24, 14, 0), None, TOKYO, "Tuesday 24 November, 22:00 JST"),
    (b(2026, 11, 24, 14, 0), None, ZoneInfo("America/Sao_Paulo"),
     "Tuesday 24 November, 10:00 America/Sao_Paulo"),
    (b(2026, 11, 24, 14, 0), None, ZoneInfo("UTC"), "Tuesday 24 November, 13:00 UTC"),
])
def test_format_deadline(dl, offset, agent_tz, expected):
    assert format_deadline(dl, customer_offset_minutes=offset, agent_tz=agent_tz) == expected


U = timezone.utc


@pytest.mark.parametrize("dl, offset, seen_at, agent_tz, expected", [
    # Friday 23 October +0200 in Berlin; Monday 26 October Berlin is on +0100 again.
    (b(2026, 10, 26, 13, 0), 120, datetime(2026, 10, 23, 14, 0, tzinfo=U), BER,
     "Monday 26 October, 13:00 your time"),
    # The same offset seen by a desk in UTC: +0200 zones disagree on Monday (Berlin +1, Athens +2...).
    (b(2026, 10, 26, 13, 0), 120, datetime(2026, 10, 23, 14, 0, tzinfo=U), ZoneInfo("UTC"),
     "Monday 26 October, 12:00 UTC"),
    # -0700 on 23 October: Los Angeles (PDT) and Phoenix agree until 1 November...
    (b(2026, 10, 26, 15, 0), -420, datetime(2026, 10, 23, 14, 10, tzinfo=U), BER,
     "Monday 26 October, 07:00 your time"),
    # ... and not after it: the desk's clock, named.
    (b(2026, 11, 2, 16, 0), -420, datetime(2026, 10, 23, 14, 10, tzinfo=U), BER,
     "Monday 2 November, 16:00 CET"),
    # Tokyo has no DST: its offset holds across Europe's change.
    (b(2026, 10, 26, 13, 0), 540, datetime(2026, 10, 23, 14, 0, tzinfo=U), BER,
     "Monday 26 October, 21:00 your time"),
    # Spring: a +0100 customer of a Berlin desk on Friday 27 March is on +0200 on Monday.
    (datetime(2026, 3, 30, 10, 0, tzinfo=BER), 60, datetime(2026, 3, 27, 15, 0, tzinfo=U), BER,
     "Monday 30 March, 10:00 your time"),
    # An offset no zone has: written as it came.
    (b(2026, 10, 26, 13, 0), 83, datetime(2026, 10, 23, 14, 0, tzinfo=U), BER,
     "Monday 26 October, 13:23 your time"),
])
def test_format_deadline_follows_the_customers_dst_change(dl, offset, seen_at, agent_tz, expected):
    assert format_deadline(dl, customer_offset_minutes=offset, agent_tz=agent_tz,
                           customer_offset_seen_at=seen_at) == expected


def test_format_deadline_short():
    assert format_deadline_short(b(2026, 11, 24, 14, 0), BER) == "Tue 24 Nov 14:00"
    assert format_deadline_short(b(2026, 11, 24, 14, 0), TOKYO) == "Tue 24 Nov 22:00"


# ----------------------------------------------------------- durations, tiers


@pytest.mark.parametrize("text, expected", [
    ("2h", timedelta(hours=2)),
    ("90m", timedelta(minutes=90)),
    ("1h30m", timedelta(minutes=90)),
    ("1.5 hours", timedelta(minutes=90)),
    ("2 business hours", timedelta(hours=2)),
    ("45 min", timedelta(minutes=45)),
    ("1d", timedelta(hours=8)),
    ("2 business days", timedelta(hours=16)),
    ("1 week", timedelta(hours=40)),
    (" 3H ", timedelta(hours=3)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


def test_parse_duration_day_follows_business_day_length():
    assert parse_duration("1d", day=timedelta(hours=7, minutes=30)) == timedelta(hours=7, minutes=30)


@pytest.mark.parametrize("text", ["", "soon", "2 fortnights", "h2", "2h tomorrow"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


TIERS = parse_tiers({
    "premium": {"max_response": "2h", "members": ["ceo@bigco.com", "bigco.com"]},
    "gold": {"max_response": "4 business hours", "members": ["eu.bigco.com", "Boss@Other.org"]},
    "slow": {"max_response": "1d", "members": ["cfo@bigco.com"]},
})


@pytest.mark.parametrize("address, tier", [
    ("ceo@bigco.com", "premium"),
    ("CEO@BigCo.com", "premium"),
    ("Jane Roe <jane@bigco.com>", "premium"),        # domain
    ("cfo@bigco.com", "slow"),                       # exact address beats the domain
    ("ops@eu.bigco.com", "gold"),                    # more specific domain
    ("ops@us.bigco.com", "premium"),                 # subdomain of a member domain
    ("boss@other.org", "gold"),
    ("someone@other.org", None),
    ("someone@notbigco.com", None),
    ("", None),
])
def test_tier_for(address, tier):
    got = tier_for(address, TIERS)
    assert (got.name if got else None) == tier


def test_parse_tiers():
    assert TIERS["premium"] == TierSpec("premium", timedelta(hours=2), frozenset({"ceo@bigco.com", "bigco.com"}))
    with pytest.raises(ValueError):
        parse_tiers({"x": {"members": ["a.com"]}})


def test_equally_specific_matches_pick_the_strictest_tier():
    tiers = parse_tiers({"a": {"max_response": "4h", "members": ["x.com"]},
                         "b": {"max_response": "2h", "members": ["x.com"]}})
    assert tier_for("me@x.com", tiers).name == "b"


# ------------------------------------------------------------- jumper rate


def test_jumper_rates_take_the_busiest_window():
    now = b(2026, 11, 28, 12, 0)  # Saturday
    steady = [b(2026, 11, d, 10, 0) for d in range(16, 28) if date(2026, 11, d).weekday() < 5]
    base = jumper_rates(steady, now=now, hours=H)
    assert base.open_per_hour == pytest.approx(5 / 40)  # five in the last week's 40 business hours
    surge = steady + [b(2026, 11, 28, h, 0) for h in range(0, 12)]  # Saturday morning: closed
    busy = jumper_rates(surge, now=now, hours=H)
    assert busy.open_per_hour == pytest.approx(5 / 40)
    assert busy.closed_per_hour == pytest.approx(12 / 128)  # the last 7 days' 128 closed hours
    assert jumper_rates(steady[:5], now=now, hours=H).open_per_hour == pytest.approx(5 / 80)  # the 14 days
    assert jumper_rates([], now=now, hours=H).open_per_hour == 0.0
    future = jumper_rates([b(2026, 11, 29, 10)], now=now, hours=H)
    assert (future.open_per_hour, future.closed_per_hour) == (0.0, 0.0)  # the future does not count


def test_jumper_rates_keep_open_and_closed_hours_apart():
    now = b(2026, 11, 30, 9, 0)  # Monday morning
    weekdays = [b(2026, 11, d, 10, 0) for d in range(23, 28)]  # one a day, Mon-Fri 10:00
    nights = [b(2026, 11, 28, 3, 0), b(2026, 11, 29, 3, 0)]  # two over the weekend
    j = jumper_rates(weekdays + nights, now=now, hours=H)
    assert j.open_per_hour == pytest.approx(5 / 40)
    assert j.closed_per_hour == pytest.approx(2 / (7 * 24 - 40))
    assert j.observed == 7
    assert jumper_rates([], now=now, hours=H) == Jumpers(0.0, 0.0, 0)


def test_premium_mail_of_the_weekend_delays_a_friday_evening_promise():
    friday = b(2026, 11, 27, 18, 0)
    model = timedelta(minutes=15)
    quiet = deadline(friday, position=10, handling=model, jumpers_per_hour=Jumpers(0.3, 0.0))
    weekend = deadline(friday, position=10, handling=model, jumpers_per_hour=Jumpers(0.3, 0.3))
    assert weekend > quiet  # 63 closed hours x 0.3: about 19 tickets waiting on Monday ahead of it
    # A wait inside one business day spans no closed hours: the closed rate does not matter.
    tuesday = b(2026, 11, 24, 9, 0)
    assert (deadline(tuesday, position=2, handling=model, jumpers_per_hour=Jumpers(0.3, 0.0))
            == deadline(tuesday, position=2, handling=model, jumpers_per_hour=Jumpers(0.3, 5.0)))


def test_a_rate_learned_from_few_arrivals_gives_a_later_promise():
    now = b(2026, 11, 24, 9, 0)
    model = timedelta(minutes=15)
    sure = deadline(now, position=30, handling=model, jumpers_per_hour=Jumpers(1.0, 0.0, None))
    many = deadline(now, position=30, handling=model, jumpers_per_hour=Jumpers(1.0, 0.0, 400))
    few = deadline(now, position=30, handling=model, jumpers_per_hour=Jumpers(1.0, 0.0, 3))
    assert sure <= many < few


@pytest.mark.parametrize("label, position, agents, typical, expected", [
    ("next in line", 0, 1, timedelta(minutes=15), False),
    ("500 quick tickets ahead: promised in about 37 business days", 500, 1, timedelta(minutes=15), False),
    ("1,000 ahead: about 74", 1000, 1, timedelta(minutes=15), True),
    ("10,000 ahead", 10_000, 1, timedelta(minutes=15), True),
    ("100 ahead of half-day tickets, one agent", 100, 1, timedelta(hours=4), True),
    ("the same with three agents", 100, 3, timedelta(hours=4), False),
])
def test_beyond_horizon(label, position, agents, typical, expected):
    assert beyond_horizon(position=position, agents=agents, handling=typical, hours=H) is expected, label


@pytest.mark.parametrize("now, due, at_risk", [
    (b(2026, 11, 27, 16, 0), b(2026, 11, 30, 10, 0), True),  # Friday 16:00, due Monday 10:00: 2 business hours
    (b(2026, 11, 27, 14, 0), b(2026, 11, 30, 10, 0), False),  # Friday 14:00: 4 business hours left
    (b(2026, 11, 24, 15, 0), b(2026, 11, 24, 16, 30), True),  # within the day, as on the clock
    (b(2026, 11, 24, 16, 0), b(2026, 11, 25, 9, 30), True),  # overnight: 1.5 business hours, 17.5 on the clock
    (b(2026, 11, 24, 22, 0), b(2026, 11, 25, 10, 0), True),  # at night, due at 10:00: one business hour
    (b(2026, 11, 24, 22, 0), b(2026, 11, 25, 12, 0), False),
    (b(2026, 12, 23, 16, 0), b(2026, 12, 28, 10, 0), True),  # over the Christmas holidays
])
def test_at_risk_counts_business_time_left_before_the_deadline(now, due, at_risk):
    # "at_risk_margin = 2h" compared on the clock: on a Friday afternoon, a promise due Monday 10:00 was not
    # at risk although only two business hours were left to keep it.
    from storage.deadlines import risk_window

    window = risk_window(now, timedelta(hours=2), XMAS)
    assert (due <= now + window) is at_risk
    assert window >= timedelta(hours=2)


# --------------------------------------------------------------- a promise is a place in the queue

SLOT_NOW = b(2026, 11, 24, 10, 0)  # Tuesday
TEN_MIN = HandlingModel.from_typical(timedelta(minutes=10))


def _ahead(deadlines: list[datetime | None]) -> list[Ahead]:
    """Tickets ahead in the work order: promised ones by deadline, then unpromised ones (by age)."""
    return [Ahead((0 if d is None else -1, d.timestamp() if d else 0.0, i), d) for i, d in enumerate(deadlines)]


def _key(deadline: datetime) -> tuple:
    return (-1, deadline.timestamp(), 10**6)


def _slot(ahead):
    return slotted_deadline(now=SLOT_NOW, ahead=ahead, key_for=_key, agents=1, handling=TEN_MIN, hours=H,
                            minimum=timedelta(hours=1))


def _behind(n: int) -> datetime:
    return promise_deadline(now=SLOT_NOW, position=n, agents=1, handling=TEN_MIN, hours=H, minimum=timedelta(hours=1))


def test_with_nobody_ahead_the_slot_is_the_plain_promise():
    assert _slot([]) == (_behind(0), 0)


def test_promises_with_time_to_spare_let_a_new_one_go_ahead_of_them():
    # Twelve tickets promised for Thursday, when the desk will be done with them by this afternoon: the
    # new customer need not be promised "after all twelve, with a margin on top".
    ahead = _ahead([b(2026, 11, 26, 17, 0)] * 12)
    deadline, place = _slot(ahead)
    assert place == 0 and deadline == _behind(0) < _behind(12)


def test_promises_that_cannot_spare_the_time_keep_their_place():
    # Each promised exactly as honestly as the work order allows: one more ticket ahead of any of them
    # would make it a promise heard does not believe, so the new ticket waits behind all of them.
    tight = [_behind(i) for i in range(12)]
    deadline, place = _slot(_ahead(tight))
    assert place == 12 and deadline == _behind(12)


def test_a_new_promise_goes_ahead_only_of_those_that_can_spare_the_time():
    tight = [_behind(i) for i in range(6)]
    loose = [b(2026, 11, 27, 17, 0)] * 6  # Friday evening: time to spare
    deadline, place = _slot(_ahead(tight + loose))
    assert place == 6 and deadline == _behind(6) < _behind(12)


def test_unpromised_tickets_ahead_count_but_never_stop_a_promise():
    # An unpromised ticket ahead (skipped by a rule) sorts after every promise: it is work ahead, nothing more.
    deadline, place = _slot(_ahead([b(2026, 11, 26, 17, 0)] * 3 + [None] * 3))
    assert place == 0 and deadline == _behind(0)


def _arrivals(per_day_open: int, per_night: int, days: int, end: datetime) -> list[datetime]:
    out = []
    for d in range(days):
        day = (end - timedelta(days=d + 1)).replace(hour=9, minute=0)
        if H.is_open_day(day.date()):
            out += [day + timedelta(minutes=480 * (i + 0.5) / per_day_open) for i in range(per_day_open)]
        out += [day.replace(hour=20) + timedelta(minutes=600 * (i + 0.5) / per_night) for i in range(per_night)]
    return [t for t in out if t < end]


def test_a_flood_of_mail_raises_the_rate_of_queue_jumpers_of_those_hours():
    sat_night = b(2026, 11, 28, 23, 0)  # Saturday, the desk closed
    usual = _arrivals(40, 4, 14, sat_night)
    base = Jumpers(open_per_hour=0.5, closed_per_hour=0.03, observed=40)
    assert surge_jumpers(base, usual, now=sat_night, hours=H) == base
    flood = usual + [sat_night - timedelta(minutes=6 * i) for i in range(1, 40)]  # 10 an hour since 19:00
    raised = surge_jumpers(base, flood, now=sat_night, hours=H)
    assert raised.closed_per_hour > 10 * base.closed_per_hour and raised.open_per_hour == base.open_per_hour


def test_a_few_mails_at_night_are_not_a_flood():
    night = b(2026, 11, 25, 23, 0)
    usual = _arrivals(40, 4, 14, night)
    base = Jumpers(open_per_hour=0.5, closed_per_hour=0.03, observed=40)
    few = usual + [night - timedelta(minutes=40 * i) for i in range(1, 4)]
    assert surge_jumpers(base, few, now=night, hours=H) == base
