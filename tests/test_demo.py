"""`heard demo`: the newcomer's first command, end to end.

The command runs as a subprocess exactly as `make demo` runs it (with
``--no-app`` so no terminal is needed); the test then uses the demo the way
an agent's mail client would: IMAP as the support user and as a customer,
SMTP to send, and the database the sync filled. The customers' behaviour
(who answers what) is checked in-process on a :class:`mail.demo.DemoWorld`.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import smtplib
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from imapclient import IMAPClient

from mail.config import load_config
from mail.demo import CUSTOMER_PASSWORD, MAX_ANSWERS_PER_THREAD, DemoTiming, DemoWorld

CUSTOMER = "dana@whitfield-design.example"
LIST = "payments-weekly@lists.example.org"  # the backlog's mailing list


class DemoProcess:
    """`heard demo --no-app` in the background, its stdout read line by line."""

    def __init__(self, directory: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tui.cli import main; sys.exit(main())", "demo", "--dir", str(directory), "--no-app", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines:
                m = re.search(pattern, line)
                if m:
                    return m
            try:
                line = self._queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None and (time.monotonic() > deadline or self.proc.poll() is not None):
                self.kill()
                pytest.fail(f"no line matching {pattern!r}; output:\n" + "\n".join(self.lines))
            if line is not None:
                self.lines.append(line)

    def stop(self, sig: int) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(20)
        time.sleep(0.1)  # the reader thread drains the last lines
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _imap_connect(host: str, port: int, username: str, password: str) -> IMAPClient:
    client = IMAPClient(host, port, ssl=False, timeout=10)
    client.login(username, password)
    return client


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if "pymap" in cmdline and text in cmdline:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status  # a zombie nobody reaped yet is not running


def _wait_until(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    return check()


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_heard_demo_serves_a_seeded_inbox_plays_the_customers_and_stops_cleanly(tmp_path: Path):
    directory = tmp_path / "demo"
    demo = DemoProcess(directory, "--new-mail-every", "0", "--reply-after", "0.2-0.5")
    try:
        pid = int(demo.wait_for(r"pymap pid (\d+)").group(1))
        demo.wait_for(r"^ready: ")
        assert any(re.search(r"161 new messages, \d+ tickets created", line) for line in demo.lines), demo.lines

        cfg = load_config(directory / "config.toml")
        assert cfg.imap.host == "127.0.0.1" and cfg.imap.security == "none"
        assert Path(cfg.database).parent == directory.resolve()

        # The support inbox over IMAP: the backlog, from many customers.
        client = _imap_connect(cfg.imap.host, cfg.imap.port, cfg.imap.username, cfg.imap.password())
        client.select_folder("INBOX", readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["ENVELOPE", "INTERNALDATE"])
        client.logout()
        senders = {f[b"ENVELOPE"].from_[0].mailbox + b"@" + f[b"ENVELOPE"].from_[0].host
                   for f in fetched.values() if f[b"ENVELOPE"].from_}
        assert len(uids) >= 150
        assert len(senders) >= 40
        arrivals = [fetched[uid][b"INTERNALDATE"] for uid in sorted(fetched)]
        assert arrivals == sorted(arrivals), "UIDs should follow arrival, as on a real server"

        # The sync filled the demo's own database.
        with sqlite3.connect(cfg.database) as db:
            assert db.execute("select count(*) from messages").fetchone()[0] >= 150
            assert db.execute("select count(*) from tickets").fetchone()[0] >= 40
            # The backlog's conversations are threads: no answer starts a ticket of its own
            # when the mail it answers is in the inbox too.
            known = {mid for (mid,) in db.execute("select message_id from messages")}
            orphans = [mid for mid, refs in db.execute(
                "select message_id, \"references\" from messages where thread_reason like 'new ticket%'")
                if known & set(refs.split())]
            assert orphans == []

        # Mail sent through the demo SMTP server lands in the customer's mailbox...
        reply = (
            f"From: Robin Castillo <{cfg.address}>\r\nTo: Dana Whitfield <{CUSTOMER}>\r\n"
            "Subject: Re: Invoice PDF is blank\r\nMessage-ID: <demo-test-1@ledgerly.example>\r\n"
            "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nCould you send me the invoice number?\r\n"
        ).encode()
        with smtplib.SMTP(cfg.smtp.host, cfg.smtp.port, timeout=10) as smtp:
            smtp.sendmail(cfg.address, [CUSTOMER], reply)
        customer = _imap_connect(cfg.imap.host, cfg.imap.port, CUSTOMER, CUSTOMER_PASSWORD)
        customer.select_folder("INBOX", readonly=True)
        got = customer.fetch(customer.search("ALL"), ["BODY.PEEK[]"])
        customer.logout()
        assert [m[b"BODY[]"] for m in got.values()] == [reply]

        # ...and the customer answers into the support inbox, threaded to it.
        def answered():
            c = _imap_connect(cfg.imap.host, cfg.imap.port, cfg.imap.username, cfg.imap.password())
            try:
                c.select_folder("INBOX", readonly=True)
                return c.search(["HEADER", "In-Reply-To", "demo-test-1@ledgerly.example"])
            finally:
                c.logout()

        assert _wait_until(answered, 15), "the customer never answered"
        assert _processes_mentioning(str(directory.resolve()))
    finally:
        code = demo.stop(signal.SIGTERM)

    assert code == 0, demo.lines
    assert f"demo files kept in {directory.resolve()}" in demo.lines[-2]
    assert _wait_until(lambda: _gone(pid), 5), f"pymap (pid {pid}) still running"
    assert not _processes_mentioning(str(directory.resolve()))

    # Started again on the same directory, the demo carries on: no second backlog.
    again = DemoProcess(directory, "--new-mail-every", "0")
    try:
        pid = int(again.wait_for(r"pymap pid (\d+)").group(1))
        again.wait_for(r"^ready: ")
        assert any("carrying on" in line for line in again.lines)
        # Only what arrived after the last sync (the customer's answer) is new.
        assert int(again.wait_for(r"^(\d+) new messages").group(1)) == 1, again.lines
    finally:
        code = again.stop(signal.SIGINT)
    assert code == 0, again.lines
    assert _wait_until(lambda: _gone(pid), 5)
    assert not _processes_mentioning(str(directory.resolve()))


def _outgoing(to: str, n: int, *, thread: str = "t1", automatic: bool = False) -> bytes:
    auto = "Auto-Submitted: auto-replied\r\nX-Auto-Response-Suppress: All\r\n" if automatic else ""
    return (
        f"From: Robin Castillo <support@ledgerly.example>\r\nTo: <{to}>\r\nSubject: Re: Export fails\r\n"
        f"Message-ID: <out-{n}@ledgerly.example>\r\nIn-Reply-To: <{thread}@customer.example>\r\n"
        f"References: <{thread}@customer.example>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n{auto}"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThanks, looking into it.\r\n"
    ).encode()


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_demo_customers_answer_people_not_machines(tmp_path: Path):
    timing = DemoTiming(new_mail_every=0, reply_after=(0.0, 0.1), ack_answer_rate=0.0)
    with DemoWorld(tmp_path / "demo", timing=timing, seed=1) as world:
        assert world.seeded >= 150 and world.senders >= 40
        support = world.imap.maildir(world.support_address)

        def inbox() -> int:
            return sum(1 for sub in ("new", "cur") for _ in (support / sub).iterdir())

        cases = [  # (recipient, outgoing message, answered?)
            (CUSTOMER, _outgoing(CUSTOMER, 1, thread="a"), True),
            ("noreply@shop.example", _outgoing("noreply@shop.example", 2, thread="b"), False),
            ("mailer-daemon@mx.example", _outgoing("mailer-daemon@mx.example", 3, thread="c"), False),
            (LIST, _outgoing(LIST, 5, thread="f"), False),
            (CUSTOMER, _outgoing(CUSTOMER, 4, thread="d", automatic=True), False),
        ]
        for to, raw, answered in cases:
            before = inbox()
            with smtplib.SMTP(world.smtp.host, world.smtp.port, timeout=10) as smtp:
                smtp.sendmail(world.support_address, [to], raw)
            assert world.imap.maildir(to).exists(), f"nothing delivered to {to}"
            got = _wait_until(lambda: inbox() > before, 1.5)
            assert bool(got) == answered, to

        # A customer stops answering one thread after a few rounds.
        before = inbox()
        for n in range(MAX_ANSWERS_PER_THREAD + 2):
            with smtplib.SMTP(world.smtp.host, world.smtp.port, timeout=10) as smtp:
                smtp.sendmail(world.support_address, [CUSTOMER], _outgoing(CUSTOMER, 10 + n, thread="e"))
        time.sleep(1.0)
        assert inbox() - before == MAX_ANSWERS_PER_THREAD
        pid = world.imap_pid
    assert _wait_until(lambda: _gone(pid), 5)


def test_demo_flags_refuse_nonsense(capsys):
    from tui.cli import main

    for argv in (["demo", "--reply-after", "soon"], ["demo", "--new-mail-every", "-5"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert "give seconds" in capsys.readouterr().err
