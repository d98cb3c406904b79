"""The `heard` command line: a thin layer over mail/ and storage/.

Every failure a person can cause (a wrong key, an unreachable server, a
refused change) ends in one line on stderr saying what to do, and a non-zero
exit; never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mail.config import (Config, ConfigError, cleartext_login, default_config_path, desk_timezone, load_config,
                         local_timezone, write_config)
from mail.imap import MailServerError
from mail.untrusted import safe_line, safe_text
from storage.lifecycle import STATUS_LABELS, LifecycleError, Status, parse_status
from storage.records import OpeningStore, StoreError, utcnow
from tui.words import SHOWN_CHARS, SHOWN_LINES, cut, fit, shown_part, shown_query, ticket_number

if TYPE_CHECKING:  # pragma: no cover
    from storage.db import Store

# storage.db (SQLAlchemy, about half a second) is imported when a command opens the store:
# `heard sync` starts fetching while it loads.

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class CliError(RuntimeError):
    pass


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


# The commands that log in to the mail servers: they warn about a login sent in plain text.
CONNECTING = {"app", None, "sync", "doctor", "reply", "outbox", "ack", "update", "housekeeping", "autoclose"}


def config_from(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config)
    if getattr(args, "command", None) in CONNECTING:
        for server in (cfg.imap, cfg.smtp):
            warning = cleartext_login(server) if server is not None else None
            if warning:
                err(f"heard: warning: {warning}")
    return cfg


def open_store(cfg: Config) -> Store:
    from storage.db import Store

    return Store(cfg.database)


def out(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def err(line: str) -> None:
    print(line, file=sys.stderr)


# -- init --------------------------------------------------------------------------------
# Providers' hosts, which take OAuth2 (XOAUTH2) logins (Microsoft's no longer take passwords),
# each with the SMTP server (and its security) offered as the default to go with it.
KNOWN_SMTP = {
    "imap.gmail.com": ("smtp.gmail.com", "tls"),
    "smtp.gmail.com": ("smtp.gmail.com", "tls"),
    "outlook.office365.com": ("smtp.office365.com", "starttls"),
    "outlook.office.com": ("smtp.office365.com", "starttls"),
    "smtp.office365.com": ("smtp.office365.com", "starttls"),
    "imap-mail.outlook.com": ("smtp-mail.outlook.com", "starttls"),
    "smtp-mail.outlook.com": ("smtp-mail.outlook.com", "starttls"),
}
OAUTH2_HOSTS = frozenset(KNOWN_SMTP)
# What `heard init` takes, at the SMTP username question, for a server that takes mail without a login.
NO_LOGIN_ANSWERS = ("-", "none")


def _ask(prompt: str, default: str | None = None) -> str:
    suffix = f" [{default}]" if default else ""
    try:
        answer = input(f"{prompt}{suffix}: ").strip()
    except EOFError:
        answer = ""
    return answer or (default or "")


def _full_name() -> str | None:
    """The person's name from the account database (the GECOS field), when it holds one."""
    try:
        import pwd

        name = pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0].strip()
    except (ImportError, KeyError, OSError):
        return None
    login = os.environ.get("USER") or os.environ.get("LOGNAME") or ""
    return name if name and name.lower() not in ("root", login.lower()) else None


@command("init")
def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.config).expanduser() if args.config else default_config_path()
    if path.exists() and not args.force:
        raise CliError(f"{path} already exists: pass --force to overwrite it")
    interactive = sys.stdin.isatty() and not args.yes
    # Promises are kept at the desk: business hours in this machine's zone, not UTC, unless told otherwise.
    zone = args.timezone or local_timezone()
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CliError(f"--timezone = {zone!r} is not a time zone: use an IANA name, e.g. Europe/Berlin") from None

    def is_address(text: str) -> str | None:
        local, at, domain = text.partition("@")
        ok = at and local and "." in domain and not any(c.isspace() for c in text)
        return None if ok else "an email address, like support@example.com"

    def is_security(text: str) -> str | None:
        return None if text in ("tls", "starttls", "none") else "one of tls, starttls, none"

    def is_port(text: str) -> str | None:
        return None if text.isdigit() and 0 < int(text) < 65536 else "a port number (1-65535)"

    def port(name: str, prompt: str, default: str) -> int:
        return int(value(name, prompt, default, check=is_port))

    def value(name: str, prompt: str, default: str | None = None, check=None) -> str:
        flag = f"--{name.replace('_', '-')}"
        v = getattr(args, name)
        if v not in (None, ""):
            problem = check(str(v)) if check else None
            if problem:
                raise CliError(f"{flag} = {str(v)!r} is not {problem}")
            return str(v)
        if interactive:
            # Ask again rather than fail at the end and lose every answer given so far.
            for _ in range(5):
                answer = _ask(prompt, default)
                if answer == "" and default is None:
                    print(f"  this one is needed (or pass it as {flag})", file=sys.stderr)
                    continue
                problem = check(answer) if check and answer else None
                if problem is None:
                    return answer
                print(f"  that needs to be {problem}", file=sys.stderr)
            raise CliError(f"no usable answer for {prompt!r}: pass {flag}")
        if default is not None:
            return default
        raise CliError(f"{flag} is needed when not asking interactively")

    address = value("address", "Support address customers write to", check=is_address)
    domain = address.partition("@")[2]
    host = value("imap_host", "IMAP host", f"imap.{domain}" if interactive else None)
    security = value("imap_security", "IMAP security (tls, starttls, none)", "tls", check=is_security)
    default_port = {"tls": "993", "starttls": "143", "none": "143"}.get(security, "993")
    imap = {
        "host": host,
        "port": port("imap_port", "IMAP port", default_port),
        "security": security,
        "username": value("imap_username", "IMAP username", address),
        "folder": value("folder", "Folder to sync", "INBOX"),
    }
    if args.oauth2_command and (args.password_command or args.keyring):
        raise CliError("--oauth2-command and --password-command/--keyring: pass one (OAuth2 for Gmail, Microsoft 365)")
    if interactive and not (args.keyring or args.password_command or args.oauth2_command):
        if imap["host"].lower() in OAUTH2_HOSTS:
            print(f"{imap['host']} signs in with OAuth2: heard runs a command that prints a fresh access token "
                  "(oama, mailctl, mutt_oauth2.py; see README, Gmail and Microsoft 365)", file=sys.stderr)
            answer = value("oauth2_command", f"Command that prints an access token for {imap['username']} "
                                             "(or 'password' for an app password)")
            if answer.strip().lower() != "password":
                args.oauth2_command = answer
    if interactive and not (args.keyring or args.password_command or args.oauth2_command):
        answer = value("password_command",
                       "Command that prints the password (e.g. pass show mail/support), or keyring")
        if answer.strip().lower() == "keyring":
            args.keyring = True
        else:
            args.password_command = answer
    if args.oauth2_command:
        imap["oauth2_command"] = args.oauth2_command
    elif args.keyring:
        imap["keyring"] = True
    else:
        imap["password_command"] = value(
            "password_command", "Command that prints the password (e.g. pass show mail/support)"
        )
    sections: dict[str, dict] = {"account": {"address": address}, "imap": imap}
    if args.smtp_no_login and args.smtp_username not in (None, ""):
        raise CliError("--smtp-no-login and --smtp-username: pass one (no login, or the account to log in as)")
    if args.smtp_host or interactive:
        known = KNOWN_SMTP.get(imap["host"].lower(), ("", "tls"))
        smtp_host = value("smtp_host", "SMTP host (empty to skip sending for now)", known[0] if interactive else "")
        if smtp_host:
            smtp_sec = value("smtp_security", "SMTP security (tls, starttls, none)",
                             KNOWN_SMTP.get(smtp_host.lower(), known)[1], check=is_security)
            smtp_port = port("smtp_port", "SMTP port", {"tls": "465", "starttls": "587"}.get(smtp_sec, "25"))
            if args.smtp_no_login:
                username = ""
            else:
                username = value("smtp_username", f"SMTP username ({NO_LOGIN_ANSWERS[0]!r} for a relay that takes "
                                                  "no login)", imap["username"])
                if username.strip().lower() in NO_LOGIN_ANSWERS:
                    username = ""
            smtp = {
                "host": smtp_host,
                "port": smtp_port,
                "security": smtp_sec,
                "username": username,  # "": heard sends without logging in (a local relay)
                # Gmail and Microsoft 365 file their own copy of what is sent: don't add a second.
                "sent_folder": value("sent_folder", "IMAP folder for sent copies (empty for Gmail/365)",
                                     "" if smtp_host.lower() in OAUTH2_HOSTS else "Sent"),
            }
            for key in ("oauth2_command", "keyring", "password_command"):  # the IMAP login's source
                if key in imap and username:
                    smtp[key] = imap[key]
                    break
            sections["smtp"] = smtp
    if args.database:
        sections["storage"] = {"database": args.database}
    # Acknowledgements are signed with it ("I will personally get back to you ... Ana"): asked until given,
    # unless the account has a full name; a script without --agent-name gets the login name.
    agent_name = value("agent_name", "Your name, as customers will see it",
                       _full_name() if interactive else (_full_name() or os.environ.get("USER", "")))
    sections["agent"] = {"name": agent_name, "email": value("agent_email", "Your email", address, check=is_address)}
    sections["hours"] = {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-17:00", "timezone": zone}
    try:
        written = write_config(path, sections)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    out(f"wrote {written}: business hours Mon-Fri 09:00-17:00 {zone} (change them under [hours])")
    out("next: `heard doctor` to check it, `heard sync` to fetch mail, `heard` to open the app")
    return 0


# -- sync --------------------------------------------------------------------------------
class ProgressBar:
    """A one-line bar on a terminal; silent otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.enabled = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total == 0:
            return
        width = 30
        filled = int(width * done / total)
        self.stream.write(f"\rsyncing [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


def after_sync(store: Store, cfg: Config, *, send: Callable[[], None] | None = None) -> None:
    """What follows every sync when heard can send mail: check-ins, auto-close, [ack] auto. What they
    queue is sent here, or by ``send`` (`heard sync --watch`: its sender thread, woken)."""
    if cfg.smtp is None:
        return
    from mail.ack import housekeeping

    hk = housekeeping(store, cfg, utcnow())
    if hk.checkins or hk.closed or hk.acknowledged:
        out(hk.line())
    if hk.outbox_ids:
        (send or functools.partial(_send_and_report, store, cfg))()


def _send_and_report(store: Store, cfg: Config, stopped: threading.Event | None = None) -> None:
    from mail.send import drain_outbox

    res = drain_outbox(store, cfg)
    if stopped is not None and stopped.is_set():  # cut by ctrl+c: the errors are ours, not the server's
        if res.errors or res.unknown or res.deferred:
            print(f"heard: {INTERRUPTED_SEND}", file=sys.stderr, flush=True)
        return
    if not res.busy:
        out(res.line())
    for line in res.errors:
        print(f"heard: {safe_line(line)}", file=sys.stderr)
    sys.stdout.flush()


class _Sender:
    """`heard sync --watch` sends on a thread of its own: a mail server that is slow or silent (up to a
    minute per try) holds up neither the next sync nor the mail it brings."""

    def __init__(self, store: Store, cfg: Config) -> None:
        self.store, self.cfg = store, cfg
        self.wake, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="heard-sender", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.wake.wait()
            self.wake.clear()
            if self.stop.is_set():
                return
            try:
                _send_and_report(self.store, self.cfg, self.stop)
            except Exception as exc:  # noqa: BLE001 (one line, and the watch goes on)
                print(f"heard: sending failed: {safe_line(str(exc))}: the mail stays in the outbox "
                      "(heard outbox)", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Stop; a send in flight is cut and settles like a dropped connection (queued again before its
        data, unknown after)."""
        from mail.imap import abort_connections

        self.stop.set()
        self.wake.set()
        deadline = time.monotonic() + 10
        while self.thread.is_alive() and self.thread.ident is not None and time.monotonic() < deadline:
            abort_connections([self.thread.ident])  # again for each connection the drain goes on to open
            self.thread.join(timeout=0.2)


@command("sync")
def cmd_sync(args: argparse.Namespace) -> int:
    from mail.settings import ack_settings
    from mail.sync import sync_once, watch

    cfg = config_from(args)
    # A bad [hours], [ack], [tiers] or [pending] is one line naming the key, before any mail is fetched
    # (as the app does), not after the sync it was meant to follow. (mail.settings needs no database layer.)
    ack_settings(cfg, now=utcnow())
    bar = ProgressBar()
    if not args.watch:
        # The store opens on a thread while the sync connects, forks its parsing process and fetches.
        opening = OpeningStore(cfg.database)
        summary = sync_once(opening, cfg, progress=bar)
        store = opening.get()
        out(summary.line())
        after_sync(store, cfg)
        return 0
    store = open_store(cfg)
    stop = threading.Event()
    sender = _Sender(store, cfg) if cfg.smtp is not None else None

    def on_status(st) -> None:
        if st.error:
            print(f"heard: {safe_line(st.message)}", file=sys.stderr, flush=True)
        elif st.summary and (st.summary.new_messages or st.summary.uidvalidity_changed):
            out(f"[{st.mode}] {st.summary.line()}")
        if st.summary is not None:
            after_sync(store, cfg, send=sender.wake.set if sender else None)
        sys.stdout.flush()

    out(f"watching {cfg.imap.folder} on {cfg.imap.host} (ctrl+c to stop)")
    sys.stdout.flush()
    try:
        watch(store, cfg, stop=stop, on_status=on_status, progress=bar)
    except KeyboardInterrupt:
        stop.set()
    finally:
        if sender is not None:
            sender.close()
    return 0


# -- reading -----------------------------------------------------------------------------
def _promise(t: dict, now: datetime, tz, risk: timedelta = timedelta(0)) -> str:
    """ "by Tue 24 Nov 14:00", "at risk Tue 24 Nov 14:00" (due within ``risk``, the at-risk window),
    "broke Tue 24 Nov 14:00", or "" for a ticket with no promise in force."""
    from storage.deadlines import format_deadline_short

    deadline = t.get("promise_deadline")
    if deadline is None or t["status"] in (Status.SOLVED.value, Status.CLOSED.value):
        return ""
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=timezone.utc)
    word = "broke" if deadline <= now else "at risk" if deadline <= now + risk else "by"
    return f"{word} {format_deadline_short(deadline, tz)}"


def _ticket_table(rows: list[dict], now: datetime, width: int, risk: timedelta, tz) -> list[str]:
    """The rows for a terminal: columns as wide as what they hold, one line per ticket, the subject
    cut to the terminal's width (a line for scripts, `_ticket_line`, keeps fixed columns)."""
    from rich.cells import cell_len

    cols = []
    for t in rows:
        prio = "" if t["priority"] == "normal" else t["priority"]
        holder = f"@{safe_line(t['holder'])}" if t.get("holder") else ""
        cols.append([f"#{t['id']}", STATUS_LABELS[Status(t["status"])], prio, safe_line(t["customer"]),
                     _promise(t, now, tz, risk), holder, safe_line(t["subject"])])
    widths = [max((cell_len(c[i]) for c in cols), default=0) for i in range(6)]
    # The customer column gives way first (down to 16 cells), so the subject keeps 20.
    others = sum(w + 2 for i, w in enumerate(widths) if w and i != 3)
    widths[3] = max(min(widths[3], 30, width - others - 2 - 20), min(widths[3], 16))
    lines = []
    for c in cols:
        c[3] = cut(c[3], widths[3])
        head = "  ".join(f"{v}{' ' * (w - cell_len(v))}" for v, w in zip(c[:6], widths) if w)
        room = width - cell_len(head) - 2
        subject = cut(c[6], room) if room >= 10 else c[6]
        lines.append(f"{head}  {subject}".rstrip())
    return lines


def _ticket_line(t: dict, now: datetime, tz, risk: timedelta) -> str:
    holder = f" @{safe_line(t['holder'])}" if t.get("holder") else ""
    return (
        f"#{t['id']:<6} {STATUS_LABELS[Status(t['status'])]:<20} {t['priority']:<7} "
        f"{fit(safe_line(t['customer']), 32)} {_promise(t, now, tz, risk):<24} {cut(safe_line(t['subject']), 60)}{holder}"
    )


@command("tickets")
@command("search")
def cmd_tickets(args: argparse.Namespace) -> int:
    from storage.tickets import queue_rows, ticket_summary

    cfg = config_from(args)
    store = open_store(cfg)
    query = " ".join(args.search or [])
    status = None if args.status == "all" else args.status  # "all": every status
    if status:
        try:
            parse_status(status)
        except LifecycleError as exc:  # the list knows one more word than a status change
            raise CliError(f"{exc}, or all") from None
    view = args.view or ("all" if args.status or query else "open")
    matching = None
    if query:
        matching = store.search.ticket_select(query)
        if matching is None:
            raise CliError(f"nothing to search for in {shown_query(query)}: give words, an address or an error code")
    from mail.ack import at_risk_window

    now = utcnow()
    margin = at_risk_window(cfg, now=now)
    with store.read() as s:
        rows = queue_rows(s.connection(), view=view, agent=cfg.agent, now=now, status=status,
                          limit=args.limit or 10**9, matching=matching, at_risk_margin=margin)
    if args.json:
        out(json.dumps([ticket_summary(r) for r in rows], ensure_ascii=False))
        return 0
    tz = desk_timezone(cfg)
    if sys.stdout.isatty():
        for line in _ticket_table(rows, now, shutil.get_terminal_size().columns, margin, tz):
            out(line)
    else:
        for r in rows:
            out(_ticket_line(r, now, tz, margin))
    if not rows:
        out(f"no tickets match {shown_query(query)}" if query else "no tickets")
    return 0


@command("show")
def cmd_show(args: argparse.Namespace) -> int:
    from storage.tickets import ticket_detail
    from tui.words import event_change

    cfg = config_from(args)
    store = open_store(cfg)
    with store.read() as s:
        t = ticket_detail(s.connection(), args.id)
    if args.json:
        out(json.dumps(t, ensure_ascii=False))
        return 0
    out(f"#{t['id']} {safe_line(t['subject'])}")
    out(f"customer: {safe_line(t['customer'])}   status: {STATUS_LABELS[Status(t['status'])]}   "
        f"priority: {t['priority']}   holder: {t['holder'] or '-'}")
    tz = desk_timezone(cfg)

    def when(value) -> str:
        at = datetime.fromisoformat(value) if isinstance(value, str) else value
        return at.astimezone(tz).strftime("%a %d %b %Y %H:%M %Z") if at else "-"

    for m in t["messages"]:
        out()
        arrow = "→" if m["direction"] == "out" else "←"
        name = safe_line(m["from_name"] or "")
        sender = f"<{safe_line(m['from'])}>" if m["from"] else "(no address)"
        out(f"{arrow} {name + ' ' if name else ''}{sender}  {when(m['date'])}")
        out(f"  joined: {safe_line(m['thread_reason'])}")
        if m["automated"]:
            out(f"  automated: {safe_line(m['automated_reason'])}")
        if m["defects"]:
            out(f"  flagged: {safe_line('; '.join(m['defects']))}")
        for a in m["attachments"]:
            out(f"  attachment: {safe_line(a['name'])} ({safe_line(a['content_type'])}, {a['size']} bytes)")
        out()
        text, rest = (m["text"], 0) if args.full else shown_part(m["text"])
        out(safe_text(text).rstrip())
        if rest:
            left = len(m["text"]) - len(text)
            out(f"… {rest:,} more line{'s' if rest != 1 else ''} ({left:,} characters) of this message not shown: "
                f"heard show {t['id']} --full prints it whole")
    out()
    out("timeline:")
    if not t["events"]:
        out("  no changes yet")
    for e in t["events"]:
        out(f"  {when(e['at'])}  {safe_line(e['actor'])}  {event_change(e)}  — {safe_line(e['reason'])}")
    return 0


@command("keys")
def cmd_keys(args: argparse.Namespace) -> int:
    """Every key binding with its id, after the [keys] of the config: what to write to remap one."""
    from tui.app import all_bindings, check_keymap

    keymap: dict[str, str] = {}
    path = Path(args.config).expanduser() if args.config else default_config_path()
    if path.exists():  # without a config yet: the defaults
        cfg = config_from(args)
        keymap = check_keymap(cfg.keys) if cfg.keys else {}
    rows = [(bid, keymap.get(bid, b.key), b.description or b.action) for bid, b in sorted(all_bindings().items())]
    width = max(len(bid) for bid, _, _ in rows)
    key_width = max(len(k) for _, k, _ in rows)
    for bid, key, what in rows:
        mark = "  (remapped)" if bid in keymap else ""
        out(f"{bid:<{width}}  {key:<{key_width}}  {what}{mark}")
    out('remap one under [keys] in the config, e.g. "app.take_next" = "N" (several keys: "N,ctrl+n")')
    return 0


@command("export")
def cmd_export(args: argparse.Namespace) -> int:
    from storage.tickets import export_tickets

    cfg = config_from(args)
    store = open_store(cfg)
    with store.read() as s:
        for t in export_tickets(s.connection()):
            sys.stdout.write(json.dumps(t, ensure_ascii=False) + "\n")
    return 0


@command("migrate")
def cmd_migrate(args: argparse.Namespace) -> int:
    from storage.copy import copy_store
    from storage.db import Store

    cfg = config_from(args)
    source = open_store(cfg)
    if args.to.strip() == cfg.database.strip():
        raise CliError("--to names the database heard already uses: give the new one")
    target = Store(args.to)
    try:
        counts = copy_store(source, target)
    finally:
        target.close()
    out(f"copied {counts.get('tickets', 0):,} tickets, {counts.get('messages', 0):,} messages, "
        f"{counts.get('events', 0):,} events, {counts.get('promises', 0):,} promises and "
        f"{counts.get('outbox', 0):,} outbox rows into {safe_line(target.shown)}")
    out(f"next: set [storage] database = {args.to!r} in every agent's config (the old store is left as it was)")
    return 0


# -- changes -------------------------------------------------------------------------------
@command("take")
def cmd_take(args: argparse.Namespace) -> int:
    from mail.ack import at_risk_window
    from storage.tickets import nothing_to_take, take_ticket

    cfg = config_from(args)
    store = open_store(cfg)
    now = utcnow()
    tid = take_ticket(store, args.id, agent=cfg.agent, now=now, reason=args.reason,
                      at_risk_margin=at_risk_window(cfg, now=now))
    out(f"you hold #{tid}" if tid else nothing_to_take(store))
    return 0


@command("status")
def cmd_status(args: argparse.Namespace) -> int:
    from storage.tickets import set_status

    cfg = config_from(args)
    ch = set_status(open_store(cfg), args.id, args.state, reason=args.reason, actor=cfg.agent, now=utcnow())
    out(f"#{args.id}: {ch.old} → {ch.new} ({ch.reason})")
    return 0


@command("priority")
def cmd_priority(args: argparse.Namespace) -> int:
    from storage.tickets import set_priority

    cfg = config_from(args)
    ch = set_priority(open_store(cfg), args.id, args.priority, reason=args.reason, actor=cfg.agent, now=utcnow())
    out(f"#{args.id}: priority {ch.old} → {ch.new} ({ch.reason})")
    return 0


@command("release")
def cmd_release(args: argparse.Namespace) -> int:
    from storage.tickets import set_holder

    cfg = config_from(args)
    change = set_holder(open_store(cfg), args.id, None, reason=args.reason, actor=cfg.agent, now=utcnow())
    # Anyone may release a ticket, with a reason (a colleague who went home): say whose it was.
    out(f"released #{args.id}" + (f" (held by {safe_line(change.old)})" if change.old and change.old != cfg.agent else ""))
    return 0


@command("assign")
def cmd_assign(args: argparse.Namespace) -> int:
    from storage.tickets import set_holder

    cfg = config_from(args)
    set_holder(open_store(cfg), args.id, args.agent, reason=args.reason, actor=cfg.agent, now=utcnow())
    out(f"#{args.id} now held by {args.agent}")
    return 0


@command("app")
def cmd_app(args: argparse.Namespace) -> int:
    from tui.app import run_app

    cfg = config_from(args)
    return run_app(cfg)


# -- parser -------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse, with a wrong flag or argument said in one line (not the usage block) that says where to look."""

    def error(self, message: str):
        if message.startswith("argument COMMAND: invalid choice: "):
            asked = message.removeprefix("argument COMMAND: invalid choice: ").split(" (choose from")[0]
            self.exit(2, f"{self.prog}: no command {asked}: `{self.prog} --help` lists them\n")
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        # Left-over arguments are reported by the top parser; name the command they were given to.
        args, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(args, "command", None)
            target = self._subparsers._group_actions[0].choices.get(command, self) if command and self._subparsers else self
            target.error(f"unrecognized arguments: {' '.join(extras)}")
        return args


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="heard", description="A keyboard-driven terminal helpdesk.")
    p.add_argument("--config", help="config file (default: $HEARD_CONFIG or the platform's config dir)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("init", help="write a config file (asks, or takes flags)")
    for flag in ("address", "imap-host", "imap-port", "imap-security", "imap-username", "password-command",
                 "oauth2-command",
                 "folder", "smtp-host", "smtp-port", "smtp-security", "smtp-username", "sent-folder",
                 "database", "agent-name", "agent-email"):
        s.add_argument(f"--{flag}")
    s.add_argument("--timezone", help="the business hours' time zone (default: this machine's), e.g. Europe/Berlin")
    s.add_argument("--keyring", action="store_true", help="get passwords from the system keyring")
    s.add_argument("--smtp-no-login", action="store_true",
                   help="the SMTP server takes mail without a login (a local relay): no username, no password")
    s.add_argument("--force", action="store_true", help="overwrite an existing config")
    s.add_argument("--yes", "-y", action="store_true", help="never ask; fail when a needed flag is missing")

    sub.add_parser("keys", help="every key binding with the id that [keys] in the config remaps")

    s = sub.add_parser("sync", help="fetch new mail once and print a summary")
    s.add_argument("--watch", action="store_true", help="keep syncing (IMAP IDLE, or polling)")

    listing = sub.add_parser("tickets", help="list tickets in work order")
    listing.add_argument("--search", nargs="+", metavar="WORD",
                         help="only tickets whose subject, mail or customer has every word (prefixes match)")
    searching = sub.add_parser("search", help="full-text search: the tickets whose subject, mail or customer "
                                              "has every word, in work order (every status unless --status/--view)")
    searching.add_argument("search", nargs="+", metavar="WORD")
    for s in (listing, searching):
        s.add_argument("--status", help="only this status (new, open, pending, on_hold, solved, closed), or all")
        s.add_argument("--view", choices=["open", "mine", "waiting", "unacknowledged", "solved", "all"])
        s.add_argument("--limit", type=int)
        s.add_argument("--json", action="store_true")

    s = sub.add_parser("show", help="one ticket with its messages and timeline")
    s.add_argument("id", type=ticket_number, metavar="ID")
    s.add_argument("--json", action="store_true", help="the whole ticket as JSON (every message whole)")
    s.add_argument("--full", action="store_true",
                   help=f"every message whole (without it, one over {SHOWN_LINES} lines or {SHOWN_CHARS:,} "
                        f"characters shows its start)")

    sub.add_parser("export", help="every ticket as JSON Lines on stdout")

    s = sub.add_parser("migrate", help="copy the whole store into another, empty database (SQLite to PostgreSQL)")
    s.add_argument("--to", required=True, metavar="DATABASE",
                   help="the new database: postgresql://user@host/db, or a SQLite file path")

    s = sub.add_parser("take", help="claim a ticket (the most urgent free one without ID)")
    s.add_argument("id", type=ticket_number, metavar="ID", nargs="?")
    s.add_argument("--reason")

    s = sub.add_parser("status", help="change a ticket's status, with a reason")
    s.add_argument("id", type=ticket_number, metavar="ID")
    s.add_argument("state")
    s.add_argument("--reason", required=True)

    s = sub.add_parser("priority", help="change a ticket's priority, with a reason")
    s.add_argument("id", type=ticket_number, metavar="ID")
    s.add_argument("priority")
    s.add_argument("--reason", required=True)

    s = sub.add_parser("release", help="let go of a ticket you hold (or a colleague holds), with a reason")
    s.add_argument("id", type=ticket_number, metavar="ID")
    s.add_argument("--reason", required=True)

    s = sub.add_parser("assign", help="hand a ticket to another agent, with a reason")
    s.add_argument("id", type=ticket_number, metavar="ID")
    s.add_argument("agent")
    s.add_argument("--reason", required=True)

    sub.add_parser("app", help="open the app (the default)")
    for extend in EXTENSIONS:
        extend(sub)
    # `heard show 12 --config PATH` works as well as `heard --config PATH show 12`.
    for command_parser in sub.choices.values():
        if "--config" not in command_parser._option_string_actions:
            command_parser.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


# Feature modules add their subcommands here (name -> (add_parser, handler)).
EXTENSIONS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if _command_name(argv) not in COMMANDS:
        # The feature modules' commands (and `--help`, which lists every command);
        # the core ones, `sync` above all, start without importing them.
        _load_extensions()
    parser = build_parser()
    args = parser.parse_args(argv)
    name = args.command or "app"
    previous = _sigterm_as_interrupt()
    try:
        return COMMANDS[name](args)
    except (ConfigError, MailServerError, StoreError, LifecycleError, CliError) as exc:
        print(f"heard: {safe_line(str(exc))}", file=sys.stderr)  # server answers are data too
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


INTERRUPTED_SEND = ("interrupted: what was not sent stays in the outbox (`heard outbox` lists it, and says whether "
                    "the message in flight may have gone out)")


def _sigterm_as_interrupt():
    """SIGTERM (`kill`, a service manager stopping `heard sync --watch`) ends a command the way ctrl+c does:
    through its cleanup, so a send in flight is settled (queued again, or unknown once its data went out)
    instead of being left to the next run to find. The app and the demo put their own handler in place."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _command_name(argv: list[str]) -> str | None:
    """The subcommand asked for, when it can be told before parsing (None: load everything)."""
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            next(it, None)
        elif arg.startswith("--config="):
            continue
        elif arg.startswith("-"):
            return None
        else:
            return arg
    return None


def _load_extensions() -> None:
    import importlib

    for mod in ("tui.cli_demo", "tui.cli_send", "tui.cli_ack", "tui.cli_doctor"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def run() -> None:
    """The `heard` command: :func:`main`, then exit without the collector's last walk.

    At exit the interpreter runs the cyclic garbage collector over every object
    still alive (SQLAlchemy's and Textual's many, a sync's last batches): about
    0.15 s after a sync of 10,000 messages, spent once the work is done. Moving
    them all to the collector's permanent generation first skips that walk; the
    exit handlers (logging's flush among them) still run, and the operating
    system frees the memory. The stores are closed first, as that walk used to
    do, so the database is left complete in its file. Not done in :func:`main`
    itself, which the tests call in-process many times.
    """
    code = main()
    db = sys.modules.get("storage.db")  # imported only by commands that opened the store
    if db is not None:
        db.close_all_stores()
    import gc

    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    # Run the imported module's entry point, where feature modules register their commands.
    from tui.cli import run as _run

    _run()
