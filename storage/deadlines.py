"""Honest deadlines: when will a waiting customer really get a human reply?

Pure functions with an explicit ``now``: no database, no clock, no mail.

The pieces:

* :class:`BusinessHours` -- open days, opening hours, time zone, holidays;
  business-time arithmetic that is correct across DST changes (all arithmetic
  is done in UTC, all calendars in the business time zone).
* :class:`HandlingModel` -- what one ticket costs an agent (take-to-solve
  time), learned from recent history or from a configured typical time.
* :func:`promise_deadline` -- the promise: a high quantile of the time until
  the human reply goes out (what is left of the tickets in progress, the
  work ahead in the queue, queue-jumpers arriving meanwhile, then the
  ticket's own handling), never
  sooner than ``now + minimum``, capped by the customer's tier, rounded up to
  the next full hour and never outside business hours.
* :func:`answered_within` -- the reply will come within ``[ack] minimum``
  anyway: no acknowledgement needed.
* :func:`format_deadline` / :func:`format_deadline_short` -- the words.
* :func:`tier_for`, :func:`parse_tiers`, :func:`parse_duration` -- the
  ``[tiers]`` configuration.

Why a quantile and not ``position x mean``: handling times are heavy-tailed
(a few tickets take hours), and premium tickets that arrive later are taken
first. ``position x mean`` is the *expected* wait, so it is broken about half
the time by construction; a promise should be broken rarely. The benchmark
``bench/deadline_sim.py`` measures how often, and how tight the promises are.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone, tzinfo
from email.utils import parseaddr
from typing import Callable, Iterable, Mapping, Sequence
from zoneinfo import ZoneInfo

__all__ = [
    "BusinessHours",
    "HandlingModel",
    "TierSpec",
    "WEEKDAYS",
    "expected_handling_time",
    "promise_deadline",
    "reply_wait",
    "remaining_work",
    "answered_within",
    "beyond_horizon",
    "PROMISE_HORIZON_DAYS",
    "PROMISE_Z",
    "SKIP_Z",
    "jumper_rates",
    "surge_jumpers",
    "Jumpers",
    "Ahead",
    "KEEP_Z",
    "slotted_deadline",
    "risk_window",
    "round_up_to_hour",
    "round_into_business_hours",
    "customer_clock",
    "format_deadline",
    "format_deadline_short",
    "parse_duration",
    "parse_tiers",
    "tier_for",
]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)

_ZERO = timedelta(0)
_HOUR = timedelta(hours=1)


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime not allowed here: {dt!r}")
    return dt.astimezone(timezone.utc)


# --------------------------------------------------------------------------
# Business hours
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessHours:
    """When people are at the desk.

    ``days`` are weekday numbers (Monday = 0). ``start``/``end`` are local
    wall-clock times in ``tz`` (``end`` after ``start``, same day).
    ``holidays`` are local dates on which the desk is closed.
    """

    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    days: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    start: time = time(9, 0)
    end: time = time(17, 0)
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "days", frozenset(self.days))
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        if not self.days:
            raise ValueError("business hours need at least one open day")
        if not all(0 <= d <= 6 for d in self.days):
            raise ValueError(f"weekday numbers are 0 (Mon) .. 6 (Sun): {sorted(self.days)}")
        if not self.start < self.end:
            raise ValueError(f"opening time {self.start} must be before closing time {self.end}")
        # Opening intervals by date, computed once: business-time arithmetic over weeks and months of
        # queue asks for the same days again and again (not a field: equality and hashing ignore it).
        object.__setattr__(self, "_intervals", {})

    # -- construction -----------------------------------------------------

    @classmethod
    def from_config(
        cls,
        days: Sequence[str] = ("mon", "tue", "wed", "thu", "fri"),
        hours: str = "09:00-17:00",
        timezone: str = "UTC",
        holidays: Iterable[str | date] | None = None,
        country: str | None = None,
        *,
        now: datetime | None = None,
        years_around: int = 2,
    ) -> "BusinessHours":
        """Build from the config file's ``[business_hours]`` values.

        ``country`` is a ``holidays`` country code, optionally with a
        subdivision: ``"DE"``, ``"DE-BY"``, ``"US-CA"``. Its public holidays
        for the years ``now.year - years_around .. now.year + years_around``
        are added to the explicit ``holidays`` list. Without ``now`` the
        current year is used (the only place this module reads the clock).
        """
        try:
            day_set = frozenset(WEEKDAYS.index(d.strip().lower()[:3]) for d in days)
        except ValueError:
            raise ValueError(f"unknown weekday in {list(days)!r}; use mon, tue, ... sun") from None
        m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", hours)
        if not m:
            raise ValueError(f"business hours must look like 09:00-17:00, not {hours!r}")
        h1, m1, h2, m2 = (int(x) for x in m.groups())
        start, end = time(h1, m1), time(h2, m2) if h2 < 24 else time(23, 59, 59, 999999)
        tz = ZoneInfo(timezone)
        dates: set[date] = set()
        for h in holidays or ():
            dates.add(h if isinstance(h, date) else date.fromisoformat(str(h).strip()))
        if country:
            import holidays as holidays_pkg  # a maintained table we do not copy

            code, _, subdiv = country.strip().partition("-")
            year = (now.astimezone(tz) if now is not None else datetime.now(tz)).year
            years = range(year - years_around, year + years_around + 1)
            table = holidays_pkg.country_holidays(code.upper(), subdiv=subdiv.upper() or None, years=years)
            dates.update(table.keys())
        return cls(tz=tz, days=day_set, start=start, end=end, holidays=frozenset(dates))

    # -- calendar ---------------------------------------------------------

    @property
    def day_length(self) -> timedelta:
        """Length of one business day (wall clock; DST-free days)."""
        return datetime.combine(date.min, self.end) - datetime.combine(date.min, self.start)

    def is_open_day(self, d: date) -> bool:
        return d.weekday() in self.days and d not in self.holidays

    def _interval(self, d: date) -> tuple[datetime, datetime]:
        """The open interval of local date ``d``, in UTC."""
        cache: dict = self._intervals  # type: ignore[attr-defined]
        got = cache.get(d)
        if got is None:
            if len(cache) > 50_000:
                cache.clear()
            got = cache[d] = (
                datetime.combine(d, self.start, self.tz).astimezone(timezone.utc),
                datetime.combine(d, self.end, self.tz).astimezone(timezone.utc),
            )
        return got

    def _next_open_day(self, d: date) -> date:
        for _ in range(3700):  # ten years of holidays is a configuration error
            if self.is_open_day(d):
                return d
            d += timedelta(days=1)
        raise ValueError("no open business day within ten years")

    def is_open(self, dt: datetime) -> bool:
        """True when ``dt`` is inside opening hours (start inclusive, end exclusive)."""
        u = _utc(dt)
        d = u.astimezone(self.tz).date()
        if not self.is_open_day(d):
            return False
        a, b = self._interval(d)
        return a <= u < b

    def next_open(self, dt: datetime) -> datetime:
        """``dt`` itself when open, else the next opening instant (in ``tz``)."""
        u = _utc(dt)
        d = u.astimezone(self.tz).date()
        while True:
            d = self._next_open_day(d)
            a, b = self._interval(d)
            if u < b:
                return max(a, u).astimezone(self.tz)
            d += timedelta(days=1)

    def add_business_time(self, start: datetime, delta: timedelta) -> datetime:
        """The instant at which ``delta`` of business time has passed after ``start``.

        Work stops at closing time and continues at the next opening. A
        result that lands exactly on closing time stays there (17:00 today,
        not 09:00 tomorrow). ``delta`` of zero returns ``start`` unchanged.
        """
        if delta < _ZERO:
            raise ValueError("negative business time")
        u = _utc(start)
        if delta == _ZERO:
            return u.astimezone(self.tz)
        remaining = delta
        d = u.astimezone(self.tz).date()
        while True:
            d = self._next_open_day(d)
            a, b = self._interval(d)
            if u < b:
                begin = max(a, u)
                available = b - begin
                if remaining <= available:
                    return (begin + remaining).astimezone(self.tz)
                remaining -= available
            d += timedelta(days=1)

    def business_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Business time from ``a`` to ``b`` (negative when ``b`` is before ``a``)."""
        ua, ub = _utc(a), _utc(b)
        if ub < ua:
            return -self.business_time_between(b, a)
        total = _ZERO
        d = ua.astimezone(self.tz).date()
        last = ub.astimezone(self.tz).date()
        while d <= last:
            if self.is_open_day(d):
                s, e = self._interval(d)
                lo, hi = max(s, ua), min(e, ub)
                if hi > lo:
                    total += hi - lo
            d += timedelta(days=1)
        return total


# --------------------------------------------------------------------------
# Handling time
# --------------------------------------------------------------------------

# Support handling times are well described by a lognormal distribution.
# With no history we assume a spread of sigma = 1 around the configured
# typical (median) time: a quarter of tickets take over twice the typical
# time and about one in 50 over eight times as long.
DEFAULT_LOG_SIGMA = 1.0


def expected_handling_time(
    recent_durations: Sequence[timedelta],
    configured: timedelta,
    min_history: int = 20,
) -> timedelta:
    """The typical take-to-solve time: what a person means by "a ticket takes".

    The median of ``recent_durations`` once there are at least
    ``min_history`` of them, else ``configured``. This is the figure to show
    an agent ("tickets take about 15 minutes"); it is deliberately *not* what
    deadlines are computed from: the median of a heavy-tailed distribution
    underestimates the total of many tickets (the mean is larger) and says
    nothing about the bad case. Deadlines use :class:`HandlingModel`, which
    keeps the mean and the spread.
    """
    if len(recent_durations) >= max(1, min_history):
        return statistics.median(recent_durations)
    return configured


@dataclass(frozen=True)
class HandlingModel:
    """A summary of take-to-solve times (business time per ticket).

    ``mean`` and ``sd`` drive the deadline (a sum of many tickets is governed
    by the mean); ``median`` and ``p90`` are for display. ``samples`` is the
    history size the figures were learned from (0 when configured); the
    deadline widens with the uncertainty of a mean learned from few samples.
    """

    mean: timedelta
    sd: timedelta
    median: timedelta
    p90: timedelta
    samples: int = 0

    @classmethod
    def from_typical(cls, typical: timedelta, log_sigma: float = DEFAULT_LOG_SIGMA) -> "HandlingModel":
        """A lognormal model around a configured typical (median) time."""
        if typical <= _ZERO:
            raise ValueError("typical handling time must be positive")
        s2 = log_sigma * log_sigma
        med = typical.total_seconds()
        mean = med * math.exp(s2 / 2)
        sd = mean * math.sqrt(math.expm1(s2))
        p90 = med * math.exp(1.2815515655446004 * log_sigma)
        return cls(
            mean=timedelta(seconds=mean),
            sd=timedelta(seconds=sd),
            median=typical,
            p90=timedelta(seconds=p90),
            samples=0,
        )

    @classmethod
    def from_history(
        cls,
        recent_durations: Sequence[timedelta],
        configured: timedelta,
        min_history: int = 20,
    ) -> "HandlingModel":
        """Learn from recent take-to-solve times once there are ``min_history``.

        The mean and spread are the larger of the sample figures and those of
        a lognormal fitted to the samples: a recent calm stretch without a
        single long ticket must not make promises optimistic, and a single
        monster ticket must not be the only evidence of a tail.
        Before enough history, :meth:`from_typical` on ``configured``.
        """
        secs = sorted(max(d.total_seconds(), 1.0) for d in recent_durations)
        n = len(secs)
        if n < max(2, min_history):
            return cls.from_typical(configured)
        mean_s = statistics.fmean(secs)
        sd_s = statistics.stdev(secs)
        logs = [math.log(s) for s in secs]
        mu, sig = statistics.fmean(logs), statistics.stdev(logs)
        mean_ln = math.exp(mu + sig * sig / 2)
        sd_ln = mean_ln * math.sqrt(math.expm1(sig * sig))
        p90 = secs[min(n - 1, math.ceil(0.9 * n) - 1)]
        return cls(
            mean=timedelta(seconds=max(mean_s, mean_ln)),
            sd=timedelta(seconds=max(sd_s, sd_ln)),
            median=timedelta(seconds=statistics.median(secs)),
            p90=timedelta(seconds=p90),
            samples=n,
        )


# --------------------------------------------------------------------------
# The promise
# --------------------------------------------------------------------------

# The promise is the Q-quantile of the wait for the reply, Q = Phi(Z). Z = 2 is
# the 97.7th percentile; rounding up to the full hour adds a little more margin.
PROMISE_Z = 2.0
# "Will be answered within [ack] minimum anyway" means: more likely than not
# (the median, Phi(0)) that the human reply goes out within the minimum. Being
# wrong costs little: the skip lapses once the minimum has passed since the
# customer's mail, and the next plan acknowledges the ticket (mail/ack.py).
SKIP_Z = 0.0
# A promise further out than this many business days (about three months) is not one to make: the
# acknowledgement plan leaves such tickets to the agent (see :func:`beyond_horizon`).
PROMISE_HORIZON_DAYS = 60
# When the learned model has no sample count, treat it like this many.
_PRIOR_SAMPLES = 50


def _phi(x: float) -> float:
    """Standard normal CDF, accurate far into both tails."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _lognormal_quantile(mean: float, var: float, z: float) -> float:
    """Quantile of the lognormal with this mean and variance (Fenton-Wilkinson).

    The sum of a few heavy-tailed handling times is itself skewed; matching
    a lognormal keeps the upper quantile honest for short queues and tends to
    the normal approximation for long ones (the spread of a sum of n tickets
    grows like sqrt(n), its mean like n: long queues get relatively tighter
    promises).
    """
    if mean <= 0:
        return 0.0
    s2 = math.log1p(var / (mean * mean))
    return math.exp(math.log(mean) - s2 / 2 + z * math.sqrt(s2))


def _log_params(model: HandlingModel) -> tuple[float, float]:
    """(mu, sigma) of the lognormal with the model's mean and spread."""
    mean = model.mean.total_seconds()
    var = model.sd.total_seconds() ** 2
    s2 = math.log1p(var / (mean * mean))
    return math.log(mean) - s2 / 2, math.sqrt(s2)


def remaining_work(elapsed: timedelta, model: HandlingModel) -> tuple[float, float]:
    """Mean and variance (business seconds) of what is left of a ticket in progress for ``elapsed``.

    Heavy tails make this grow with ``elapsed``: a ticket that has already
    taken two hours is likely one of the long ones. Lognormal partial moments
    conditioned on ``X > elapsed``.
    """
    mean = model.mean.total_seconds()
    var = model.sd.total_seconds() ** 2
    e = elapsed.total_seconds()
    if e <= 0:
        return mean, var
    mu, s = _log_params(model)
    le = math.log(e)
    p = _phi((mu - le) / s)
    if p < 1e-300:
        return e, e * e  # beyond anything the model has seen: at least as long again
    m1 = math.exp(mu + s * s / 2) * _phi((mu + s * s - le) / s) / p
    m2 = math.exp(2 * mu + 2 * s * s) * _phi((mu + 2 * s * s - le) / s) / p
    r1 = max(m1 - e, 1.0)
    r2 = max(m2 - 2 * e * m1 + e * e, r1 * r1)
    return r1, r2 - r1 * r1


def _reply_wait(
    position: int,
    agents: int,
    model: HandlingModel,
    in_progress: Sequence[timedelta] | None,
    jumpers: "Jumpers",
    z: float,
    closed_seconds: Callable[[float], float] | None = None,
) -> float:
    """Business seconds until the human reply to the ticket at ``position``, at quantile Phi(z).

    The reply goes out when an agent has taken the ticket *and* handled it:

    * start: the work ahead of it -- what is left of the tickets in progress
      (``in_progress``: how long each has been worked on; None when unknown,
      read as every agent having just started one) and the ``position``
      tickets ahead in the work order -- shared by ``agents`` people. With
      several agents, the others are part-way through a ticket when this one
      is taken (on average E[X^2] / 2E[X] of work left, renewal theory), so
      that much less is in the way. A free agent with nobody ahead: at once.
    * queue-jumpers (``jumpers``) arriving while it waits add their work:
      those of the business hours of the wait and, when ``closed_seconds``
      says how much closed time (nights, weekends) the wait spans, those of
      the closed hours too (they are waiting at the next opening). A rate
      learned from few arrivals is itself uncertain, which widens the
      spread by the square of the expected count;
    * then its own handling time.

    The mean learned from ``samples`` tickets is itself uncertain; that error
    is shared by every ticket in the sum, so it grows with the square of the
    count.
    """
    mu = model.mean.total_seconds()
    var = model.sd.total_seconds() ** 2
    second_moment = var + mu * mu
    samples = model.samples or _PRIOR_SAMPLES
    k = float(agents)
    if in_progress is None:
        busy = [(mu, var)] * agents
    else:
        busy = [remaining_work(e, model) for e in sorted(in_progress)[:agents]]
    free = agents - len(busy)
    if position < free:
        start_mean = start_var = 0.0
        ahead = 0.0
    else:
        ahead = float(position)
        work_mean = sum(m for m, _ in busy) + position * mu
        work_var = sum(v for _, v in busy) + position * var
        others = (agents - 1) * second_moment / (2 * mu)
        # Never below the share of one ticket-in-progress each (the first of k to finish).
        start_mean = max(work_mean - others, work_mean / k) / k
        start_var = work_var / (k * k)
    lam_open = max(jumpers.open_per_hour, 0.0) / 3600.0  # per business second
    lam_closed = max(jumpers.closed_per_hour, 0.0) / 3600.0  # per closed second
    rate_rel_var = 1.0 / jumpers.observed if jumpers.observed else 0.0

    def quantile(jumps: float) -> float:
        n_eff = ahead + jumps + 1  # tickets whose mean error adds up, own included
        m = start_mean + jumps * mu / k + mu
        v = (start_var + jumps * second_moment / (k * k) + var + (n_eff * n_eff) * var / (samples * k * k)
             + rate_rel_var * (jumps * mu / k) ** 2)
        return _lognormal_quantile(m, v, z)

    def expected_jumps(wait: float) -> float:
        jumps = lam_open * wait
        if lam_closed and closed_seconds is not None:
            jumps += lam_closed * closed_seconds(wait)
        return jumps

    base = quantile(0.0)
    wait = base
    # Fixed point: jumpers arriving during the wait are served first. Bounded:
    # when jumpers alone fill the desk the wait has no honest bound; cap the
    # inflation at 5x (premium overload is an operational emergency).
    for _ in range(30):
        new = min(quantile(expected_jumps(wait)), 5 * base + 1.0)
        if abs(new - wait) < 1.0:
            return new
        wait = new
    return wait


def _jumpers(value: "Jumpers | float") -> "Jumpers":
    return value if isinstance(value, Jumpers) else Jumpers(open_per_hour=float(value))


def _closed_time(now: datetime, hours: BusinessHours) -> Callable[[float], float]:
    """Closed (wall minus business) seconds between ``now`` and ``business`` seconds of work later."""
    u_now = _utc(now)

    def closed(business: float) -> float:
        end = _utc(hours.add_business_time(now, timedelta(seconds=max(business, 0.0))))
        return max((end - u_now).total_seconds() - business, 0.0)

    return closed


def reply_wait(
    *,
    position: int,
    agents: int,
    handling: HandlingModel | timedelta,
    in_progress: Sequence[timedelta] | None = None,
    jumpers_per_hour: "Jumpers | float" = 0.0,
    z: float = PROMISE_Z,
    now: datetime | None = None,
    hours: BusinessHours | None = None,
) -> timedelta:
    """Business time until the human reply to a waiting ticket, at quantile Phi(z) (see :func:`promise_deadline`).

    With ``now`` and ``hours``, queue-jumpers of the closed hours the wait spans count too.
    """
    if isinstance(handling, timedelta):
        handling = HandlingModel.from_typical(handling)
    closed = _closed_time(now, hours) if now is not None and hours is not None else None
    return timedelta(seconds=math.ceil(_reply_wait(position, agents, handling, in_progress,
                                                   _jumpers(jumpers_per_hour), z, closed)))


def answered_within(
    *,
    now: datetime,
    within: timedelta,
    position: int,
    agents: int,
    handling: HandlingModel | timedelta,
    hours: BusinessHours,
    in_progress: Sequence[timedelta] | None = None,
    jumpers_per_hour: "Jumpers | float" = 0.0,
    z: float = SKIP_Z,
) -> bool:
    """True when the work order says the human reply goes out within ``within`` (wall clock) anyway.

    Such a ticket needs no acknowledgement: the reply itself comes first (an
    "I will answer by 11:00" followed ten minutes later by the answer is
    noise). "Says" is the Phi(z) quantile of the reply wait, ``SKIP_Z`` by
    default (the median: more likely than not), and closing time counts: at 16:50 nothing is
    answered within the hour when the desk closes at 17:00 and the reply
    needs more than ten minutes.
    """
    _utc(now)
    wait = reply_wait(position=position, agents=agents, handling=handling, in_progress=in_progress,
                      jumpers_per_hour=jumpers_per_hour, z=z, now=now, hours=hours)
    return _utc(hours.add_business_time(now, wait)) <= _utc(now) + within


def beyond_horizon(
    *,
    position: int,
    agents: int,
    handling: HandlingModel | timedelta,
    hours: BusinessHours,
    in_progress: Sequence[timedelta] | None = None,
    days: int = PROMISE_HORIZON_DAYS,
    z: float = PROMISE_Z,
) -> bool:
    """True when the promise for this place in the queue, before any queue-jumper, is over ``days`` business days.

    No promise is worth making then ("I will answer by next March"): a queue that long needs triage,
    not acknowledgements. Cheap at any position (no calendar walk), so a plan can ask it first.
    """
    if isinstance(handling, timedelta):
        handling = HandlingModel.from_typical(handling)
    wait = _reply_wait(position, agents, handling, in_progress, Jumpers(), z)
    return wait > days * hours.day_length.total_seconds()


@dataclass(frozen=True)
class Jumpers:
    """Queue-jumping tickets (premium customers) expected while a ticket waits.

    ``open_per_hour``: arrivals per business hour; ``closed_per_hour``: per
    hour the desk is closed (nights, weekends, holidays), which are all
    waiting at the next opening; ``observed``: how many arrivals the rates
    were learned from (``None``: exact, no estimation error).
    """

    open_per_hour: float = 0.0
    closed_per_hour: float = 0.0
    observed: int | None = None


def jumper_rates(
    arrivals: Iterable[datetime],
    *,
    now: datetime,
    hours: BusinessHours,
    windows: Sequence[timedelta] = (timedelta(days=14), timedelta(days=7)),
) -> Jumpers:
    """Queue-jumpers per business hour and per closed hour, for :func:`promise_deadline`.

    ``arrivals`` are the arrival times of recent tickets that the work order
    puts ahead of ordinary ones (premium customers). Each window gives both
    rates (arrivals while open / business hours, at least one business day;
    arrivals while closed / closed hours) and the *largest* of each is used:
    a busier last week lengthens promises at once, and a calm week does not
    shorten them below the two-week average. (A two-day window was tried in
    bench/deadline_sim.py: it made ordinary Mondays pessimistic and still
    could not foresee a weekend outage.) ``observed`` is the smallest number
    of arrivals a rate came from, so a rate learned from a handful is held
    with less confidence.
    """
    u_now = _utc(now)
    times = sorted(_utc(a) for a in arrivals if _utc(a) <= u_now)
    open_rate = closed_rate = 0.0
    observed: int | None = None
    for w in windows:
        start = u_now - w
        recent = times[bisect.bisect_left(times, start):]
        biz = hours.business_time_between(start, u_now)
        n_open = sum(1 for t in recent if hours.is_open(t))
        biz_hours = max(biz, hours.day_length).total_seconds() / 3600
        closed_hours = max((u_now - start) - biz, _HOUR).total_seconds() / 3600
        open_rate = max(open_rate, n_open / biz_hours)
        closed_rate = max(closed_rate, (len(recent) - n_open) / closed_hours)
        observed = len(recent) if observed is None else min(observed, len(recent))
    return Jumpers(open_rate, closed_rate, observed or 0)


def risk_window(now: datetime, margin: timedelta, hours: BusinessHours) -> timedelta:
    """The calendar time from ``now`` that holds ``margin`` of business time: a promise due within it
    is at risk. On a Friday at 16:00 a promise due Monday 10:00 has two business hours left, not 66."""
    return max(_utc(hours.add_business_time(now, margin)) - _utc(now), margin)


def round_up_to_hour(dt: datetime) -> datetime:
    """The next full hour at or after ``dt`` (wall clock of ``dt``'s zone)."""
    floor = dt.replace(minute=0, second=0, microsecond=0)
    if floor == dt:
        return dt
    # Step in UTC so that a DST change inside the hour is handled right.
    u = _utc(floor) + _HOUR if dt.tzinfo is not None else floor + _HOUR
    return u.astimezone(dt.tzinfo) if dt.tzinfo is not None else u


def round_into_business_hours(dt: datetime, hours: BusinessHours) -> datetime:
    """Round ``dt`` up to a full hour that lies inside business hours.

    Closing time itself is inside ("17:00" is a fine deadline). An instant
    after closing carries the remainder into the next open day: with
    09:00-17:00 hours, 17:30 becomes 09:30 on the next open day, rounded up
    to 10:00 (never a weekend or holiday). An instant before opening or on a
    closed day becomes the next opening, on the hour. When the closing time
    is not on the hour (17:30) and rounding would cross it, the closing time
    itself is the deadline.
    """
    local = _utc(dt).astimezone(hours.tz)
    d = local.date()
    u = _utc(local)
    if hours.is_open_day(d):
        open_u, close_u = hours._interval(d)
        if u > close_u:
            nxt = hours.next_open(close_u + timedelta(microseconds=1))
            return round_into_business_hours(hours.add_business_time(nxt, u - close_u), hours)
        if u < open_u:
            local = open_u.astimezone(hours.tz)
    else:
        local = hours.next_open(local)
    d = local.date()
    close_u = hours._interval(d)[1]
    r = round_up_to_hour(local)
    return r if _utc(r) <= close_u else close_u.astimezone(hours.tz)


def _round_down_quarter(dt: datetime) -> datetime:
    return dt.replace(minute=dt.minute - dt.minute % 15, second=0, microsecond=0)


def promise_deadline(
    *,
    now: datetime,
    position: int,
    agents: int,
    handling: HandlingModel | timedelta,
    hours: BusinessHours,
    minimum: timedelta = timedelta(hours=1),
    tier_max: timedelta | None = None,
    jumpers_per_hour: "Jumpers | float" = 0.0,
    in_progress: Sequence[timedelta] | None = None,
    z: float = PROMISE_Z,
) -> datetime:
    """The deadline to promise a waiting customer: an aware datetime in ``hours.tz``.

    ``position``: place in the work order, 0 = next to be taken.
    ``agents``: people taking tickets in the period (at least 1).
    ``handling``: a :class:`HandlingModel`, or a typical (median) take-to-solve
    time, which is read as a lognormal with the default spread.
    ``minimum``: never promise sooner than ``now + minimum`` (business time).
    ``tier_max``: the customer's tier maximum response time (business time).
    ``jumpers_per_hour``: tickets that will be put *ahead* of this one after
    it was queued (for an ordinary customer: the recent rate of premium
    tickets; for a premium customer usually 0): a :class:`Jumpers` from
    :func:`jumper_rates` (open and closed hours apart, with the count they
    were learned from), or a plain rate per business hour.
    ``in_progress``: how long (business time) each ticket being worked on now
    has been in progress, one per busy agent; fewer than ``agents`` means
    some are free. None when unknown: every agent is read as busy with a
    ticket just taken.
    ``z``: the promise is the Phi(z) quantile of the wait (2.0: ~97.7%).

    The wait is until the human reply goes out: the ticket taken *and*
    handled (see :func:`reply_wait`).

    The rule: the later of "when I will really have answered" and
    ``now + minimum``; capped by ``now + tier_max``; rounded up to the next
    full hour; never outside business hours. When rounding up would break the
    tier's maximum, the deadline is the maximum itself rounded *down* to the
    quarter hour (a contract beats a round number).
    """
    if position < 0:
        raise ValueError("position must be 0 or more")
    if agents < 1:
        raise ValueError("at least one agent must be working")
    if tier_max is not None and tier_max <= _ZERO:
        raise ValueError("a tier's maximum response time must be positive")
    if isinstance(handling, timedelta):
        handling = HandlingModel.from_typical(handling)
    _utc(now)  # reject naive datetimes early

    wait = timedelta(seconds=math.ceil(_reply_wait(position, agents, handling, in_progress,
                                                   _jumpers(jumpers_per_hour), z, _closed_time(now, hours))))
    wait = max(wait, minimum, _ZERO)
    if tier_max is not None:
        wait = min(wait, tier_max)
    raw = hours.add_business_time(now, wait)
    deadline = round_into_business_hours(raw, hours)
    if tier_max is not None:
        cap = hours.add_business_time(now, tier_max)
        if _utc(deadline) > _utc(cap):
            down = _round_down_quarter(cap.astimezone(hours.tz))
            inside = hours.is_open(down) or _at_close(down, hours)
            deadline = down if inside and _utc(down) > _utc(now) else cap
    return deadline.astimezone(hours.tz)


# A new promise may go ahead of one already made only while that one stays honest at this quantile,
# a little above the promise's own: squeezing every earlier promise to exactly Phi(PROMISE_Z) with what
# is known now leaves nothing for what is not (bench/deadline_sim.py: 2.0 keeps 92% of the promises
# made as a calm month turns busy, 2.1 keeps 99%).
KEEP_Z = 2.1


@dataclass(frozen=True)
class Ahead:
    """A ticket in the work order, as :func:`slotted_deadline` sees it.

    ``key``: its place in the work order (any sortable tuple; the new ticket's is ``key_for(deadline)``);
    ``deadline``: its promise, None when it has none; ``jumpers``: the queue-jumpers its own promise
    counts (0 for a customer with a tier, who jumps the queue too)."""

    key: tuple
    deadline: datetime | None
    jumpers: "Jumpers | float" = 0.0


def slotted_deadline(
    *,
    now: datetime,
    ahead: Sequence[Ahead],
    key_for: Callable[[datetime], tuple],
    agents: int,
    handling: HandlingModel | timedelta,
    hours: BusinessHours,
    minimum: timedelta = timedelta(hours=1),
    tier_max: timedelta | None = None,
    jumpers_per_hour: "Jumpers | float" = 0.0,
    in_progress: Sequence[timedelta] | None = None,
    z: float = PROMISE_Z,
    keep_z: float = KEEP_Z,
    memo: dict | None = None,
) -> tuple[datetime, int]:
    """The earliest honest deadline for a new promise, and the place in the work order it takes.

    ``ahead`` is every ticket ahead of the new one in the work order now, in that order. The work order
    takes the nearest deadline first, so a promise is also a place in the queue: a deadline earlier than
    some promises already made puts the ticket ahead of them, and each of those tickets then waits for
    one more. This finds the earliest place where the new promise is itself honest
    (:func:`promise_deadline` for that many ahead) and every promise it goes ahead of still is, with
    the ticket's work added, at ``keep_z``. When the desk has done better than it promised, the margin
    of the earlier promises is used for the new one instead of stacking a new margin behind them; when
    no earlier promise can spare the time, the ticket waits behind all of them, as
    :func:`promise_deadline` for ``len(ahead)`` would have it.

    ``memo``: a dict to share between the calls of one plan (same ``now``, model, agents and tickets in
    progress), so that a batch of promises computes each wait once.
    """
    if isinstance(handling, timedelta):
        handling = HandlingModel.from_typical(handling)
    n = len(ahead)
    closed = _closed_time(now, hours)
    keys = [a.key for a in ahead]
    memo = {} if memo is None else memo

    def at(position: int) -> tuple[datetime, int]:
        d = promise_deadline(now=now, position=position, agents=agents, handling=handling, hours=hours,
                             minimum=minimum, tier_max=tier_max, jumpers_per_hour=jumpers_per_hour,
                             in_progress=in_progress, z=z)
        return d, bisect.bisect_left(keys, key_for(d))

    # No deadline is earlier than the one for nobody ahead: the ticket never lands before that place.
    # From there on, the last promise that could not spare the time for one more ticket ahead of it.
    earliest = at(0)[1]
    first_ok = earliest
    for j in range(n - 1, earliest - 1, -1):
        a = ahead[j]
        if a.deadline is None:
            continue
        wait_key = ("wait", j + 1, a.jumpers)
        if wait_key not in memo:
            memo[wait_key] = _reply_wait(j + 1, agents, handling, in_progress, _jumpers(a.jumpers), keep_z, closed)
        left_key = ("left", a.deadline)
        if left_key not in memo:
            memo[left_key] = hours.business_time_between(now, a.deadline).total_seconds()
        spare = memo[left_key] - memo[wait_key]
        if spare < 0:
            first_ok = j + 1
            break

    # The smallest i whose deadline lands at or after first_ok, then on until the place it lands at
    # has no more ahead than the deadline counted.
    lo, hi = first_ok, n
    while lo < hi:
        mid = (lo + hi) // 2
        if at(mid)[1] >= first_ok:
            hi = mid
        else:
            lo = mid + 1
    for i in range(lo, n + 1):
        d, p = at(i)
        if p <= i:  # at i == n always: behind every promise (and maybe, as before, ahead of some)
            break
    return d, p


def surge_jumpers(
    base: "Jumpers",
    arrivals: Iterable[datetime],
    *,
    now: datetime,
    hours: BusinessHours,
    window: timedelta = timedelta(hours=6),
    long_window: timedelta = timedelta(days=14),
) -> "Jumpers":
    """``base`` queue-jumper rates, raised while mail of every kind is arriving much faster than usual.

    An outage brings a flood of mail, and the customers with a tier in it will jump the queue; their
    own few arrivals show the flood late. ``arrivals`` are the arrival times of all recent tickets. For
    open and closed hours apart, the rate of the last ``window`` (its lower confidence bound, the
    count less twice its square root, so that a few mails at night are not a flood) is compared with
    the rate over ``long_window``; the jumper rate of those hours is raised by that factor when it is
    above 1.
    """
    u_now = _utc(now)
    times = sorted(_utc(a) for a in arrivals if _utc(a) <= u_now)
    usual = jumper_rates(times, now=now, hours=hours, windows=(long_window,))
    recent = times[bisect.bisect_left(times, u_now - window):]
    open_h = hours.business_time_between(u_now - window, u_now).total_seconds() / 3600
    closed_h = window.total_seconds() / 3600 - open_h
    n_open = sum(1 for t in recent if hours.is_open(t))
    n_closed = len(recent) - n_open

    def factor(count: int, span_hours: float, usual_rate: float) -> float:
        if span_hours < 1 or usual_rate <= 0:
            return 1.0
        return max(1.0, max(count - 2 * math.sqrt(count), 0.0) / span_hours / usual_rate)

    return Jumpers(base.open_per_hour * factor(n_open, open_h, usual.open_per_hour),
                   base.closed_per_hour * factor(n_closed, closed_h, usual.closed_per_hour),
                   base.observed)


def _at_close(dt: datetime, hours: BusinessHours) -> bool:
    d = dt.astimezone(hours.tz).date()
    return hours.is_open_day(d) and _utc(dt) == hours._interval(d)[1]


# --------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------


def _zone_label(local: datetime, tz: tzinfo) -> str:
    abbr = local.tzname() or ""
    if abbr and abbr[0] not in "+-" and not abbr.startswith("UTC") or abbr == "UTC":
        return abbr
    return getattr(tz, "key", None) or abbr or "UTC"


def _all_zones() -> tuple[ZoneInfo, ...]:
    global _ZONES
    if _ZONES is None:
        from zoneinfo import available_timezones

        zones = []
        for name in sorted(available_timezones()):
            try:
                zones.append(ZoneInfo(name))
            except (ValueError, OSError):  # pragma: no cover - a broken tzdata entry
                continue
        _ZONES = tuple(zones)
    return _ZONES


_ZONES: tuple[ZoneInfo, ...] | None = None


@functools.lru_cache(maxsize=4096)
def _zones_with_offset(offset_minutes: int, seen_hour: datetime) -> tuple[ZoneInfo, ...]:
    want = timedelta(minutes=offset_minutes)
    return tuple(z for z in _all_zones() if seen_hour.astimezone(z).utcoffset() == want)


@functools.lru_cache(maxsize=4096)
def _offset_then(offset_minutes: int, seen_hour: datetime, deadline: datetime) -> timedelta | None:
    offsets = {deadline.astimezone(z).utcoffset() for z in _zones_with_offset(offset_minutes, seen_hour)}
    if not offsets:  # no time zone database: the offset as seen is all there is
        return timedelta(minutes=offset_minutes)
    return offsets.pop() if len(offsets) == 1 else None


def customer_clock(
    deadline: datetime,
    *,
    customer_offset_minutes: int,
    seen_at: datetime | None,
    agent_tz: tzinfo,
) -> tzinfo | None:
    """The customer's clock at ``deadline``, from the UTC offset their mail showed at ``seen_at``.

    A Date header carries an offset, not a zone, and the offset changes with daylight saving time:
    "+0200" on a Friday in October is 01:00 earlier on the Monday after the change. The customer's
    offset equal to the desk's at ``seen_at`` reads as the desk's own zone (DST-aware); another
    offset is followed through the zones that had it then. None when those zones disagree at the
    deadline (a DST change in some of them only): the customer's clock is not known.
    """
    if seen_at is None:
        return timezone(timedelta(minutes=customer_offset_minutes))
    seen = _utc(seen_at)
    if seen.astimezone(agent_tz).utcoffset() == timedelta(minutes=customer_offset_minutes):
        return agent_tz
    seen_hour = seen.replace(minute=0, second=0, microsecond=0)
    then = _offset_then(customer_offset_minutes, seen_hour, _utc(deadline))
    return None if then is None else timezone(then)


def format_deadline(
    deadline: datetime,
    *,
    customer_offset_minutes: int | None,
    agent_tz: tzinfo,
    customer_offset_seen_at: datetime | None = None,
) -> str:
    """The deadline in a sentence: "Tuesday 24 November, 14:00 your time".

    With the customer's UTC offset (from their mail's Date header, sent at
    ``customer_offset_seen_at``) the time is written in their clock, "your
    time", moved across a daylight-saving change between their mail and the
    deadline (:func:`customer_clock`). Without it, or when their clock at the
    deadline cannot be told, in the agent's zone, named: "Tuesday 24
    November, 14:00 CET" (the IANA name when the zone has no letter
    abbreviation, e.g. "America/Sao_Paulo").
    """
    clock = None
    if customer_offset_minutes is not None:
        clock = customer_clock(deadline, customer_offset_minutes=customer_offset_minutes,
                               seen_at=customer_offset_seen_at, agent_tz=agent_tz)
    if clock is not None:
        local = _utc(deadline).astimezone(clock)
        label = "your time"
    else:
        local = _utc(deadline).astimezone(agent_tz)
        label = _zone_label(local, agent_tz)
    return (
        f"{_DAY_NAMES[local.weekday()]} {local.day} {_MONTH_NAMES[local.month - 1]}, "
        f"{local:%H:%M} {label}"
    )


def format_deadline_short(deadline: datetime, agent_tz: tzinfo) -> str:
    """Compact form for tables and events: "Tue 24 Nov 14:00" (agent's clock)."""
    local = _utc(deadline).astimezone(agent_tz)
    return (
        f"{_DAY_NAMES[local.weekday()][:3]} {local.day} "
        f"{_MONTH_NAMES[local.month - 1][:3]} {local:%H:%M}"
    )


# --------------------------------------------------------------------------
# Durations and tiers
# --------------------------------------------------------------------------

_UNITS = {
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": None, "day": None, "days": None,
    "w": None, "week": None, "weeks": None,
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(?:business\s+)?([a-z]+)")


def parse_duration(text: str, *, day: timedelta = timedelta(hours=8)) -> timedelta:
    """Parse "2h", "90m", "1h30m", "1.5 hours", "2 business hours", "1d".

    Every duration here is business time. A day ("1d", "2 business days") is
    one business day, ``day`` long (pass ``hours.day_length``; default 8h);
    a week is five such days.
    """
    s = text.strip().lower()
    if not s:
        raise ValueError("empty duration")
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(s):
        if s[pos:m.start()].strip(" ,and"):
            raise ValueError(f"cannot read duration {text!r}")
        value, unit = float(m.group(1)), m.group(2)
        if unit not in _UNITS:
            raise ValueError(f"unknown unit {unit!r} in duration {text!r}")
        if unit.startswith("d"):
            factor = day.total_seconds()
        elif unit.startswith("w"):
            factor = 5 * day.total_seconds()
        else:
            factor = _UNITS[unit]
        total += value * factor
        pos = m.end()
    if pos == 0 or s[pos:].strip():
        raise ValueError(f"cannot read duration {text!r}")
    return timedelta(seconds=round(total))


@dataclass(frozen=True)
class TierSpec:
    """One ``[tiers.<name>]`` entry: a maximum response time and its members."""

    name: str
    max_response: timedelta
    members: frozenset[str] = frozenset()


def parse_tiers(config: Mapping[str, Mapping[str, object]], *, day: timedelta = timedelta(hours=8)) -> dict[str, TierSpec]:
    """``{"premium": {"max_response": "2h", "members": ["ceo@bigco.com", "bigco.com"]}}``."""
    out: dict[str, TierSpec] = {}
    for name, spec in config.items():
        raw = spec.get("max_response")
        if raw is None:
            raise ValueError(f"tier {name!r} needs max_response")
        max_response = raw if isinstance(raw, timedelta) else parse_duration(str(raw), day=day)
        members = spec.get("members", ()) or ()
        if isinstance(members, str):
            members = [members]
        out[name] = TierSpec(
            name=name,
            max_response=max_response,
            members=frozenset(str(m).strip().lower().lstrip("@") for m in members),
        )
    return out


def tier_for(address: str, tiers: Mapping[str, TierSpec]) -> TierSpec | None:
    """The tier of a sender address, or None.

    An exact address beats a domain; a longer (more specific) domain beats a
    shorter one ("eu.bigco.com" beats "bigco.com", which also covers
    subdomains); among equally specific matches the strictest (shortest
    maximum) wins. Case-insensitive; "Name <addr>" is accepted.
    """
    addr = parseaddr(address)[1].strip().lower() or address.strip().lower()
    domain = addr.rpartition("@")[2]
    best: tuple[int, timedelta, str] | None = None
    best_tier: TierSpec | None = None
    for tier in tiers.values():
        for member in tier.members:
            if "@" in member:
                score = 10_000 if member == addr else -1
            elif domain == member or domain.endswith("." + member):
                score = len(member)
            else:
                score = -1
            if score < 0:
                continue
            key = (-score, tier.max_response, tier.name)
            if best is None or key < best:
                best, best_tier = key, tier
    return best_tier
