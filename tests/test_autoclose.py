"""Waiting on the customer: one polite check-in, then closed after N business days of silence;
a customer reply reopens, auto-replies and bounces do not."""

from __future__ import annotations

import email
from datetime import datetime, timedelta, timezone
from email import policy

import pytest
from sqlalchemy import text

from factories import add_reply, add_ticket
from mail.ack import ack_settings, housekeeping, pending_action, plan_acknowledgements
from mail.localservers import DROP
from mail.send import drain_outbox, queue_reply
from mail.sync import sync_once
from storage.db import Store
from storage.ledger import stamp_automatic_mail
from storage.outbox import cancel, outbox_rows, retry
from storage.tickets import events_of, set_status, ticket_row
from test_ack import SUPPORT, ack_all, customer_mail, make_config

# Monday 23 November 2026, 10:00 UTC; business hours Mon-Fri 09-17 UTC.
MON = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def cfg(tmp_path, database):
    return make_config(tmp_path, database=database)


@pytest.fixture
def store(cfg):
    s = Store(cfg.database)
    yield s
    s.close()


@pytest.mark.parametrize(
    "checkin_at, now, allowed, expected",
    [
        (None, MON + 2 * DAY, True, None),  # Wednesday: 2 business days
        (None, MON + 3 * DAY, True, "checkin"),  # Thursday: 3
        (None, MON + 5 * DAY, True, "checkin"),  # Saturday: still 4 business days, check in first
        (None, MON + 7 * DAY, True, "checkin"),  # Monday: 5, but nobody checked in yet: check in first
        (MON + 3 * DAY, MON + 4 * DAY, True, None),  # one day after the check-in
        (MON + 3 * DAY, MON + 7 * DAY, True, "close"),  # 5 business days, 2 since the check-in
        (MON + 7 * DAY, MON + 8 * DAY, True, None),  # a late check-in still leaves 2 days to answer
        (MON + 7 * DAY, MON + 9 * DAY, True, "close"),
        (None, MON + 7 * DAY, False, "close"),  # no check-in possible (automated, window): close on time
        (None, MON + 4 * DAY, False, None),
    ],
)
def test_pending_action(cfg, checkin_at, now, allowed, expected):
    hours = ack_settings(cfg, now=MON).hours
    assert pending_action(pending_since=MON, checkin_at=checkin_at, now=now, hours=hours, close_after_days=5,
                          checkin_after_days=3, checkin_allowed=allowed) == expected


def _waiting(store, cfg, sender="ann@cust.example", **kw) -> int:
    tid = add_ticket(store, "Export to CSV stops", sender, "The export stops at row 1000.", **kw)
    queue_reply(store, cfg, tid, "Hi Ann,\n\nTry the new export button.\n\nAna", agent="Ana", now=MON,
                reason="answered; waiting for Ann to confirm")
    return tid


def _outbox(store, tid) -> list:
    with store.read() as s:
        return s.connection().execute(
            text("SELECT kind, raw FROM outbox WHERE ticket_id = :t ORDER BY id"), {"t": tid}).all()


def test_one_check_in_then_closed_with_the_reason(store, cfg):
    tid = _waiting(store, cfg)
    assert housekeeping(store, cfg, MON + 2 * DAY).checkins == []
    s = housekeeping(store, cfg, MON + 3 * DAY)
    assert [t for t, _ in s.checkins] == [tid] and s.closed == []
    assert housekeeping(store, cfg, MON + 3 * DAY + timedelta(hours=2)).checkins == []  # at most one
    kinds = [k for k, _ in _outbox(store, tid)]
    assert kinds == ["reply", "checkin"]
    msg = email.message_from_bytes(_outbox(store, tid)[1][1], policy=policy.default)
    assert msg["Auto-Submitted"] == "auto-replied" and msg["In-Reply-To"]
    text = msg.get_content()
    assert text.startswith("Hi Ann,") and "Just reply to this email" in text and "Monday 30 November" in text

    assert housekeeping(store, cfg, MON + 4 * DAY).closed == []
    s = housekeeping(store, cfg, MON + 7 * DAY)
    assert s.closed == [tid] and s.checkins == []
    with store.read() as r:
        conn = r.connection()
        assert ticket_row(conn, tid)["status"] == "closed"
        closing = [e for e in events_of(conn, tid) if e["kind"] == "status" and e["new"] == "closed"]
    assert closing[0]["reason"] == "no reply from the customer in 5 days"
    assert closing[0]["actor"] == "heard housekeeping"
    assert [k for k, _ in _outbox(store, tid)] == ["reply", "checkin"]  # no closing mail: one check-in at most


@pytest.mark.parametrize("fault, state", [("550 5.7.1 refused as spam", "failed"), (DROP, "unknown"),
                                          (None, "cancelled")])
def test_a_customer_whose_reply_never_reached_them_is_not_checked_in_with_nor_closed(
        tmp_path, smtp_server, database, fault, state):
    # A reply the server refused for good (or that may not have gone out, or that the agent cancelled)
    # parked the ticket as waiting on the customer all the same: three days later heard "checked in" on
    # an answer the customer never got, and two days after that closed the ticket for want of a reply.
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, database=database)
    store = Store(cfg.database)
    tid = _waiting(store, cfg)
    with store.read() as r:
        [oid] = [o["id"] for o in outbox_rows(r.connection(), ticket_id=tid)]
    if fault:
        smtp_server.fail_next(fault)
        drain_outbox(store, cfg, now=MON)
    else:
        cancel(store, oid, actor="Ana", now=MON)
    assert housekeeping(store, cfg, MON + 3 * DAY).checkins == []
    assert housekeeping(store, cfg, MON + 8 * DAY).closed == []
    assert housekeeping(store, cfg, MON + 8 * DAY, dry_run=True).planned == []
    with store.read() as r:
        conn = r.connection()
        assert ticket_row(conn, tid)["status"] == "pending"
        outcome = [e for e in events_of(conn, tid) if e["kind"] == "outbox"]
    assert [(e["old"], e["new"]) for e in outcome] == [("queued" if not fault else "sending", state)]
    if fault:  # the timeline says what the server did, not only "replied to ann@cust.example"
        assert outcome[0]["actor"] == "heard outbox" and "ann@cust.example (outbox #1)" in outcome[0]["reason"]
        assert (fault.split()[0] in outcome[0]["reason"]) if state == "failed" else "may or may not" in outcome[0]["reason"]
    assert len([m for m in smtp_server.received if m.accepted]) == 0
    # The agent sends it again and it goes out: the customer can be waited on now.
    retry(store, oid, actor="Ana", now=MON + 8 * DAY)
    assert drain_outbox(store, cfg, now=MON + 8 * DAY).sent == [oid]
    assert [t for t, _ in housekeeping(store, cfg, MON + 8 * DAY).checkins] == [tid]
    store.close()


def test_no_check_in_to_an_automated_sender_or_inside_the_window_but_still_closed(store, cfg):
    robot = _waiting(store, cfg, "noreply@shop.example", automated_reason="sender noreply")
    recent = _waiting(store, cfg, "bob@cust.example")
    with store.write_conn() as conn:
        stamp_automatic_mail(conn, recent, now=MON + 3 * DAY - timedelta(hours=1))
    assert housekeeping(store, cfg, MON + 3 * DAY).checkins == []  # the window holds Bob's check-in
    s = housekeeping(store, cfg, MON + 7 * DAY)
    assert s.closed == [robot] and [t for t, _ in s.checkins] == [recent]  # the window passed: check in first
    assert housekeeping(store, cfg, MON + 9 * DAY).closed == [recent]
    assert [k for k, _ in _outbox(store, robot)] == ["reply"]
    other = _waiting(store, cfg, "cy@cust.example")
    with store.write_conn() as conn:  # inside the window all along: closed on time without a check-in
        stamp_automatic_mail(conn, other, now=MON + 7 * DAY - timedelta(hours=1))
    assert housekeeping(store, cfg, MON + 7 * DAY).closed == [other]


def test_dry_run_changes_nothing(store, cfg):
    tid = _waiting(store, cfg)
    s = housekeeping(store, cfg, MON + 3 * DAY, dry_run=True)
    assert s.planned == [(tid, "checkin")] and s.checkins == []
    assert [k for k, _ in _outbox(store, tid)] == ["reply"]


def test_a_configured_close_after_days(tmp_path):
    cfg = make_config(tmp_path, pending={"close_after_days": 2})
    store = Store(cfg.database)
    tid = _waiting(store, cfg)
    assert [t for t, _ in housekeeping(store, cfg, MON + DAY).checkins] == [tid]
    assert housekeeping(store, cfg, MON + 2 * DAY).closed == [tid]
    with store.read() as r:
        [e] = [e for e in events_of(r.connection(), tid) if e["new"] == "closed"]
    assert e["reason"] == "no reply from the customer in 2 days"
    store.close()


def test_a_reply_settles_its_promise_and_housekeeping_the_ones_closed_otherwise(store, cfg):
    replied = add_ticket(store, "Export", "ann@cust.example", "It stops.")
    solved = add_ticket(store, "Login", "bob@cust.example", "Locked out.")
    ack_all(store, cfg, now=MON)
    queue_reply(store, cfg, replied, "Hi Ann,\n\nDone.\n\nAna", agent="Ana", now=MON + timedelta(hours=1),
                next_status=None)
    with store.read() as r:
        assert ticket_row(r.connection(), replied)["promise_deadline"] is None
    set_status(store, solved, "solved", reason="fixed on the phone with their IT", actor="Ana",
               now=MON + timedelta(hours=1))
    assert housekeeping(store, cfg, MON + timedelta(hours=2)).settled == [solved]
    with store.read() as r:
        assert ticket_row(r.connection(), solved)["promise_deadline"] is None


def test_auto_acknowledge_is_off_by_default(store, cfg, tmp_path):
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", date=MON - 3 * HOUR)
    assert housekeeping(store, cfg, MON).acknowledged == []
    on = make_config(tmp_path, ack={"auto": True})
    assert [t for t, _ in housekeeping(store, on, MON).acknowledged] == [tid]


def test_auto_acknowledges_a_ticket_once_its_quick_reply_has_not_come(store, tmp_path):
    # One agent, free, nobody ahead: the reply is likely within [ack] minimum (2 h) of the mail, so no
    # "I will answer by 12:00" goes out at 10:00. Each housekeeping run looks again; once two hours have
    # passed without a reply the customer is acknowledged, once.
    on = make_config(tmp_path, ack={"auto": True})
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", date=MON)
    first = housekeeping(store, on, MON)
    assert first.acknowledged == []
    assert [(s.ticket_id, s.rule.split(" (")[0]) for s in first.skipped] == [
        (tid, "likely answered within 2h of their mail anyway")]
    assert housekeeping(store, on, MON + HOUR).acknowledged == []  # no new mail: still looked at
    late = housekeeping(store, on, MON + 2 * HOUR + 5 * MINUTE)
    assert [t for t, _ in late.acknowledged] == [tid]
    with store.read() as r:
        assert ticket_row(r.connection(), tid)["promise_deadline"] is not None
    assert housekeeping(store, on, MON + 3 * HOUR).acknowledged == []  # never twice


def test_auto_leaves_older_mail_to_the_review(store, tmp_path):
    # Mail more than three days old (a mailbox's history on its first sync) gets no automatic
    # acknowledgement; the review (`a`) still offers it, and mail older than [ack] max_age not even there.
    on = make_config(tmp_path, ack={"auto": True})
    week_old = add_ticket(store, "Export", "ann@cust.example", "It stops.", date=MON - 7 * DAY)
    ancient = add_ticket(store, "Import", "bob@cust.example", "It stops.", date=MON - 40 * DAY)
    assert housekeeping(store, on, MON).acknowledged == []
    plan = plan_acknowledgements(store, on, now=MON)
    assert [c.ticket_id for c in plan.candidates] == [week_old]
    rules = {s.ticket_id: s.rule for s in plan.skipped}
    assert rules[ancient] == "mail of Wed 14 Oct 10:00 is over [ack] max_age = 14d old: answer it yourself"


def test_a_customer_reply_reopens_a_closed_ticket_auto_replies_and_bounces_do_not(pymap_server, tmp_path):
    cfg = make_config(tmp_path, imap_port=pymap_server.port)
    store = Store(cfg.database)
    first = "c1.ann.cust.example@cust.example"
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(1, "ann@cust.example", "Export stops", name="Ann")])
    sync_once(store, cfg)
    tid = 1
    queue_reply(store, cfg, tid, "Hi Ann,\n\nTry again now.\n\nAna", agent="Ana", now=MON,
                reason="answered; waiting for Ann to confirm")
    # An out-of-office answer while we wait: no reopen, and the clock keeps running.
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(2, "ann@cust.example", "Automatic reply: Export stops",
                                                         irt=first, body="I am away.",
                                                         extra="Auto-Submitted: auto-replied\r\n")])
    sync_once(store, cfg)
    with store.read() as r:
        row = r.connection().exec_driver_sql("SELECT status, pending_since FROM tickets WHERE id = 1").one()
    assert row[0] == "pending"
    housekeeping(store, cfg, MON + 3 * DAY)
    assert housekeeping(store, cfg, MON + 7 * DAY).closed == [tid]
    # A bounce of the check-in: still closed.
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(3, "mailer-daemon@mx.example", "Undelivered: Export stops",
                                                         irt=first, body="Delivery failed.")])
    sync_once(store, cfg)
    with store.read() as r:
        assert ticket_row(r.connection(), tid)["status"] == "closed"
    # The customer writes back, days later: reopened.
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(4, "ann@cust.example", "Re: Export stops", irt=first,
                                                         body="Sorry, I was away. It still stops at row 1000.")])
    sync_once(store, cfg)
    with store.read() as r:
        conn = r.connection()
        assert ticket_row(conn, tid)["status"] == "open"
        reopened = [e for e in events_of(conn, tid) if e["kind"] == "status" and e["new"] == "open"]
    assert len(reopened) == 1 and reopened[0]["reason"].startswith("the customer replied")
    store.close()


def test_a_robot_answering_each_acknowledgement_with_a_new_mail_gets_one_and_its_tickets_say_why(
        store, tmp_path, capsys, database):
    # An autoresponder that strips every header and changes the subject opens a new ticket with each
    # answer. [ack] window stops the loop, but the ticket it held back said nothing about it: `heard show`
    # gave no hint why that customer got no acknowledgement.
    from tui.cli import main

    on = make_config(tmp_path, ack={"auto": True}, database=database)
    first = add_ticket(store, "Export", "desk@robot.example", "It stops.", date=MON)
    late = MON + 2 * HOUR + 5 * MINUTE
    assert [t for t, _ in housekeeping(store, on, late).acknowledged] == [first]
    echo = add_ticket(store, "Thanks for your message", "desk@robot.example", "I will answer soon.",
                      date=late + MINUTE)
    for later in (3 * HOUR, 5 * HOUR, 20 * HOUR):  # every sync looks again; the window holds each time
        assert housekeeping(store, on, MON + later).acknowledged == []
    with store.read() as r:
        held = [e for e in events_of(r.connection(), echo) if e["kind"] == "ack_held"]
    assert len(held) == 1 and held[0]["actor"] == "heard housekeeping"
    assert "[ack] window = 24h" in held[0]["reason"]
    assert [k for k, _ in _outbox(store, echo)] == []
    assert main(["--config", str(on.path), "show", str(echo)]) == 0
    assert "no automatic acknowledgement" in capsys.readouterr().out
