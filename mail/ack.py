"""Acknowledgements, promise updates, check-ins and auto-close: the automatic mail that keeps customers heard.

While an agent works one ticket, every other waiting customer gets a personal
"I will handle this by <deadline>" from that agent (seed 001), the deadline
is honest (:mod:`storage.deadlines`), and the promise is tracked
(:mod:`storage.ledger`). Every message here is *automatic mail* (brief,
section 4): never to an automated sender, a list, a bounce or ourselves, at
most one per customer per ``[ack] window``, threaded to the customer's mail,
carrying ``Auto-Submitted: auto-replied`` and ``X-Auto-Response-Suppress: All``
(``mail.send.queue_message`` adds them for every automatic kind).

Nothing here speaks SMTP: each message is written to the outbox in one
transaction per ticket, together with its promise and event, and
``mail.send.drain_outbox`` sends later. A crash between the two sends nobody
twice: a ticket is acknowledged in the same transaction as its outbox row.

Public API (plain values, explicit ``now``):

- :func:`ack_settings` -- the ``[ack]``, ``[hours]``, ``[tiers]``, ``[pending]``
  config as one typed value; one ConfigError line naming the key on a bad value (from
  :mod:`mail.settings`, which needs no database layer).
- :func:`plan_acknowledgements` -- who would be acknowledged, with which
  deadline, and who is skipped by which rule (read-only).
- :func:`send_acknowledgements` -- queue them (the batch, after review).
- :func:`render_ack`, :func:`ack_tone_warnings` -- the message and its tone check.
- :func:`send_update` -- one short "I need until <new deadline> because ..." for an at-risk promise.
- :func:`housekeeping` -- after each sync: settle handled promises, check in
  with / auto-close tickets waiting on the customer, auto-acknowledge new
  tickets when ``[ack] auto = true``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone

from mail.autoreply import OWN_ADDRESS, OWN_MESSAGE_ID, RATE_WINDOW_REASON, automatic_mail_allowed, is_bounce, is_list_mail
from mail.compose import ComposeError, first_name, require_no_placeholders
from mail.config import Config
from mail.send import queue_message
from mail.settings import (  # the settings, validated; here too for the callers that import them from mail.ack
    _PLACEHOLDER,
    DEFAULT_TEMPLATE,
    TEMPLATE_PLACEHOLDERS,
    AckSettings,
    ack_settings,
    at_risk_margin,
    at_risk_window,
    business_hours,
    check_template,
)
from mail.threads import FREEMAIL_DOMAINS
from mail.tone import ToneWarning, check_tone
from mail.untrusted import safe_line
from storage import ledger
from storage.db import Store
from storage.deadlines import (
    WEEKDAYS,
    BusinessHours,
    HandlingModel,
    Jumpers,
    PROMISE_HORIZON_DAYS,
    answered_within,
    beyond_horizon,
    format_deadline,
    format_deadline_short,
    Ahead,
    jumper_rates,
    parse_duration,
    slotted_deadline,
    surge_jumpers,
    tier_for,
)
from storage.lifecycle import Change, Status
from storage.promises import pending_action, pending_close_at
from storage.tickets import (append_event, change_status_in, iso, queue_ids, ticket_row, tickets_with_event,
                             work_order_key)

__all__ = [
    "AckSettings",
    "AckCandidate",
    "Skipped",
    "AckPlan",
    "AckResult",
    "UpdateResult",
    "HousekeepingSummary",
    "AckError",
    "DEFAULT_TEMPLATE",
    "TEMPLATE_PLACEHOLDERS",
    "ack_settings",
    "plan_acknowledgements",
    "send_acknowledgements",
    "render_ack",
    "ack_tone_warnings",
    "check_template",
    "send_update",
    "update_body",
    "parse_when",
    "pending_action",
    "housekeeping",
    "auto_acknowledge",
]


class AckError(ValueError):
    """A refused acknowledgement or update: one line saying what to do."""


# -- the message ------------------------------------------------------------------------------

UPDATE_TEMPLATE = """\
{greeting}

I promised you an answer about "{subject}" by {old_deadline}. I need until {deadline}, because {reason}.

If anything has changed on your side in the meantime, just reply to this email.

{signature}
"""

CHECKIN_TEMPLATE = """\
{greeting}

I wanted to check in on "{subject}": did my last message sort it out for you, or is there anything still open? Just reply to this email and I will pick it up.

If I don't hear back by {close_day}, I will close this request; a reply at any time opens it again.

{signature}
"""

_SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fwd?|aw|wg|sv|tr|antw|vs)\s*(?:\[\d+\])?\s*:\s*)+", re.I)
_SUBJECT_TAG = re.compile(r"\s*\[#\d+\]\s*")
MAX_SUBJECT = 120


def their_subject(subject: str) -> str:
    """The subject as the customer wrote it: no Re:/Fwd: chains, no [#N] tag, one line, no control characters."""
    s = " ".join(safe_line(subject or "").split())
    s = _SUBJECT_PREFIX.sub("", s)
    s = _SUBJECT_TAG.sub(" ", s).strip()
    if len(s) > MAX_SUBJECT:
        s = s[: MAX_SUBJECT - 1].rstrip() + "…"
    return s or "your request"


def _fill(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


# With [ack] auto, each housekeeping run acknowledges the tickets whose mail came in this long ago at most
# (a weekend: Friday evening's mail synced on Monday morning still counts) and had no acknowledgement and
# no reply yet. Older mail -- a mailbox's history on its first sync, say -- is left to the review (`a`).
# A ticket skipped because its reply was expected soon is acknowledged once that has lapsed.
AUTO_HORIZON = timedelta(days=3)


def _agent_name(cfg: Config) -> str:
    return cfg.agent_name or cfg.agent


def _signature(cfg: Config) -> str:
    return (cfg.signature or "").strip("\n") if (cfg.signature or "").strip() else _agent_name(cfg)


# -- candidates ------------------------------------------------------------------------------
@dataclass
class AckCandidate:
    """One waiting customer the batch would acknowledge."""

    ticket_id: int
    customer: str  # address
    customer_name: str
    subject: str  # in their words
    deadline: datetime  # aware, in [hours] timezone
    offset_minutes: int | None  # the customer's UTC offset (their last mail's Date header)
    position: int  # place in the work order among waiting tickets, 0 = next
    tier: str | None = None
    include: bool = True  # the agent can leave it out
    deadline_edited: bool = False
    offset_seen_at: datetime | None = None  # when their mail showed that offset (DST may change it since)

    @property
    def first_name(self) -> str:
        return first_name(self.customer_name, self.customer)


@dataclass(frozen=True)
class Skipped:
    """A waiting ticket the batch will not acknowledge, and the rule that stopped it."""

    ticket_id: int
    customer: str
    subject: str
    rule: str


@dataclass
class AckPlan:
    candidates: list[AckCandidate]
    skipped: list[Skipped]
    handling: HandlingModel
    now: datetime

    @property
    def included(self) -> list[AckCandidate]:
        return [c for c in self.candidates if c.include]


def deadline_words(deadline: datetime, offset_minutes: int | None, settings: AckSettings,
                   seen_at: datetime | None = None) -> str:
    """The deadline as the customer reads it: their clock when known (``offset_minutes`` as their mail
    of ``seen_at`` showed it, moved across a DST change since), else ours with the zone named."""
    return format_deadline(deadline, customer_offset_minutes=offset_minutes, agent_tz=settings.hours.tz,
                           customer_offset_seen_at=seen_at)


def render_ack(c: AckCandidate, cfg: Config, settings: AckSettings, template: str | None = None) -> str:
    """The acknowledgement body for one candidate (``template`` defaults to the configured one)."""
    agent = _agent_name(cfg)
    first = c.first_name
    values = {
        "greeting": f"Hi {first}," if first else "Hello,",
        "customer_first_name": first,
        "subject": c.subject,
        "deadline": deadline_words(c.deadline, c.offset_minutes, settings, c.offset_seen_at),
        "agent_name": agent,
        "agent_first_name": first_name(agent) or agent,
        "signature": _signature(cfg),
        "ticket_id": str(c.ticket_id),
    }
    return _fill(template if template is not None else settings.template, values)


def ack_tone_warnings(body: str, *, now: datetime) -> list[ToneWarning]:
    """The composer's tone checks, for a message that starts the conversation from our side."""
    return check_tone(body, thread_texts_ours=[], customer_texts=[], saved_replies_used_in_thread=[],
                      saved_reply_used=None, channel="email", now=now)


def handling_model(conn, settings: AckSettings, *, now: datetime) -> HandlingModel:
    """Configured ``[ack] handling_time``, or learned from recent take-to-solve times once there are enough."""
    spans = ledger.take_to_solve_spans(conn, since=now - timedelta(days=60))
    durations = [settings.hours.business_time_between(a, b) for a, b in spans]
    durations = [d for d in durations if d > timedelta(0)]
    return HandlingModel.from_history(durations, settings.handling_time, settings.min_history)


def _automated_rule(reason: str) -> str:
    if is_bounce(reason):
        return f"bounce ({reason})"
    if is_list_mail(reason):
        return f"mailing list ({reason})"
    if reason in (OWN_ADDRESS, OWN_MESSAGE_ID):
        return f"our own address ({reason})"
    return f"automated sender ({reason})"


def window_rule(last: datetime, settings: AckSettings) -> str:
    # The time first: the review's rule column is narrow on an 80-column terminal.
    return (f"had automatic mail {format_deadline_short(last, settings.hours.tz)} ([ack] window = "
            f"{_span(settings.window)}: {RATE_WINDOW_REASON})")


# The mail-loop guard: an auto-responder that answers from a new address each time (agent1@, agent2@ ... at
# one domain) is a new customer each time, so the per-customer window never stops it. Mail from another
# address at a domain that had automatic mail from us, written within LOOP_GAP after it, gets none.
LOOP_GAP = timedelta(minutes=30)
LOOP_SKEW = timedelta(minutes=2)  # the other server's clock may be a little behind ours
LOOP_GUARD_REASON = "mail loop guard"


def attach_domain_mail(conn, rows: list[dict]) -> None:
    """Give each waiting row ``domain_mail``: the automatic mail its customer's domain had around the time
    the ticket's mail was written (what :func:`loop_guard_rule` reads). In the caller's transaction."""
    written = [r["created_at"] for r in rows if r.get("created_at") is not None]
    if not written:
        return
    by_domain = ledger.automatic_mail_to_domains(conn, since=min(written) - LOOP_GAP)
    for r in rows:
        r["domain_mail"] = by_domain.get((r.get("customer") or "").rpartition("@")[2].lower(), [])


def loop_guard_rule(row: dict, settings: AckSettings) -> str | None:
    """Why this ticket looks like an auto-responder's answer to our automatic mail to a colleague's address, or
    None. Pure: reads ``domain_mail`` (see :func:`attach_domain_mail`), ``customer`` and ``created_at``."""
    address = (row.get("customer") or "").lower()
    domain = address.rpartition("@")[2]
    written = row.get("created_at")
    if not domain or domain in FREEMAIL_DOMAINS or written is None:
        return None
    near = [at for addr, at in row.get("domain_mail") or () if addr != address and at is not None
            and at - LOOP_SKEW <= written <= at + LOOP_GAP]
    if not near:
        return None
    at = max(near)
    minutes = max(int((written - at).total_seconds() // 60), 0)
    return (f"{domain} had automatic mail {format_deadline_short(at, settings.hours.tz)}, this came "
            f"{minutes} min later from another address ({LOOP_GUARD_REASON}: answer it yourself if a person wrote)")


def skip_rule(row: dict, cfg: Config, settings: AckSettings, *, now: datetime) -> str | None:
    """Why this waiting ticket gets no automatic mail now, or None. Pure."""
    if row.get("automated_reason"):
        return _automated_rule(row["automated_reason"])
    address = (row.get("customer") or "").lower()
    if "@" not in address:
        return "no sender address to answer"
    if address in {a.lower() for a in cfg.own_addresses}:
        return f"our own address ({OWN_ADDRESS})"
    last = row.get("last_automatic_at")
    if not automatic_mail_allowed(last, now, settings.window):
        return window_rule(last, settings)
    return loop_guard_rule(row, settings)


def quick_reply_rule(settings: AckSettings) -> str:
    """The skip rule for a ticket the work order will likely answer within ``[ack] minimum`` of its mail."""
    within = "an hour" if settings.minimum == timedelta(hours=1) else _span(settings.minimum)
    return f"likely answered within {within} of their mail anyway (near the front of the queue)"


def too_old_rule(created_at: datetime, settings: AckSettings) -> str:
    """The skip rule for mail older than ``[ack] max_age``: an acknowledgement would come too late."""
    return (f"mail of {format_deadline_short(created_at, settings.hours.tz)} is over [ack] max_age = "
            f"{_span(settings.max_age)} old: answer it yourself")


def horizon_rule(position: int) -> str:
    """The skip rule for a ticket so far down the queue that no honest deadline is worth promising."""
    return (f"no honest deadline within {PROMISE_HORIZON_DAYS} business days ({position:,} tickets ahead): "
            "answer it yourself or triage the queue")


def quick_reply_window(created_at: datetime | None, settings: AckSettings, *, now: datetime) -> timedelta:
    """How much of ``[ack] minimum`` is left since the customer's mail (the quick-reply skip's horizon)."""
    if created_at is None:
        return settings.minimum
    return settings.minimum - max(now - created_at, timedelta(0))


class _WorkOrder:
    """The tickets waiting for an agent, in work order, as a plan sees them: read whole (their places in
    the work order, the rate of queue-jumpers) only once a ticket is to be promised, since a plan whose
    tickets are all skipped by a rule needs none of it."""

    def __init__(self, store: Store, settings: AckSettings, *, now: datetime) -> None:
        self.store, self.settings, self.now = store, settings, now
        self.margin = settings.risk_window(now)
        self.ids: list[int] = []
        self.promised: dict[int, datetime] = {}  # promises made in this plan
        self._ahead: list[Ahead] = []  # Ahead of ids[:len(_ahead)]
        self._rows: dict[int, dict] | None = None
        self._jumpers: Jumpers | None = None
        self.memo: dict = {}  # waits computed once for the whole plan

    def __len__(self) -> int:
        return len(self.ids)

    def jumpers(self) -> Jumpers:
        if self._jumpers is None:
            since, hours = self.now - timedelta(days=14), self.settings.hours
            with self.store.read() as s:
                conn = s.connection()
                rates = jumper_rates(ledger.tier_arrivals(conn, since=since), now=self.now, hours=hours)
                self._jumpers = surge_jumpers(rates, ledger.arrivals(conn, since=since), now=self.now, hours=hours)
        return self._jumpers

    def key(self, tid: int, deadline: datetime | None = None) -> tuple:
        row = self._rows.get(tid, {"id": tid}) if self._rows is not None else {"id": tid}
        deadline = deadline or self.promised.get(tid)
        return work_order_key(row if deadline is None else {**row, "promise_deadline": deadline},
                              now=self.now, at_risk_margin=self.margin)

    def ahead(self) -> list[Ahead]:
        """Every ticket in the order so far, as :func:`slotted_deadline` takes them."""
        if self._rows is None:
            with self.store.read() as s:
                self._rows = ledger.work_order_rows(s.connection())
        jumpers = self.jumpers()
        for tid in self.ids[len(self._ahead):]:
            row = self._rows.get(tid, {})
            self._ahead.append(Ahead(self.key(tid), self.promised.get(tid) or row.get("promise_deadline"),
                                     0.0 if row.get("tier") else jumpers))
        return self._ahead

    def append(self, tid: int) -> None:
        self.ids.append(tid)

    def insert(self, place: int, tid: int, deadline: datetime) -> None:
        """A promise made: the ticket takes its place (after :meth:`ahead`, which it was slotted into)."""
        self.promised[tid] = deadline
        self.ids.insert(place, tid)
        tier = (self._rows or {}).get(tid, {}).get("tier")
        self._ahead.insert(place, Ahead(self.key(tid), deadline, 0.0 if tier else self.jumpers()))


def plan_acknowledgements(store: Store, cfg: Config, *, now: datetime, settings: AckSettings | None = None,
                          ticket_ids: list[int] | None = None) -> AckPlan:
    """Every waiting ticket whose customer had no acknowledgement and no reply yet: the deadline each
    would be promised, and the tickets skipped with the rule that stopped them. Reads only."""
    settings = settings or ack_settings(cfg, now=now)
    wanted = set(ticket_ids) if ticket_ids is not None else None
    with store.read() as s:
        conn = s.connection()
        order = queue_ids(conn, view="open", now=now, at_risk_margin=settings.risk_window(now))
        waits = ledger.queue_flags(conn)  # every ticket ahead counts, the ones asked about are read whole
        rows = {r["id"]: r for r in ledger.waiting_rows(conn, wanted)}
        attach_domain_mail(conn, list(rows.values()))
        model = handling_model(conn, settings, now=now)
        in_progress = [max(settings.hours.business_time_between(t, now), timedelta(0))
                       for t in ledger.in_progress_since(conn)]
    candidates: list[AckCandidate] = []
    skipped: list[Skipped] = []
    seen_customers: dict[int, int] = {}
    queue = _WorkOrder(store, settings, now=now)
    for tid in order:
        counts = bool(waits.get(tid))
        r = rows.get(tid)
        promised = None
        if r is not None and r["acknowledged_at"] is None and r["last_reply_at"] is None:
            promised = _plan_one(tid, r, queue, candidates, skipped, seen_customers, cfg, settings,
                                 now=now, model=model, in_progress=in_progress)
        if counts:
            if promised is None:
                queue.append(tid)
            else:  # the promise is a place in the work order: later tickets wait behind it
                queue.insert(promised[1], tid, promised[0])
    return AckPlan(candidates=candidates, skipped=skipped, handling=model, now=now)


def _plan_one(tid, r, queue: _WorkOrder, candidates, skipped, seen_customers, cfg, settings, *, now, model,
              in_progress) -> tuple[datetime, int] | None:
    """One waiting ticket of :func:`plan_acknowledgements`: a candidate with its deadline (returned with
    the place it takes in the work order), or skipped with its rule (None)."""
    here = len(queue)
    subject = their_subject(r["last_subject"] or r["subject"])
    rule = skip_rule(r, cfg, settings, now=now)
    if rule is None and r["holder"]:
        rule = f"held by {r['holder']}: being worked on now"
    if rule is None and r["created_at"] is not None and now - r["created_at"] > settings.max_age:
        rule = too_old_rule(r["created_at"], settings)
    if rule is None and r["customer_id"] in seen_customers:
        rule = f"one mail per customer: #{seen_customers[r['customer_id']]} in this batch"
    if rule is not None:
        skipped.append(Skipped(tid, r["customer"], subject, rule))
        return None
    spec = settings.tiers.get(r["tier"]) if r["tier"] else None
    spec = spec or (tier_for(r["customer"], settings.tiers) if settings.tiers else None)
    if beyond_horizon(position=here, agents=settings.agents, handling=model, hours=settings.hours,
                      in_progress=in_progress):
        skipped.append(Skipped(tid, r["customer"], subject, horizon_rule(here)))
        return None
    work = dict(agents=settings.agents, handling=model, hours=settings.hours,
                jumpers_per_hour=0.0 if spec else queue.jumpers(), in_progress=in_progress)
    within = quick_reply_window(r["created_at"], settings, now=now)
    if within > timedelta(0) and answered_within(now=now, within=within, position=here, **work):
        skipped.append(Skipped(tid, r["customer"], subject, quick_reply_rule(settings)))
        return None
    seen_customers[r["customer_id"]] = tid
    deadline, landed = slotted_deadline(now=now, ahead=queue.ahead(), key_for=lambda d: queue.key(tid, d),
                                        minimum=settings.minimum, memo=queue.memo,
                                        tier_max=spec.max_response if spec else None, **work)
    if settings.hours.business_time_between(now, deadline) > PROMISE_HORIZON_DAYS * settings.hours.day_length:
        skipped.append(Skipped(tid, r["customer"], subject, horizon_rule(here)))  # the queue-jumpers did it
        return None
    candidates.append(AckCandidate(
        ticket_id=tid, customer=r["customer"], customer_name=r["customer_name"] or "", subject=subject,
        deadline=deadline, offset_minutes=r["date_offset_minutes"], position=landed,
        tier=spec.name if spec else None, offset_seen_at=r.get("date_offset_seen_at"),
    ))
    return deadline, landed


# -- sending the batch --------------------------------------------------------------------------
@dataclass
class AckResult:
    queued: list[tuple[int, int]] = field(default_factory=list)  # (ticket id, outbox id)
    skipped: list[Skipped] = field(default_factory=list)  # changed since the review

    @property
    def outbox_ids(self) -> list[int]:
        return [oid for _, oid in self.queued]


def ack_event_reason(agent: str, deadline: datetime, settings: AckSettings) -> str:
    return f"acknowledged by {agent}; promised by {format_deadline_short(deadline, settings.hours.tz)}"


def send_acknowledgements(
    store: Store,
    cfg: Config,
    candidates: list[AckCandidate],
    *,
    now: datetime,
    agent: str | None = None,
    settings: AckSettings | None = None,
    template: str | None = None,
) -> AckResult:
    """Queue one acknowledgement per included candidate, each in its own transaction.

    Each transaction re-checks the ticket (still waiting, still unacknowledged,
    no reply, the customer outside the window), then writes the outbox row,
    the promise, the ticket's acknowledged_at / promise_deadline, the
    customer's last_automatic_at and the event, together. Nothing is sent:
    ``drain_outbox`` does that.
    """
    settings = settings or ack_settings(cfg, now=now)
    agent = agent or cfg.agent
    if template is not None:
        check_template(template, key="the message")
    result = AckResult()
    for c in candidates:
        if not c.include:
            continue
        body = render_ack(c, cfg, settings, template)
        try:
            require_no_placeholders(body)
        except ComposeError as exc:
            raise AckError(str(exc)) from None
        if c.deadline <= now:
            raise AckError(f"#{c.ticket_id}: the deadline {format_deadline_short(c.deadline, settings.hours.tz)} "
                           "is already past: pick a later one")
        with store.write_conn() as conn:
            rows = ledger.waiting_rows(conn, [c.ticket_id])
            attach_domain_mail(conn, rows)  # with the acknowledgements this batch has queued so far
            row = rows[0] if rows else None
            rule = None
            if row is None:
                rule = "no longer waiting (solved, closed or parked meanwhile)"
            elif row["acknowledged_at"] is not None or row["last_reply_at"] is not None:
                rule = "already acknowledged or answered meanwhile"
            else:
                rule = skip_rule(row, cfg, settings, now=now)
            if rule is not None:
                result.skipped.append(Skipped(c.ticket_id, c.customer, c.subject, rule))
                continue
            q = queue_message(store, cfg, c.ticket_id, body, kind="ack", agent=agent, now=now, conn=conn)
            ledger.record_promise(
                conn, c.ticket_id, agent=agent, deadline=c.deadline.astimezone(timezone.utc), outbox_id=q.outbox_id,
                now=now,
                event=Change("ack", None, iso(c.deadline.astimezone(timezone.utc)),
                             ack_event_reason(agent, c.deadline, settings), agent, now),
            )
        result.queued.append((c.ticket_id, q.outbox_id))
    return result


def auto_acknowledge(store: Store, cfg: Config, ticket_ids: list[int], *, now: datetime,
                     settings: AckSettings | None = None) -> AckResult:
    """``[ack] auto = true``: acknowledge these new tickets without review (nothing when off)."""
    settings = settings or ack_settings(cfg, now=now)
    if not settings.auto or not ticket_ids:
        return AckResult()
    plan = plan_acknowledgements(store, cfg, now=now, settings=settings, ticket_ids=ticket_ids)
    result = send_acknowledgements(store, cfg, plan.candidates, now=now, settings=settings)
    result.skipped[:0] = plan.skipped  # the plan's rules, then what changed while it was made
    return result


# -- updating an at-risk promise -----------------------------------------------------------------
_WEEKDAY_WORD = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun)[a-z]*\.?(?:\s+(\d{1,2}):(\d{2}))?$", re.I)
_DAY_WORD = re.compile(r"^(today|tomorrow)(?:\s+(\d{1,2}):(\d{2}))?$", re.I)


def parse_when(text: str, *, now: datetime, hours: BusinessHours) -> datetime:
    """A new deadline as the agent types it, in the business time zone.

    "2026-11-26 14:00" (or with a T), "2026-11-26" (closing time that day),
    "thu" / "thursday 14:00" (the next such day, closing time unless given),
    "today 16:00", "tomorrow" / "tomorrow 10:00" (closing time unless given),
    or business time from now: "4h", "2d", "1d 4h". A day and time when the desk is closed (a weekend,
    a holiday, after hours) is refused with the next time that would do: a promise is kept at the desk.
    """
    s = " ".join((text or "").split())
    if not s:
        raise AckError("say when: e.g. \"thu 14:00\", \"2026-11-26 14:00\" or \"1d\"")
    local_now = now.astimezone(hours.tz)
    m = _DAY_WORD.match(s)
    if m:
        day = local_now.date() + timedelta(days=1 if m.group(1).lower() == "tomorrow" else 0)
        return _at_the_desk(day, _clock(m.group(2), m.group(3), text, hours), hours)
    m = _WEEKDAY_WORD.match(s)
    if m:
        target = WEEKDAYS.index(m.group(1).lower())
        ahead = (target - local_now.weekday()) % 7 or 7
        day = local_now.date() + timedelta(days=ahead)
        return _at_the_desk(day, _clock(m.group(2), m.group(3), text, hours), hours)
    m = re.fullmatch(r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{1,2}):(\d{2}))?", s)
    if m:
        try:
            day = date.fromisoformat(m.group(1))
        except ValueError:
            raise AckError(f"{text!r} is not a date: write e.g. 2026-11-26 14:00") from None
        return _at_the_desk(day, _clock(m.group(2), m.group(3), text, hours), hours)
    try:
        return hours.add_business_time(now, parse_duration(s, day=hours.day_length))
    except ValueError:
        raise AckError(f"cannot read {text!r} as a deadline: write e.g. \"thu 14:00\", \"tomorrow 10:00\", "
                       "\"2026-11-26 14:00\" or \"1d\" (business time from now)") from None


def _clock(h: str | None, m: str | None, text: str, hours: BusinessHours) -> time:
    if h is None:
        return hours.end
    try:
        return time(int(h), int(m))
    except ValueError:
        raise AckError(f"{text!r}: {h}:{m} is not a time of day: write e.g. 14:00") from None


def _at_the_desk(day: date, at: time, hours: BusinessHours) -> datetime:
    """``day`` at ``at`` as a deadline; refused when the desk is closed then (a promise is kept at the desk)."""
    when = datetime.combine(day, at, hours.tz)
    local = when.astimezone(hours.tz)  # a time skipped by a DST change reads as the hour after
    open_day = hours.is_open_day(day)
    if open_day and (hours.start <= at <= hours.end) and local.replace(tzinfo=None) == when.replace(tzinfo=None):
        return when
    desk = f"{_day_list(hours.days)} {hours.start:%H:%M}-{hours.end:%H:%M}"
    if not open_day:
        why = "a holiday" if day in hours.holidays else "not a business day"
        nxt = hours.next_open(datetime.combine(day, time(0), hours.tz)).date()
        at = at if hours.start <= at <= hours.end else hours.end
        raise AckError(f"{day:%A} {day.day} {day:%B} is {why} ({desk}): promise a time you are at the desk, "
                       f"e.g. {nxt:%a} {nxt.day} {nxt:%b} {at:%H:%M}")
    near = hours.start if at < hours.start else hours.end
    raise AckError(f"{at:%H:%M} on {day:%A} {day.day} {day:%B} is outside business hours ({desk}): promise a time "
                   f"you are at the desk, e.g. {day:%a} {day.day} {day:%b} {near:%H:%M}")


def _day_list(days) -> str:
    """"Mon-Fri", "Mon, Wed, Fri", "Sun-Thu"."""
    names = [WEEKDAYS[d].title() for d in sorted(days)]
    ds = sorted(days)
    if len(ds) > 2 and ds == list(range(ds[0], ds[0] + len(ds))):
        return f"{names[0]}-{names[-1]}"
    return ", ".join(names)


@dataclass
class UpdateResult:
    ticket_id: int
    outbox_id: int
    deadline: datetime
    old_deadline: datetime


def _clean_reason(reason: str) -> str:
    r = " ".join((reason or "").split()).rstrip(".")
    r = re.sub(r"^because\s+", "", r, flags=re.I)
    return r


def update_body(*, cfg: Config, settings: AckSettings, customer_name: str, customer: str, subject: str,
                old_deadline: datetime, deadline: datetime, offset_minutes: int | None, reason: str,
                offset_seen_at: datetime | None = None) -> str:
    first = first_name(customer_name, customer)
    return _fill(UPDATE_TEMPLATE, {
        "greeting": f"Hi {first}," if first else "Hello,",
        "subject": their_subject(subject),
        "old_deadline": deadline_words(old_deadline, offset_minutes, settings, offset_seen_at),
        "deadline": deadline_words(deadline, offset_minutes, settings, offset_seen_at),
        "reason": _clean_reason(reason),
        "signature": _signature(cfg),
    })


def update_refusal(row: dict | None, promise: dict | None, updates: int, *, force: bool, cfg: Config,
                   settings: AckSettings, now: datetime) -> str | None:
    """Why an update cannot go out now, or None. ``force`` overrides only the agent's own limits
    (a second update, a promise not yet at risk), never the mail-loop rules."""
    if row is None:
        return "the ticket is not in the queue (solved, closed or waiting on the customer): nothing to update"
    if promise is None:
        return f"#{row['id']} has no promise yet: acknowledge it first (a in the queue, or `heard ack`)"
    short = format_deadline_short(promise["deadline"], settings.hours.tz)
    if promise["handled_at"] is not None:
        return f"#{row['id']} was already answered after the promise (by {short}): no update needed"
    rule = skip_rule(row, cfg, settings, now=now)
    if rule is not None:
        if not automatic_mail_allowed(row.get("last_automatic_at"), now, settings.window):
            return (f"the customer got automatic mail less than {_span(settings.window)} ago ([ack] window): "
                    "another could feed a mail loop; write them a personal reply instead (r, or `heard reply`)")
        return f"no automatic mail to this customer: {rule}"
    if updates >= 1 and not force:
        return (f"#{row['id']} already had an update (promise now by {short}): a second one needs "
                "--force (or confirming in the app)")
    if promise["state"] == ledger.OPEN and not force:
        return (f"the promise (by {short}) is not at risk yet: updates are for promises about to break; "
                "--force sends one anyway")
    return None


def send_update(
    store: Store,
    cfg: Config,
    ticket_id: int,
    *,
    deadline: datetime,
    reason: str,
    now: datetime,
    agent: str | None = None,
    force: bool = False,
    settings: AckSettings | None = None,
) -> UpdateResult:
    """Queue one short update ("I need until <deadline>, because <reason>") and make it the promise in force."""
    settings = settings or ack_settings(cfg, now=now)
    agent = agent or cfg.agent
    reason_text = _clean_reason(reason)
    if not reason_text:
        raise AckError("an update needs a reason: say why you need more time (it goes to the customer)")
    if deadline.tzinfo is None:
        raise AckError("the new deadline needs a time zone")
    if deadline <= now:
        raise AckError("the new deadline is already past: pick a later one")
    with store.write_conn() as conn:
        rows = ledger.waiting_rows(conn, [ticket_id])
        row = rows[0] if rows else None
        promise = ledger.promise_in_force(conn, ticket_id, now=now, at_risk_margin=settings.risk_window(now))
        updates = ledger.updates_sent(conn, ticket_id)
        problem = update_refusal(row, promise, updates, force=force, cfg=cfg, settings=settings, now=now)
        if row is None and ticket_row(conn, ticket_id) is None:
            problem = f"no ticket #{ticket_id}: `heard tickets --status all` lists them"
        if problem:
            raise AckError(problem)
        if deadline <= promise["deadline"]:
            raise AckError("the new deadline is not later than the promise in force: no update needed")
        body = update_body(cfg=cfg, settings=settings, customer_name=row["customer_name"] or "",
                           customer=row["customer"], subject=row["last_subject"] or row["subject"],
                           old_deadline=promise["deadline"], deadline=deadline,
                           offset_minutes=row["date_offset_minutes"], reason=reason_text,
                           offset_seen_at=row.get("date_offset_seen_at"))
        q = queue_message(store, cfg, ticket_id, body, kind="update", agent=agent, now=now, conn=conn)
        old_short = format_deadline_short(promise["deadline"], settings.hours.tz)
        new_short = format_deadline_short(deadline, settings.hours.tz)
        forced = " (sent with an override)" if force and (updates or promise["state"] == ledger.OPEN) else ""
        ledger.record_promise(
            conn, ticket_id, agent=agent, deadline=deadline.astimezone(timezone.utc), outbox_id=q.outbox_id,
            now=now, update_reason=reason_text,
            event=Change("promise", old_short, new_short,
                         f"update sent by {agent}: needs until {new_short} because {reason_text}{forced}", agent, now),
        )
    return UpdateResult(ticket_id, q.outbox_id, deadline, promise["deadline"])


# -- waiting on the customer: check in once, then close ---------------------------------------------
def business_days(hours: BusinessHours, start: datetime, end: datetime) -> float:
    return hours.business_time_between(start, end) / hours.day_length


# Outbox states of our last reply in which its customer cannot be waited on: it did not (surely) reach them.
UNDELIVERED = ("failed", "unknown", "cancelled")


def close_reason(days: int) -> str:
    return f"no reply from the customer in {days} days"


@dataclass
class HousekeepingSummary:
    settled: list[int] = field(default_factory=list)  # promise handled: no longer shown at risk
    checkins: list[tuple[int, int]] = field(default_factory=list)  # (ticket, outbox id)
    closed: list[int] = field(default_factory=list)
    acknowledged: list[tuple[int, int]] = field(default_factory=list)  # [ack] auto
    skipped: list[Skipped] = field(default_factory=list)
    planned: list[tuple[int, str]] = field(default_factory=list)  # dry run: (ticket, action)

    @property
    def outbox_ids(self) -> list[int]:
        return [oid for _, oid in self.checkins] + [oid for _, oid in self.acknowledged]

    def line(self) -> str:
        parts = [f"{len(self.checkins)} check-ins queued", f"{len(self.closed)} closed after no reply"]
        if self.acknowledged:
            parts.append(f"{len(self.acknowledged)} acknowledged")
        if self.settled:
            parts.append(f"{len(self.settled)} promises settled by a reply")
        return ", ".join(parts)


def _checkin_body(cfg: Config, settings: AckSettings, row: dict, close_at: datetime) -> str:
    first = first_name(row["customer_name"] or "", row["customer"])
    local = close_at.astimezone(settings.hours.tz)
    close_day = f"{local:%A} {local.day} {local:%B}"
    return _fill(CHECKIN_TEMPLATE, {
        "greeting": f"Hi {first}," if first else "Hello,",
        "subject": their_subject(row["subject"]),
        "close_day": close_day,
        "signature": _signature(cfg),
    })


def housekeeping(
    store: Store,
    cfg: Config,
    now: datetime,
    *,
    settings: AckSettings | None = None,
    dry_run: bool = False,
) -> HousekeepingSummary:
    """What runs after each sync (the app's sync worker) and from `heard housekeeping`.

    - promises handled by a human reply stop showing as at risk / broken;
    - tickets waiting on the customer get one polite check-in, then are
      closed with the reason "no reply from the customer in N days" (not while our reply to them is
      failed, unknown or cancelled in the outbox);
    - with ``[ack] auto = true``, the tickets whose mail came in within ``AUTO_HORIZON`` and that had
      no acknowledgement and no reply are acknowledged (the new ones among them): the plan
      skips those whose reply is likely within ``[ack] minimum`` of their mail, and each run looks at
      them again.

    Queues mail only; call ``mail.send.drain_outbox`` when ``outbox_ids`` is non-empty.
    """
    settings = settings or ack_settings(cfg, now=now)
    summary = HousekeepingSummary()
    actor = ledger.HOUSEKEEPING_ACTOR
    if not dry_run:
        with store.write_conn() as conn:
            summary.settled = ledger.settle_replied(conn, now=now)
    with store.read() as s:
        pending = ledger.pending_rows(s.connection())
    for row in pending:
        if row["reply_state"] in UNDELIVERED:
            # Our reply was refused, cancelled, or may not have gone out: the customer is not silent on
            # an answer they never got, so no "checking in" on it and no closing for want of an answer.
            continue
        allowed = skip_rule(row, cfg, settings, now=now) is None
        action = pending_action(
            pending_since=row["pending_since"], checkin_at=row["checkin_at"], now=now, hours=settings.hours,
            close_after_days=settings.close_after_days, checkin_after_days=settings.checkin_after_days,
            checkin_allowed=allowed,
        )
        if action is None:
            continue
        if dry_run:
            summary.planned.append((row["id"], action))
            continue
        with store.write_conn() as conn:
            fresh = {r["id"]: r for r in ledger.pending_rows(conn)}.get(row["id"])
            if fresh is None or any(fresh[k] != row[k] for k in ("pending_since", "checkin_at", "reply_state")):
                continue  # the customer answered, or someone acted, meanwhile
            if action == "close":
                change_status_in(conn, row["id"], Status.CLOSED.value, reason=close_reason(settings.close_after_days),
                                 actor=actor, now=now)
                summary.closed.append(row["id"])
                continue
            close_at = pending_close_at(pending_since=row["pending_since"], checkin_at=now, hours=settings.hours,
                                        close_after_days=settings.close_after_days,
                                        checkin_after_days=settings.checkin_after_days)
            body = _checkin_body(cfg, settings, row, close_at)
            q = queue_message(store, cfg, row["id"], body, kind="checkin", agent=actor, now=now, conn=conn)
            ledger.stamp_automatic_mail(conn, row["id"], now=now)
            waited = int(business_days(settings.hours, row["pending_since"], now))
            append_event(conn, row["id"], Change(
                "checkin", None, f"outbox #{q.outbox_id}",
                f"checked in with the customer after {waited} business days without a reply", actor, now))
            summary.checkins.append((row["id"], q.outbox_id))
    if settings.auto and not dry_run:
        # Every recent ticket not acknowledged yet, the new ones among them: a ticket skipped because its
        # reply was expected within [ack] minimum is acknowledged once that has lapsed without a reply.
        with store.read() as s:
            ids = ledger.unacknowledged_since(s.connection(), since=now - AUTO_HORIZON)
        if ids:
            res = auto_acknowledge(store, cfg, ids, now=now, settings=settings)
            summary.acknowledged = res.queued
            summary.skipped = res.skipped
            _record_window_holds(store, res.skipped, now)
    return summary


WINDOW_HELD = "ack_held"  # the event kind: [ack] auto held a ticket's acknowledgement back (the window)


def _record_window_holds(store: Store, skipped: list[Skipped], now: datetime) -> None:
    """A ticket ``[ack] auto`` does not acknowledge because its customer had automatic mail within
    ``[ack] window`` (what stops an auto-reply loop: a robot answering each mail with a new one) says
    so on its timeline, once: `heard show` tells why that customer got nothing."""
    held = {s.ticket_id: s.rule for s in skipped if RATE_WINDOW_REASON in s.rule or LOOP_GUARD_REASON in s.rule}
    if not held:
        return
    with store.write_conn() as conn:
        done = tickets_with_event(conn, list(held), WINDOW_HELD)
        for tid, rule in sorted(held.items()):
            if tid not in done:
                append_event(conn, tid, Change(WINDOW_HELD, None, None, f"no automatic acknowledgement: {rule}",
                                               ledger.HOUSEKEEPING_ACTOR, now))


# -- words -------------------------------------------------------------------------------------
def _span(d: timedelta) -> str:
    """A duration for people: "24h", "2h 30m", "3d"."""
    minutes = int(d.total_seconds() // 60)
    if minutes and minutes % (24 * 60) == 0 and minutes >= 48 * 60:
        return f"{minutes // (24 * 60)}d"
    h, m = divmod(minutes, 60)
    if h and m:
        return f"{h}h {m}m"
    return f"{h}h" if h else f"{m}m"


def human_delay(d: timedelta | None) -> str:
    """"1 h 20 min", "2 days 3 h" for reports."""
    if d is None:
        return "-"
    minutes = int(round(d.total_seconds() / 60))
    days, rest = divmod(minutes, 24 * 60)
    h, m = divmod(rest, 60)
    parts = []
    if days:
        parts.append(f"{days} day{'s' if days != 1 else ''}")
    if h:
        parts.append(f"{h} h")
    if m and not days:
        parts.append(f"{m} min")
    return " ".join(parts) or "0 min"


span = _span
