"""`heard sync --watch`: IMAP IDLE brings new mail in at once, and a dropped server is survived."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from mail.config import load_config
from mail.localservers import PymapServer
from mail.sync import WatchStatus, watch
from storage.db import Store
from tests.test_sync import mail, write_config


def count(db) -> int:
    try:
        return sqlite3.connect(db, timeout=2).execute("SELECT count(*) FROM messages").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_until(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_new_mail_arrives_within_a_second_through_idle(dovecot_server, tmp_path):
    dovecot_server.append([mail(1)])
    cfg = load_config(write_config(tmp_path, dovecot_server))
    store = Store(cfg.database)
    stop = threading.Event()
    statuses: list[WatchStatus] = []
    t = threading.Thread(target=watch, args=(store, cfg), kwargs={"stop": stop, "on_status": statuses.append})
    t.start()
    try:
        assert wait_until(lambda: count(cfg.database) == 1 and bool(statuses))
        assert statuses[0].mode == "idle"
        sent_at = time.monotonic()
        dovecot_server.append([mail(2, "A new question")])
        assert wait_until(lambda: count(cfg.database) == 2, timeout=5)
        # The brief's target is 1 s; allow scheduling noise on a loaded CI machine.
        assert time.monotonic() - sent_at < 3
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_watch_survives_a_server_that_goes_away_and_comes_back(tmp_path):
    server = PymapServer(tmp_path / "pymap", username="support@heard.example")
    server.start()
    cfg_path = write_config(tmp_path, server)
    port = server.port
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server.append([mail(1)])
        db = tmp_path / "heard.db"
        assert wait_until(lambda: count(db) == 1)
        server.stop()
        time.sleep(1.5)  # the watcher notices and backs off
        server.start()
        assert server.port == port
        server.append([mail(2, "After the outage")])
        arrived = wait_until(lambda: count(db) == 2, timeout=40)
        assert proc.poll() is None  # still running
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        server.stop()
    assert arrived, err
    assert "Traceback" not in err
    assert ("refused the connection" in err or "did not answer" in err or "cannot reach" in err
            or "lost the connection" in err)


def test_ctrl_c_stops_the_watcher_at_once_in_the_middle_of_idle(dovecot_server, tmp_path):
    # ctrl+c came while the connection was in IDLE: the LOGOUT that followed is not read by a server
    # waiting for DONE, so `heard sync --watch` hung until the connection's 30 s read timeout.
    dovecot_server.append([mail(1)])
    cfg_path = write_config(tmp_path, dovecot_server)
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: count(tmp_path / "heard.db") == 1)
        time.sleep(1.0)  # in IDLE now
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert took < 5


def test_without_idle_the_watcher_polls(pymap_server, tmp_path):
    path = write_config(tmp_path, pymap_server)
    path.write_text(path.read_text().replace('folder = "INBOX"', 'folder = "INBOX"\nidle = false\npoll_interval = 1'))
    cfg = load_config(path)
    store = Store(cfg.database)
    stop = threading.Event()
    statuses: list[WatchStatus] = []
    t = threading.Thread(target=watch, args=(store, cfg), kwargs={"stop": stop, "on_status": statuses.append})
    t.start()
    try:
        assert wait_until(lambda: bool(statuses))
        assert statuses[0].mode == "polling"
        pymap_server.append([mail(7, "Polled in")])
        assert wait_until(lambda: count(cfg.database) == 1, timeout=10)
    finally:
        stop.set()
        t.join(10)


def test_a_quiet_mailbox_under_idle_still_gets_its_housekeeping(dovecot_server, smtp_server, tmp_path):
    # IDLE only wakes up for new mail, but check-ins, auto-close and [ack] auto for a customer whose
    # quick reply did not come depend on the clock. On a quiet inbox they used to wait for the next
    # customer's mail: here the check-in falls due a few seconds after the watcher started, and
    # no mail arrives at all.
    from factories import add_ticket
    from mail.send import drain_outbox, queue_reply
    from test_ack import make_config
    from tui.cli import after_sync

    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=dovecot_server.port,
                      imap_user=dovecot_server.username, imap_password=dovecot_server.password,
                      hours={"days": every_day, "hours": "00:00-24:00"},
                      pending={"checkin_after_days": 1, "close_after_days": 2})
    store = Store(cfg.database)
    tid = add_ticket(store, "Export to CSV stops", "ann@cust.example", "The export stops at row 1000.")
    parked = datetime.now(timezone.utc) - timedelta(days=1) + timedelta(seconds=12)
    queue_reply(store, cfg, tid, "Hi Ann,\n\nTry the new export button.\n\nAna", agent="Ana", now=parked,
                reason="answered; waiting for Ann to confirm")
    drain_outbox(store, cfg)  # as `heard reply` does
    assert len(smtp_server.wait_for(1)) == 1
    stop = threading.Event()
    statuses: list[WatchStatus] = []

    def on_status(st: WatchStatus) -> None:  # what `heard sync --watch` does after each sync
        statuses.append(st)
        if st.summary is not None:
            after_sync(store, cfg)

    t = threading.Thread(target=watch, args=(store, cfg),
                         kwargs={"stop": stop, "on_status": on_status, "resync_every": 1.0})
    t.start()
    try:
        assert wait_until(lambda: bool(statuses))
        assert statuses[0].mode == "idle" and len(smtp_server.messages) == 1  # not due yet at the first sync
        got = smtp_server.wait_for(2, timeout=30)
        assert list(got[1].rcpt_tos) == ["ann@cust.example"] and b"I wanted to check in" in got[1].data
        assert not any(st.summary.new_messages for st in statuses if st.summary)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


@pytest.mark.postgres
def test_watch_waits_out_a_postgres_server_that_stops_and_stores_the_mail_once_it_is_back(
        own_postgres_server, dovecot_server, tmp_path):
    # A database server stopped under `heard sync --watch` (an upgrade, a restart) ended it with a
    # SQLAlchemy traceback: mail stopped arriving for every agent until someone restarted it.
    url = own_postgres_server.new_database()
    dovecot_server.append([mail(1)])
    cfg_path = write_config(tmp_path, dovecot_server, database=url)
    stored = lambda: own_postgres_server.query(url, "SELECT count(*) FROM messages")[0][0]  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: _quietly(stored) == 1, timeout=30)
        own_postgres_server.pause()
        dovecot_server.append([mail(2, "During the outage")])
        time.sleep(3)  # the watcher wakes for the new mail, cannot store it, and backs off
        own_postgres_server.resume()
        arrived = wait_until(lambda: _quietly(stored) == 2, timeout=40)
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert alive and arrived, err
    assert "Traceback" not in err and "sqlalche.me" not in err
    problems = [line for line in err.splitlines() if line.strip()]
    assert problems and all(line.startswith("heard: database 'postgresql://heard@") and "is unreachable" in line
                            for line in problems), problems


def _quietly(query) -> int:
    try:
        return query()
    except Exception:  # the server is down
        return -1


@pytest.mark.slow
def test_a_silent_smtp_server_holds_up_neither_the_watch_nor_the_mail_it_brings(dovecot_server, tmp_path):
    # With [ack] auto the watcher sent after each sync, in its own loop: an SMTP server that takes the
    # connection and never answers held every new mail back for the minute of its timeout.
    from mail.localservers import SilentServer
    from tests.test_ack import customer_mail, days_ago

    silent = SilentServer().start()
    cfg_path = write_config(tmp_path, dovecot_server)
    cfg_path.write_text(cfg_path.read_text() + f"""
[smtp]
host = "{silent.host}"
port = {silent.port}
security = "none"
username = ""
password_command = "echo unused"
[ack]
auto = true
[hours]
timezone = "UTC"
""")
    dovecot_server.append([customer_mail(1, "ann@cust.example", "Export stops", date=days_ago(1))])
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = tmp_path / "heard.db"

    def tickets() -> int:
        try:
            return sqlite3.connect(db, timeout=2).execute("SELECT count(*) FROM tickets").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    try:
        assert wait_until(lambda: tickets() == 1 and silent.accepted >= 1, timeout=30)
        dovecot_server.append([customer_mail(2, "bob@cust.example", "Invoice blank", date=days_ago(1))])
        assert wait_until(lambda: tickets() == 2, timeout=10), "the second mail waited for the SMTP server"
        acks = "SELECT count(*) FROM outbox WHERE kind = 'ack'"
        assert wait_until(lambda: sqlite3.connect(db, timeout=2).execute(acks).fetchone()[0] == 2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        silent.stop()
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert took < 10
    assert "check [smtp]" not in err and "stays in the outbox" in err, err  # ctrl+c cut it, not the server
    # The acknowledgement cut before the server said a word is queued again, never left "sending".
    states = [r[0] for r in sqlite3.connect(db).execute("SELECT state FROM outbox WHERE kind = 'ack'")]
    assert states and "sending" not in states, states
