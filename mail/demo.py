"""The demo world behind `heard demo`: a support inbox that lives, with no account and no network.

:class:`DemoWorld` runs, on loopback, an IMAP server (pymap, with IDLE) and an
SMTP server (aiosmtpd), seeds the support inbox with the backlog from
:mod:`mail.backlog`, writes a config pointing at both, and then plays the
customers while it runs:

- about once a minute a new customer writes in (``new_mail_every``);
- every message the agent sends is delivered into the customer's own mailbox
  on the demo IMAP server (log in as the customer to read it), and a short
  while later (``reply_after``) the customer answers into the support inbox:
  always to a person's reply (up to a few rounds a thread), now and then to
  an automatic acknowledgement, never from a no-reply, list or bounce address.

Everything lives in one directory: ``config.toml``, ``heard.db``, the
maildirs under ``pymap/`` and ``demo.log`` (what the customers did). Started
again on the same directory, the world carries on where it stopped: the
mailbox and database are kept and only the ports in the config change.
"""

from __future__ import annotations

import heapq
import itertools
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from mail.autoreply import automated_reason
from mail.backlog import AGENT_NAME, PREMIUM_DOMAINS, PRODUCT, customer_reply, demo_backlog, demo_sent, new_customer_mail
from mail.config import Config, load_config, local_timezone, write_config
from mail.localservers import PymapServer, SmtpServer
from mail.parse import ParsedMessage, parse_message
from mail.untrusted import safe_line

__all__ = ["DemoTiming", "DemoWorld", "SUPPORT_ADDRESS", "SUPPORT_PASSWORD", "CUSTOMER_PASSWORD"]

SUPPORT_ADDRESS = "support@ledgerly.example"
SUPPORT_PASSWORD = "demo"
CUSTOMER_PASSWORD = "customer"
SENT_FOLDER = "Sent"
# A customer stops answering a thread after this many answers: the demo
# should show conversations that end, not an endless ping-pong.
MAX_ANSWERS_PER_THREAD = 4


@dataclass(frozen=True)
class DemoTiming:
    """How lively the customers are. Seconds; ``new_mail_every = 0`` means never."""

    new_mail_every: float = 60.0
    reply_after: tuple[float, float] = (10.0, 40.0)
    ack_answer_rate: float = 0.2


class _Scheduler:
    """One thread that runs callables at given times, until stopped."""

    def __init__(self, on_error: Callable[[str], None]) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="heard-demo-customers", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cond:
            if self._stopped:
                return
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn))
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception as exc:  # one bad step never stops the customers
                self._on_error(f"{type(exc).__name__}: {exc}")


def _who(pm: ParsedMessage) -> str:
    return safe_line(f"{pm.from_name} <{pm.from_addr}>" if pm.from_name else pm.from_addr or "?")


class DemoWorld:
    """The demo's servers, mailbox, config and customers, in *directory*.

    >>> with DemoWorld(tmp_path, timing=DemoTiming(new_mail_every=0)) as world:   # doctest: +SKIP
    ...     cfg = world.config          # points at world.imap and world.smtp
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        timing: DemoTiming = DemoTiming(),
        seed: int | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self.timing = timing
        self.support_address = SUPPORT_ADDRESS
        self.config_path = self.directory / "config.toml"
        self.database_path = self.directory / "heard.db"
        self.log_path = self.directory / "demo.log"
        self.imap: PymapServer | None = None
        self.smtp: SmtpServer | None = None
        self.seeded = 0  # messages seeded into the inbox by this start (0 when carried on)
        self.senders = 0
        self.reused = False
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._answers: dict[str, int] = {}
        self._lists: set[str] = set()
        self.on_event = on_event  # also told what the customers do (demo.log always is)
        self._scheduler: _Scheduler | None = None

    # lifecycle -------------------------------------------------------------
    def start(self) -> "DemoWorld":
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            self.imap = PymapServer(
                self.directory / "pymap", username=self.support_address, password=SUPPORT_PASSWORD
            )
            self._readd_customers()
            self.imap.start()
            self._seed_if_empty()
            self.smtp = SmtpServer(deliver=self._deliver, hostname="mx.ledgerly.example")
            self.smtp.start()
            self._write_config()
            self._scheduler = _Scheduler(on_error=lambda e: self._event(f"customer simulation error: {e}"))
            self._scheduler.start()
            if self.timing.new_mail_every > 0:
                self._scheduler.after(self._next_new_mail_delay(), self._new_mail)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the customers and both servers. Idempotent; leaves no process behind."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.stop()
        if self.smtp is not None:
            self.smtp.stop()
        if self.imap is not None:
            self.imap.stop()

    def __enter__(self) -> "DemoWorld":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    @property
    def imap_pid(self) -> int | None:
        return self.imap.pid if self.imap else None

    # setup -----------------------------------------------------------------
    def _readd_customers(self) -> None:
        """On a second start, customers' mailboxes from before can log in again."""
        assert self.imap is not None
        for path in self.imap.data_dir.iterdir():
            name = path.name
            if path.is_dir() and "@" in name and name != self.support_address and not self.imap.has_user(name):
                self.imap.add_user(name, CUSTOMER_PASSWORD)

    def _seed_if_empty(self) -> None:
        assert self.imap is not None
        inbox = self.imap.maildir(self.support_address)
        existing = sum(1 for sub in ("new", "cur") for _ in (inbox / sub).iterdir())
        now = datetime.now(timezone.utc)
        backlog = demo_backlog(now, self.support_address)
        # Mailing lists are in the backlog, and a list never answers a reply.
        self._lists = {pm.from_addr for pm in map(parse_message, backlog)
                       if any(name.startswith("list-") for name in pm.headers)}
        if existing:
            self.reused = True
            return
        # pymap numbers the files it finds in one look in directory order, so
        # it is shown one message at a time: UIDs then follow arrival, as on a
        # real server (and a reply never comes before the mail it answers).
        client = self.imap.connect()
        try:
            client.select_folder("INBOX", readonly=True)
            for raw in backlog:
                self.seeded += self.imap.deliver_maildir(self.support_address, raw)
                client.noop()
        finally:
            client.logout()
        self.imap.deliver_maildir(self.support_address, demo_sent(now, self.support_address), folder=SENT_FOLDER,
                                  seen=True)
        self.senders = len({parse_message(raw).from_addr for raw in backlog})
        self._event(f"seeded {self.seeded} messages from {self.senders} senders")

    def _write_config(self) -> None:
        assert self.imap is not None and self.smtp is not None
        password = f"printf '%s' '{SUPPORT_PASSWORD}'"
        write_config(self.config_path, {
            "account": {"address": self.support_address},
            "imap": {
                "host": self.imap.host, "port": self.imap.port, "security": "none",
                "username": self.support_address, "password_command": password, "folder": "INBOX",
            },
            "smtp": {
                "host": self.smtp.host, "port": self.smtp.port, "security": "none",
                "username": "", "password_command": password, "sent_folder": SENT_FOLDER,
            },
            "storage": {"database": str(self.database_path)},
            "agent": {
                "name": AGENT_NAME, "email": self.support_address,
                "signature": f"{AGENT_NAME}\n{PRODUCT} Support",
            },
            "hours": {
                "days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-17:00", "timezone": local_timezone(),
            },
            "tiers.premium": {"max_response": "2h", "members": list(PREMIUM_DOMAINS)},
        })

    # the customers ---------------------------------------------------------
    def _event(self, line: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        try:
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"{stamp} {line}\n")
        except OSError:
            pass
        if self.on_event is not None:
            try:
                self.on_event(line)
            except Exception:  # a closed terminal must not stop the customers
                pass

    def _next_new_mail_delay(self) -> float:
        with self._lock:
            return self.timing.new_mail_every * self._rng.uniform(0.6, 1.4)

    def _new_mail(self) -> None:
        assert self.imap is not None and self._scheduler is not None
        try:
            with self._lock:
                raw = new_customer_mail(datetime.now(timezone.utc), self.support_address, self._rng)
            self.imap.deliver_maildir(self.support_address, raw)
            self._event(f"new mail from {_who(parse_message(raw))}")
        finally:
            self._scheduler.after(self._next_new_mail_delay(), self._new_mail)

    def _deliver(self, mail_from: str, rcpt_tos: tuple[str, ...], data: bytes) -> None:
        """The SMTP server's delivery: into each recipient's mailbox on the demo IMAP server."""
        assert self.imap is not None
        pm = parse_message(data)
        automatic = pm.headers.get("auto-submitted", "no").split(";", 1)[0].strip().lower() not in ("", "no")
        for rcpt in rcpt_tos:
            address = rcpt.strip().strip("<>").lower()
            if not address or "@" not in address:
                continue
            self.imap.deliver_maildir(address, data, password=CUSTOMER_PASSWORD)
            if address == self.support_address:
                continue
            kind = "acknowledgement" if automatic else "reply"
            self._event(f"delivered {kind} {safe_line(pm.subject)!r} to {address}")
            self._maybe_answer(address, data, pm, automatic)

    def _maybe_answer(self, address: str, data: bytes, pm: ParsedMessage, automatic: bool) -> None:
        """Schedule the customer's answer, when a real customer would write one."""
        domain = self.support_address.rsplit("@", 1)[1]
        if automated_reason({}, envelope_sender=address, from_addr=address, message_id=None,
                            content_type="text/plain", own_addresses=[self.support_address],
                            own_domains=[domain]) or address in self._lists:
            return  # no-reply, mailer-daemon, lists and ourselves never answer
        root = (pm.references or pm.in_reply_to or [pm.message_id or ""])[0]
        thread = f"{address} {root}"
        with self._lock:
            if automatic and self._rng.random() >= self.timing.ack_answer_rate:
                return
            if self._answers.get(thread, 0) >= MAX_ANSWERS_PER_THREAD:
                return
            self._answers[thread] = self._answers.get(thread, 0) + 1
            low, high = self.timing.reply_after
            delay = self._rng.uniform(low, high)
            seed = self._rng.randrange(2**31)
        if self._scheduler is not None:
            self._scheduler.after(delay, lambda: self._answer(address, data, seed))

    def _answer(self, address: str, data: bytes, seed: int) -> None:
        assert self.imap is not None
        raw = customer_reply(data, seed, now=datetime.now(timezone.utc))
        self.imap.deliver_maildir(self.support_address, raw)
        self._event(f"{address} answered {safe_line(parse_message(raw).subject)!r}")
