"""Acknowledgements: the message, the skip rules, honest deadlines, updates, the config, and the
whole batch end to end against real IMAP (pymap) and SMTP (aiosmtpd) servers on loopback."""

from __future__ import annotations

import email
import email.utils
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timedelta, timezone
from email import policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from factories import add_ticket
from mail.ack import (
    DEFAULT_TEMPLATE,
    AckError,
    ack_settings,
    ack_tone_warnings,
    parse_when,
    plan_acknowledgements,
    render_ack,
    send_acknowledgements,
    send_update,
)
from mail.config import ConfigError, load_config
from mail.send import drain_outbox
from mail.sync import sync_once
from storage import ledger
from storage.db import Store
from storage.tickets import events_of, take_ticket, ticket_row
from tui.cli import main

ROOT = Path(__file__).resolve().parent.parent
SUPPORT = "support@example.com"
# Tuesday 24 November 2026, 10:00 UTC: inside business hours.
NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)


def YESTERDAY() -> datetime:  # noqa: N802 (reads like the constant it stands for)
    return datetime.now(timezone.utc) - timedelta(days=1)


# -- helpers shared by the ack test files ------------------------------------------------------
def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(v)


def make_config(tmp_path: Path, *, smtp_port: int = 1, imap_port: int = 1, imap_user: str = SUPPORT,
                imap_password: str = "support-password", ack: dict | None = None, hours: dict | None = None,
                pending: dict | None = None, tiers: dict | None = None, agent_name: str = "Ana",
                sent_folder: str = "", database: str | None = None):
    """A real config file, [ack]/[hours]/[tiers]/[pending] included, loaded as the CLI would."""
    hours = {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-17:00", "timezone": "UTC",
             **(hours or {})}
    sections = {
        "account": {"address": SUPPORT},
        "imap": {"host": "127.0.0.1", "port": imap_port, "security": "none", "username": imap_user,
                 "password_command": f"printf '%s' '{imap_password}'"},
        "smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "username": "",
                 "password_command": "echo unused", "sent_folder": sent_folder},
        "storage": {"database": database or str(tmp_path / "heard.db")},
        "agent": {"name": agent_name, "email": "ana@example.com"},
        "ack": ack or {},
        "hours": hours,
        "pending": pending or {},
    }
    lines = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    for name, spec in (tiers or {}).items():
        lines.append(f"[tiers.{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in spec.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def ack_all(store, cfg, *, now):
    plan = plan_acknowledgements(store, cfg, now=now)
    return send_acknowledgements(store, cfg, plan.candidates, now=now)


def customer_mail(n: int, sender: str, subject: str, *, name: str = "", extra: str = "",
                  body: str = "The CSV export stops at row 1000 since the last update.",
                  date: str = "Tue, 24 Nov 2026 09:00:00 +0100", irt: str | None = None) -> bytes:
    head = (f"From: {name + ' ' if name else ''}<{sender}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
            f"Message-ID: <c{n}.{sender.replace('@', '.')}@cust.example>\r\nDate: {date}\r\n")
    if irt:
        head += f"In-Reply-To: <{irt}>\r\nReferences: <{irt}>\r\n"
    head += extra
    return (head + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


def days_ago(days: float, *, utc_offset_hours: int = 1) -> str:
    """A Date header ``days`` before the real clock: for tests that run heard's commands, which read it.

    (Acknowledgements depend on how old the mail is: none within [ack] minimum of it, none after [ack]
    max_age, none automatic after three days.)
    """
    at = datetime.now(timezone.utc) - timedelta(days=days)
    return email.utils.format_datetime(at.astimezone(timezone(timedelta(hours=utc_offset_hours))))


def parsed(received) -> email.message.EmailMessage:
    return email.message_from_bytes(received.data, policy=policy.default)


@pytest.fixture
def cfg(tmp_path, database):
    return make_config(tmp_path, database=database)


@pytest.fixture
def store(cfg):
    s = Store(cfg.database)
    yield s
    s.close()


# -- the message -----------------------------------------------------------------------------
def test_the_message_is_personal_first_person_and_passes_the_tone_checks(store, cfg):
    tid = add_ticket(store, "Re: Fwd: Export to CSV stops at row 1000", "ann@cust.example", "It stops.",
                     from_name="Ann Example")
    plan = plan_acknowledgements(store, cfg, now=NOW)
    [c] = plan.candidates
    body = render_ack(c, cfg, ack_settings(cfg, now=NOW))
    assert body.startswith("Hi Ann,\n")
    assert '"Export to CSV stops at row 1000"' in body  # their subject, in their words
    assert "I will personally get back to you by Tuesday 24 November" in body
    assert "reply to this email" in body
    assert body.rstrip().endswith("Ana")
    assert body.lower().count("sorry") == 1
    low = f" {body.lower()} "
    assert " we " not in low and " we'" not in low and " our " not in low
    assert "high volume" not in low
    assert ack_tone_warnings(body, now=NOW) == []
    assert ack_tone_warnings(DEFAULT_TEMPLATE.replace("{deadline}", "Friday"), now=NOW) == []
    assert tid == c.ticket_id


def test_the_greeting_uses_a_first_name_not_a_title_a_shout_or_a_team(store, cfg):
    for n, name in enumerate(("Dr. Anna Schmidt", "MR JOHN SMITH", "Acme Support Team", "Herr Müller")):
        add_ticket(store, "Export fails", f"c{n}@cust.example", "It stops.", from_name=name)
    settings = ack_settings(cfg, now=NOW)
    plan = plan_acknowledgements(store, cfg, now=NOW, settings=settings)
    greetings = [render_ack(c, cfg, settings).splitlines()[0] for c in plan.candidates]
    assert greetings == ["Hi Anna,", "Hi John,", "Hello,", "Hello,"]


def test_deadline_in_the_customers_zone_when_their_mail_shows_one_else_ours_named(store, tmp_path):
    cfg = make_config(tmp_path, hours={"timezone": "Europe/Berlin"})
    add_ticket(store, "With zone", "ann@cust.example", "It stops.", date_offset_minutes=-300)
    add_ticket(store, "No zone", "bob@cust.example", "It stops.")
    plan = plan_acknowledgements(store, cfg, now=NOW)
    settings = ack_settings(cfg, now=NOW)
    bodies = {c.subject: render_ack(c, cfg, settings) for c in plan.candidates}
    assert "your time" in bodies["With zone"]  # New York clock
    assert "CET" in bodies["No zone"] and "your time" not in bodies["No zone"]
    with_zone = next(c for c in plan.candidates if c.subject == "With zone")
    local = with_zone.deadline.astimezone(timezone(timedelta(hours=-5)))
    assert f"{local:%H:%M} your time" in bodies["With zone"]


def test_the_customers_clock_follows_a_dst_change_between_their_mail_and_the_deadline(
        pymap_server, smtp_server, tmp_path):
    # Friday 23 October 2026: Berlin is on +0200 (CEST), Los Angeles on -0700 (PDT). Europe turns
    # its clocks back on Sunday 25 October, the USA on Sunday 1 November.
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port,
                      hours={"timezone": "Europe/Berlin"})
    pymap_server.deliver_maildir(SUPPORT, [
        customer_mail(1, "jan@berger.example", "Bank sync stopped", name="Jan Berger",
                      date="Fri, 23 Oct 2026 16:00:00 +0200"),
        customer_mail(2, "mike@west.example", "Blank invoice PDFs", name="Mike Ross",
                      date="Fri, 23 Oct 2026 07:10:00 -0700"),
    ])
    store = Store(cfg.database)
    sync_once(store, cfg)
    friday_evening = datetime(2026, 10, 23, 16, 10, tzinfo=timezone.utc)  # 18:10 in Berlin
    plan = plan_acknowledgements(store, cfg, now=friday_evening)
    c = {c.customer: c for c in plan.candidates}
    assert len(send_acknowledgements(store, cfg, plan.candidates, now=friday_evening).queued) == 2
    drain_outbox(store, cfg, now=friday_evening)
    bodies = {m.rcpt_tos[0]: parsed(m).get_content() for m in smtp_server.messages}
    jan, mike = c["jan@berger.example"], c["mike@west.example"]
    # Monday in Berlin is on +0100: Jan's clock is the desk's own again, not an hour ahead of it.
    jan_local = jan.deadline.astimezone(ZoneInfo("Europe/Berlin"))
    assert jan_local.utcoffset() == timedelta(hours=1) and 9 <= jan_local.hour <= 17
    assert f"by Monday 26 October, {jan_local:%H:%M} your time." in bodies["jan@berger.example"]
    # Mike is still on -0700 on Monday 26 October.
    mike_local = mike.deadline.astimezone(timezone(timedelta(hours=-7)))
    assert f"by Monday 26 October, {mike_local:%H:%M} your time." in bodies["mike@west.example"]

    # An update to Mike for Monday 2 November: Los Angeles is on -0800 by then, Phoenix still on
    # -0700; his clock cannot be told from his mail, so the desk's is written, named.
    monday = datetime(2026, 10, 26, 8, 30, tzinfo=timezone.utc)
    new = datetime(2026, 11, 2, 16, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    upd = send_update(store, cfg, mike.ticket_id, deadline=new, reason="the PDF service is being replaced",
                      now=monday, force=True)
    drain_outbox(store, cfg, now=monday)
    body = parsed(smtp_server.messages[-1]).get_content()
    assert f"by Monday 26 October, {mike_local:%H:%M} your time. I need until Monday 2 November, 16:00 CET," in body
    assert upd.deadline == new
    # Jan's update for Wednesday: his clock again, the desk's CET.
    upd = send_update(store, cfg, jan.ticket_id, deadline=datetime(2026, 10, 28, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")),
                      reason="the bank changed its API", now=monday, force=True)
    drain_outbox(store, cfg, now=monday)
    body = parsed(smtp_server.messages[-1]).get_content()
    assert "I need until Wednesday 28 October, 10:00 your time, because the bank changed its API." in body
    store.close()


def test_a_custom_template_is_used_and_checked(tmp_path):
    cfg = make_config(tmp_path, ack={"template": "{greeting}\n\nI will answer by {deadline}.\n\n{agent_name}\n"})
    store = Store(cfg.database)
    add_ticket(store, "Export", "ann@cust.example", "It stops.", from_name="Ann")
    [c] = plan_acknowledgements(store, cfg, now=NOW).candidates
    assert render_ack(c, cfg, ack_settings(cfg, now=NOW)).startswith("Hi Ann,\n\nI will answer by Tuesday")
    store.close()


# -- who is skipped, and why -----------------------------------------------------------------------
def test_plan_lists_eligible_tickets_and_skips_each_with_its_rule(store, cfg):
    ann = add_ticket(store, "Export", "ann@cust.example", "It stops.")
    bounce = add_ticket(store, "Undelivered", "mailer-daemon@cust.example", "x", automated_reason="empty envelope sender")
    listed = add_ticket(store, "Digest", "news@list.example", "x", automated_reason="List-Id header")
    robot = add_ticket(store, "Receipt", "noreply@shop.example", "x", automated_reason="sender noreply")
    ours = add_ticket(store, "Loop", "colleague@example.com", "x", automated_reason="own address")
    held = add_ticket(store, "Held", "hal@cust.example", "It stops.")
    take_ticket(store, held, agent="Ana", now=NOW)
    twice_a = add_ticket(store, "First", "tw@cust.example", "It stops.")
    twice_b = add_ticket(store, "Second", "tw@cust.example", "It stops too.")
    plan = plan_acknowledgements(store, cfg, now=NOW)
    assert sorted(c.ticket_id for c in plan.candidates) == sorted([ann, twice_a])
    rules = {s.ticket_id: s.rule for s in plan.skipped}
    assert rules[bounce].startswith("bounce (empty envelope sender)")
    assert rules[listed].startswith("mailing list (List-Id header)")
    assert rules[robot].startswith("automated sender (sender noreply)")
    assert rules[ours].startswith("our own address")
    assert rules[held].startswith("held by Ana")
    assert rules[twice_b] == f"one mail per customer: #{twice_a} in this batch"


def test_the_per_customer_window_skips_and_a_second_batch_sends_nothing(store, cfg):
    add_ticket(store, "Export", "ann@cust.example", "It stops.")
    first = ack_all(store, cfg, now=NOW)
    assert len(first.queued) == 1
    assert ack_all(store, cfg, now=NOW + H).queued == []  # acknowledged: not waiting for one any more
    add_ticket(store, "Another thing", "ann@cust.example", "And the import too.")
    plan = plan_acknowledgements(store, cfg, now=NOW + H)
    assert plan.candidates == [] and plan.skipped[0].rule.startswith("had automatic mail Tue 24 Nov 10:00 ([ack] window = 24h")
    assert len(plan_acknowledgements(store, cfg, now=NOW + 25 * H).candidates) == 1  # the window is 24 h


def test_a_reply_or_ack_written_meanwhile_is_rechecked_at_send_time(store, cfg):
    add_ticket(store, "Export", "ann@cust.example", "It stops.")
    plan = plan_acknowledgements(store, cfg, now=NOW)
    assert len(send_acknowledgements(store, cfg, plan.candidates, now=NOW).queued) == 1
    again = send_acknowledgements(store, cfg, plan.candidates, now=NOW)  # a second screen, same review
    assert again.queued == [] and again.skipped[0].rule.startswith("already acknowledged")


def test_sending_records_promise_event_window_and_threading(store, cfg):
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", message_id="first@cust.example")
    [(t, oid)] = ack_all(store, cfg, now=NOW).queued
    with store.read() as s:
        conn = s.connection()
        [e] = [e for e in events_of(conn, tid) if e["kind"] == "ack"]
        row = ticket_row(conn, tid)
        raw = conn.execute(text("SELECT raw, kind, recipients FROM outbox WHERE id = :i"), {"i": oid}).one()
        cust = conn.execute(text("SELECT last_automatic_at FROM customers WHERE address = 'ann@cust.example'")).one()
    assert e["reason"].startswith("acknowledged by Ana; promised by Tue 24 Nov ")
    assert e["actor"] == "Ana"
    assert row["acknowledged_at"] is not None and row["promise_deadline"] is not None
    assert cust[0] is not None
    msg = email.message_from_bytes(raw[0], policy=policy.default)
    assert raw[1] == "ack" and raw[2] == "ann@cust.example"
    assert msg["Auto-Submitted"] == "auto-replied" and msg["X-Auto-Response-Suppress"] == "All"
    assert msg["In-Reply-To"] == "<first@cust.example>" and "<first@cust.example>" in msg["References"]
    assert msg["To"].addresses[0].addr_spec == "ann@cust.example" and len(msg["To"].addresses) == 1
    assert msg["From"].addresses[0].display_name == "Ana"


# -- honest deadlines --------------------------------------------------------------------------------
def test_deadlines_grow_with_the_place_in_the_work_order_and_stay_in_business_hours(store, cfg):
    for n in range(12):
        add_ticket(store, f"Question {n}", f"c{n}@cust.example", "It stops.")
    plan = plan_acknowledgements(store, cfg, now=NOW)
    deadlines = [c.deadline for c in sorted(plan.candidates, key=lambda c: c.position)]
    assert deadlines == sorted(deadlines) and deadlines[-1] > deadlines[0]
    hours = ack_settings(cfg, now=NOW).hours
    for d in deadlines:
        assert d >= NOW + H  # [ack] minimum
        assert hours.is_open(d) or d.astimezone(hours.tz).hour == 17


def test_a_new_customer_is_promised_into_the_time_earlier_promises_can_spare(store, cfg):
    # Ten customers were promised Friday when the queue looked long; the desk is far ahead of that. An
    # eleventh is promised what the desk can really do for them, not "after all ten, plus a margin",
    # and none of the ten is promised less honestly for it.
    for n in range(10):
        add_ticket(store, f"Question {n}", f"c{n}@cust.example", "It stops.")
    first = ack_all(store, cfg, now=NOW)
    assert len(first.queued) == 10
    with store.read() as s:
        behind_ten = max(r["promise_deadline"] for r in ledger.waiting_rows(s.connection()))
    tid = add_ticket(store, "Eleventh", "new@cust.example", "It stops.")
    tight = next(c for c in plan_acknowledgements(store, cfg, now=NOW).candidates if c.ticket_id == tid)
    assert tight.deadline >= behind_ten.astimezone(tight.deadline.tzinfo) and tight.position == 10

    friday = datetime(2026, 11, 27, 16, 0, tzinfo=timezone.utc)
    with store.write() as s:
        s.connection().execute(text("UPDATE tickets SET promise_deadline = :d WHERE id != :t"),
                               {"d": friday.replace(tzinfo=None), "t": tid})
    spared = next(c for c in plan_acknowledgements(store, cfg, now=NOW).candidates if c.ticket_id == tid)
    assert spared.position == 0 and spared.deadline < tight.deadline
    assert spared.deadline <= NOW + 4 * H  # what one ticket of 30 minutes, with a margin, takes


def test_take_next_goes_to_the_promise_closest_to_breaking_whatever_the_tier(store):
    from storage.tickets import queue_ids, work_order_key

    ids = {k: add_ticket(store, k, f"{k}@cust.example", "It stops.") for k in ("ann", "bob", "ceo", "dee", "eve")}
    due = {"ann": NOW + 1 * H, "ceo": NOW + 2 * H, "bob": NOW + 2 * H, "dee": NOW + 30 * H, "eve": None}
    with store.write() as s:
        conn = s.connection()
        for k, d in due.items():
            conn.execute(text("UPDATE tickets SET promise_deadline = :d WHERE id = :t"),
                         {"d": d and d.replace(tzinfo=None), "t": ids[k]})
        conn.execute(text("UPDATE customers SET tier = 'premium' WHERE address IN ('ceo@cust.example', 'eve@cust.example')"))
    with store.read() as s:
        conn = s.connection()
        order = queue_ids(conn, view="open", now=NOW, at_risk_margin=2 * H)
        by_python = sorted(ledger.work_order_rows(conn).values(),
                           key=lambda r: work_order_key(r, now=NOW, at_risk_margin=2 * H))
    names = {v: k for k, v in ids.items()}
    # At risk, closest first; the premium customer due at the same time as Bob, who wrote first, comes
    # after him. Then the tier jumps the queue (Eve, unpromised), then promises by deadline.
    assert [names[i] for i in order] == ["ann", "bob", "ceo", "eve", "dee"]
    assert [r["id"] for r in by_python] == order


def test_more_agents_and_a_premium_tier_give_earlier_deadlines(tmp_path):
    store = Store(str(tmp_path / "heard.db"))
    for n in range(10):
        add_ticket(store, f"Q{n}", f"c{n}@cust.example", "It stops.")
    add_ticket(store, "Urgent", "ceo@bigco.example", "It stops.")

    def plan(**kw):
        return plan_acknowledgements(store, make_config(tmp_path, **kw), now=NOW)

    one, three = plan(ack={"agents": 1}), plan(ack={"agents": 3})
    assert max(c.deadline for c in three.candidates) < max(c.deadline for c in one.candidates)
    premium = plan(tiers={"premium": {"max_response": "2h", "members": ["bigco.example"]}})
    ceo = next(c for c in premium.candidates if c.customer == "ceo@bigco.example")
    assert ceo.tier == "premium" and ceo.deadline <= NOW + 2 * H
    store.close()


# -- the config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, key",
    [
        ({"ack": {"window": "soon"}}, "[ack] window"),
        ({"ack": {"window": 24}}, "[ack] window"),
        ({"ack": {"at_risk_margin": "-"}}, "[ack] at_risk_margin"),
        ({"ack": {"agents": 0}}, "[ack] agents"),
        ({"ack": {"auto": "yes"}}, "[ack] auto"),
        ({"ack": {"template": "Hello, I will look at it."}}, "[ack] template"),
        ({"ack": {"template": "By {deadline}, {customer_nickname}"}}, "[ack] template"),
        ({"ack": {"windw": "24h"}}, "[ack] windw"),
        ({"hours": {"timezone": "Mars/Olympus"}}, "[hours] timezone"),
        ({"hours": {"hours": "9 to 5"}}, "[hours] hours"),
        ({"hours": {"hours": "17:00-09:00"}}, "[hours] hours"),
        ({"hours": {"days": ["mon", "funday"]}}, "[hours] days"),
        ({"hours": {"holidays": ["25.12.2026"]}}, "[hours] holidays"),
        ({"hours": {"country": "Atlantis"}}, "[hours] country"),
        ({"tiers": {"premium": {"max_response": "fast"}}}, "[tiers.premium] max_response"),
        ({"tiers": {"premium": {"members": ["a@b.example"]}}}, "[tiers.premium] max_response"),
        ({"pending": {"close_after_days": 0}}, "[pending] close_after_days"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, kw, key):
    cfg = make_config(tmp_path, **kw)
    with pytest.raises(ConfigError) as exc:
        ack_settings(cfg, now=NOW)
    line = str(exc.value)
    assert line.startswith(key) and "\n" not in line


def test_defaults_and_documented_keys(tmp_path):
    s = ack_settings(make_config(tmp_path, hours={"holidays": ["2026-12-25"], "country": "DE"}), now=NOW)
    assert (s.auto, s.window, s.at_risk_margin, s.minimum, s.max_age, s.handling_time, s.agents) == (
        False, 24 * H, 2 * H, 2 * H, timedelta(days=14), timedelta(minutes=30), 1)
    assert s.close_after_days == 5 and s.checkin_after_days == 3
    assert datetime(2026, 12, 25).date() in s.hours.holidays
    assert datetime(2026, 10, 3).date() in s.hours.holidays  # German Unity Day, from country = "DE"
    s = ack_settings(make_config(tmp_path, ack={"window": "7d"}), now=NOW)
    assert s.window == timedelta(days=7)  # calendar days for the mail-loop window
    s = ack_settings(make_config(tmp_path, ack={"max_age": "3d"}), now=NOW)
    assert s.max_age == timedelta(days=3)  # calendar days too


# -- updates for at-risk promises ---------------------------------------------------------------------
def test_update_rules_at_risk_only_one_unless_forced_and_never_inside_the_window(tmp_path):
    cfg = make_config(tmp_path, ack={"window": "1h"})
    store = Store(cfg.database)
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", from_name="Ann")
    ack_all(store, cfg, now=NOW)
    with store.read() as s:
        deadline = ledger.promise_in_force(s.connection(), tid, now=NOW)["deadline"]
    thursday = datetime(2026, 11, 26, 14, 0, tzinfo=timezone.utc)
    with pytest.raises(AckError, match="not at risk yet"):
        send_update(store, cfg, tid, deadline=thursday, reason="x", now=NOW + H + timedelta(minutes=1))
    with pytest.raises(AckError, match="less than 1h ago"):
        send_update(store, cfg, tid, deadline=thursday, reason="x", now=NOW + timedelta(minutes=5), force=True)
    with pytest.raises(AckError, match="needs a reason"):
        send_update(store, cfg, tid, deadline=thursday, reason="  ", now=deadline - H)
    res = send_update(store, cfg, tid, deadline=thursday, reason="because the fix ships on Thursday.",
                      now=deadline - H, agent="Ana")
    with store.read() as s:
        conn = s.connection()
        body = conn.execute(text("SELECT raw FROM outbox WHERE id = :i"), {"i": res.outbox_id}).scalar()
        [e] = [e for e in events_of(conn, tid) if e["kind"] == "promise"]
    content = email.message_from_bytes(body, policy=policy.default).get_content()
    assert "I need until Thursday 26 November, 14:00 UTC, because the fix ships on Thursday." in content
    assert ack_tone_warnings(content, now=NOW) == []  # no second apology
    assert e["new"] == "Thu 26 Nov 14:00" and "because the fix ships on Thursday" in e["reason"]
    later = thursday - H
    with pytest.raises(AckError, match="second one needs --force"):
        send_update(store, cfg, tid, deadline=thursday + 24 * H, reason="the supplier is late", now=later)
    send_update(store, cfg, tid, deadline=thursday + 24 * H, reason="the supplier is late", now=later, force=True)
    store.close()


def test_parse_when(tmp_path):
    hours = ack_settings(make_config(tmp_path), now=NOW).hours
    assert parse_when("thu 14:00", now=NOW, hours=hours) == datetime(2026, 11, 26, 14, 0, tzinfo=timezone.utc)
    assert parse_when("Thursday", now=NOW, hours=hours) == datetime(2026, 11, 26, 17, 0, tzinfo=timezone.utc)
    assert parse_when("2026-11-27 11:30", now=NOW, hours=hours) == datetime(2026, 11, 27, 11, 30, tzinfo=timezone.utc)
    assert parse_when("1d", now=NOW, hours=hours) == datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)
    assert parse_when("tomorrow", now=NOW, hours=hours) == datetime(2026, 11, 25, 17, 0, tzinfo=timezone.utc)
    assert parse_when("Tomorrow 10:30", now=NOW, hours=hours) == datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)
    assert parse_when("today 16:00", now=NOW, hours=hours) == datetime(2026, 11, 24, 16, 0, tzinfo=timezone.utc)
    with pytest.raises(AckError):
        parse_when("whenever", now=NOW, hours=hours)
    # A promise is kept at the desk: a weekend, a holiday or a time after hours is refused, with one that would do.
    holidays = ack_settings(make_config(tmp_path, hours={"holidays": ["2026-11-26"]}), now=NOW).hours
    for when, hrs, words in [
        ("sat", hours, "Saturday 28 November is not a business day (Mon-Fri 09:00-17:00): promise a time you are "
                       "at the desk, e.g. Mon 30 Nov 17:00"),
        ("2026-11-29 10:00", hours, "Sunday 29 November is not a business day"),
        ("thu 14:00", holidays, "Thursday 26 November is a holiday (Mon-Fri 09:00-17:00): promise a time you are "
                                "at the desk, e.g. Fri 27 Nov 14:00"),
        ("today 18:30", hours, "18:30 on Tuesday 24 November is outside business hours (Mon-Fri 09:00-17:00): "
                               "promise a time you are at the desk, e.g. Tue 24 Nov 17:00"),
        ("tomorrow 07:00", hours, "e.g. Wed 25 Nov 09:00"),
        ("tomorrow 24:00", hours, "24:00 is not a time of day"),
    ]:
        with pytest.raises(AckError) as refused:
            parse_when(when, now=NOW, hours=hrs)
        assert words in str(refused.value)
    assert parse_when("today 17:00", now=NOW, hours=hours) == datetime(2026, 11, 24, 17, 0, tzinfo=timezone.utc)


# -- end to end: real IMAP (pymap) and SMTP (aiosmtpd) on loopback ----------------------------------
def heard(cfg, *args, capsys) -> tuple[int, str, str]:
    code = main(["--config", str(cfg.path), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def backlog() -> list[bytes]:
    """Yesterday's mail (the commands below run on the real clock): four customers and four machines."""
    day = days_ago(1)
    return [
        customer_mail(1, "ann@cust.example", "Export to CSV stops at row 1000", name="Ann Example", date=day),
        customer_mail(2, "bob@cust.example", "Invoice PDF is blank", name="Bob Stone",
                      date=days_ago(1, utc_offset_hours=-5)),
        customer_mail(3, "cy@cust.example", "Cannot add a second user", name="Cy", date=day),
        customer_mail(4, "dee@cust.example", "Bank feed missing since Monday", name="Dee", date=day),
        customer_mail(5, "noreply@shop.example", "Your receipt", date=day),
        customer_mail(6, "news@list.example", "Weekly digest", extra="List-Id: <news.list.example>\r\n", date=day),
        customer_mail(7, "mailer-daemon@mx.example", "Undelivered Mail Returned to Sender", date=day),
        customer_mail(8, "away@cust.example", "Automatic reply: hello", extra="Auto-Submitted: auto-replied\r\n",
                      date=day),
    ]
ELIGIBLE = {"ann@cust.example", "bob@cust.example", "cy@cust.example", "dee@cust.example"}


def test_a_batch_sends_one_mail_per_eligible_customer_none_to_machines_and_nothing_twice(
        pymap_server, smtp_server, tmp_path, capsys):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port)
    pymap_server.deliver_maildir(SUPPORT, backlog())
    assert heard(cfg, "sync", capsys=capsys)[0] == 0

    code, out, _ = heard(cfg, "ack", "--dry-run", capsys=capsys)
    assert code == 0 and smtp_server.received == []
    for addr in ELIGIBLE:
        assert addr in out
    assert re.search(r"^#\d+ +ann@cust\.example +by \w+day \d+ \w+, \d\d:\d\d your time ", out, flags=re.M), out
    assert "noreply@shop.example" in out and "skipped: automated sender (sender noreply)" in out
    assert "skipped: mailing list (List-Id header)" in out
    assert "skipped: bounce" in out or "skipped: automated sender (sender mailer-daemon)" in out
    assert "skipped: automated sender (Auto-Submitted: auto-replied)" in out
    assert "4 to acknowledge, 4 skipped" in out

    code, out, err = heard(cfg, "ack", "--yes", capsys=capsys)
    assert code == 0, err
    assert "4 sent" in out
    got = smtp_server.messages
    assert sorted(r for m in got for r in m.rcpt_tos) == sorted(ELIGIBLE)
    for m in got:
        msg = parsed(m)
        assert msg["Auto-Submitted"] == "auto-replied" and msg["X-Auto-Response-Suppress"] == "All"
        assert msg["In-Reply-To"].startswith("<c") and len(m.rcpt_tos) == 1
    bob = parsed(next(m for m in got if m.rcpt_tos == ("bob@cust.example",))).get_content()
    assert bob.startswith("Hi Bob,") and '"Invoice PDF is blank"' in bob and "your time" in bob

    code, out, _ = heard(cfg, "ack", "--yes", capsys=capsys)  # a second run: nothing new
    assert code == 0 and "0 to acknowledge" in out and len(smtp_server.received) == 4

    code, out, _ = heard(cfg, "report", "--json", capsys=capsys)
    assert json.loads(out)["made"] == 4


def test_a_kill_in_the_middle_of_a_batch_sends_nobody_twice(pymap_server, smtp_server, tmp_path, capsys):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port)
    pymap_server.deliver_maildir(SUPPORT, backlog())
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    cli = "import sys; from tui.cli import main; sys.exit(main(sys.argv[1:]))"
    child = subprocess.Popen([sys.executable, "-c", cli, "--config", str(cfg.path), "ack", "--yes"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: list[str] = []  # every DATA the server took in, the one cut short by the kill included
    killed = threading.Event()

    def kill_on_second(mail_from, rcpts, data):  # the server has the 2nd message; the sender dies now
        seen.extend(rcpts)
        if len(seen) == 2 and not killed.is_set():
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
            killed.set()

    smtp_server.deliver = kill_on_second
    try:
        # The child dies inside the handler, before it sets the event: wait for both.
        assert child.wait(60) == -signal.SIGKILL and killed.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert len(seen) == 2

    code, out, err = heard(cfg, "ack", "--yes", capsys=capsys)  # run it again
    assert "0 to acknowledge" in out
    assert "2 sent, 1 unknown" in out  # the one in flight at the kill is never resent blindly
    assert sorted(seen) == sorted(ELIGIBLE)  # everyone exactly once
    heard(cfg, "ack", "--yes", capsys=capsys)
    assert sorted(seen) == sorted(ELIGIBLE)


def test_an_autoresponder_that_answers_everything_gets_one_mail_and_the_loop_stops(
        pymap_server, smtp_server, tmp_path):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port, ack={"auto": True})
    store = Store(cfg.database)
    answered = []

    def autoresponders(mail_from, rcpts, data):
        msg = email.message_from_bytes(data, policy=policy.default)
        for rcpt in rcpts:
            n = len(answered)
            answered.append(rcpt)
            if rcpt == "polite@away.example":  # marks itself and threads: RFC 3834
                pymap_server.append(customer_mail(100 + n, rcpt, f"Auto: {msg['Subject']}", body="I am away.",
                                                  irt=msg["Message-ID"].strip("<>"),
                                                  extra="Auto-Submitted: auto-replied\r\n"))
            else:  # a naive one: no headers, no threading, looks like a person writing anew
                pymap_server.append(customer_mail(100 + n, rcpt, "Thanks for your email", body="I read mail on Fridays."))

    smtp_server.deliver = autoresponders
    pymap_server.deliver_maildir(SUPPORT, [
        customer_mail(1, "polite@away.example", "Where is my refund?", name="Pia", date=days_ago(1)),
        customer_mail(2, "naive@away.example", "Login page is blank", name="Nat", date=days_ago(1)),
    ])
    from mail.ack import housekeeping

    for _round in range(4):
        now = datetime.now(timezone.utc)
        summary = sync_once(store, cfg)
        housekeeping(store, cfg, now)  # [ack] auto = true
        plan = plan_acknowledgements(store, cfg, now=now)
        send_acknowledgements(store, cfg, plan.candidates, now=now)  # and the agent's batch too
        drain_outbox(store, cfg)
        time.sleep(0.2)
    assert sorted(answered) == ["naive@away.example", "polite@away.example"]
    with store.read() as s:
        conn = s.connection()
        tickets = conn.exec_driver_sql("SELECT id, automated_reason FROM tickets ORDER BY id").all()
    assert len(tickets) >= 3  # the naive autoresponder's answers became tickets, none acknowledged
    plan = plan_acknowledgements(store, cfg, now=datetime.now(timezone.utc))
    assert plan.candidates == [] and all("[ack] window = 24h" in s.rule or "one mail per customer" in s.rule for s in plan.skipped)
    store.close()


def test_an_autoresponder_answering_from_a_new_address_each_time_gets_one_mail_and_the_loop_stops(
        pymap_server, smtp_server, tmp_path):
    # A robot at one domain that answers every mail from another address (agent1@, agent2@, ...), with a new
    # Message-ID, no In-Reply-To, no Auto-Submitted and a subject of its own each time: every answer was a
    # new customer, outside the per-customer window, so [ack] auto acknowledged each, for ever.
    now = datetime.now(timezone.utc)
    closed_today = {"days": [("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(now.weekday() + 3) % 7]]}
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port, ack={"auto": True},
                      hours=closed_today)
    store = Store(cfg.database)
    answered = []
    subjects = ["Thanks for your email", "Re: Your message", "We received your request", "Automatic notice"]

    def robot(mail_from, rcpts, data):
        for rcpt in rcpts:
            n = len(answered)
            answered.append(rcpt)
            pymap_server.append(customer_mail(100 + n, f"agent{n + 1}@robot.example", subjects[n % 4],
                                              body="We got your mail.", date=days_ago(0)))

    smtp_server.deliver = robot
    pymap_server.deliver_maildir(SUPPORT, [
        customer_mail(1, "agent0@robot.example", "Help please", name="Rob", date=days_ago(0.01)),
        customer_mail(2, "ann@cust.example", "Invoice missing", name="Ann", date=days_ago(0.01)),
    ])
    from mail.ack import housekeeping

    for _round in range(4):
        sync_once(store, cfg)
        housekeeping(store, cfg, datetime.now(timezone.utc))
        drain_outbox(store, cfg)
        time.sleep(0.2)
    assert sorted(answered) == ["agent0@robot.example", "ann@cust.example"]  # one mail to the robot, and it stopped
    with store.read() as s:
        robot_tickets = [r[0] for r in s.connection().exec_driver_sql(
            "SELECT t.id FROM tickets t JOIN customers c ON c.id = t.customer_id "
            "WHERE c.address = 'agent1@robot.example'").all()]
    assert len(robot_tickets) == 1
    with store.read() as s:
        held = [e for e in events_of(s.connection(), robot_tickets[0]) if e["kind"] == "ack_held"]
    assert len(held) == 1 and "robot.example had automatic mail" in held[0]["reason"]
    assert "mail loop guard" in held[0]["reason"]
    store.close()


def test_the_mail_loop_guard_leaves_colleagues_and_public_providers_alone(tmp_path):
    from mail.ack import loop_guard_rule

    settings = ack_settings(make_config(tmp_path), now=NOW)
    sent = NOW - 10 * timedelta(minutes=1)
    row = {"customer": "bob@bigco.example", "domain_mail": [("ann@bigco.example", sent)]}
    assert "mail loop guard" in loop_guard_rule({**row, "created_at": sent + timedelta(seconds=20)}, settings)
    # A colleague who wrote before our mail to Ann, or an hour after it: a person, acknowledged as usual.
    assert loop_guard_rule({**row, "created_at": sent - timedelta(minutes=5)}, settings) is None
    assert loop_guard_rule({**row, "created_at": sent + timedelta(hours=1)}, settings) is None
    # Ann's own next mail is the per-customer window's business; gmail.com is not one organisation.
    assert loop_guard_rule({**row, "customer": "ann@bigco.example", "created_at": sent}, settings) is None
    assert loop_guard_rule({"customer": "bob@gmail.com", "created_at": sent,
                            "domain_mail": [("ann@gmail.com", sent)]}, settings) is None


def test_the_clarifying_questions_for_vague_mail_are_a_saved_reply(store, cfg, capsys):
    from mail.templates import DEFAULT_SAVED_REPLIES
    from mail.vague import CLARIFYING_REPLY, CLARIFYING_REPLY_NAME

    assert DEFAULT_SAVED_REPLIES[CLARIFYING_REPLY_NAME] == CLARIFYING_REPLY
    assert main(["--config", str(cfg.path), "saved-replies", "--defaults"]) == 0
    assert CLARIFYING_REPLY_NAME in capsys.readouterr().out


def test_update_report_and_housekeeping_from_the_command_line(store, cfg, capsys):
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", from_name="Ann", date=YESTERDAY())
    code, out, _ = heard(cfg, "ack", "--yes", "--no-send", capsys=capsys)
    assert code == 0 and f"#{tid}: outbox #1, promised by " in out
    promised = out.split("promised by ", 1)[1].split(",")[0]
    code, out, _ = heard(cfg, "tickets", capsys=capsys)  # the list shows the promise in force
    assert re.search(rf"^#{tid} .* by \w{{3}} \d+ \w{{3}} \d\d:\d\d +Export$", out, flags=re.M), (promised, out)
    code, out, err = heard(cfg, "update", str(tid), "--until", "2d", "--reason", "the fix ships Thursday",
                           "--no-send", capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and "less than 24h ago" in err  # the window: no override
    with store.write_conn() as conn:
        conn.execute(text("UPDATE customers SET last_automatic_at = :t"), {"t": datetime(2000, 1, 1, tzinfo=timezone.utc)})
    code, out, err = heard(cfg, "update", str(tid), "--until", "2d", "--reason", "the fix ships Thursday",
                           "--no-send", capsys=capsys)
    assert code == 1 and "not at risk yet" in err and "--force" in err
    code, out, err = heard(cfg, "update", str(tid), "--until", "2d", "--reason", "the fix ships Thursday",
                           "--no-send", "--force", capsys=capsys)
    assert code == 0 and f"#{tid}: update queued as outbox #2" in out
    code, _, err = heard(cfg, "update", "9999", "--until", "2d", "--reason", "x", capsys=capsys)
    assert code == 1 and err.strip() == "heard: no ticket #9999: `heard tickets --status all` lists them"
    code, out, _ = heard(cfg, "tickets", "--status", "all", "--json", capsys=capsys)  # what that line says works
    assert code == 0 and tid in [t["id"] for t in json.loads(out)]
    code, out, _ = heard(cfg, "report", capsys=capsys)
    assert "promises made so far: 2" in out and "updated  1" in out and "open     1" in out
    code, out, _ = heard(cfg, "report", "--since", "2000-01-01", "--until", "2000-12-31", "--json", capsys=capsys)
    assert json.loads(out)["made"] == 0
    code, out, _ = heard(cfg, "report", "--since", "2000-01-01", "--until", "2000-12-31", capsys=capsys)
    assert "promises made from 2000-01-01 to 2000-12-31: 0" in out
    code, out, _ = heard(cfg, "report", "--since", "7d", capsys=capsys)  # the promises were made today
    first = date.fromisoformat(out.split("promises made from ", 1)[1][:10])
    assert out.startswith(f"promises made from {first.isoformat()} to now: 2")
    assert 6 <= (datetime.now(timezone.utc).date() - first).days <= 8  # a week back, in the business time zone
    code, out, _ = heard(cfg, "report", "--since", "2w", "--until", "yesterday", capsys=capsys)
    assert "promises made from " in out and ": 0" in out.splitlines()[0]
    code, _, err = heard(cfg, "report", "--since", "last tuesday", capsys=capsys)
    assert code == 1 and "--since 'last tuesday' is not a date: write YYYY-MM-DD, today, yesterday" in err
    code, out, _ = heard(cfg, "housekeeping", "--dry-run", capsys=capsys)
    assert code == 0 and out.strip() == "nothing to do"
    code, out, _ = heard(cfg, "autoclose", "--no-send", capsys=capsys)
    assert code == 0 and "0 check-ins queued, 0 closed after no reply" in out


def test_an_acknowledgement_the_server_refuses_says_what_works_next(tmp_path, smtp_server, capsys):
    # The refusal said "fix the cause, then `heard outbox retry 1`", and that command then refused: a failed
    # acknowledgement made no promise, its deadline is stale. The line now gives the way that works.
    cfg = make_config(tmp_path, smtp_port=smtp_server.port)
    store = Store(cfg.database)
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", from_name="Ann", date=YESTERDAY())
    smtp_server.fail_next("554 5.7.1 relaying denied")
    code, out, err = heard(cfg, "ack", "--yes", capsys=capsys)
    assert code == 1 and "0 sent, 1 failed" in out
    assert ("fix the cause, then acknowledge the ticket again for a fresh deadline (a in the queue, or `heard ack`); "
            "`heard outbox cancel 1` clears it") in err
    code, out, _ = heard(cfg, "outbox", capsys=capsys)
    assert "554 5.7.1 relaying denied" in out and "heard outbox retry" not in out
    code, out, err = heard(cfg, "ack", "--yes", capsys=capsys)  # what the line says: a fresh acknowledgement
    assert code == 0 and "1 sent" in out, err
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ann@cust.example",)]
    code, out, err = heard(cfg, "outbox", "cancel", "1", capsys=capsys)
    assert code == 0 and "cancelled" in out, err
    store.close()


def test_show_prints_the_timeline_as_the_app_words_it(store, cfg, capsys):
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", date=YESTERDAY())
    assert heard(cfg, "ack", "--yes", "--no-send", capsys=capsys)[0] == 0
    assert heard(cfg, "priority", str(tid), "high", "--reason", "blocks invoicing", capsys=capsys)[0] == 0
    code, out, err = heard(cfg, "show", str(tid), capsys=capsys)
    assert code == 0, err
    timeline = out.split("timeline:\n", 1)[1]
    assert "acknowledgement queued  — acknowledged by Ana; promised by " in timeline
    assert "priority normal → high  — blocks invoicing" in timeline
    # Times as people read them (the zone named), not ISO strings with microseconds.
    assert not re.search(r"\d\dT\d\d:|\.\d{6}", out), out
    assert re.search(r"^  \w{3} \d\d \w{3} \d{4} \d\d:\d\d \S+  Ana  ", timeline, flags=re.M), timeline


def test_every_time_printed_is_on_the_desks_clock_whatever_the_machines_zone(tmp_path, database, capsys,
                                                                           monkeypatch):
    # A laptop in New York working a desk in Tokyo: the promise in the event, the ticket list, the
    # ticket's timeline and the outbox all read the same clock, the desk's.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        cfg = make_config(tmp_path, database=database, hours={"timezone": "Asia/Tokyo"})
        store = Store(cfg.database)
        tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", date=YESTERDAY())
        store.close()
        assert heard(cfg, "ack", "--yes", "--no-send", capsys=capsys)[0] == 0
        _, shown, _ = heard(cfg, "show", str(tid), capsys=capsys)
        promised = re.search(r"promised by (\w{3} \d+ \w{3} (\d\d:\d\d))", shown)
        assert promised, shown
        _, listed, _ = heard(cfg, "tickets", capsys=capsys)
        assert f"by {promised.group(1)}" in listed, listed
        assert re.search(r"^  \w{3} \d\d \w{3} \d{4} \d\d:\d\d JST  Ana  ", shown, flags=re.M), shown
        _, queued, _ = heard(cfg, "outbox", capsys=capsys)
        queued_at = re.search(r" (\d{4}-\d\d-\d\d \d\d:\d\d)  ann@cust.example", queued)
        assert queued_at, queued
        tokyo_now = datetime.now(ZoneInfo("Asia/Tokyo"))
        at = datetime.strptime(queued_at.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo("Asia/Tokyo"))
        assert abs(at - tokyo_now) < timedelta(minutes=5), (queued_at.group(1), tokyo_now)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_without_hours_the_desk_keeps_the_machines_zone(tmp_path, monkeypatch):
    from mail.ack import ack_settings
    from mail.config import desk_timezone

    cfg = make_config(tmp_path)
    monkeypatch.setenv("TZ", "Europe/Berlin")
    cfg.hours = {}
    assert str(ack_settings(cfg, now=NOW).hours.tz) == "Europe/Berlin"
    assert str(desk_timezone(cfg)) == "Europe/Berlin"
    cfg.hours = {"timezone": "Asia/Tokyo"}
    assert str(ack_settings(cfg, now=NOW).hours.tz) == "Asia/Tokyo"


def test_ack_without_yes_and_without_a_terminal_refuses(store, cfg, capsys, monkeypatch):
    add_ticket(store, "Export", "ann@cust.example", "It stops.", date=YESTERDAY())
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, _, err = heard(cfg, "ack", capsys=capsys)
    assert code == 1 and "pass --yes" in err


def test_the_dry_run_shows_hostile_subjects_and_names_as_inert_text(pymap_server, smtp_server, tmp_path, capsys):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port)
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(
        1, "eve@cust.example", "=?utf-8?q?Invoice_=1B]8;;http://evil.example=07click=1B]8;;=07_=1B[2J?=",
        name="=?utf-8?q?Eve_=E2=80=AEtxt.exe?=", date=days_ago(1))])
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    code, out, err = heard(cfg, "ack", "--dry-run", "--show", capsys=capsys)
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "Invoice" in out and "click" in out


def test_an_acknowledgement_carries_no_control_characters_from_the_customers_name_or_subject(
        pymap_server, smtp_server, tmp_path, capsys):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port)
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(
        1, "zed@cust.example", "=?utf-8?q?Refund_=1B[8mhidden=1B[0m_please=E2=80=AE?=",
        name="=?utf-8?q?=1B[31mZed=1B[0m?=", date=days_ago(1))])
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    code, out, err = heard(cfg, "ack", "--yes", capsys=capsys)
    assert code == 0 and "1 sent" in out, err
    body = parsed(smtp_server.wait_for(1)[0]).get_content()
    assert body.startswith("Hi Zed,") and '"Refund hidden please"' in body
    assert not any(ch in body for ch in "\x1b\x07\u202e")


def test_heard_sync_with_ack_auto_acknowledges_new_customers_at_once(pymap_server, smtp_server, tmp_path, capsys):
    # `heard sync` runs on the real clock: the desk opens only three days from now, so the new customer
    # will wait and is acknowledged at once (an open, idle desk would answer within [ack] minimum instead).
    now = datetime.now(timezone.utc)
    closed_today = {"days": [("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(now.weekday() + 3) % 7]]}
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port, ack={"auto": True},
                      hours=closed_today)
    date = email.utils.format_datetime(now - timedelta(minutes=5))
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(1, "ann@cust.example", "Export fails", name="Ann Lee",
                                                         date=date),
                                           customer_mail(2, "noreply@shop.example", "Your order shipped", date=date)])
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    assert "1 acknowledged" in out and "1 sent" in out
    got = smtp_server.wait_for(1)
    assert [list(m.rcpt_tos) for m in got] == [["ann@cust.example"]]
    assert parsed(got[0])["Auto-Submitted"] == "auto-replied"
    # Nothing new: nothing more goes out.
    heard(cfg, "sync", capsys=capsys)
    assert len(smtp_server.messages) == 1


def test_ack_auto_on_a_mailbox_with_history_mails_nobody_about_old_mail(pymap_server, smtp_server, tmp_path, capsys):
    # The first sync of a real inbox brings its history: none of it is acknowledged automatically, only
    # mail of the last three days; the review still offers the rest (up to [ack] max_age).
    now = datetime.now(timezone.utc)
    closed_today = {"days": [("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(now.weekday() + 3) % 7]]}
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port, ack={"auto": True},
                      hours=closed_today)
    dated = lambda days: email.utils.format_datetime(now - timedelta(days=days))  # noqa: E731
    pymap_server.deliver_maildir(SUPPORT, [
        customer_mail(1, "old@cust.example", "Invoice question", date=dated(400)),
        customer_mail(2, "week@cust.example", "Export fails", date=dated(6)),
        customer_mail(3, "new@cust.example", "Login fails", date=dated(0.1)),
    ])
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    assert "1 acknowledged" in out
    assert [list(m.rcpt_tos) for m in smtp_server.wait_for(1)] == [["new@cust.example"]]
    code, out, err = heard(cfg, "ack", "--dry-run", capsys=capsys)
    assert code == 0, err
    assert "week@cust.example" in out and "is over [ack] max_age = 14d old" in out
    heard(cfg, "sync", capsys=capsys)
    assert len(smtp_server.messages) == 1


def test_no_acknowledgement_promises_a_deadline_months_away(tmp_path):
    # A ticket takes a week (40 business hours), one agent: the thirteenth in line would be promised a
    # date months out. Such a queue needs triage, not "I will answer by next April".
    cfg = make_config(tmp_path, ack={"handling_time": "40h"})
    store = Store(cfg.database)
    ids = [add_ticket(store, f"Audit {n}", f"c{n}@cust.example", "Please check.", date=NOW - (20 - n) * H)
           for n in range(14)]
    plan = plan_acknowledgements(store, cfg, now=NOW)
    assert ids[0] in [c.ticket_id for c in plan.candidates]
    rules = {s.ticket_id: s.rule for s in plan.skipped}
    assert rules[ids[-1]] == ("no honest deadline within 60 business days (13 tickets ahead): answer it yourself "
                              "or triage the queue")
    assert all(c.deadline < NOW + timedelta(days=120) for c in plan.candidates)
    store.close()


def test_without_ack_auto_heard_sync_sends_nothing(pymap_server, smtp_server, tmp_path, capsys):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port)
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(1, "ann@cust.example", "Export fails")])
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0 and "acknowledged" not in out
    assert smtp_server.received == []


def test_heard_sync_prints_an_smtp_refusal_without_its_escape_sequences(pymap_server, smtp_server, tmp_path, capsys):
    # A server's answer is data: "\x1b[8m" in it would hide every line the terminal prints after it.
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port, ack={"auto": True})
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(1, "ann@cust.example", "Export fails", name="Ann Lee",
                                                         date=days_ago(1))])
    smtp_server.fail_next("554 5.7.1 \x1b[8mrejected\x1b]0;owned\x07 as spam")
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    assert "rejected" in err and "as spam" in err
    assert "\x1b" not in err + out and "\x07" not in err + out


def test_an_acknowledgement_that_never_goes_out_makes_no_promise(pymap_server, smtp_server, tmp_path, capsys):
    # One acknowledgement refused by the server for good, one cancelled by the agent: neither customer
    # was told a deadline, so neither promise may count, show in the queue, or be "updated" later; both
    # tickets are offered again.
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, imap_port=pymap_server.port)
    pymap_server.deliver_maildir(SUPPORT, [
        customer_mail(1, "ann@cust.example", "Export fails", name="Ann Lee", date=days_ago(1)),
        customer_mail(2, "typo@cust.example", "Invoice PDF is blank", name="Tom Typo", date=days_ago(1)),
        customer_mail(3, "cy@cust.example", "Login loops", name="Cy Cole", date=days_ago(1)),
    ])
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    smtp_server.refuse("typo@cust.example")
    code, out, err = heard(cfg, "ack", "--yes", "--no-send", capsys=capsys)
    assert code == 0 and "queued 3 acknowledgements" in out, err
    store = Store(cfg.database)
    with store.read() as s:
        rows = s.connection().exec_driver_sql("SELECT id, ticket_id, recipients FROM outbox ORDER BY id").all()
    ids = {rcpt: (oid, tid) for oid, tid, rcpt in rows}
    code, out, err = heard(cfg, "outbox", "cancel", str(ids["cy@cust.example"][0]), capsys=capsys)
    assert code == 0 and "made no promise" in out, err
    code, out, err = heard(cfg, "outbox", "send", capsys=capsys)
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ann@cust.example",)]
    assert "refused" in err

    code, out, _ = heard(cfg, "report", "--json", capsys=capsys)
    assert json.loads(out)["made"] == 1
    code, out, _ = heard(cfg, "tickets", "--json", capsys=capsys)
    by_customer = {t["customer"]: t for t in json.loads(out)}
    for who in ("typo@cust.example", "cy@cust.example"):
        assert by_customer[who]["acknowledged_at"] is None and by_customer[who]["promise_deadline"] is None
    assert by_customer["ann@cust.example"]["promise_deadline"] is not None
    tid = ids["cy@cust.example"][1]
    code, _, err = heard(cfg, "update", str(tid), "--until", "1d", "--reason", "x", "--force", capsys=capsys)
    assert code == 1 and "no promise yet" in err
    code, out, _ = heard(cfg, "show", str(tid), capsys=capsys)
    assert "acknowledgement not sent (outbox #" in out and "its promise was never made" in out
    # Offered again (the customer's window is free: nothing reached them), with a fresh deadline.
    code, out, _ = heard(cfg, "ack", "--dry-run", capsys=capsys)
    assert "2 to acknowledge" in out and "cy@cust.example" in out and "typo@cust.example" in out
    code, _, err = heard(cfg, "outbox", "retry", str(ids["cy@cust.example"][0]), capsys=capsys)
    assert code == 1 and "acknowledge the ticket again" in err
    smtp_server.unrefuse()
    code, out, err = heard(cfg, "ack", "--yes", capsys=capsys)
    assert code == 0 and "2 sent" in out, err
    code, out, _ = heard(cfg, "report", "--json", capsys=capsys)
    assert json.loads(out)["made"] == 3
    store.close()


@pytest.mark.parametrize("section,value,message", [
    ("hours", {"hours": "9-5"}, "heard: [hours] hours = '9-5': write opening and closing time, e.g. \"09:00-17:00\""),
    ("ack", {"agents": 0}, "heard: [ack] agents = 0: must be a whole number, at least 1"),
    ("tiers", {"premium": {"max_response": "soon", "members": ["bigco.example"]}}, "heard: [tiers.premium] max_response"),
])
def test_heard_sync_names_a_bad_setting_before_it_fetches_any_mail(pymap_server, tmp_path, capsys, section, value,
                                                                   message):
    cfg = make_config(tmp_path, imap_port=pymap_server.port, **{section: value})
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(1, "ann@cust.example", "Export fails", date=days_ago(1))])
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1 and out == "", out  # no "1 new message" summary first
    assert err.startswith(message) and err.count("\n") == 1, err
    store = Store(cfg.database)
    try:
        with store.read() as s:
            assert s.connection().exec_driver_sql("SELECT count(*) FROM tickets").scalar() == 0  # nothing synced
    finally:
        store.close()
    # `heard sync --watch` says so too, instead of watching.
    code, out, err = heard(cfg, "sync", "--watch", capsys=capsys)
    assert code == 1 and out == "" and err.startswith(message), (out, err)
