"""`heard ack`, `heard update`, `heard report` and `heard housekeeping` (alias `autoclose`)."""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from datetime import date, datetime, timedelta

from mail.ack import (
    AckError,
    ack_settings,
    ack_tone_warnings,
    deadline_words,
    housekeeping,
    human_delay,
    parse_when,
    plan_acknowledgements,
    render_ack,
    send_acknowledgements,
    send_update,
)
from mail.compose import ComposeError
from mail.untrusted import safe_line, safe_text
from storage.db import utcnow
from storage.deadlines import format_deadline_short
from tui.cli import EXTENSIONS, INTERRUPTED_SEND, CliError, command, config_from, err, open_store, out
from tui.words import cut, fit, ticket_number


def _one_line_errors(fn):
    @functools.wraps(fn)
    def wrapper(args):
        try:
            return fn(args)
        except (AckError, ComposeError) as exc:
            raise CliError(str(exc)) from None

    return wrapper


def _drain(store, cfg) -> int:
    from mail.send import drain_outbox

    try:
        res = drain_outbox(store, cfg)
    except KeyboardInterrupt:
        err(f"heard: {INTERRUPTED_SEND}")
        return 130
    for line in res.errors:
        err(f"heard: {safe_line(line)}")
    out(res.line())
    return 1 if res.failed else 0


def _confirm(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


@command("ack")
@_one_line_errors
def cmd_ack(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    store = open_store(cfg)
    now = utcnow()
    settings = ack_settings(cfg, now=now)
    plan = plan_acknowledgements(store, cfg, now=now, settings=settings)
    leave_out = set(args.skip or [])
    for c in plan.candidates:
        if c.ticket_id in leave_out:
            c.include = False
    tz = settings.hours.tz
    for c in plan.candidates:
        mark = "" if c.include else "   (left out: --skip)"
        tier = f" [{c.tier}]" if c.tier else ""
        out(f"#{c.ticket_id:<6} {fit(safe_line(c.customer), 36)} by {deadline_words(c.deadline, c.offset_minutes, settings, c.offset_seen_at)}"
            f"{tier}  {cut(safe_line(c.subject), 50)}{mark}")
    for s in plan.skipped:
        out(f"#{s.ticket_id:<6} {fit(safe_line(s.customer), 36)} skipped: {safe_line(s.rule)}")
    included = plan.included
    if plan.candidates:
        sample = render_ack(plan.candidates[0], cfg, settings)
        for w in ack_tone_warnings(sample, now=now):
            err(f"tone: {w.code}: \"{safe_line(w.found)}\": {w.why}")
    out(f"{len(included)} to acknowledge, {len(plan.skipped)} skipped"
        + (f", {len(plan.candidates) - len(included)} left out" if len(included) != len(plan.candidates) else ""))
    if args.dry_run:
        if args.show and plan.candidates:
            out()
            out(safe_line(f"To: {plan.candidates[0].customer}"))
            out(safe_text(sample.rstrip()))  # it quotes the customer's subject and name
        return 0
    if included and not args.yes:
        if not sys.stdin.isatty():
            raise CliError("pass --yes to send without asking (or --dry-run to only look)")
        if not _confirm(f"Send {len(included)} acknowledgement{'s' if len(included) != 1 else ''}?"):
            out("nothing sent")
            return 0
    res = send_acknowledgements(store, cfg, plan.candidates, now=now, settings=settings)
    for s in res.skipped:
        out(f"#{s.ticket_id:<6} not sent: {safe_line(s.rule)}")
    if res.queued:
        out(f"queued {len(res.queued)} acknowledgement{'s' if len(res.queued) != 1 else ''}")
        for tid, oid in res.queued:
            c = next(c for c in plan.candidates if c.ticket_id == tid)
            out(f"#{tid}: outbox #{oid}, promised by {format_deadline_short(c.deadline, tz)}")
    if args.no_send:
        return 0
    # Also what an earlier, interrupted run left queued: each row is claimed once, never sent twice.
    return _drain(store, cfg)


@command("update")
@_one_line_errors
def cmd_update(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    store = open_store(cfg)
    now = utcnow()
    settings = ack_settings(cfg, now=now)
    deadline = parse_when(args.until, now=now, hours=settings.hours)
    res = send_update(store, cfg, args.id, deadline=deadline, reason=args.reason, now=now, force=args.force,
                      settings=settings)
    tz = settings.hours.tz
    out(f"#{args.id}: update queued as outbox #{res.outbox_id}: promised by {format_deadline_short(res.deadline, tz)} "
        f"(was {format_deadline_short(res.old_deadline, tz)})")
    if args.no_send:
        return 0
    return _drain(store, cfg)


def _day(text: str, what: str, today: date | None = None) -> date:
    """YYYY-MM-DD, ``today``, ``yesterday``, or days/weeks back: ``7d``, ``2w``."""
    word = text.strip().lower()
    if today is not None:
        if word == "today":
            return today
        if word == "yesterday":
            return today - timedelta(days=1)
        m = re.fullmatch(r"(\d{1,4})\s*([dw])", word)
        if m:
            return today - timedelta(days=int(m.group(1)) * (7 if m.group(2) == "w" else 1))
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"{what} {text!r} is not a date: write YYYY-MM-DD, today, yesterday, "
                       "or how far back (7d, 2w)") from None


@command("report")
@_one_line_errors
def cmd_report(args: argparse.Namespace) -> int:
    from storage.ledger import ledger_report

    cfg = config_from(args)
    store = open_store(cfg)
    now = utcnow()
    settings = ack_settings(cfg, now=now)
    tz = settings.hours.tz
    today = now.astimezone(tz).date()
    since = datetime.combine(_day(args.since, "--since", today), datetime.min.time(), tz) if args.since else None
    until = (datetime.combine(_day(args.until, "--until", today) + timedelta(days=1), datetime.min.time(), tz)
             if args.until else None)
    if since and until and until <= since:
        raise CliError("--until is before --since")
    with store.read() as s:
        rep = ledger_report(s.connection(), now=now, since=since, until=until,
                            at_risk_margin=settings.risk_window(now))
    if args.json:
        out(json.dumps(rep.as_dict()))
        return 0
    last_day = (until - timedelta(days=1)).date().isoformat() if until else None
    if since:
        period = f"from {since.date().isoformat()} to {last_day or 'now'}"
    else:
        period = f"until {last_day}" if last_day else "so far"
    out(f"promises made {period}: {rep.made}")
    out(f"  kept     {rep.kept}")
    out(f"  broken   {rep.broken}" + (f"  (median {human_delay(rep.median_broken_delay)} late)" if rep.broken else ""))
    out(f"  at risk  {rep.at_risk}")
    out(f"  open     {rep.open}")
    out(f"  updated  {rep.updated}  (replaced by a new deadline before they were due)")
    return 0


@command("housekeeping")
@_one_line_errors
def cmd_housekeeping(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    store = open_store(cfg)
    now = utcnow()
    summary = housekeeping(store, cfg, now, dry_run=args.dry_run)
    if args.dry_run:
        for tid, action in summary.planned:
            out(f"#{tid}: would {'check in with the customer' if action == 'checkin' else 'close (no reply)'}")
        if not summary.planned:
            out("nothing to do")
        return 0
    for tid, oid in summary.checkins:
        out(f"#{tid}: check-in queued as outbox #{oid}")
    for tid in summary.closed:
        out(f"#{tid}: closed, no reply from the customer")
    out(summary.line())
    if summary.outbox_ids and not args.no_send:
        return _drain(store, cfg)
    return 0




@command("autoclose")
def cmd_autoclose(args: argparse.Namespace) -> int:
    return cmd_housekeeping(args)


def _add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("ack", help="acknowledge every waiting customer: a personal mail with an honest deadline")
    s.add_argument("--dry-run", action="store_true",
                   help="print each recipient, the deadline, and the rule for every skipped ticket; send nothing")
    s.add_argument("--show", action="store_true", help="with --dry-run: also print the first message in full")
    s.add_argument("--yes", "-y", action="store_true", help="send without asking")
    s.add_argument("--skip", type=ticket_number, action="append", metavar="ID", help="leave this ticket out (repeatable)")
    s.add_argument("--no-send", action="store_true", help="only queue; a running app or `heard outbox send` sends")

    s = sub.add_parser("update", help="tell the customer of an at-risk ticket you need until a new deadline, and why")
    s.add_argument("id", type=ticket_number, metavar="ID")
    s.add_argument("--until", required=True, help='"thu 14:00", "2026-11-26 14:00", "2026-11-26" or "1d" (business time)')
    s.add_argument("--reason", required=True, help="why you need more time; it goes to the customer (\"because ...\")")
    s.add_argument("--force", action="store_true", help="send a second update, or one for a promise not yet at risk")
    s.add_argument("--no-send", action="store_true", help="only queue it")

    s = sub.add_parser("report", help="promises made, kept and broken, and how late the broken ones were")
    s.add_argument("--since", metavar="DATE",
                   help="first day (YYYY-MM-DD, today, yesterday, or back: 7d, 2w; business time zone)")
    s.add_argument("--until", metavar="DATE", help="last day, included")
    s.add_argument("--json", action="store_true")

    for name, help_text in (("housekeeping", "check in with, then close, tickets waiting on the customer; settle "
                                             "promises answered by a reply"),
                            ("autoclose", "the same as housekeeping")):
        s = sub.add_parser(name, help=help_text)
        s.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
        s.add_argument("--no-send", action="store_true", help="only queue the check-ins")


EXTENSIONS.append(_add_parsers)
