"""The loopback mail servers that the tests, the demo and the benchmarks use."""

from __future__ import annotations

import os
import smtplib
import socket
import time

import pytest

from mail.imap import idle_check
from mail.localservers import DROP, PymapServer, ServerStartError, SmtpServer

pytestmark = pytest.mark.slow

RAW = (
    b"From: Ann Example <ann@example.org>\r\n"
    b"To: support@example.com\r\n"
    b"Subject: =?utf-8?q?Export_f=C3=A4llt?=\r\n"
    b"Date: Mon, 04 Mar 2024 09:41:00 +0100\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"References: <a@example.org>\r\n <b@example.org>\r\n"
    b"\r\n"
    b"Hello,\r\n.a line starting with a dot\r\nFrom the start of a line\r\nno final newline"
)


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie counts as gone (its parent is us and has reaped it by now)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ", 1)[1].startswith("Z"):
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().split(") ", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


# --------------------------------------------------------------------------- pymap


def test_pymap_login_idle_and_exact_bytes(pymap_server):
    c = pymap_server.connect()
    try:
        caps = c.capabilities()
        assert b"IDLE" in caps
        assert b"CONDSTORE" not in caps  # the plain-UID-range path is what pymap tests
        pymap_server.append(RAW)
        pymap_server.deliver_maildir(pymap_server.username, RAW.replace(b"<m1@", b"<m2@"))
        info = c.select_folder("INBOX", readonly=True)
        assert info[b"EXISTS"] == 2
        fetched = c.fetch(c.search(), ["BODY.PEEK[]", "RFC822.SIZE"])
        bodies = sorted(v[b"BODY[]"] for v in fetched.values())
        assert bodies == sorted([RAW, RAW.replace(b"<m1@", b"<m2@")])  # byte-exact, CRLF kept
        assert all(v[b"RFC822.SIZE"] == len(RAW) for v in fetched.values())
    finally:
        c.logout()


def test_pymap_several_users(pymap_server):
    pymap_server.add_user("ann@example.org", "ann-pw")
    pymap_server.deliver_maildir("bob@example.org", RAW)  # new user, default password
    c = pymap_server.connect("ann@example.org")
    try:
        assert c.select_folder("INBOX")[b"EXISTS"] == 0
    finally:
        c.logout()
    c = pymap_server.connect("bob@example.org")
    try:
        assert c.select_folder("INBOX")[b"EXISTS"] == 1
    finally:
        c.logout()
    from imapclient.exceptions import LoginError

    with pytest.raises(LoginError):
        pymap_server.connect("ann@example.org", "wrong")


def test_pymap_seeding_200_is_fast(pymap_server):
    msgs = [RAW.replace(b"<m1@", b"<s%d@" % i) + b"x" * 8000 for i in range(200)]
    t = time.perf_counter()
    pymap_server.append(msgs)
    elapsed = time.perf_counter() - t
    assert elapsed < 5.0, elapsed
    c = pymap_server.connect()
    try:
        assert c.select_folder("INBOX")[b"EXISTS"] == 200
    finally:
        c.logout()


def test_pymap_idle_sees_new_mail(pymap_server):
    c = pymap_server.connect()
    try:
        c.select_folder("INBOX")
        c.idle()
        t = time.monotonic()
        pymap_server.deliver_maildir(pymap_server.username, RAW)
        seen = False
        while time.monotonic() - t < 5 and not seen:
            seen = any(b"EXISTS" in r for r in idle_check(c, 0.2))
        c.idle_done()
        assert seen
        assert time.monotonic() - t < 1.0
    finally:
        c.logout()


def test_pymap_stop_leaves_no_process(tmp_path):
    server = PymapServer(tmp_path).start()
    pid = server.pid
    server.stop()
    assert _gone(pid)
    assert not server.running
    server.stop()  # idempotent


# --------------------------------------------------------------------------- dovecot


@pytest.mark.dovecot
def test_dovecot_capabilities_and_fetch(dovecot_server):
    c = dovecot_server.connect()
    try:
        caps = c.capabilities()
        for cap in (b"IDLE", b"CONDSTORE", b"QRESYNC", b"UIDPLUS"):
            assert cap in caps
        dovecot_server.append(RAW)
        assert dovecot_server.deliver_maildir(None, [RAW.replace(b"<m1@", b"<m%d@" % i) for i in range(2, 5)]) == 3
        info = c.select_folder("INBOX", readonly=True)
        assert info[b"EXISTS"] == 4
        fetched = c.fetch(c.search(), ["BODY.PEEK[]", "INTERNALDATE"])
        assert fetched[min(fetched)][b"BODY[]"] == RAW
        # deliver_maildir dates the file from the Date header (the INTERNALDATE)
        assert sum(v[b"INTERNALDATE"].year == 2024 for v in fetched.values()) == 3
    finally:
        c.logout()


@pytest.mark.dovecot
def test_dovecot_uidvalidity_change(dovecot_server):
    dovecot_server.append([RAW, RAW.replace(b"<m1@", b"<m2@")])
    c = dovecot_server.connect()
    before = c.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
    c.logout()
    new = dovecot_server.change_uidvalidity()
    c = dovecot_server.connect()
    try:
        info = c.select_folder("INBOX", readonly=True)
        assert info[b"UIDVALIDITY"] == new != before
        assert info[b"EXISTS"] == 2  # the messages are still there
    finally:
        c.logout()


@pytest.mark.dovecot
def test_dovecot_extra_user_and_subfolder(dovecot_server):
    dovecot_server.add_user("ann", "ann-pw")
    dovecot_server.deliver_maildir("ann", RAW, folder="Sent", seen=True)
    c = dovecot_server.connect("ann")
    try:
        info = c.select_folder("Sent", readonly=True)
        assert info[b"EXISTS"] == 1
        assert b"\\Seen" in c.get_flags([1])[1]
    finally:
        c.logout()


@pytest.mark.dovecot
def test_dovecot_stop_leaves_no_process(tmp_path):
    from mail.localservers import DovecotServer, dovecot_available

    if not dovecot_available():
        pytest.skip("no dovecot")
    server = DovecotServer(tmp_path).start()
    c = server.connect()  # an imap child process exists now
    c.select_folder("INBOX")
    pgid = server.pid
    assert len(_group_pids(pgid)) > 1
    server.cleanup()
    assert _gone(pgid)
    # The imap child may take a moment longer than the master to exit on a loaded machine.
    deadline = time.monotonic() + 5
    while _group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_pids(pgid) == []
    try:
        c.logout()
    except Exception:
        pass


def test_start_failure_reports_the_log(tmp_path, monkeypatch):
    server = PymapServer(tmp_path)
    monkeypatch.setattr(server, "_command", lambda: ["/bin/sh", "-c", "echo boom-from-the-server >&2; exit 3"])
    with pytest.raises(ServerStartError, match="boom-from-the-server"):
        server.start(timeout=5)
    assert not server.running


# --------------------------------------------------------------------------- SMTP


def _send(server, rcpts, data, sender="agent@ledgerly.example"):
    with smtplib.SMTP(server.host, server.port, timeout=10) as s:
        return s.sendmail(sender, rcpts, data)


def test_smtp_records_exact_bytes(smtp_server):
    data = b"Subject: hi\r\nMessage-ID: <o1@ledgerly.example>\r\n\r\n.leading dot\r\n\xc3\xa4 8bit\r\n"
    _send(smtp_server, ["ann@example.org"], data)
    (msg,) = smtp_server.wait_for(1)
    assert msg.data == data
    assert msg.mail_from == "agent@ledgerly.example"
    assert msg.rcpt_tos == ("ann@example.org",)
    assert msg.accepted


def test_smtp_scripted_451_then_success(smtp_server):
    smtp_server.fail_next("451 4.3.0 temporary failure")
    with pytest.raises(smtplib.SMTPDataError) as exc:
        _send(smtp_server, ["ann@example.org"], b"Subject: a\r\n\r\nx\r\n")
    assert exc.value.smtp_code == 451
    _send(smtp_server, ["ann@example.org"], b"Subject: a\r\n\r\nx\r\n")
    assert [r.response[:3] for r in smtp_server.received] == ["451", "250"]
    assert len(smtp_server.messages) == 1


def test_smtp_refused_recipient_and_mail_from_fault(smtp_server):
    smtp_server.refuse("nobody@example.org")
    refused = _send(smtp_server, ["ann@example.org", "Nobody@example.org"], b"Subject: b\r\n\r\ny\r\n")
    assert refused["Nobody@example.org"][0] == 550
    assert smtp_server.messages[-1].rcpt_tos == ("ann@example.org",)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        _send(smtp_server, ["nobody@example.org"], b"Subject: c\r\n\r\nz\r\n")
    smtp_server.fail_next("421 4.3.2 try later", stage="MAIL")
    with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPServerDisconnected)):
        _send(smtp_server, ["ann@example.org"], b"Subject: d\r\n\r\nz\r\n")


def test_smtp_drop_after_data(smtp_server):
    smtp_server.drop_after_data()
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError)):
        _send(smtp_server, ["ann@example.org"], b"Subject: e\r\n\r\nlost ack\r\n")
    # The server did receive it: the sender can't know (outbox state "unknown").
    (rec,) = smtp_server.received
    assert rec.response == DROP and rec.data == b"Subject: e\r\n\r\nlost ack\r\n"
    _send(smtp_server, ["ann@example.org"], b"Subject: f\r\n\r\nok\r\n")
    assert len(smtp_server.messages) == 1


def test_smtp_delivers_into_pymap(pymap_server):
    def deliver(mail_from, rcpts, data):
        for rcpt in rcpts:
            pymap_server.deliver_maildir(rcpt, data)

    with SmtpServer(deliver=deliver) as smtp:
        _send(smtp, ["carol@example.org"], RAW)
        smtp.wait_for(1)
    c = pymap_server.connect("carol@example.org")
    try:
        c.select_folder("INBOX", readonly=True)
        # smtplib ends the DATA with CRLF; everything else is byte-exact
        assert [v[b"BODY[]"] for v in c.fetch(c.search(), ["BODY.PEEK[]"]).values()] == [RAW + b"\r\n"]
    finally:
        c.logout()


def test_smtp_stop_frees_the_port():
    server = SmtpServer().start()
    port = server.port
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
