"""`heard reply`, `heard outbox` and `heard saved-replies`: sending from scripts and the shell."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from datetime import timezone

from mail.compose import ComposeError, complete_body, reply_context, require_no_placeholders, tone_warnings
from mail.config import desk_timezone
from storage.db import utcnow
from storage.lifecycle import ALLOWED, STATUS_LABELS, Status, parse_status
from storage.outbox import OPEN_STATES, OutboxError
from storage.tickets import REPLY_REASON
from tui.cli import EXTENSIONS, INTERRUPTED_SEND, CliError, command, config_from, err, open_store, out
from tui.words import ticket_number
from mail.untrusted import safe_line



def _one_line_errors(fn):
    """Compose and outbox refusals end as one `heard: ...` line, like every other CLI error."""

    @functools.wraps(fn)
    def wrapper(args):
        try:
            return fn(args)
        except (ComposeError, OutboxError) as exc:
            raise CliError(str(exc)) from None

    return wrapper


def _read_body(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise CliError(f"no file {path!r}: give --body-file a path, or - for stdin") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text: save it as UTF-8") from None
    except OSError as exc:
        raise CliError(f"cannot read {path} ({exc.strerror})") from None


def _drain_and_report(store, cfg) -> int:
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


@command("reply")
@_one_line_errors
def cmd_reply(args: argparse.Namespace) -> int:
    from mail.send import queue_reply
    from mail.templates import render_saved_reply, template_values
    from storage.tickets import saved_replies

    cfg = config_from(args)
    store = open_store(cfg)
    body = _read_body(args.body_file)
    now = utcnow()
    with store.read() as s:
        conn = s.connection()
        ctx = reply_context(conn, args.id)
        saved = {r["name"]: r["body"] for r in saved_replies(conn)}
    if args.saved:
        if args.saved not in saved:
            raise CliError(f"no saved reply {args.saved!r}: `heard saved-replies` lists them")
        filled = render_saved_reply(saved[args.saved], template_values(ctx, agent_name=cfg.agent_name,
                                                                       support_address=cfg.address))
        body = f"{body.rstrip()}\n\n{filled}" if body.strip() else filled
    if not args.as_is:
        body = complete_body(body, ctx, agent_name=cfg.agent_name, signature=cfg.signature)
    require_no_placeholders(body)
    if args.status:
        if not (args.reason or "").strip():
            raise CliError("--status needs --reason: say why, so the next person knows")
        target, reason = args.status, args.reason
    else:
        current = Status(ctx.status)
        target = Status.PENDING.value if Status.PENDING in ALLOWED[current] else None
        reason = args.reason or REPLY_REASON
    if target:
        parse_status(target)  # a wrong name fails before anything is printed or queued
    for w in tone_warnings(ctx, body, now=now, saved_reply=args.saved):
        err(f"tone: {w.code}: \"{safe_line(w.found)}\": {w.why}")
    oid = queue_reply(store, cfg, args.id, body, agent=cfg.agent, now=now, next_status=target, reason=reason,
                      saved_reply=args.saved)
    moved = f", ticket now {STATUS_LABELS[parse_status(target)]}" if target and parse_status(target) != ctx.status else ""
    out(f"queued reply to #{args.id} as outbox #{oid}{moved}")
    if args.no_send:
        return 0
    return _drain_and_report(store, cfg)


def _outbox_line(r: dict, tz) -> str:
    """One outbox row; times on the desk's clock (stored in UTC)."""
    def local(at):
        return (at if at.tzinfo else at.replace(tzinfo=timezone.utc)).astimezone(tz)

    when = local(r["sent_at"] or r["created_at"])
    nxt = (f" next try {local(r['next_attempt_at']):%Y-%m-%d %H:%M}"
           if r["next_attempt_at"] and r["state"] == "queued" else "")
    line = (f"{r['id']:<5} #{r['ticket_id']:<6} {r['kind']:<7} {r['state']:<9} {r['attempts']:>2} tries  "
            f"{when:%Y-%m-%d %H:%M}  {safe_line(r['recipients'])}{nxt}")
    if r["last_error"]:
        line += f"\n      {safe_line(r['last_error'])}"
    if r["refused"] and r["refused"] not in (r["last_error"] or ""):
        line += f"\n      refused: {safe_line(r['refused'])}"
    return line


def _outbox_json(r: dict) -> dict:
    from storage.tickets import iso

    return {k: (iso(v) if hasattr(v, "isoformat") else v) for k, v in r.items()}


@command("outbox")
@_one_line_errors
def cmd_outbox(args: argparse.Namespace) -> int:
    from mail.send import recover_interrupted_sends
    from storage import outbox as ob

    cfg = config_from(args)
    store = open_store(cfg)
    action = args.outbox_action or "list"
    now = utcnow()
    if action not in ("send", "drain"):  # the drain does it itself
        # A send whose process died (kill -9, a crash) is unknown, not "being sent right now".
        recover_interrupted_sends(store, cfg, now=now)
    if action == "list":
        with store.read() as s:
            rows = ob.outbox_rows(s.connection(), states=None if args.all else OPEN_STATES)
        if args.json:
            out(json.dumps([_outbox_json(r) for r in rows], ensure_ascii=False))
            return 0
        tz = desk_timezone(cfg)
        for r in rows:
            out(_outbox_line(r, tz))
        if not rows:
            out("the outbox is empty" if args.all else "nothing queued, sending, failed or unknown")
        return 0
    if action == "retry":
        row = ob.retry(store, args.id, actor=cfg.agent, now=now, reason=args.reason)
        out(f"outbox #{args.id} queued again")
        if args.no_send:
            return 0
        return _drain_and_report(store, cfg)
    if action == "cancel":
        row = ob.cancel(store, args.id, actor=cfg.agent, now=now, reason=args.reason, tz=desk_timezone(cfg))
        out(f"outbox #{args.id} cancelled: it will not be sent (ticket #{row['ticket_id']})")
        if row["kind"] == "ack":
            out(f"ticket #{row['ticket_id']} made no promise: `heard ack` (or a in the app) offers it again")
        return 0
    if action in ("send", "drain"):
        return _drain_and_report(store, cfg)
    raise CliError(f"unknown outbox action {action!r}")


@command("saved-replies")
@_one_line_errors
def cmd_saved_replies(args: argparse.Namespace) -> int:
    from mail.templates import DEFAULT_SAVED_REPLIES, VARIABLES
    from storage.tickets import save_saved_reply, saved_replies

    cfg = config_from(args)
    store = open_store(cfg)
    if args.add:
        body = _read_body(args.body_file or "-")
        if not body.strip():
            raise CliError(f"saved reply {args.add!r} would be empty: give --body-file a file with its text")
        save_saved_reply(store, args.add, body)
        out(f"saved reply {args.add!r} stored")
        return 0
    if args.defaults:
        with store.read() as s:
            have = {r["name"] for r in saved_replies(s.connection())}
        for name, body in DEFAULT_SAVED_REPLIES.items():
            if name not in have:
                save_saved_reply(store, name, body)
                out(f"added {name!r}")
        return 0
    with store.read() as s:
        rows = saved_replies(s.connection())
    for r in rows:
        first = next((ln for ln in r["body"].splitlines() if ln.strip()), "")
        out(f"{safe_line(r['name']):<20} {safe_line(first)[:70]}")
    if not rows:
        out("no saved replies: `heard saved-replies --defaults` adds a few to edit")
    out("variables: " + ", ".join("{" + v + "}" for v in VARIABLES))
    return 0


def _add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("reply", help="reply to a ticket's customer (tone checks printed; --body-file - reads stdin)")
    s.add_argument("id", type=ticket_number, metavar="ID")
    s.add_argument("--body-file", required=True, help="the reply text, UTF-8; - for stdin")
    s.add_argument("--status", help="the ticket's next state (default: pending, waiting on the customer)")
    s.add_argument("--reason", help="why the ticket moves to that state (needed with --status)")
    s.add_argument("--saved", metavar="NAME", help="append this saved reply, variables filled")
    s.add_argument("--as-is", action="store_true", help="send the text exactly: no signature or quote added")
    s.add_argument("--no-send", action="store_true", help="only queue it; a running app or `heard outbox send` sends")

    s = sub.add_parser("outbox", help="outgoing mail: list, retry, cancel, send")
    s.add_argument("--all", action="store_true", help="also what was sent or cancelled")
    s.add_argument("--json", action="store_true")
    acts = s.add_subparsers(dest="outbox_action", metavar="ACTION")
    r = acts.add_parser("retry", help="send a failed or unknown message again (you checked it did not go out)")
    r.add_argument("id", type=int)
    r.add_argument("--reason")
    r.add_argument("--no-send", action="store_true", help="only queue it again")
    c = acts.add_parser("cancel", help="never send this message")
    c.add_argument("id", type=int)
    c.add_argument("--reason")
    acts.add_parser("send", help="send what is due now (one SMTP connection)")
    acts.add_parser("drain", help="the same as send")

    s = sub.add_parser("saved-replies", help="list saved replies, or add one (--add NAME --body-file F)")
    s.add_argument("--add", metavar="NAME")
    s.add_argument("--body-file", help="with --add: the text; - for stdin")
    s.add_argument("--defaults", action="store_true", help="add the built-in examples you do not have yet")


EXTENSIONS.append(_add_parsers)
