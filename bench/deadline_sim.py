"""How honest are heard's deadlines? A support-desk simulation.

Replays weeks of support work through the real ``storage.deadlines`` module
and measures, per scenario, how many promises are kept and how tight they
are, for three promise policies side by side:

* ``fixed-1bd``: "within one business day" (now + 8 business hours);
* ``naive``: now + position x mean handling time / agents, rounded up to the
  full hour like heard's;
* ``heard``: :func:`storage.deadlines.promise_deadline` with a handling model
  learned from the last 500 solved tickets and the recent premium rate.

The model of the desk:

* Poisson arrivals, 80% of the mail inside business hours (Mon-Fri
  09:00-17:00 Europe/Berlin, German public holidays), the rest spread over
  nights and weekends;
* handling (take-to-solve) times lognormal, median 15 min, sigma 1
  (mean ~25 min; about 2% of tickets take over two hours);
* 1-3 agents working business hours; a ticket unfinished at 17:00 continues
  the next business morning;
* ~10% premium customers; the work order is premium first, then FIFO (the
  app's take-next);
* a promise is made when a ticket arrives and cannot be taken at once (the
  acknowledgement goes to every *waiting* customer). Its position is the
  number of tickets ahead of it in the work order at that moment;
* the real wait ends at the first human reply: when an agent takes the
  ticket, plus min(handling time, 10 minutes) to write it.

"promised/real" is (deadline - promise time) / (first reply - promise time)
in wall-clock time, what the customer experiences; "biz" is the same ratio in
business time (stricter: a night's wait counts for nothing).

What the numbers say (and why not every target is met):

* Calm weeks: promises are kept (>= 97%) but loose (median 1.8-2.6x on the
  wall clock). Most waits are one ticket in progress: minutes, with a heavy
  tail (an agent stuck on a two-hour ticket). A promise kept 97% of the time
  for such a wait is ~2 business hours, and rounding to the full hour adds
  more; with a short real wait no honest promise is within 1.4x.
* Overloaded weeks: kept 99-100% at median ~1.5x. Lowering the quantile
  (z 1.75) brings the ratio to ~1.4 but, over several seeds, kept drops to
  92-97%: failures cluster (one monster ticket delays every promise behind
  it), so the per-scenario kept share swings much more than per promise.
* Weekend backlog: the Saturday outage cannot be foreseen on Friday, and its
  premium tickets jump the queue; premium promises capped by the 2-hour
  tier maximum are broken when the premium queue alone exceeds it.

Deterministic (seeded). Run: ``python bench/deadline_sim.py`` (about 10 s);
``--seeds N`` adds heard's spread over N seeds per scenario (slow).
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
    BusinessHours,
    HandlingModel,
    jumper_rate,
    promise_deadline,
    round_into_business_hours,
)

TZ = ZoneInfo("Europe/Berlin")
MEDIAN_MIN = 15.0
SIGMA = 1.0
MEAN_MIN = MEDIAN_MIN * math.exp(SIGMA * SIGMA / 2)
PREMIUM_SHARE = 0.10
IN_HOURS_SHARE = 0.80
REPLY_DELAY_MAX = 600.0  # seconds to write the first reply after taking a ticket
HISTORY = 500  # solved tickets the handling model learns from
RATE_WINDOW_DAYS = 14  # premium-rate window
MINIMUM = timedelta(hours=1)
PREMIUM_MAX = timedelta(hours=2)
CONFIGURED = timedelta(minutes=15)


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


@dataclass
class Ticket:
    t: float  # arrival, wall (epoch seconds)
    b: float  # arrival, business seconds
    premium: bool
    work: float  # handling, business seconds
    promises: dict | None = None  # policy -> deadline epoch seconds
    promised_at: float | None = None
    reply: float | None = None  # first human reply, wall


def run(sc: Scenario) -> dict[str, dict]:
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
    free = [0.0] * sc.agents  # business seconds at which each agent is free
    prem_q: list[Ticket] = []
    norm_q: list[Ticket] = []
    pi = ni = 0  # heads of the queues (lists used as FIFOs)

    def take(tk: Ticket, agent: int, at: float) -> None:
        free[agent] = at + tk.work
        tk.reply = clock.wall(at + min(tk.work, REPLY_DELAY_MAX))
        bisect.insort(solved, (at + tk.work, tk.work))

    def dispatch(limit: float) -> None:
        nonlocal pi, ni
        while pi < len(prem_q) or ni < len(norm_q):
            agent = min(range(len(free)), key=free.__getitem__)
            if free[agent] >= limit:
                return
            if pi < len(prem_q):
                tk = prem_q[pi]
                pi += 1
            else:
                tk = norm_q[ni]
                ni += 1
            take(tk, agent, max(free[agent], tk.b))

    for tk in tickets:
        dispatch(tk.b)
        waiting = (len(prem_q) - pi) + (len(norm_q) - ni)
        agent = min(range(len(free)), key=free.__getitem__)
        if clock.is_open(tk.t) and waiting == 0 and free[agent] <= tk.b:
            take(tk, agent, tk.b)
        else:
            if tk.t < measured_end:
                now = datetime.fromtimestamp(tk.t, TZ)
                position = (len(prem_q) - pi) if tk.premium else waiting
                tk.promises = _promise_all(sc, hours, clock, now, tk, position, solved, premium_arrivals)
                tk.promised_at = tk.t
            (prem_q if tk.premium else norm_q).append(tk)
        if tk.premium:
            premium_arrivals.append(tk.t)
    dispatch(float("inf"))

    out: dict[str, dict] = {}
    promised = [tk for tk in tickets if tk.promises]
    for policy in ("fixed-1bd", "naive", "heard"):
        kept = 0
        rs: list[float] = []
        bs: list[float] = []
        prem_kept = prem_n = 0
        for tk in promised:
            dl = tk.promises[policy]
            ok = tk.reply <= dl + 1e-6
            kept += ok
            if tk.premium:
                prem_n += 1
                prem_kept += ok
            real = max(tk.reply - tk.t, 1.0)
            rs.append((dl - tk.t) / real)
            breal = max(clock.biz(tk.reply) - clock.biz(tk.t), 1.0)
            bs.append(max(clock.biz(dl) - clock.biz(tk.t), 0.0) / breal)
        out[policy] = {
            "promises": len(promised),
            "kept": kept / len(promised) if promised else float("nan"),
            "ratio": statistics.median(rs) if rs else float("nan"),
            "biz_ratio": statistics.median(bs) if bs else float("nan"),
            "premium": (prem_kept / prem_n) if prem_n else float("nan"),
        }
    return out


def _promise_all(sc, hours, clock, now, tk, position, solved, premium_arrivals) -> dict[str, float]:
    # What the app knows at `now`: tickets solved so far, premium arrivals so far.
    idx = bisect.bisect_right(solved, (tk.b, float("inf")))
    recent = [timedelta(seconds=s) for _, s in solved[max(0, idx - HISTORY):idx]]
    model = HandlingModel.from_history(recent, CONFIGURED)
    lo = bisect.bisect_left(premium_arrivals, tk.t - RATE_WINDOW_DAYS * 86400)
    recent_premium = [datetime.fromtimestamp(t, timezone.utc) for t in premium_arrivals[lo:]]
    jumpers = 0.0 if tk.premium else jumper_rate(recent_premium, now=now, hours=hours)
    tier = PREMIUM_MAX if tk.premium else None

    heard = promise_deadline(
        now=now, position=position, agents=sc.agents, handling=model, hours=hours,
        minimum=MINIMUM, tier_max=tier, jumpers_per_hour=jumpers,
    )
    mean = statistics.fmean(s.total_seconds() for s in recent)
    naive_raw = hours.add_business_time(now, timedelta(seconds=position * mean / sc.agents))
    naive = round_into_business_hours(naive_raw, hours)
    fixed = hours.add_business_time(now, hours.day_length)
    return {"fixed-1bd": _ts(fixed), "naive": _ts(naive), "heard": _ts(heard)}


def robustness(n: int) -> None:
    """heard's policy over ``n`` seeds per scenario: the spread, not one lucky run."""
    from dataclasses import replace

    print(f"\nheard over {n} seeds per scenario (failures cluster: one monster ticket or a"
          " surge breaks a whole batch of promises)")
    print(f"{'scenario':<31}  {'kept % min':>10}  {'mean':>5}  {'ratio median':>12}  {'max':>5}")
    for sc in SCENARIOS:
        ks, rs = [], []
        for i in range(n):
            r = run(replace(sc, seed=sc.seed + 100 * i))["heard"]
            ks.append(r["kept"])
            rs.append(r["ratio"])
        print(f"{sc.name:<31}  {100 * min(ks):>10.1f}  {100 * statistics.fmean(ks):>5.1f}  "
              f"{statistics.median(rs):>12.2f}  {max(rs):>5.2f}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    t0 = _time.perf_counter()
    rows = []
    for sc in SCENARIOS:
        res = run(sc)
        for policy, r in res.items():
            rows.append((sc.name, policy, r))
    w = max(len(n) for n, _, _ in rows)
    print(f"{'scenario':<{w}}  {'policy':<9}  {'promises':>8}  {'kept %':>6}  "
          f"{'promised/real':>13}  {'biz':>5}  {'premium kept %':>14}")
    failed = []
    for name, policy, r in rows:
        print(f"{name:<{w}}  {policy:<9}  {r['promises']:>8}  {100 * r['kept']:>6.1f}  "
              f"{r['ratio']:>13.2f}  {r['biz_ratio']:>5.2f}  {100 * r['premium']:>14.1f}")
        if policy == "heard" and (r["kept"] < 0.97 or r["ratio"] > 1.4):
            failed.append(name)
    print(f"\ntargets for heard: >= 97.0% kept, median promised/real <= 1.40"
          f" -- {'met in every scenario' if not failed else 'missed in: ' + '; '.join(failed)}")
    print(f"({_time.perf_counter() - t0:.1f} s)")
    if argv[:1] == ["--seeds"]:
        robustness(int(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
