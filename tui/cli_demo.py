"""`heard demo`: the whole product on a living demo inbox, with no account and no network.

Starts the demo world (:mod:`mail.demo`: IMAP and SMTP servers on loopback,
a seeded support backlog, customers who write and answer), syncs it, and
opens the app on it. Quitting stops both servers; the demo's files stay in
the directory, which is printed, so `heard demo --dir DIR` can carry on.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from mail.demo import CUSTOMER_PASSWORD, SUPPORT_PASSWORD, DemoTiming, DemoWorld
from mail.sync import sync_once
from mail.untrusted import safe_line
from tui.cli import EXTENSIONS, CliError, ProgressBar, command, open_store, out


def _reply_after(text: str) -> tuple[float, float]:
    """"20" or "10-40" (seconds) -> (low, high)."""
    try:
        low, _, high = text.partition("-")
        pair = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, e.g. 20 or 10-40") from None
    if pair[0] < 0 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, e.g. 20 or 10-40")
    return pair


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, e.g. 60 (0 for never)") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, e.g. 60 (0 for never)")
    return value


def _flush_out(line: str) -> None:
    out(line)
    sys.stdout.flush()


class _Stop(Exception):
    """SIGTERM: leave the way ctrl+c does, through every finally."""


# SIGTERM, and SIGHUP when the terminal window closes: stop the servers as a quit does.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _on_stop_signal(signum, frame) -> None:
    for sig in _STOP_SIGNALS:  # a second one must not cut the shutdown short
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop()


def _ignore_interrupts() -> dict:
    """While the servers stop, ctrl+c and SIGTERM wait: a half-done stop could leave pymap running."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *_STOP_SIGNALS)}


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def _run_app(app) -> int:
    """Run the app as `tui.app.run_app` does: SIGTERM or SIGHUP quit it the way `q` does."""
    from tui.app import run_until_stopped

    return run_until_stopped(app)


@command("demo")
def cmd_demo(args: argparse.Namespace) -> int:
    directory = Path(args.dir).expanduser() if args.dir else Path(tempfile.mkdtemp(prefix="heard-demo-"))
    if directory.exists() and not directory.is_dir():
        raise CliError(f"--dir {directory} is a file: give a directory (it is created when missing)")
    app_class = None
    if not args.no_app:
        try:
            from tui.app import HeardApp as app_class
        except ImportError as exc:
            raise CliError(f"the app cannot start ({exc}): run `heard demo --no-app` for the servers alone") from None
    timing = DemoTiming(new_mail_every=args.new_mail_every, reply_after=args.reply_after)
    world = DemoWorld(directory, timing=timing)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _on_stop_signal) for sig in _STOP_SIGNALS}
    code = 0
    try:
        out(f"heard demo: starting the demo mail servers in {world.directory}")
        world.start()
        assert world.imap is not None and world.smtp is not None
        if world.reused:
            out("carrying on with the mailbox and database already in this directory")
        else:
            out(f"seeded the support inbox with {world.seeded} messages from {world.senders} senders")
        out(f"IMAP  {world.imap.host}:{world.imap.port}  pymap pid {world.imap_pid}, "
            f"login {world.support_address} / {SUPPORT_PASSWORD}")
        out(f"SMTP  {world.smtp.host}:{world.smtp.port}  mail you send lands in the customer's mailbox "
            f"here (login as the customer, password {CUSTOMER_PASSWORD})")
        out(f"config {world.config_path}")
        sys.stdout.flush()
        cfg = world.config
        store = open_store(cfg)
        summary = sync_once(store, cfg, progress=ProgressBar())
        out(safe_line(summary.line()))
        every = f"every {timing.new_mail_every:g} s or so" if timing.new_mail_every else "never (--new-mail-every 0)"
        out(f"new customer mail: {every}; customers answer your replies in "
            f"{timing.reply_after[0]:g}-{timing.reply_after[1]:g} s (log: {world.log_path})")
        if app_class is None:
            world.on_event = _flush_out  # with the app on screen, this goes to demo.log only
            out(f"ready: open it from another terminal with  heard --config {world.config_path}")
            out("ctrl+c stops the demo")
            sys.stdout.flush()
            threading.Event().wait()
        else:
            sys.stdout.flush()
            code = _run_app(app_class(cfg))
    except (KeyboardInterrupt, _Stop):
        code = 0
    finally:
        interrupts = _ignore_interrupts()
        world.stop()
        _restore(interrupts)
        _restore(previous)
        try:
            out(f"demo servers stopped; demo files kept in {world.directory}")
            out(f"carry on later with  heard demo --dir {world.directory}")
            sys.stdout.flush()
        except OSError:  # the terminal is gone (SIGHUP)
            pass
    return code


def _add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "demo",
        help="try heard on a living demo inbox: local IMAP/SMTP servers, no account, no network",
        description="Start an IMAP and an SMTP server on loopback, seed a support backlog, sync it and open "
                    "the app, while customers keep writing in and answering your replies.",
    )
    s.add_argument("--dir", metavar="DIR",
                   help="keep the demo's config, database and mail here (default: a new temporary directory); "
                        "an existing demo directory carries on where it stopped")
    s.add_argument("--no-app", action="store_true",
                   help="only run the servers and customers, until ctrl+c (point `heard --config DIR/config.toml` "
                        "at them from another terminal)")
    s.add_argument("--new-mail-every", type=_seconds, default=60.0, metavar="SECONDS",
                   help="a new customer mail about this often (default 60; 0 for never)")
    s.add_argument("--reply-after", type=_reply_after, default=(10.0, 40.0), metavar="SECONDS",
                   help="customers answer your replies after this many seconds, e.g. 20 or 10-40 (the default)")


EXTENSIONS.append(_add_parser)
