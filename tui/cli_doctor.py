"""`heard doctor`: check IMAP, SMTP and a full round trip to the support address.

Each check prints one line, "ok" or what is wrong and what to do; the exit
code is non-zero when any check failed.
"""

from __future__ import annotations

import argparse
import smtplib
import time
from datetime import datetime, timezone

from imapclient.exceptions import IMAPClientError

from mail.compose import build_message, new_message_id
from mail.config import ConfigError
from mail.imap import MailServerError, connect_imap, folder_problem
from mail.untrusted import safe_line
from tui.cli import EXTENSIONS, command, config_from, out

DOCTOR_HEADER = "X-Heard-Doctor"


def _add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("doctor", help="check IMAP, SMTP and a round trip to the support address")
    s.add_argument("--no-round-trip", action="store_true", help="only log in to IMAP and SMTP")
    s.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the round trip (default 60)")


EXTENSIONS.append(_add_parser)


def _line(ok: bool, what: str, detail: str) -> bool:
    out(f"{'ok  ' if ok else 'FAIL'} {what}: {safe_line(detail)}")  # server answers and banners are data
    return ok


@command("doctor")
def cmd_doctor(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    good = True
    client = None
    try:
        client = connect_imap(cfg.imap)
        caps = client.capabilities()
        info = client.select_folder(cfg.imap.folder, readonly=True)
        extras = [c.decode() for c in (b"IDLE", b"CONDSTORE", b"QRESYNC") if c in caps]
        how = " (OAuth2)" if cfg.imap.oauth2_command else ""
        good &= _line(True, "imap", f"{cfg.imap.username}@{cfg.imap.host}:{cfg.imap.port}{how}, {cfg.imap.folder} has "
                      f"{info.get(b'EXISTS', 0)} messages; offers {', '.join(extras) or 'no IDLE (heard will poll)'}")
    except (MailServerError, ConfigError) as exc:
        good &= _line(False, "imap", str(exc))
        client = None
    except IMAPClientError as exc:
        good &= _line(False, "imap", folder_problem(client, cfg.imap.folder, cfg.imap.host, exc))
        client = None

    if cfg.smtp is None:
        good &= _line(False, "smtp", "no [smtp] section: add one to send replies (see README, Configuration)")
        return 1
    from mail.send import connect_smtp

    try:
        smtp = connect_smtp(cfg.smtp, timeout=30)
        how = ", OAuth2" if cfg.smtp.oauth2_command else "" if cfg.smtp.username else ", no login"
        _line(True, "smtp", f"{cfg.smtp.host}:{cfg.smtp.port} ({cfg.smtp.security}{how}) accepted us")
    except (MailServerError, ConfigError) as exc:
        _line(False, "smtp", str(exc))
        return 1

    if args.no_round_trip or client is None:
        smtp.quit()
        if client is not None:
            client.logout()
        return 0 if good else 1

    mid = new_message_id(cfg.own_domain)
    raw = build_message(
        from_name="heard doctor", from_addr=cfg.address, to=[("", cfg.address)],
        subject="heard doctor: round trip check", body="A check sent by `heard doctor`; it needs no answer.\n",
        message_id=mid, date=datetime.now(timezone.utc),
        extra_headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All", DOCTOR_HEADER: "1"},
    )
    try:
        smtp.sendmail(cfg.address, [cfg.address], raw)
        smtp.quit()
    except (smtplib.SMTPException, OSError) as exc:
        good &= _line(False, "round trip", f"{cfg.smtp.host} would not take the test message ({exc})")
        client.logout()
        return 1
    started = time.monotonic()
    found = False
    while time.monotonic() - started < args.timeout:
        client.select_folder(cfg.imap.folder, readonly=True)
        if client.search(["HEADER", "Message-ID", mid]):
            found = True
            break
        time.sleep(1)
    client.logout()
    if found:
        _line(True, "round trip", f"a message to {cfg.address} reached {cfg.imap.folder} in "
              f"{time.monotonic() - started:.1f} s")
    else:
        good &= _line(False, "round trip", f"a message to {cfg.address} did not reach {cfg.imap.folder} within "
                      f"{args.timeout:.0f} s: check that mail to the support address lands in that folder")
    return 0 if good else 1
