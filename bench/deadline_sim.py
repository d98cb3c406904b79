"""How honest are heard's deadlines? A support-desk simulation.

Replays weeks of support work through the real ``storage.deadlines`` module
and measures, per scenario and acknowledgement workflow, how many promises
are kept and how tight they are. The same arrivals, handling times and
promise set are used for every policy:

* ``fixed-1bd``: "within one business day" (now + 8 business hours);
* ``naive``: now + position x mean handling time / agents, rounded up to the
  full hour like heard's;
* ``heard``: :func:`storage.deadlines.promise_deadline` with what the app
  knows at that moment: the place in the work order, how long each ticket in
  progress has been worked on, a handling model learned from the last 500
  solved tickets, the recent premium rate. Tickets that
  :func:`storage.deadlines.answered_within` says more likely than not get
  their reply within ``[ack] minimum`` (2 h) of the customer's mail are not
  acknowledged (the product's skip rule; it lapses once that time is up);
* ``heard-all``: the same deadlines without that skip rule (every ticket
  considered gets a promise), for comparison.

The model of the desk:

* Poisson arrivals, 80% of the mail inside business hours (Mon-Fri
  09:00-17:00 Europe/Berlin, German public holidays), the rest spread over
  nights and weekends;
* handling (take-to-solve) times lognormal, median 15 min, sigma 1
  (mean ~25 min; about 2% of tickets take over two hours);
* 1-3 agents working business hours; a ticket unfinished at 17:00 continues
  the next business morning;
* ~10% premium customers (tier maximum 2 h); agents take tickets in the
  app's work order (``storage.tickets.queue_order``, what take next follows):
  promises within 2 h of their deadline first, the closest first (ties by
  age), then premium, then promised before unpromised, nearest deadline, age;
* heard's promise is :func:`storage.deadlines.slotted_deadline`, as
  ``mail.ack.plan_acknowledgements`` makes it: the earliest place in that work
  order where the new promise and every promise it goes ahead of are honest
  (those at ``KEEP_Z``), with queue-jumper rates from
  :func:`storage.deadlines.surge_jumpers` (raised while all mail arrives much
  faster than usual);
* promises are made the way the product makes them (mail/ack.py), two
  workflows as separate rows:
  - ``batch``: the agent presses ``a`` at 09:00, 11:00, 13:00 and 15:00 on
    business days: every waiting, un-acknowledged ticket not yet taken gets
    a promise (a ticket skipped by the rule is considered again next time);
  - ``auto``: ``[ack] auto = true``: after every sync (each new mail, and
    every minute in ``heard sync --watch``; modelled every five), every
    waiting ticket of the last three days not acknowledged yet, day or night
    (``mail.ack.housekeeping``): a ticket skipped at its arrival is looked at
    again until its reply comes or the skip lapses;
  a ticket taken and answered before any acknowledgement gets no promise;
* the real wait ends when the human reply goes out: the ticket taken plus its
  whole handling time. "kept" means that reply came at or before the deadline.

"promised/real" is the median of (deadline - arrival) / (reply - arrival),
wall clock, counted from the customer's mail: the whole wait the customer was
promised against the one they had, the clock of a helpdesk's first-reply time.
"from the ack" is the same ratio counted from the acknowledgement, (deadline -
promise time) / (reply - promise time): how much longer the promise was than
what followed it. The two differ only for batch acknowledgements (night mail
promised at 09:00 has waited all night already; at 15:00 a ticket with four
ahead is promised tomorrow 10:00 and answered at 16:30); the target is checked
against both, the first line of the verdict against the customer's wait. "no ack" counts tickets
never acknowledged because of the skip rule, and the share of them whose
reply really went out within 2 h of their mail; "no word > 2h" is the share of
customers who heard nothing from us (acknowledgement or reply) for more than
two business hours: the price of skipping.

Queue-jumpers: the premium rate is learned apart for open and closed hours
(:func:`storage.deadlines.jumper_rates`), so a promise made on Friday
evening counts the premium mail of the weekend that will be waiting ahead of
it on Monday, and a daytime promise no longer counts night arrivals as
daytime ones; a rate learned from few arrivals widens the promise.

What the numbers say (the targets are >= 97% kept, median <= 1.4x), for
``heard`` on the main seeds. Since promises are slotted into the time earlier
promises can spare, with surge-aware jumper rates and the closest at-risk
promise first: every scenario and workflow keeps 97.2-100% with a median of
1.19-1.39 counted from the customer's mail (1.21-1.39 with ``auto`` counted
from the promise too; batch promises counted from the promise stay 1.30-4.20,
see below). Over four seeds the spread is about what it was before: the worst
seed of calm then overloaded keeps 80-82% (84% before), of the weekend backlog
92-94%, while the overloaded rows' worst medians fell from 1.42-1.60 to
1.28-1.44. The weekend backlog with ``auto`` keeps 97.2% with 12 broken of
435: one more would miss. The paragraphs below describe the runs before that
change (slotting, surges, the closest at-risk first), for the record:

* Calm weeks meet both targets, counted from the customer's mail (1.22-1.35;
  kept 98.0-100%), and with ``auto`` from the promise too (1.22-1.35). Before
  the skip rule counted from the mail, at the median, with a 2 h minimum and
  ``auto`` looking again after every sync, they were 1.41-2.41 from the mail
  and 1.71-4.80 from the promise: a desk with time to spare was promising
  "by 14:00" to customers it answered at 10:30. The price is in "no word >
  2h": 0-2.1% of customers with ``auto`` (0-1.4% before), 0-5.3% with batches
  at 9, 11, 13 and 15 (the agent decides when to press ``a``). Batch
  promises in calm weeks stay loose from the promise (3.7-4.5x): at 15:00 a
  ticket with four ahead is promised tomorrow 10:00, honest at the 97th
  percentile, and answered at 16:30 today.
* Overloaded weeks keep 99.1-100% with ratios of 1.46-1.51 (from the mail;
  1.47-1.86 from the promise); calm then overloaded keeps 98.9-99.0% at
  1.29-1.40. The weekend backlog keeps 98.4% (batch) and 95.8% (``auto``) at
  1.47-1.52.
* The weekend miss: the Saturday flood is acknowledged while it arrives, and
  ordinary tickets promised between Friday 17:00 and Saturday morning are
  overtaken on Monday by the premium tickets of the weekend, most still to
  come, which the premium rate learned from the last two weeks cannot
  foresee; premium tickets with 14-19 premium tickets ahead of them are
  promised the tier maximum (Monday 11:00), which no desk of two can meet.
* Over four seeds (``--seeds 4``) the worst seed keeps 94-96% in the calm
  rows (one monster ticket of 5-9 hours holding an agent while the promises
  behind it fall due), 92-94% in the weekend backlog and 84% in calm then
  overloaded (a seed whose surge tickets took 28 minutes where the calm weeks
  taught 22.6, with 30 premium arrivals against 14-23 before: with 50-60
  tickets ahead of every promise, one such stretch breaks the promises made in
  it together). Medians over the seeds, from the mail: 1.23-1.53 calm,
  1.40-1.58 overloaded, 1.33-1.42 the rest.
* Tightness in long queues is the arithmetic of heavy tails: the sum of n
  handling times (lognormal, sigma 1) has coefficient of variation 1.31 /
  sqrt(n), so a promise at the Phi(2) quantile is within 1.4x of the median
  wait only from about 60 tickets ahead, before premium jumpers and the error
  of the learned mean; the median promise of the overloaded weeks has about
  50 ahead. On the wall clock, a promise whose margin crosses closing time
  moves to the next morning, 16 hours later.
* Learning the margin from the ledger itself (the quantile of past promises'
  real waits in units of their modelled spread, a conformal calibration) was
  tried: pooled over six seeds, steady overload needs only z = 1.0-1.7 where
  heard uses 2, but a surge needs 1.8-3.2. Calibrated, the overloaded rows
  reached 1.2-1.3x and the surge and flood seeds fell to 79-86% kept (from
  84-94%): the record of calm weeks says nothing of the surge that breaks
  them. Not adopted; neither was a fixed lower z.

* A surge-aware rate of queue-jumpers was tried too: the premium share of the last
  two weeks times the rate of *all* mail in the last 6 or 24 hours (ten times the
  arrivals of premium mail alone, so a flood shows sooner). The weekend backlog
  with ``auto`` went from 95.8% kept to 96.5% (24 h) or 98.4% (6 h) on the main
  seed, but its second seed stayed at 91.6-91.9% (promises made on Friday evening,
  before any of the flood), the ratio rose to 1.60-1.63, and the 6-hour window
  loosened calm single-agent promises (1.35 -> 1.55 with `auto`: a burst of a few
  mails at night read as a surge).
  Not adopted.

Deterministic (seeded). Run: ``python bench/deadline_sim.py`` (about 8 s);
``--seeds N`` adds heard's spread over N seeds per scenario (``--seeds 4``:
about a minute more).
"""

from __future__ import annotations

import bisect
import math
import random
import statistics
import sys
import time as _time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from storage.deadlines import (  # noqa: E402
    Ahead,
    BusinessHours,
    HandlingModel,
    answered_within,
    jumper_rates,
    promise_deadline,
    round_into_business_hours,
    slotted_deadline,
    surge_jumpers,
)

TZ = ZoneInfo("Europe/Berlin")
MEDIAN_MIN = 15.0
SIGMA = 1.0
MEAN_MIN = MEDIAN_MIN * math.exp(SIGMA * SIGMA / 2)
PREMIUM_SHARE = 0.10
IN_HOURS_SHARE = 0.80
HISTORY = 500  # solved tickets the handling model learns from
RATE_WINDOW_DAYS = 14  # premium-rate window
MINIMUM = timedelta(hours=2)  # [ack] minimum, default
AUTO_HORIZON = 3 * 86400.0  # mail.ack.AUTO_HORIZON: [ack] auto looks at mail this recent (wall seconds)
RESYNC = 5 * 60.0  # `heard sync --watch` syncs (then housekeeps) on new mail and every minute; here every 5 (speed)
PREMIUM_MAX = timedelta(hours=2)
CONFIGURED = timedelta(minutes=15)
AT_RISK = 2 * 3600.0  # [ack] at_risk_margin (default 2 h), business seconds (storage.deadlines.risk_window)


@dataclass(frozen=True)
class Scenario:
    name: str
    agents: int
    weeks: int
    load: float  # weekly arrivals / weekly capacity of the agents
    start: date  # a Monday
    flood: int = 0  # extra tickets over the first weekend (an outage)
    seed: int = 1


SCENARIOS = [
    Scenario("calm, 1 agent", 1, 3, 0.75, date(2026, 3, 2), seed=11),
    Scenario("calm, 3 agents", 3, 3, 0.75, date(2026, 9, 7), seed=12),
    Scenario("overloaded, 1 agent", 1, 3, 1.40, date(2026, 3, 23), seed=13),  # DST + Easter
    Scenario("overloaded, 2 agents", 2, 3, 1.30, date(2026, 10, 19), seed=14),  # DST end
    Scenario("weekend backlog, 2 agents", 2, 2, 0.80, date(2026, 6, 1), flood=150, seed=15),
    Scenario("calm then overloaded, 2 agents", 2, 4, 0.0, date(2026, 11, 2), seed=16),
]


def _ts(dt: datetime) -> float:
    return dt.timestamp()


class Clock:
    """Wall clock <-> cumulative business seconds, over a precomputed horizon."""

    def __init__(self, hours: BusinessHours, first: date, days: int) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.cum: list[float] = []  # business seconds before each interval
        total = 0.0
        for i in range(days):
            d = first + timedelta(days=i)
            if hours.is_open_day(d):
                a = _ts(datetime.combine(d, hours.start, hours.tz))
                b = _ts(datetime.combine(d, hours.end, hours.tz))
                self.starts.append(a)
                self.ends.append(b)
                self.cum.append(total)
                total += b - a

    def biz(self, t: float) -> float:
        i = bisect.bisect_right(self.starts, t) - 1
        if i < 0:
            return 0.0
        return self.cum[i] + min(t, self.ends[i]) - self.starts[i]

    def wall(self, b: float) -> float:
        """The instant business time ``b`` is reached (at a boundary: the opening)."""
        i = bisect.bisect_right(self.cum, b) - 1
        return self.starts[i] + (b - self.cum[i])

    def is_open(self, t: float) -> bool:
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and t < self.ends[i]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p < limit:
            return k
        k += 1


def _arrivals(rng: random.Random, clock: Clock, start: datetime, weeks: int, rates) -> list[float]:
    """Arrival instants; ``rates(week)`` -> (per open hour, per closed hour)."""
    out: list[float] = []
    t0 = _ts(start)
    for h in range(weeks * 7 * 24):
        a = t0 + h * 3600
        in_rate, out_rate = rates(h // (7 * 24))
        lam = in_rate if clock.is_open(a + 1800) else out_rate
        for _ in range(_poisson(rng, lam)):
            out.append(a + rng.random() * 3600)
    out.sort()
    return out


def _rates_for(load: float, agents: int):
    capacity_week = agents * 40 * 60 / MEAN_MIN  # tickets per 40 business hours
    n = load * capacity_week
    return n * IN_HOURS_SHARE / 40, n * (1 - IN_HOURS_SHARE) / 128


def _handling(rng: random.Random) -> float:
    return MEDIAN_MIN * 60 * math.exp(rng.gauss(0.0, SIGMA))


BATCH_HOURS = (9, 11, 13, 15)  # the agent presses `a`: start of the day, then every two hours
ACK_POLICIES = ("batch", "auto")
POLICIES = ("fixed-1bd", "naive", "heard", "heard-all")


@dataclass
class Ticket:
    t: float  # arrival, wall (epoch seconds)
    b: float  # arrival, business seconds
    premium: bool
    work: float  # handling, business seconds
    acked: bool = False
    acked_at: float | None = None  # wall
    deadline: float | None = None  # the promise made (heard's), wall; the work order sorts by it
    reply: float | None = None  # the human reply (end of handling), wall


@dataclass
class Consideration:
    """One waiting ticket in an acknowledgement plan."""

    tk: Ticket
    at: float  # wall
    skipped: bool  # heard's "will be answered within the hour anyway"
    deadlines: dict  # policy -> deadline epoch seconds


def _batch_instants(clock: Clock, start: float, end: float) -> list[float]:
    out = []
    for a in clock.starts:
        if start <= a < end:
            day = datetime.fromtimestamp(a, TZ)
            for h in BATCH_HOURS:
                t = _ts(day.replace(hour=h, minute=0, second=0))
                if clock.is_open(t):
                    out.append(t)
    return out


def run(sc: Scenario, ack: str = "batch") -> dict[str, dict]:
    """One scenario under one acknowledgement workflow; the same arrivals and handling times for every policy."""
    rng = random.Random(sc.seed)
    hours = BusinessHours.from_config(
        ["mon", "tue", "wed", "thu", "fri"], "09:00-17:00", "Europe/Berlin",
        country="DE", now=datetime.combine(sc.start, datetime.min.time(), TZ),
    )
    history_days = RATE_WINDOW_DAYS
    first = sc.start - timedelta(days=history_days)
    clock = Clock(hours, first, history_days + (sc.weeks + 30) * 7)
    start = datetime.combine(sc.start, datetime.min.time(), TZ)
    if sc.name.startswith("calm then overloaded"):
        rates = lambda w: _rates_for(0.7 if w < 2 else 1.4, sc.agents)  # noqa: E731
    else:
        rates = lambda w: _rates_for(sc.load, sc.agents)  # noqa: E731
    measured_end = _ts(start) + sc.weeks * 7 * 86400
    # Arrivals keep coming after the measured weeks (queue-jumpers do not stop).
    times = _arrivals(rng, clock, start, sc.weeks + 8, lambda w: rates(min(w, sc.weeks - 1)))
    if sc.flood:
        sat = _ts(start) + 5 * 86400
        times += [sat + rng.random() * 2 * 86400 for _ in range(sc.flood)]
        times.sort()
    # History before the start: premium arrivals and solved tickets.
    past_rates = _rates_for(sc.load or 0.7, sc.agents)
    past = _arrivals(rng, clock, datetime.combine(first, datetime.min.time(), TZ), 2, lambda w: past_rates)
    premium_arrivals = [t for t in past if rng.random() < PREMIUM_SHARE and t < _ts(start)]
    solved: list[tuple[float, float]] = [(-1.0 - i, _handling(rng)) for i in range(HISTORY)]  # (done_b, secs)

    tickets = [Ticket(t, clock.biz(t), rng.random() < PREMIUM_SHARE, _handling(rng)) for t in times]
    arrived = sorted([x for x in past if x < _ts(start)] + times)  # every ticket's arrival (the flood's too)
    free = [0.0] * sc.agents  # business seconds at which each agent is free
    began = [0.0] * sc.agents  # business seconds at which each agent's current ticket was taken
    queue: list[Ticket] = []  # arrived, not taken (in arrival order)
    plans: list[Consideration] = []

    def order_key(now_wall: float):
        """``storage.tickets.queue_order`` at ``now_wall``: promises within ``AT_RISK`` of their deadline
        first, the closest first; then tier (premium), promised before unpromised, nearest deadline, age."""
        risk = clock.wall(clock.biz(now_wall) + AT_RISK)

        def key(tk: Ticket, dl: float | None = None) -> tuple:
            dl = tk.deadline if dl is None else dl
            at_risk = dl is not None and dl <= risk
            return (0 if at_risk else 1, dl if at_risk else 0.0, 0 if tk.premium and not at_risk else 1,
                    1 if dl is None else 0, dl or 0.0, tk.t)

        return key

    def work_order(now_wall: float, waiting: list[Ticket]) -> list[Ticket]:
        return sorted(waiting, key=order_key(now_wall))

    def dispatch(limit: float) -> None:
        """Agents take tickets in the app's work order (take next) up to, not including, ``limit``."""
        while queue:
            agent = min(range(len(free)), key=free.__getitem__)
            at = max(free[agent], min(tk.b for tk in queue))
            if at >= limit:
                return
            now_wall = clock.wall(at)  # at closing time: the next opening
            tk = work_order(now_wall, [x for x in queue if x.b <= at])[0]
            queue.remove(tk)
            began[agent], free[agent] = at, at + tk.work
            tk.reply = clock.wall(at + tk.work)
            bisect.insort(solved, (at + tk.work, tk.work))

    def plan(t: float, which: list[Ticket]) -> None:
        """What the app knows at ``t`` and the deadline each policy would promise."""
        now_b = clock.biz(t)
        now = datetime.fromtimestamp(t, TZ)
        idx = bisect.bisect_right(solved, (now_b, float("inf")))
        recent = [timedelta(seconds=s) for _, s in solved[max(0, idx - HISTORY):idx]]
        model = HandlingModel.from_history(recent, CONFIGURED)
        mean = statistics.fmean(s.total_seconds() for s in recent)
        lo = bisect.bisect_left(premium_arrivals, t - RATE_WINDOW_DAYS * 86400)
        recent_premium = [datetime.fromtimestamp(x, timezone.utc) for x in premium_arrivals[lo:]]
        jumpers = jumper_rates(recent_premium, now=now, hours=hours)
        lo_all, hi_all = (bisect.bisect_left(arrived, t - RATE_WINDOW_DAYS * 86400), bisect.bisect_right(arrived, t))
        jumpers = surge_jumpers(jumpers, [datetime.fromtimestamp(x, timezone.utc) for x in arrived[lo_all:hi_all]],
                                now=now, hours=hours)
        in_progress = [timedelta(seconds=now_b - began[a]) for a in range(sc.agents) if free[a] > now_b]
        key = order_key(t)
        order_list = work_order(t, queue)
        for tk in which:
            pos = order_list.index(tk)
            jump = 0.0 if tk.premium else jumpers
            # mail.ack.quick_reply_window: the minimum counts from the customer's mail.
            within = MINIMUM - timedelta(seconds=max(t - tk.t, 0.0))
            skip = within > timedelta(0) and answered_within(now=now, within=within, position=pos, agents=sc.agents, handling=model,
                                   hours=hours, in_progress=in_progress, jumpers_per_hour=jump)
            # mail.ack.plan_acknowledgements: the earliest place in the work order where this promise and
            # every promise it goes ahead of are honest.
            ahead = [Ahead(key(x), None if x.deadline is None else datetime.fromtimestamp(x.deadline, timezone.utc),
                           0.0 if x.premium else jumpers) for x in order_list[:pos]]
            heard, _ = slotted_deadline(
                now=now, ahead=ahead, key_for=lambda d, tk=tk: key(tk, _ts(d)), agents=sc.agents, handling=model,
                hours=hours, minimum=MINIMUM, tier_max=PREMIUM_MAX if tk.premium else None, jumpers_per_hour=jump,
                in_progress=in_progress,
            )
            naive_raw = hours.add_business_time(now, timedelta(seconds=pos * mean / sc.agents))
            naive = round_into_business_hours(naive_raw, hours)
            fixed = hours.add_business_time(now, hours.day_length)
            plans.append(Consideration(tk, t, skip, {"fixed-1bd": _ts(fixed), "naive": _ts(naive),
                                                     "heard": _ts(heard)}))
            if not skip and not tk.acked:
                tk.acked, tk.deadline, tk.acked_at = True, _ts(heard), t
                order_list = work_order(t, queue)

    def housekeeping(t: float) -> None:
        """[ack] auto after a sync (mail.ack.housekeeping): every recent waiting ticket not acknowledged yet."""
        waiting = [x for x in work_order(t, queue) if not x.acked and t - x.t <= AUTO_HORIZON]
        if waiting:
            plan(t, waiting)

    if ack == "batch":
        batches = _batch_instants(clock, _ts(start), measured_end)
    else:  # the syncs without new mail: one every RESYNC at least
        batches = [_ts(start) + i * RESYNC for i in range(int((measured_end - _ts(start)) // RESYNC))]
    bi = 0
    for tk in tickets:
        while bi < len(batches) and batches[bi] <= tk.t:
            dispatch(clock.biz(batches[bi]))
            if ack == "batch":
                plan(batches[bi], [x for x in work_order(batches[bi], queue) if not x.acked])
            else:
                housekeeping(batches[bi])
            bi += 1
        dispatch(tk.b)
        queue.append(tk)
        if ack == "auto" and tk.t < measured_end:
            housekeeping(tk.t)
        if tk.premium:
            premium_arrivals.append(tk.t)
    dispatch(float("inf"))

    made = [c for c in plans if not c.skipped]
    first_seen: dict[int, Consideration] = {}
    for c in plans:
        first_seen.setdefault(id(c.tk), c)
    out: dict[str, dict] = {}
    for policy in POLICIES:
        rows = list(first_seen.values()) if policy == "heard-all" else made
        key = "heard" if policy == "heard-all" else policy
        kept = prem_kept = prem_n = 0
        rs: list[float] = []
        rs_mail: list[float] = []
        for c in rows:
            dl = c.deadlines[key]
            ok = c.tk.reply <= dl + 1e-6
            kept += ok
            if c.tk.premium:
                prem_n += 1
                prem_kept += ok
            rs.append((dl - c.at) / max(c.tk.reply - c.at, 1.0))
            rs_mail.append((dl - c.tk.t) / max(c.tk.reply - c.tk.t, 1.0))
        out[policy] = {
            "promises": len(rows),
            "kept": kept / len(rows) if rows else float("nan"),
            "ratio": statistics.median(rs) if rs else float("nan"),
            "ratio_mail": statistics.median(rs_mail) if rs_mail else float("nan"),
            "premium": (prem_kept / prem_n) if prem_n else float("nan"),
        }
    # Customers who got no acknowledgement because the reply would come first: did it?
    never = [c for c in first_seen.values() if not c.tk.acked]
    quick = sum(c.tk.reply - c.tk.t <= MINIMUM.total_seconds() for c in never)
    out["heard"]["no_ack"] = len(never)
    # Customers with no word from us (acknowledgement or reply) for more than [ack] minimum of business time.
    considered = list(first_seen.values())
    silent = sum(clock.biz(min(x for x in (c.tk.acked_at, c.tk.reply) if x is not None)) - c.tk.b
                 > MINIMUM.total_seconds() for c in considered)
    out["heard"]["silent"] = silent / len(considered) if considered else float("nan")
    out["heard"]["no_ack_quick"] = quick / len(never) if never else float("nan")
    return out


def robustness(n: int) -> None:
    """heard's policy over ``n`` seeds per scenario: the spread, not one lucky run."""
    from dataclasses import replace

    print(f"\nheard over {n} seeds per scenario and workflow (worst seed: lowest kept, highest ratio)")
    print(f"{'scenario':<31}  {'ack':<5}  {'kept % min':>10}  {'mean':>5}  {'from ack median':>15}  {'max':>5}  "
          f"{'from mail median':>16}  {'max':>5}  {'no word > 2h max':>16}")
    failed = []
    for sc in SCENARIOS:
        for ack in ACK_POLICIES:
            rs = [run(replace(sc, seed=sc.seed + 100 * i), ack)["heard"] for i in range(n)]
            ks = [r["kept"] for r in rs]
            ratios = [r["ratio"] for r in rs]
            mail = [r["ratio_mail"] for r in rs]
            print(f"{sc.name:<31}  {ack:<5}  {100 * min(ks):>10.1f}  {100 * statistics.fmean(ks):>5.1f}  "
                  f"{statistics.median(ratios):>15.2f}  {max(ratios):>5.2f}  {statistics.median(mail):>16.2f}  "
                  f"{max(mail):>5.2f}  {100 * max(r['silent'] for r in rs):>15.1f}%")
            if min(ks) < 0.97 or max(ratios) > 1.4:
                failed.append(f"{sc.name} ({ack})")
    print(f"\nworst seeds: {'targets met everywhere' if not failed else 'missed in: ' + '; '.join(failed)}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    t0 = _time.perf_counter()
    rows = []
    for sc in SCENARIOS:
        for ack in ACK_POLICIES:
            for policy, r in run(sc, ack).items():
                rows.append((sc.name, ack, policy, r))
    w = max(len(n) for n, _, _, _ in rows)
    print(f"{'scenario':<{w}}  {'ack':<5}  {'policy':<9}  {'promises':>8}  {'kept %':>6}  "
          f"{'promised/real':>13}  {'from the ack':>12}  {'premium kept %':>14}  {'no ack (reply <= 2h %)':>22}  "
          f"{'no word > 2h':>12}")
    failed, failed_mail = [], []
    for name, ack, policy, r in rows:
        extra = f"{r['no_ack']:>8} ({100 * r['no_ack_quick']:5.1f}%)" if "no_ack" in r else ""
        extra += f"  {100 * r['silent']:>11.1f}%" if "silent" in r else ""
        print(f"{name:<{w}}  {ack:<5}  {policy:<9}  {r['promises']:>8}  {100 * r['kept']:>6.1f}  "
              f"{r['ratio_mail']:>13.2f}  {r['ratio']:>12.2f}  {100 * r['premium']:>14.1f}  {extra:>22}")
        if policy == "heard" and (r["kept"] < 0.97 or r["ratio"] > 1.4):
            failed.append(f"{name} ({ack})")
        if policy == "heard" and (r["kept"] < 0.97 or r["ratio_mail"] > 1.4):
            failed_mail.append(f"{name} ({ack})")
    print(f"\ntargets for heard: >= 97.0% kept, median promised/real <= 1.40, the wait counted from the customer's mail"
          f" -- {'met in every scenario' if not failed_mail else 'missed in: ' + '; '.join(failed_mail)}")
    print(f"the same, the wait counted from the acknowledgement"
          f" -- {'met in every scenario' if not failed else 'missed in: ' + '; '.join(failed)}"
          + (" (a batch at 15:00 promises tomorrow morning what is often answered today)" if failed else ""))
    print(f"({_time.perf_counter() - t0:.1f} s)")
    if argv[:1] == ["--seeds"]:
        robustness(int(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
