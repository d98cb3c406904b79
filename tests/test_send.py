"""Replies over a real SMTP server (aiosmtpd) and a real IMAP server (pymap) on loopback."""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from email import policy
from pathlib import Path

import pytest

from factories import add_ticket
from mail.compose import HeaderInjectionError, UnfilledPlaceholderError
from mail.config import load_config, write_config
from mail.localservers import DROP
from mail.send import drain_outbox, queue_message, queue_reply
from mail.sync import sync_once
from storage import outbox as ob
from storage.db import Store
from storage.lifecycle import ReasonRequired
from storage.tickets import header_counts, ticket_detail

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
SUPPORT = "support@example.com"


# -- fixtures: short names over the shared loopback servers (tests/conftest.py) -----------
@pytest.fixture
def smtp(smtp_server):
    return smtp_server


@pytest.fixture
def imap(pymap_server):
    assert pymap_server.username == SUPPORT  # the account make_config logs in with
    return pymap_server


def make_config(tmp_path: Path, *, smtp_port: int, imap_port: int = 1, sent_folder: str = "",
                database: str | None = None, **agent):
    """Write a real config file (as `heard init` would) and load it."""
    path = tmp_path / "config.toml"
    write_config(path, {
        "account": {"address": SUPPORT},
        "imap": {"host": "127.0.0.1", "port": imap_port, "security": "none", "username": SUPPORT,
                 "password_command": "echo support-password"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "username": "",
                 "password_command": "echo unused", "sent_folder": sent_folder},
        "storage": {"database": database or str(tmp_path / "heard.db")},
        "agent": {"name": agent.get("name", "Zoë Martin"), "email": "zoe@example.com",
                  "signature": agent.get("signature", "Zoë Martin\nExample Support")},
    })
    return load_config(path)


@pytest.fixture
def cfg(tmp_path, smtp, database):
    return make_config(tmp_path, smtp_port=smtp.port, database=database)


@pytest.fixture
def store(cfg):
    s = Store(cfg.database)
    yield s
    s.close()


def received(msg) -> email.message.EmailMessage:
    return email.message_from_bytes(msg.data, policy=policy.default)


def one_row(store, oid) -> dict:
    with store.read() as s:
        return ob.outbox_row(s.connection(), oid)


def reply(store, cfg, tid, body="Hi Ann,\n\nThe export works again.\n", **kw):
    kw.setdefault("reason", "answered; waiting on the customer")
    return queue_reply(store, cfg, tid, body, agent="zoe", now=kw.pop("now", NOW), **kw)


# -- the message on the wire ---------------------------------------------------------------
def test_reply_headers_round_trip(store, cfg, smtp):
    tid = add_ticket(store, "Export to CSV fails", "ann@cust.example", "Error 500.", from_name="Ann Lee",
                     message_id="first@cust.example")
    oid = reply(store, cfg, tid, "Hi Ann,\n\nÇa marche à nouveau: the export works again. 🙂\n")
    res = drain_outbox(store, cfg, now=NOW)
    assert res.sent == [oid] and not res.errors
    (got,) = smtp.wait_for(1)
    assert got.mail_from == SUPPORT and got.rcpt_tos == ("ann@cust.example",)
    msg = received(got)
    assert msg["From"].addresses[0].display_name == "Zoë Martin"
    assert msg["From"].addresses[0].addr_spec == SUPPORT
    assert msg["Reply-To"].addresses[0].addr_spec == SUPPORT
    assert msg["To"].addresses[0].addr_spec == "ann@cust.example"
    assert msg["In-Reply-To"] == "<first@cust.example>"
    assert "<first@cust.example>" in msg["References"]
    assert msg["Subject"] == f"Re: Export to CSV fails [#{tid}]"
    assert msg["Message-ID"].strip("<>").endswith("@example.com")
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    assert "Ça marche à nouveau" in msg.get_content() and "🙂" in msg.get_content()
    assert "Auto-Submitted" not in msg  # a person's reply is not automatic mail
    row = one_row(store, oid)
    assert row["state"] == "sent" and row["attempts"] == 1
    assert msg["Message-ID"] == f"<{row['message_id']}>"
    with store.read() as s:
        raw = ob.outbox_row(s.connection(), oid, with_raw=True)["raw"]
    assert got.data == raw  # the exact bytes stored before SMTP are the bytes sent


def test_reply_joins_ticket_and_moves_status_in_one_step(store, cfg):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid, next_status="pending", reason="asked for the log file")
    with store.read() as s:
        t = ticket_detail(s.connection(), tid)
        row = ob.outbox_row(s.connection(), oid)
    out = [m for m in t["messages"] if m["direction"] == "out"]
    assert len(out) == 1 and out[0]["message_id"] == row["message_id"]
    assert t["status"] == "pending"
    kinds = [(e["kind"], e["new"], e["reason"]) for e in t["events"]]
    assert ("status", "pending", "asked for the log file") in kinds
    assert any(k == "reply" for k, _, _ in kinds)
    assert row["state"] == "queued"  # nothing spoken yet: queueing never waits for SMTP


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(next_status="pending", reason=""), ReasonRequired),  # every state change has a reason
        (dict(body="Your order {order_number} shipped."), UnfilledPlaceholderError),
        (dict(body="Fixed in [[version]]."), UnfilledPlaceholderError),
    ],
)
def test_refused_reply_writes_nothing(store, cfg, kwargs, error):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    with pytest.raises(error):
        reply(store, cfg, tid, **kwargs)
    with store.read() as s:
        assert ob.outbox_rows(s.connection(), states=None) == []
        t = ticket_detail(s.connection(), tid)
    assert [m["direction"] for m in t["messages"]] == ["in"] and t["status"] == "new"


INJECTIONS = [
    "Hello\r\nBcc: victim@evil.example",
    "Hello\nBcc: victim@evil.example",
    "Hello\rBcc: victim@evil.example",
    "=?utf-8?q?a=0D=0ABcc:_victim@evil.example?=",
    "=?utf-8?b?YQ0KQmNjOiB2aWN0aW1AZXZpbC5leGFtcGxl?=",  # "a\r\nBcc: victim@evil.example"
    "Hello\u2028Bcc: victim@evil.example",
]


@pytest.mark.parametrize("subject", INJECTIONS)
def test_header_injection_in_subject_is_refused(store, cfg, subject):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    with pytest.raises(HeaderInjectionError, match="Subject"):
        queue_message(store, cfg, tid, "Hello", kind="reply", agent="zoe", now=NOW, subject=subject)
    with store.read() as s:
        assert ob.outbox_rows(s.connection(), states=None) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(to=("Ann\r\nBcc: victim@evil.example", "ann@cust.example")),
        dict(to=("Ann", "ann@cust.example\r\nBcc: victim@evil.example")),
        dict(extra_headers={"X-Note": "a\r\nBcc: victim@evil.example"}),
        dict(extra_headers={"X-Note": "=?utf-8?q?a=0ABcc:_victim@evil.example?="}),
        dict(extra_headers={"Bad Name": "x"}),
        dict(in_reply_to="abc@x\r\nBcc: victim@evil.example"),
    ],
)
def test_header_injection_elsewhere_is_refused(store, cfg, kwargs):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    with pytest.raises(HeaderInjectionError):
        queue_message(store, cfg, tid, "Hello", kind="reply", agent="zoe", now=NOW, **kwargs)


def test_automatic_mail_carries_auto_submitted_and_one_recipient(store, cfg, smtp):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.", message_id="q1@cust.example")
    q = queue_message(store, cfg, tid, "I will answer by Friday.", kind="ack", agent="zoe", now=NOW)
    drain_outbox(store, cfg, now=NOW)
    msg = received(smtp.wait_for(1)[0])
    assert msg["Auto-Submitted"] == "auto-replied" and msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == "<q1@cust.example>" and len(msg["To"].addresses) == 1
    assert one_row(store, q.outbox_id)["kind"] == "ack"


# -- failures: 4xx, 5xx, refused recipients, no server -----------------------------------
@pytest.mark.parametrize("stage, answer", [("DATA", "451 4.3.0 try again later"), ("MAIL", "421 4.3.2 too busy"),
                                          ("RCPT", "450 4.2.0 mailbox busy")])
def test_temporary_errors_are_retried_with_backoff(store, cfg, smtp, stage, answer):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.fail_next(answer, stage=stage)
    res = drain_outbox(store, cfg, now=NOW)
    row = one_row(store, oid)
    assert res.deferred == [oid] and row["state"] == "queued"
    assert answer.split()[0] in row["last_error"] and row["next_attempt_at"] > NOW
    assert drain_outbox(store, cfg, now=NOW + timedelta(seconds=10)).attempted == 0  # not due yet
    res = drain_outbox(store, cfg, now=NOW + timedelta(minutes=5))
    assert res.sent == [oid] and one_row(store, oid)["state"] == "sent"
    assert len(smtp.messages) == 1


def test_permanent_error_fails_at_once_and_is_counted(store, cfg, smtp):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.fail_next("550 5.7.1 message refused as spam")
    res = drain_outbox(store, cfg, now=NOW)
    row = one_row(store, oid)
    assert res.failed == [oid] and row["state"] == "failed" and "550 5.7.1" in row["last_error"]
    assert any("550" in e for e in res.errors)  # the agent is told
    assert drain_outbox(store, cfg, now=NOW + timedelta(days=1)).attempted == 0  # never retried by itself
    with store.read() as s:
        assert header_counts(s.connection(), now=NOW)["failed_sends"] == 1
    ob.retry(store, oid, actor="zoe", now=NOW)
    assert drain_outbox(store, cfg, now=NOW).sent == [oid]


def test_refused_recipient_is_recorded(store, cfg, smtp):
    tid = add_ticket(store, "Help", "gone@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.refuse("gone@cust.example")
    res = drain_outbox(store, cfg, now=NOW)
    row = one_row(store, oid)
    assert res.failed == [oid] and "gone@cust.example" in row["refused"] and "550" in row["refused"]


def test_server_down_keeps_the_queue_and_says_so(tmp_path, store, cfg, smtp):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.stop()
    res = drain_outbox(store, cfg, now=NOW)
    assert len(res.errors) == 1 and "[smtp]" in res.errors[0] and "\n" not in res.errors[0]
    row = one_row(store, oid)
    assert row["state"] == "queued" and row["attempts"] == 0 and "[smtp]" in row["last_error"]


def _quick(timeout: float = 1.0):
    """connect_smtp with a short timeout: a hanging server costs the test a second, not a minute."""
    from mail.send import connect_smtp

    return lambda c: connect_smtp(c, timeout=timeout)


def test_a_server_that_takes_the_connection_and_never_answers_is_named_and_the_reply_stays_queued(tmp_path, database):
    # A wedged server (the connection taken, no greeting ever) was reported as "closed the connection at
    # once: check [smtp] port and security": the wrong advice, after a minute's wait.
    from mail.localservers import SilentServer

    with SilentServer() as silent:
        cfg = make_config(tmp_path, smtp_port=silent.port, database=database)
        store = Store(cfg.database)
        tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
        oid = reply(store, cfg, tid)
        res = drain_outbox(store, cfg, now=NOW, smtp_factory=_quick())
        assert silent.accepted == 1
        assert res.errors == [f"127.0.0.1:{silent.port} took the connection but did not answer within 1 s: check "
                              "[smtp] host and port, or try again later (what is queued stays queued)"]
        row = one_row(store, oid)
        assert row["state"] == "queued" and row["attempts"] == 0 and row["last_error"] == res.errors[0]
        store.close()


@pytest.mark.parametrize("stage, state", [("MAIL", "queued"), ("DATA", "unknown")])
def test_a_server_that_stops_answering_mid_send_is_a_timeout_and_unknown_only_after_the_data(
        store, cfg, smtp, stage, state):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.hang(stage)
    res = drain_outbox(store, cfg, now=NOW, smtp_factory=_quick())
    row = one_row(store, oid)
    assert row["state"] == state and smtp.hanging == 1
    if state == "queued":  # nothing was handed over: sent again later, by itself
        assert row["last_error"].startswith("127.0.0.1: no answer within 1 s; trying again at ")
        smtp.release_hangs()
        assert drain_outbox(store, cfg, now=NOW + timedelta(minutes=5)).sent == [oid]
    else:  # the server has the message, maybe: never sent again without the agent
        assert row["last_error"].startswith("127.0.0.1: no answer within 1 s after the message was handed over")
        assert "heard outbox retry" in row["last_error"]
        smtp.release_hangs()
        assert drain_outbox(store, cfg, now=NOW + timedelta(minutes=5)).attempted == 0
    assert res.errors == [f"[smtp] 127.0.0.1: no answer within 1 s; the rest of the queue waits"]


# -- crashes: never resent blindly -----------------------------------------------------------
def test_connection_lost_after_data_becomes_unknown_and_is_not_resent(store, cfg, smtp):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.fail_next(DROP)
    res = drain_outbox(store, cfg, now=NOW)
    assert res.unknown == [oid] and one_row(store, oid)["state"] == "unknown"
    drain_outbox(store, cfg, now=NOW + timedelta(hours=1))
    assert len(smtp.received) == 1 and one_row(store, oid)["state"] == "unknown"
    with store.read() as s:
        assert header_counts(s.connection(), now=NOW)["failed_sends"] == 1


DRAIN_CHILD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{root!r}]
    from mail.config import load_config
    from mail.send import drain_outbox
    from storage.db import Store
    cfg = load_config({config!r})
    print("ready", flush=True)
    drain_outbox(Store(cfg.database), cfg)
    print("finished", flush=True)
    """
)


def test_kill_between_data_and_commit_becomes_unknown_then_reconciles(tmp_path, smtp, imap):
    cfg = make_config(tmp_path, smtp_port=smtp.port, imap_port=imap.port, sent_folder="Sent")
    store = Store(cfg.database)
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    child = subprocess.Popen(
        [sys.executable, "-c", DRAIN_CHILD.format(root=str(ROOT), config=str(cfg.path))],
        stdout=subprocess.PIPE, text=True,
    )
    delivered: list[bytes] = []

    def kill_on_data(mail_from, rcpts, data):  # the server has the whole message; the sender dies now
        delivered.append(data)
        if len(delivered) == 1:
            os.kill(child.pid, signal.SIGKILL)

    smtp.deliver = kill_on_data  # any later call would be a resend
    try:
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    assert len(delivered) == 1
    assert one_row(store, oid)["state"] == "sending"  # exactly what a crash leaves behind

    res = drain_outbox(store, cfg, now=NOW)  # the next start: dead claim -> unknown, not resent
    row = one_row(store, oid)
    assert oid in res.unknown and row["state"] == "unknown"
    assert "retry" in row["last_error"] and "Sent folder" in row["last_error"]
    assert len(delivered) == 1  # nothing sent again

    imap.append(delivered[0], folder="Sent")  # the provider filed its copy after all
    res = drain_outbox(store, cfg, now=NOW + timedelta(hours=1))
    row = one_row(store, oid)
    assert res.reconciled == [oid] and row["state"] == "sent" and row["sent_copy"]
    assert len(delivered) == 1
    store.close()


def test_without_a_sent_folder_set_an_unknown_send_is_found_in_the_servers_own_sent_folder(tmp_path, smtp, imap):
    # Gmail and Microsoft 365 file their own copy, so the README says to leave [smtp] sent_folder empty: the
    # look for the server's Sent folder then failed on "cannot import name 'SENT' from 'imapclient'", every
    # unknown send stayed unknown, and every drain said so.
    cfg = make_config(tmp_path, smtp_port=smtp.port, imap_port=imap.port, sent_folder="")
    store = Store(cfg.database)
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.fail_next(DROP)
    assert drain_outbox(store, cfg, now=NOW).unknown == [oid]
    imap.append(smtp.received[0].data, folder="Sent")  # the provider's own copy
    res = drain_outbox(store, cfg, now=NOW + timedelta(hours=1))
    assert res.errors == [] and res.reconciled == [oid]
    assert one_row(store, oid)["state"] == "sent" and len(smtp.received) == 1
    store.close()


def test_an_imap_server_that_says_nothing_never_holds_up_the_mail_that_is_due(tmp_path, smtp):
    # Each drain first looked for the unknown sends in the Sent folder: with the IMAP server silent, every
    # reply waited out its 30 s timeout before going, at every drain, and the unknown row was then marked
    # "no Sent folder to look in" as if none existed.
    from mail.imap import connect_imap
    from mail.localservers import SilentServer

    with SilentServer() as silent:
        cfg = make_config(tmp_path, smtp_port=smtp.port, imap_port=silent.port)
        store = Store(cfg.database)
        tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
        unsure = reply(store, cfg, tid)
        smtp.fail_next(DROP)
        assert drain_outbox(store, cfg, now=NOW).unknown == [unsure]
        before = one_row(store, unsure)["last_error"]
        imap_asked_when_sent = []
        smtp.deliver = lambda mail_from, rcpts, data: imap_asked_when_sent.append(silent.accepted)
        second = reply(store, cfg, tid, body="Hi Ann,\n\nOne more thing.\n")
        quick_imap = lambda c: connect_imap(c.imap, timeout=1)  # noqa: E731
        res = drain_outbox(store, cfg, now=NOW + timedelta(minutes=20), imap_factory=quick_imap)
        assert res.sent == [second] and imap_asked_when_sent == [0]  # sent before the Sent folder was looked at
        assert res.errors == [f"cannot check the Sent folder for unsure sends: 127.0.0.1:{silent.port} did not "
                              "answer in time: check [imap] host and port, and your network"]
        assert one_row(store, unsure)["state"] == "unknown" and one_row(store, unsure)["last_error"] == before
        drain_outbox(store, cfg, now=NOW + timedelta(minutes=21), imap_factory=quick_imap)
        assert silent.accepted == 1  # looked again later, not at every drain
        store.close()


def test_agent_retry_sends_an_unknown_message_again(store, cfg, smtp):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    smtp.fail_next(DROP)
    drain_outbox(store, cfg, now=NOW)
    ob.retry(store, oid, actor="zoe", now=NOW)
    assert drain_outbox(store, cfg, now=NOW).sent == [oid]
    with store.read() as s:
        events = ticket_detail(s.connection(), tid)["events"]
    assert any(e["kind"] == "outbox" and e["old"] == "unknown" and e["new"] == "queued" for e in events)


def test_a_row_is_claimed_once(store, cfg):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    oid = reply(store, cfg, tid)
    assert ob.claim(store, oid, owner="a", now=NOW) is True
    assert ob.claim(store, oid, owner="b", now=NOW) is False


# -- the Sent folder and the customer's answer --------------------------------------------
CUSTOMER_MAIL = (
    "From: Ann Lee <ann@cust.example>\r\nTo: support@example.com\r\nSubject: Export to CSV fails\r\n"
    "Message-ID: <first@cust.example>\r\nDate: Mon, 23 Nov 2026 08:00:00 +0000\r\n\r\n"
    "Since yesterday the export fails with error 500.\r\n"
).encode()


def test_customer_answer_to_our_reply_joins_the_same_ticket(tmp_path, smtp, imap):
    cfg = make_config(tmp_path, smtp_port=smtp.port, imap_port=imap.port, sent_folder="Sent")
    store = Store(cfg.database)
    imap.append(CUSTOMER_MAIL)
    sync_once(store, cfg)
    with store.read() as s:
        (tid,) = [t["id"] for t in ob_tickets(s.connection())]
    oid = reply(store, cfg, tid, "Hi Ann,\n\nCould you send me the file you export?\n")
    res = drain_outbox(store, cfg)
    assert res.sent == [oid] and res.copied == 1 and not res.errors
    sent_mid = one_row(store, oid)["message_id"]
    client = imap.connect()
    try:
        client.select_folder("Sent", readonly=True)
        assert client.search(["HEADER", "Message-ID", f"<{sent_mid}>"])
    finally:
        client.logout()
    assert one_row(store, oid)["sent_copy"]

    # Their answer: a new subject and no tag, so only our Message-ID can thread it.
    answer = (
        "From: Ann Lee <ann@cust.example>\r\nTo: support@example.com\r\nSubject: the file\r\n"
        f"Message-ID: <second@cust.example>\r\nIn-Reply-To: <{sent_mid}>\r\nReferences: <first@cust.example> <{sent_mid}>\r\n"
        "Date: Mon, 23 Nov 2026 11:00:00 +0000\r\n\r\nHere it is.\r\n"
    ).encode()
    imap.append(answer)
    summary = sync_once(store, cfg)
    assert summary.new_messages == 1 and summary.tickets_created == 0
    with store.read() as s:
        t = ticket_detail(s.connection(), tid)
    assert [m["direction"] for m in t["messages"]] == ["in", "out", "in"]
    assert t["messages"][-1]["thread_reason"] == f"In-Reply-To <{sent_mid}>"
    assert t["status"] == "open"  # waiting on the customer, who answered: back in the queue
    store.close()


def ob_tickets(conn):
    from storage.tickets import queue_rows

    return queue_rows(conn, view="all", now=NOW)


def test_busy_drain_in_the_same_process_does_not_double_send(store, cfg, smtp):
    tid = add_ticket(store, "Help", "ann@cust.example", "It fails.")
    for _ in range(5):
        reply(store, cfg, tid, next_status=None)
    results = []
    threads = [threading.Thread(target=lambda: results.append(drain_outbox(store, cfg))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(r.sent) for r in results) == 5 and len(smtp.messages) == 5
