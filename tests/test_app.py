"""The app, driven by keys through Textual's pilot, on a real SQLite store filled by the real ingest path."""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from textual.worker import WorkerCancelled, WorkerFailed

from mail.config import parse_config
from storage.db import DatabaseUnreachable, Store
from storage.ingest import Ingest
from storage.models import Event, Outbox, Ticket
from storage.tickets import set_status, take_ticket
from tests.factories import new_message
from tui.app import HeardApp
from tui.dialogs import ConfirmDialog, CustomerTicketsScreen, HelpScreen, ReasonDialog
from tui.queue_view import QueueTable
from tui.screens import QueueScreen, TicketScreen
from tui.widgets import split_quotes

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=timezone.utc)
AGENT = "Ana"
SIZE = (120, 36)

HOSTILE_SUBJECT = "[@click=app.quit]x[/]"
HOSTILE_BODY = "\x1b[31mred\x1b[0m [b]bold?[/b] [link=https://evil.example]click[/link] \u202eexe.pdf \x07bell"

# (subject, sender, name, hours ago, body, extra NewMessage fields)
BACKLOG = [
    ("Printer on fire since the update", "jane@acme.example", "Jane Doe", 50,
     "Hi,\n\nSince your update the driver crashes.\n\nOn Mon, 23 Nov 2026 at 10:00, Support <s@x> wrote:\n"
     "> Thanks for writing.\n> We will look at it.\n\nJane",
     {"attachments_json": json.dumps([{"name": "crash.log", "content_type": "text/plain", "size": 18234}])}),
    ("Invoice 2291 charged twice", "bob@shop.example", "Bob Martin", 30, "Charged twice for invoice 2291.", {}),
    ("nothing works!!!", "carl@corp.example", "", 20, "nothing works", {"vague_reason": "no details: what fails?"}),
    (HOSTILE_SUBJECT, "mallory@evil.example", "[b]Mallory[/b]", 10, HOSTILE_BODY, {}),
    ("Out of office: back Monday", "robot@corp.example", "Auto", 5, "I am away.",
     {"automated_reason": "Auto-Submitted: auto-replied"}),
    ("Second question about invoices", "bob@shop.example", "Bob Martin", 2, "Also, the VAT number is wrong.", {}),
]


def seed(store: Store, backlog=BACKLOG, now: datetime = NOW) -> list[int]:
    """One ticket per entry, through storage.ingest like the sync does."""
    ids = []
    with store.write_conn() as conn:
        ing = Ingest(conn, store.search, now)
        for subject, sender, name, hours, body, extra in backlog:
            m = new_message(subject, sender, body, from_name=name, date=now - timedelta(hours=hours), **extra)
            ids.append(ing.add(m, None, "new ticket"))
        ing.flush()
    return ids


def work_order(ids: list[int]) -> list[int]:
    """The seeded BACKLOG in the queue's order: by age, the automated mail (the out-of-office) last."""
    return [i for n, i in enumerate(ids) if n != 4] + [ids[4]]


def pilot_test(fn):
    """Run an async pilot test to completion (no asyncio plugin needed)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        asyncio.run(fn(*args, **kwargs))

    return run


def make_config(db: str, *, keys: dict | None = None, imap: dict | None = None, smtp: bool | int = False,
                ack: dict | None = None):
    data = {
        "account": {"address": "support@example.com"},
        "imap": imap or {"host": "127.0.0.1", "port": 1, "security": "none", "username": "support",
                         "password_command": "printf x"},
        "storage": {"database": db},
        "agent": {"name": AGENT},
    }
    if smtp:  # True: a server that is not there; a number: the port of a real one (no login)
        port = 2 if smtp is True else smtp
        data["smtp"] = {"host": "127.0.0.1", "port": port, "security": "none", "username": "" if smtp is not True else "s",
                        "password_command": "printf x", "sent_folder": ""}
    if ack:
        data["ack"] = ack
    if keys:
        data["keys"] = keys
    return parse_config(data, Path("/nonexistent/config.toml"))


@pytest.fixture
def store(database):
    s = Store(database)
    yield s
    s.close()


@pytest.fixture
def ids(store):
    return seed(store)


def make_app(store: Store, **kw) -> HeardApp:
    cfg = make_config(store.url.removeprefix("sqlite:///"), **{k: kw.pop(k) for k in ("keys", "smtp") if k in kw})
    return HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc, **kw)


async def settle(pilot) -> None:
    for _ in range(2):
        await workers_done(pilot.app)
        await pilot.pause()


async def workers_done(app: HeardApp) -> None:
    """Wait for every worker. A read that met a stopped database fails its worker by design: the app's
    on_worker_state_changed says so once and retries (every DB_RETRY_SECONDS, racing this wait), so only
    other failures fail the test. A worker a newer one replaced (an exclusive read of the queue, superseded
    by the next change another agent made) is cancelled by design too."""
    for worker in list(app.workers):
        try:
            await worker.wait()
        except WorkerCancelled:
            pass
        except WorkerFailed as exc:
            if not isinstance(exc.error, DatabaseUnreachable):
                raise


def queue(app: HeardApp) -> QueueTable:
    return app.screen.query_one(QueueTable)


def toasts(app: HeardApp) -> list[str]:
    return [n.message for n in app._notifications]


def screen_text(app: HeardApp) -> str:
    """What a person sees: the screenshot's text, tags and entities removed."""
    svg = app.export_screenshot()
    lines = re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S)
    return html.unescape("".join(re.sub(r"<[^>]+>", "", line) for line in lines)).replace("\xa0", " ")


def screen_lines(app: HeardApp) -> list[str]:
    """The screen's text, one string per terminal row."""
    svg = app.export_screenshot()
    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg, flags=re.S):
        text = html.unescape(re.sub(r"<[^>]+>", "", m.group(3))).replace("\xa0", " ")
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), text))
    return ["".join(t for _x, t in sorted(rows[y])) for y in sorted(rows)]


def events(store: Store, tid: int) -> list[dict]:
    with store.read() as s:
        rows = s.connection().execute(select(Event.__table__).where(Event.__table__.c.ticket_id == tid))
        return [dict(r._mapping) for r in rows]


def ticket(store: Store, tid: int) -> dict:
    with store.read() as s:
        return dict(s.connection().execute(select(Ticket.__table__).where(Ticket.__table__.c.id == tid)).one()._mapping)


# -- the queue -----------------------------------------------------------------------------
@pilot_test
async def test_queue_lists_work_in_take_next_order_with_the_counts(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # Oldest first among equals; the automated one is listed last (muted, take next passes over it)
        # and never acknowledged.
        assert queue(app).ids == work_order(ids)
        text = screen_text(app)
        assert "Jane Doe" in text and "Printer on fire" in text and "not yet" in text
        assert "6 open" in text and "5 unacknowledged" in text and "sync off" in text


@pilot_test
async def test_take_next_claims_the_most_urgent_ticket_and_opens_it(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == ids[0]
        assert ticket(store, ids[0])["holder"] == AGENT
        assert [(e["kind"], e["actor"]) for e in events(store, ids[0])] == [("holder", AGENT), ("status", AGENT)]
        assert f"holding #{ids[0]}" in screen_text(app)


@pilot_test
async def test_an_agent_holds_one_ticket_at_a_time(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        await pilot.press("escape", "n")
        await settle(pilot)
        assert isinstance(app.screen, QueueScreen)
        assert f"you hold #{ids[0]}: solve, park or release it before taking another" in toasts(app)
        assert [ticket(store, t)["holder"] for t in ids[1:]] == [None] * 5
        # Parking the held one frees the agent.
        await pilot.press("enter", "p")
        await pilot.press(*"customer will test tonight", "enter")
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert app.screen.ticket_id == ids[1]


@pilot_test
async def test_reason_dialog_refuses_an_empty_reason_and_records_a_real_one(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", "s")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        assert "new → solved" in screen_text(app)
        await pilot.press("space", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog), "an empty reason must not close the dialog"
        assert "a reason is required" in screen_text(app)
        assert ticket(store, ids[0])["status"] == "new"
        await pilot.press(*"driver 2.4.1 fixes the crash", "enter")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen)
        assert ticket(store, ids[0])["status"] == "solved"
        last = events(store, ids[0])[-1]
        assert (last["kind"], last["new"], last["actor"], last["reason"]) == (
            "status", "solved", AGENT, "driver 2.4.1 fixes the crash")
        assert "driver 2.4.1 fixes the crash" in screen_text(app)  # in the timeline


@pilot_test
async def test_recent_reasons_are_picked_with_the_keyboard(store, ids):
    set_status(store, ids[1], "pending", reason="asked for the invoice PDF", actor=AGENT, now=NOW)
    set_status(store, ids[2], "on_hold", reason="waiting for the vendor", actor=AGENT, now=NOW + timedelta(minutes=1))
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s", "alt+2", "enter")  # the second most recent
        await settle(pilot)
        assert events(store, ids[0])[-1]["reason"] == "asked for the invoice PDF"
        await pilot.press("6")
        await settle(pilot)
        queue(app).cursor = queue(app).ids.index(ids[5])
        await pilot.press("h", "down", "enter", "enter")  # into the list, choose the first, save
        await settle(pilot)
        assert events(store, ids[5])[-1]["reason"] == "waiting for the vendor"  # the most recent one
        assert ticket(store, ids[5])["status"] == "on_hold"


@pilot_test
async def test_recent_reasons_are_what_agents_answered_not_what_heard_recorded_about_mail(store, ids):
    from storage.lifecycle import Change
    from storage.tickets import append_event

    from storage.tickets import REPLY_REASON, set_holder, take_ticket

    # What taking a ticket and `heard reply` without --reason write, before the agent's own answer.
    take_ticket(store, ids[4], agent=AGENT, now=NOW - timedelta(minutes=3))
    set_holder(store, ids[4], None, reason="wrong queue", actor=AGENT, now=NOW - timedelta(minutes=2))
    taken = take_ticket(store, None, agent="Bo", now=NOW - timedelta(minutes=1))
    set_holder(store, taken, None, reason="wrong queue", actor="Bo", now=NOW - timedelta(minutes=1))
    set_status(store, ids[5], "pending", reason=REPLY_REASON, actor=AGENT, now=NOW + timedelta(minutes=3))
    set_status(store, ids[1], "pending", reason="asked for the invoice PDF", actor=AGENT, now=NOW)
    with store.write_conn() as conn:  # what sending a reply and an acknowledgement write
        append_event(conn, ids[2], Change("reply", None, "outbox #1", "replied to bob@shop.example (Message-ID "
                                          "<1.heard@example.com>)", AGENT, NOW + timedelta(minutes=1)))
        append_event(conn, ids[3], Change("ack", None, "2026-11-24T14:00:00Z",
                                          "acknowledged by Ana; promised by Tue 24 Nov 14:00", AGENT,
                                          NOW + timedelta(minutes=2)))
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()
        text = screen_text(app)
        assert "1 asked for the invoice PDF" in text and "2 wrong queue" in text
        assert "promised by" not in text and "Message-ID" not in text
        assert "took" not in text and REPLY_REASON not in text
        await pilot.press("alt+1", "enter")
        await settle(pilot)
        assert events(store, ids[0])[-1]["reason"] == "asked for the invoice PDF"


@pilot_test
async def test_bulk_change_applies_one_reason_to_every_marked_ticket(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("space", "space", "p")
        await pilot.pause()
        assert "2 marked tickets" in screen_text(app)
        await pilot.press(*"sent the FAQ link", "enter")
        await settle(pilot)
        for tid in ids[:2]:
            assert ticket(store, tid)["status"] == "pending"
            assert events(store, tid)[-1]["reason"] == "sent the FAQ link"
        assert ticket(store, ids[2])["status"] == "new"
        assert queue(app).marked == set()
        assert ids[0] not in queue(app).ids  # waiting tickets leave the open view


@pytest.mark.parametrize(
    ("key", "expect"),
    [
        ("1", lambda ids: ids[:1] + ids[2:]),  # open: everything not solved
        ("2", lambda ids: []),  # mine: nothing held
        ("3", lambda ids: []),  # waiting on customer
        ("4", lambda ids: [ids[0], ids[2], ids[3], ids[5]]),  # unacknowledged: no automated, no solved
        ("5", lambda ids: [ids[1]]),  # solved
        ("6", lambda ids: ids),  # all
    ],
)
@pilot_test
async def test_filters(store, ids, key, expect):
    set_status(store, ids[1], "solved", reason="refunded", actor=AGENT, now=NOW)
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(key)
        await settle(pilot)
        assert sorted(queue(app).ids) == sorted(expect(ids))


@pilot_test
async def test_f_cycles_the_filters(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seen = []
        for _ in range(6):
            await pilot.press("f")
            await settle(pilot)
            seen.append(app.screen.view)
        assert seen == ["mine", "waiting", "unacknowledged", "solved", "all", "open"]


@pilot_test
async def test_a_search_shows_mail_that_arrives_while_it_is_open(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"invoice")
        await settle(pilot)
        assert sorted(queue(app).ids) == [ids[1], ids[5]]
        late = seed(store, [("Invoice 3000 missing", "dora@shop.example", "Dora", 1, "Where is it?", {})])[0]
        app.data_changed()  # what the sync worker calls after new mail
        await settle(pilot)
        assert sorted(queue(app).ids) == sorted([ids[1], ids[5], late])
        # The matches stay in the work order of the view.
        found = queue(app).ids
        await pilot.press("escape")
        await settle(pilot)
        order = queue(app).ids
        assert found == [i for i in order if i in {ids[1], ids[5], late}]


@pilot_test
async def test_slash_searches_subjects_bodies_and_customers(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"invoice")
        await settle(pilot)
        assert sorted(queue(app).ids) == [ids[1], ids[5]]
        await pilot.press("enter")  # back to the list, search kept
        await settle(pilot)
        assert app.screen.focused is queue(app)
        await pilot.press("escape")
        await settle(pilot)
        assert queue(app).ids == work_order(ids)
        await pilot.press("slash", *"VAT")  # a word only in a body
        await settle(pilot)
        assert queue(app).ids == [ids[5]]
        await pilot.press("escape", "slash", *"mallory")  # a customer
        await settle(pilot)
        assert queue(app).ids == [ids[3]]


@pilot_test
async def test_slash_with_a_ticket_number_finds_that_ticket(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *f"#{ids[3]}")
        await settle(pilot)
        assert ids[3] in queue(app).ids
        await pilot.press("escape", "slash", *str(ids[2]))
        await settle(pilot)
        assert ids[2] in queue(app).ids


@pilot_test
async def test_an_empty_view_or_search_says_so_instead_of_showing_a_blank_list(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")  # mine: nothing held yet
        await settle(pilot)
        assert queue(app).ids == []
        assert "You hold no ticket: n takes the most urgent one." in screen_text(app)
        await pilot.press("1", "slash", *"zebra")
        await settle(pilot)
        text = screen_text(app)
        assert "Nothing in open matches 'zebra': escape clears the search, 6 looks in all." in text
        assert "You hold no ticket" not in text
        await pilot.press("escape")
        await settle(pilot)
        assert "matches" not in screen_text(app) and queue(app).ids == work_order(ids)
        await pilot.press("slash", *("zq" * 100), "enter")  # a pasted line: the advice stays whole
        await settle(pilot)
        text = screen_text(app)
        assert "Nothing in open matches '" + "zq" * 19 + "z…': escape clears the search, 6 looks in all." in text


@pilot_test
async def test_cursor_keys_and_enter(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("G")
        assert queue(app).cursor == len(ids) - 1
        await pilot.press("k", "k", "up")
        assert queue(app).cursor == len(ids) - 4
        await pilot.press("g", "j", "down")
        assert queue(app).cursor == 2
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen.ticket_id == ids[2]
        assert "vague: no details: what fails?" in screen_text(app)


@pilot_test
async def test_mouse_click_moves_the_cursor_and_double_click_opens(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = queue(app)
        await pilot.click(QueueTable, offset=(40, 2))
        assert table.cursor == 2
        await pilot.click(QueueTable, offset=(40, 2), times=2)
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == ids[2]


@pilot_test
async def test_a_long_queue_has_a_scroll_bar_that_moves_and_takes_clicks(store):
    many = [(f"Question {i}", f"c{i}@cust.example", f"C {i}", 100 - i, "Help", {}) for i in range(80)]
    seed(store, many)
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        table = queue(app)
        width, height = table.size
        def bar() -> list[str]:  # the background of the last column, line by line
            return [str(list(table.render_line(y).crop(width - 1, width))[0].style.bgcolor) for y in range(height)]
        top = bar()
        assert len(set(top)) == 2 and top[0] != top[-1]  # a thumb at the top of a track
        await pilot.press("G")
        await settle(pilot)
        bottom = bar()
        assert bottom[-1] == top[0] and bottom[0] == top[-1]  # the thumb went down with the list
        await pilot.click(QueueTable, offset=(width - 1, 0))  # a click on the bar's top
        assert table.cursor == 0
        await pilot.click(QueueTable, offset=(width - 1, height // 2))
        assert abs(table.cursor - len(table.ids) // 2) <= len(table.ids) // height + 1


# -- hostile mail ----------------------------------------------------------------------------
@pilot_test
async def test_hostile_subjects_names_and_bodies_are_inert_text(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert HOSTILE_SUBJECT in text and "[b]Mallory[/b]" in text
        # Clicking the subject must not run the action it pretends to carry.
        row = queue(app).ids.index(ids[3])
        await pilot.click(QueueTable, offset=(60, row))
        await pilot.click(QueueTable, offset=(60, row), times=2)
        await settle(pilot)
        assert app.is_running and isinstance(app.screen, TicketScreen)
        text = screen_text(app)
        assert "red [b]bold?[/b] [link=https://evil.example]click[/link] exe.pdf bell" in text
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
        for y in range(3):
            await pilot.click(offset=(10, 5 + y))
        assert app.is_running


@pilot_test
async def test_hostile_subject_in_the_reason_dialog_and_palette_is_inert(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        queue(app).cursor = queue(app).ids.index(ids[3])
        await pilot.press("s")
        await pilot.pause()
        assert HOSTILE_SUBJECT in screen_text(app)
        await pilot.press("escape", "ctrl+p", *f"#{ids[3]}")
        await pilot.pause(0.3)
        assert HOSTILE_SUBJECT in screen_text(app)
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running and app.screen.ticket_id == ids[3]


# -- the ticket screen ----------------------------------------------------------------------
@pilot_test
async def test_ticket_shows_the_conversation_folds_quotes_and_lists_attachments(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        text = screen_text(app)
        assert "Since your update the driver crashes." in text
        assert "3 quoted lines folded" in text and "Thanks for writing." not in text
        assert "crash.log" in text and "text/plain" in text and "18 KB" in text
        assert "joined: new ticket" in text
        await pilot.press("z")
        await pilot.pause()
        text = screen_text(app)
        assert "> Thanks for writing." in text and "folded" not in text


@pilot_test
async def test_customer_tickets_are_one_key_away(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        queue(app).cursor = queue(app).ids.index(ids[1])
        await pilot.press("enter", "c")
        await pilot.pause()
        assert isinstance(app.screen, CustomerTicketsScreen)
        assert "Second question about invoices" in screen_text(app)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == ids[5]
        assert len([s for s in app.screen_stack if isinstance(s, TicketScreen)]) == 1


def seed_raw(store: Store, raws: list[bytes], now: datetime = NOW) -> list[int]:
    """Raw mail parsed and converted as the sync does, one ticket each."""
    from mail.convert import MessageConverter
    from mail.parse import parse_message

    conv = MessageConverter.from_parts(["support@example.com"], "example.com", {})
    with store.write_conn() as conn:
        ing = Ingest(conn, store.search, now)
        ids = [ing.add(conv.convert(raw, parse_message(raw), internal_date=now - timedelta(hours=1)), None,
                       "new ticket") for raw in raws]
        ing.flush()
    return ids


def hostile(n: int, sender: str, subject: str, body: str = "Please look at it.\r\n", head: str = "") -> bytes:
    return (f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\nMessage-ID: <h{n}@x.example>\r\n"
            f"Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n{head}\r\n{body}").encode()


def deep_multipart(levels: int, text: str) -> tuple[str, str]:
    body = f"Content-Type: text/plain\r\n\r\n{text}\r\n"
    for i in reversed(range(levels)):
        body = f"--b{i}\r\n{body}\r\n--b{i}--\r\n"
        if i:
            body = f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n" + body
    return f"Content-Type: multipart/mixed; boundary=b0\r\n", body


@pilot_test
async def test_hostile_senders_and_structure_still_show_who_wrote_and_what(store):
    head, body = deep_multipart(40, "The export stops at row 1000.")
    ids = seed_raw(store, [
        hostile(1, "Jane Doe", "Invoice wrong"),
        hostile(2, "John Roe", "Cannot log in"),
        hostile(3, '"Jane Doe" <>', "Invoice still wrong"),
        hostile(4, "ann@cust.example", "Deep mail", body, head),
        hostile(5, "ann@cust.example", "Wire the refund", head="From: CEO <ceo@cust.example>\r\n"),
    ])
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "Jane Doe" in text and "John Roe" in text and "(unknown sender)" not in text
        app.open_ticket(ids[0])
        await settle(pilot)
        text = screen_text(app)
        assert "Jane Doe (no address)" in text and "flagged: From has a name but no address" in text
        # Their tickets are Jane's, not every sender's without an address.
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, CustomerTicketsScreen)
        text = screen_text(app)
        assert "Invoice still wrong" in text and "Cannot log in" not in text
        await pilot.press("escape")
        app.open_ticket(ids[3])
        await settle(pilot)
        text = screen_text(app)
        assert "The export stops at row 1000." in text and "(no text)" not in text
        assert "flagged: multipart nested too deep" in text
        app.open_ticket(ids[4])
        await settle(pilot)
        text = screen_text(app)
        assert "ann@cust.example" in text and "flagged: 2 From headers" in text and "ceo@cust.example" in text


@pytest.mark.parametrize(
    ("keys", "field", "value", "kind"),
    [
        (["plus"], "priority", "high", "priority"),
        (["minus"], "priority", "low", "priority"),
        (["h"], "status", "on_hold", "status"),
        (["A", *"Ben", "enter"], "holder", "Ben", "holder"),
    ],
)
@pilot_test
async def test_every_change_asks_why(store, ids, keys, field, value, kind):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", *keys)
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press(*"because", "enter")
        await settle(pilot)
        assert ticket(store, ids[0])[field] == value
        last = events(store, ids[0])[-1]
        assert (last["kind"], last["actor"], last["reason"]) == (kind, AGENT, "because")


@pilot_test
async def test_release_and_reopen(store, ids):
    take_ticket(store, ids[0], agent=AGENT, now=NOW)
    set_status(store, ids[1], "solved", reason="done", actor=AGENT, now=NOW)
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", "x", *"someone who knows drivers", "enter")
        await settle(pilot)
        assert ticket(store, ids[0])["holder"] is None
        await pilot.press("x")  # nobody holds it now: the key is disabled
        await pilot.pause()
        assert not isinstance(app.screen, ReasonDialog)
        await pilot.press("escape", "5", "enter", "o", *"customer says it broke again", "enter")
        await settle(pilot)
        assert ticket(store, ids[1])["status"] == "open"


@pilot_test
async def test_reply_without_smtp_says_what_is_missing(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter", "r")
        await pilot.pause()
        assert "replies need [smtp] in the config" in toasts(app)


# -- keys, palette, help, quit ------------------------------------------------------------
@pilot_test
async def test_keymap_from_the_config_remaps_bindings_by_id(store, ids):
    app = make_app(store, keys={"app.take_next": "N", "change.solve": "S"})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        assert ticket(store, ids[0])["holder"] is None
        await pilot.press("N")
        await settle(pilot)
        assert ticket(store, ids[0])["holder"] == AGENT
        await pilot.press("s")
        assert not isinstance(app.screen, ReasonDialog)
        await pilot.press("S")
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press("escape", "question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert re.search(r"N\s+Take next", screen_text(app))


@pilot_test
async def test_palette_jumps_to_a_ticket_by_number_and_runs_actions(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p", *str(ids[4]))
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == ids[4]
        await pilot.press("escape", "ctrl+p", *"take next")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert ticket(store, ids[0])["holder"] == AGENT


@pilot_test
async def test_help_lists_every_binding(store, ids):
    app = make_app(store)
    async with app.run_test(size=(120, 50)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
        for words in ("Take next", "Filter: unacknowledged", "Search", "Solve", "Waiting", "Release", "Assign",
                      "Quotes", "Timeline", "Their tickets", "Reply", "Pick a recent reason"):
            assert words in text, words
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)


@pilot_test
async def test_help_fits_the_screen_and_scrolls_with_j_and_k(store, ids):
    # The help dialog grew past the bottom of the screen (its "esc close" line was below row 24 at
    # 80x24, and below row 44 at 120x44), and only the arrow keys scrolled it.
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        body = app.screen.query_one("#help-body")
        closing = app.screen.query(".dialog-keys").last()
        assert closing.region.bottom <= 24 and "esc close" in screen_text(app)
        assert body.max_scroll_y > 0
        await pilot.press("j", "j")
        await pilot.pause()
        assert body.scroll_y == 2
        await pilot.press("k")
        await pilot.pause()
        assert body.scroll_y == 1
        await pilot.press("G")
        await pilot.pause()
        assert body.scroll_y == body.max_scroll_y and "yellow when at risk" in screen_text(app)
        await pilot.press("g")
        await pilot.pause()
        assert body.scroll_y == 0
        await pilot.press("escape")
        assert isinstance(app.screen, QueueScreen)


@pilot_test
async def test_q_quits_but_asks_first_while_mail_is_being_sent(store, ids):
    with store.write_conn() as conn:
        conn.execute(insert(Outbox.__table__).values(
            ticket_id=ids[0], message_id="<o1@example.com>", mail_from="support@example.com",
            recipients="jane@acme.example", raw=b"x", state="sending", created_at=NOW))
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        assert "1 message is still waiting to be sent" in screen_text(app)
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and isinstance(app.screen, QueueScreen)
        await pilot.press("q", "y")
        await pilot.pause()
    assert app.return_code == 0


@pilot_test
async def test_q_quits_at_once_when_nothing_is_being_sent(store, ids):
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


def footer_keys(app: HeardApp) -> list[str]:
    """The footer's keys as drawn, each checked to be whole: none reaches under the palette's key."""
    from textual.widgets._footer import FooterKey

    keys = list(app.screen.query(FooterKey))
    palette = [k for k in keys if k.has_class("-command-palette")]
    shown = [k for k in keys if not k.has_class("-command-palette")]
    edge = palette[0].region.x if palette else app.size.width
    for k in shown:
        assert k.region.right <= edge, f"{k.key_display} {k.description} is cut"
    return [f"{k.key_display} {k.description}" for k in shown]


@pilot_test
async def test_the_footer_shows_whole_keys_and_always_help_and_take_next(store, ids):
    # At 80-120 columns the footer cut its last keys mid-word under the palette's key ("t Timel",
    # "n Take nex") and left help (?), the way to every other key, out of sight.
    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for width in (80, 100, 120, 160):
            await pilot.resize_terminal(width, 24)
            await settle(pilot)
            queue_keys = footer_keys(app)
            assert {"? Keys", "n Take next", "⏎ Open", "s Solve"} <= set(queue_keys), (width, queue_keys)
        assert len(queue_keys) == 9  # wide enough for every key
        await pilot.resize_terminal(80, 24)
        await pilot.press("enter")
        await settle(pilot)
        for width in (80, 100, 120, 160):
            await pilot.resize_terminal(width, 24)
            await settle(pilot)
            ticket_keys = footer_keys(app)
            assert {"? Keys", "n Take next", "esc Back", "r Reply"} <= set(ticket_keys), (width, ticket_keys)
        assert "c Their tickets" in ticket_keys
@pytest.mark.slow
def test_quitting_while_the_smtp_server_hangs_after_the_data_leaves_at_once_and_the_send_is_unknown(
        store, ids, smtp_server):
    # The outbox worker waited out the server's silence (60 s) before the process could end: the terminal
    # was given back, and then nothing happened for a minute; and the row was left for that minute in sending.
    from mail.send import queue_reply
    from storage.outbox import outbox_row

    smtp_server.hang("DATA")
    app = make_app(store, smtp=smtp_server.port)
    oid = queue_reply(store, app.cfg, ids[0], "Hi Jane,\n\nThe export works again.\n", agent=AGENT, now=NOW,
                      reason="answered")
    left_at = []

    async def run() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            app.run_outbox()
            assert await _wait_for(pilot, lambda: smtp_server.hanging == 1)
            await pilot.press("q")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmDialog)
            assert "1 message is still waiting to be sent" in screen_text(app)
            left_at.append(time.monotonic())
            await pilot.press("y")

    asyncio.run(run())  # returns once every worker thread has finished
    assert time.monotonic() - left_at[0] < 10
    with store.read() as s:
        row = outbox_row(s.connection(), oid)
    assert row["state"] == "unknown"  # the server had the data: never sent again without the agent
    assert "heard was closed while waiting for the server's answer" in row["last_error"]
    assert f"heard outbox retry {oid}" in row["last_error"]


@pytest.mark.slow
def test_quitting_while_the_imap_server_says_nothing_leaves_at_once(store, ids):
    # An IMAP server that takes the connection and never greets held the quit for the 30 s read timeout.
    from mail.localservers import SilentServer

    with SilentServer() as silent:
        imap = {"host": silent.host, "port": silent.port, "security": "none", "username": "support",
                "password_command": "printf x"}
        cfg = make_config(store.url.removeprefix("sqlite:///"), imap=imap)
        app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=True, tz=timezone.utc)
        left_at = []

        async def run() -> None:
            async with app.run_test(size=SIZE) as pilot:
                assert await _wait_for(pilot, lambda: silent.accepted == 1)
                await pilot.pause(0.3)
                left_at.append(time.monotonic())
                await pilot.press("q")

        asyncio.run(run())
        assert time.monotonic() - left_at[0] < 10 and app.return_code == 0


@pytest.mark.slow
def test_sigterm_quits_the_app_as_q_does_and_gives_the_terminal_back(tmp_path, smtp_server):
    # SIGTERM ended the process on the spot: the terminal stayed in the app's screen with mouse reporting
    # on (typing printed escape codes), and a send in flight was left to the next run to find.
    import os
    import pty
    import select
    import signal
    import sys

    from mail.config import write_config

    smtp_server.hang("DATA")
    path = tmp_path / "config.toml"
    write_config(path, {
        "account": {"address": "support@example.com"},
        "imap": {"host": "127.0.0.1", "port": 1, "security": "none", "username": "s", "password_command": "printf x"},
        "smtp": {"host": "127.0.0.1", "port": smtp_server.port, "security": "none", "username": "",
                 "password_command": "printf x", "sent_folder": ""},
        "storage": {"database": str(tmp_path / "heard.db")},
        "agent": {"name": AGENT},
    })
    store = Store(str(tmp_path / "heard.db"))
    tid = seed(store, BACKLOG[:1])[0]
    from mail.config import load_config
    from mail.send import queue_reply
    from storage.outbox import outbox_row

    oid = queue_reply(store, load_config(path), tid, "Hi Jane,\n\nFixed.\n", agent=AGENT, now=NOW, reason="answered")
    env = dict(os.environ, TERM="xterm-256color", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    pid, fd = pty.fork()
    if pid == 0:  # the child: the app on a terminal of its own
        os.execve(sys.executable, [sys.executable, "-m", "tui.cli", "--config", str(path)], env)
    screen = b""

    def read_for(seconds: float) -> None:
        nonlocal screen
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    screen += os.read(fd, 65536)
                except OSError:
                    return

    try:
        deadline = time.monotonic() + 30
        while smtp_server.hanging < 1 and time.monotonic() < deadline:
            read_for(0.2)
        assert smtp_server.hanging == 1
        os.kill(pid, signal.SIGTERM)
        stopped = time.monotonic()
        status = None
        while time.monotonic() - stopped < 15:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            read_for(0.2)
        else:
            raise AssertionError("the app was still running 15 s after SIGTERM")
        read_for(0.2)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    assert screen.rfind(b"\x1b[?1049l") > screen.rfind(b"\x1b[?1049h") >= 0  # back from the app's screen
    with store.read() as s:
        row = outbox_row(s.connection(), oid)
    assert row["state"] == "unknown" and "heard was closed" in row["last_error"]
    store.close()


# -- scale: the queue is a window, not a table of every row --------------------------------
@pilot_test
async def test_only_the_rows_on_screen_are_fetched(store):
    seed(store, [(f"Question {n}", f"c{n}@example.com", "", 1000 - n, "text", {}) for n in range(1000)])
    app = make_app(store)
    fetched = []
    real = app.fetch_rows
    app.fetch_rows = lambda ids: fetched.extend(ids) or real(ids)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert len(queue(app).ids) == 1000
        assert len(fetched) <= 100  # one page
        await pilot.press("G")
        await pilot.pause()
        assert len(fetched) <= 200
        assert "Question 999" in screen_text(app)


# -- live mail -------------------------------------------------------------------------------
def _raw(n: int, subject: str) -> bytes:
    return (f"From: Dee Customer <dee{n}@cust.example>\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
            f"Message-ID: <live{n}@cust.example>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease help with {subject}.\r\n").encode()


async def _wait_for(pilot, condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await pilot.pause(0.1)
    return condition()


@pytest.mark.slow
@pilot_test
async def test_new_mail_shows_up_while_the_app_is_open(store, pymap_server):
    seed(store)
    imap = {"host": pymap_server.host, "port": pymap_server.port, "security": "none",
            "username": pymap_server.username, "password_command": f"printf '%s' '{pymap_server.password}'"}
    cfg = make_config(store.url.removeprefix("sqlite:///"), imap=imap)
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=True, tz=timezone.utc)
    async with app.run_test(size=SIZE) as pilot:
        assert await _wait_for(pilot, lambda: app.sync.mode == "idle"), app.sync
        before = len(queue(app).ids)
        started = time.monotonic()
        await asyncio.to_thread(pymap_server.append, [_raw(1, "Webhook retries flood us")])
        assert await _wait_for(pilot, lambda: len(queue(app).ids) == before + 1)
        assert time.monotonic() - started < 5  # IDLE, not a 30 s poll
        await pilot.press("j")  # input still answers
        await pilot.pause(0.2)
        assert "Webhook retries flood us" in screen_text(app)
        assert "live (IDLE)" in screen_text(app)


@pytest.mark.slow
@pilot_test
async def test_with_ack_auto_new_mail_shows_up_and_then_its_promise(store, pymap_server, smtp_server):
    seed(store)
    imap = {"host": pymap_server.host, "port": pymap_server.port, "security": "none",
            "username": pymap_server.username, "password_command": f"printf '%s' '{pymap_server.password}'"}
    cfg = make_config(store.url.removeprefix("sqlite:///"), imap=imap, smtp=smtp_server.port, ack={"auto": True})
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=True, tz=timezone.utc)
    async with app.run_test(size=SIZE) as pilot:
        assert await _wait_for(pilot, lambda: app.sync.mode == "idle"), app.sync
        before = len(queue(app).ids)
        await asyncio.to_thread(pymap_server.append, [_raw(1, "Webhook retries flood us")])
        assert await _wait_for(pilot, lambda: len(queue(app).ids) == before + 1)
        # The mail came in six hours ago: the acknowledgement goes out (the seeded customers of the
        # last three days had theirs at the first sync), and its row shows the promise.
        to_dee = lambda: [m for m in smtp_server.messages if m.rcpt_tos == ("dee1@cust.example",)]  # noqa: E731
        assert await _wait_for(pilot, lambda: len(to_dee()) == 1)
        row = lambda: next(line for line in screen_text(app).splitlines() if "Webhook retries" in line)  # noqa: E731
        assert await _wait_for(pilot, lambda: " by " in row()), row()


@pytest.mark.slow
@pilot_test
async def test_a_sync_error_is_a_toast_and_a_header_state_never_a_crash(store):
    from mail.localservers import free_port

    seed(store)
    imap = {"host": "127.0.0.1", "port": free_port(), "security": "none", "username": "support",
            "password_command": "printf x"}
    cfg = make_config(store.url.removeprefix("sqlite:///"), imap=imap)
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=True, tz=timezone.utc)
    async with app.run_test(size=SIZE) as pilot:
        assert await _wait_for(pilot, lambda: app.sync.mode == "offline")
        await pilot.pause(0.2)
        assert any(t.startswith("sync: ") for t in toasts(app))
        assert "offline" in screen_text(app)
        # The retries of the same problem update the header; they do not pile up toasts.
        assert await _wait_for(pilot, lambda: "retrying in 2 s" in (app.sync.error or ""))
        await pilot.pause(0.2)
        assert sum(t.startswith("sync: ") for t in toasts(app)) == 1
        await pilot.press("j", "enter")
        await pilot.pause(0.2)
        assert app.is_running and isinstance(app.screen, TicketScreen)


@pilot_test
async def test_the_header_fits_an_80_column_terminal_with_the_counts_and_the_sync_state(store, ids):
    from tui.widgets import StatusHeader, SyncState

    app = make_app(store)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        app.sync = SyncState(mode="idle", last_sync=NOW)
        app.refresh_header()
        await pilot.pause()
        line = str(app.screen.query_one(StatusHeader).render())
        assert len(line) <= 80, line
        assert "live (IDLE)" in line and f"{app.counts['open']} open" in line, line
        assert f"{app.counts['unacknowledged']} unack" in line, line
        title = re.search(r"# customer +(subject +)age", screen_text(app))
        assert title and len(title.group(1)) >= 18, title  # the subject keeps room to be read
        # Wide again: the full labels come back.
        await pilot.resize_terminal(160, 24)
        await pilot.pause()
        line = str(app.screen.query_one(StatusHeader).render())
        assert f"{app.counts['unacknowledged']} unacknowledged" in line and "live (IDLE)" in line, line


@pilot_test
async def test_a_ticket_we_replied_to_is_not_called_unacknowledged(store, ids):
    from storage.tickets import note_replied_at

    with store.write_conn() as conn:
        note_replied_at(conn, ids[0], NOW - timedelta(hours=1))
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for tid, says in ((ids[0], False), (ids[1], True)):
            app.open_ticket(tid)
            await settle(pilot)
            summary = str(app.screen.query_one("#ticket-summary").render())
            assert ("not acknowledged" in summary) is says, summary


# -- pure helpers ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "shape"),
    [
        ("just text", [(False, 1)]),
        ("answer\n\nOn Mon, 1 Jan 2024, Bo <b@x> wrote:\n> old\n> older", [(False, 1), (True, 3)]),
        ("answer\nOn Mon, 1 Jan 2024 at 10:00, Bo Example\n<b@x> wrote:\n> old", [(False, 1), (True, 3)]),
        ("top\n> quoted\n\n> still quoted\nbottom", [(False, 1), (True, 3), (False, 1)]),
        ("reply\n-----Original Message-----\nFrom: x\nold text", [(False, 1), (True, 3)]),
        ("I said > 5 items", [(False, 1)]),
    ],
)
def test_split_quotes(body, shape):
    assert [(b.quoted, len(b.lines)) for b in split_quotes(body)] == shape


@pilot_test
async def test_a_failed_send_shows_on_the_ticket_with_how_to_retry(tmp_path, smtp_server):
    from mail.send import drain_outbox, queue_reply
    from tests.test_send import make_config as send_config

    cfg = send_config(tmp_path, smtp_port=smtp_server.port)
    store = Store(cfg.database)
    tid = seed(store)[0]
    queue_reply(store, cfg, tid, "Hi Ann,\n\nThe export is fixed.\n", agent=AGENT, now=NOW,
                next_status="pending", reason="sent the fix")
    smtp_server.fail_next("550 5.1.1 mailbox unavailable")
    assert drain_outbox(store, cfg).failed
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)
    async with app.run_test(size=(150, 40)) as pilot:
        await settle(pilot)
        app.open_ticket(tid)
        await settle(pilot)
        text = screen_text(app)
        assert "outbox #1 not sent: " in text and "mailbox unavailable" in text
        assert "heard outbox retry 1" in text
        assert app.counts["failed_sends"] == 1


@pytest.mark.parametrize(
    ("kind", "old", "new", "shown"),
    [
        ("status", "open", "solved", "open → solved"),
        ("status", "open", "pending", "open → waiting on customer"),
        ("holder", None, "Ana", "taken by Ana"),
        ("reply", None, "outbox #3", "reply queued (outbox #3)"),
        ("ack", None, "2026-11-24T14:00:00Z", "acknowledgement queued"),  # the reason names the deadline
        ("checkin", None, "outbox #9", "check-in queued (outbox #9)"),
        ("promise", "Tue 24 Nov 14:00", "Thu 26 Nov 14:00", "promise Tue 24 Nov 14:00 → Thu 26 Nov 14:00"),
        ("outbox", "failed", "queued", "outbox: failed → queued"),
    ],
)
def test_the_timeline_says_what_each_event_changed(kind, old, new, shown):
    from tui.words import event_change as _event_change

    assert _event_change({"kind": kind, "old": old, "new": new}) == shown


@pytest.fixture
def outage(own_postgres_server, monkeypatch):
    """(server, store, ids): the seeded store on a PostgreSQL cluster of the test's own, which it may stop
    (``server.pause()``) and start again (``server.resume()``); the app tries the database every 0.2 s."""
    import tui.app

    monkeypatch.setattr(tui.app, "DB_RETRY_SECONDS", 0.2, raising=False)
    store = Store(own_postgres_server.new_database())
    ids = seed(store)
    try:
        yield own_postgres_server, store, ids
    finally:
        own_postgres_server.resume()
        store.close()


async def answers_again(pilot, app) -> bool:
    """Wait until the app has seen the database answer again."""
    deadline = time.monotonic() + 20
    while "the database answers again" not in toasts(app) and time.monotonic() < deadline:
        await pilot.pause(0.2)
    return "the database answers again" in toasts(app)


@pytest.mark.postgres
@pilot_test
async def test_a_postgres_server_that_stops_under_the_app_is_one_line_and_the_app_carries_on_when_it_is_back(outage):
    # The app read its rows on the screen's own thread: a PostgreSQL server stopped under it (an upgrade,
    # a restart) crashed the app with a SQLAlchemy traceback at the next repaint or key.
    own_postgres_server, store, ids = outage
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        own_postgres_server.pause()
        queue(app).invalidate()  # rows to read again, as after any change: the repaint reads them
        await settle(pilot)
        await pilot.press("enter")  # open the ticket under the cursor
        await pilot.press("n")  # take next
        await pilot.press("3")  # another view
        await settle(pilot)
        assert app.is_running and isinstance(app.screen, QueueScreen)
        said = toasts(app)
        assert any("is unreachable" in t and "heard tries again" in t for t in said), said
        assert all("\n" not in t and "Traceback" not in t and "sqlalche.me" not in t for t in said), said
        own_postgres_server.resume()
        assert await answers_again(pilot, app)
        await pilot.press("1")
        await settle(pilot)
        assert queue(app).ids == work_order(ids)  # read again, whole
        await pilot.press("n")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen) and ticket(store, ids[0])["holder"] == AGENT


@pytest.mark.postgres
@pilot_test
async def test_a_reply_or_an_update_started_while_postgres_is_down_says_so_and_works_once_it_is_back(outage):
    # The composer and the update dialog read the database as they opened: a stopped server ended the
    # app with a traceback.
    from tui.ack import UpdateDialog
    from tui.compose import ComposeScreen

    own_postgres_server, store, ids = outage
    app = make_app(store, smtp=True)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        own_postgres_server.pause()
        await pilot.press("r")
        await settle(pilot)
        assert app.is_running and isinstance(app.screen, TicketScreen) and app.screen.ticket_id == ids[0]
        assert any("is unreachable" in t for t in toasts(app)), toasts(app)
        await pilot.press("u")
        await settle(pilot)
        assert app.is_running and isinstance(app.screen, UpdateDialog)
        error = str(app.screen.query_one("#update-error").render())
        assert "is unreachable" in error and "\n" not in error.strip(), error
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen)
        own_postgres_server.resume()
        assert await answers_again(pilot, app)
        await pilot.press("r")
        await settle(pilot)
        assert isinstance(app.screen, ComposeScreen)
        assert app.screen.draft.startswith("Hi Jane,")


@pytest.mark.postgres
@pytest.mark.slow
@pilot_test
async def test_a_postgres_outage_under_the_live_sync_is_said_once(outage, pymap_server):
    # The live sync and the screen both hit the stopped server: one toast, not "sync: ..." beside it.
    own_postgres_server, store, _ids = outage
    imap = {"host": pymap_server.host, "port": pymap_server.port, "security": "none",
            "username": pymap_server.username, "password_command": f"printf '%s' '{pymap_server.password}'"}
    cfg = make_config(store.url, imap=imap)
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=True, tz=timezone.utc)
    async with app.run_test(size=SIZE) as pilot:
        assert await _wait_for(pilot, lambda: app.sync.mode == "idle"), app.sync
        own_postgres_server.pause()
        queue(app).invalidate()
        await asyncio.to_thread(pymap_server.append, [_raw(7, "While the database is down")])
        assert await _wait_for(pilot, lambda: app.sync.mode == "offline")
        await pilot.pause(1.0)
        said = [t for t in toasts(app) if "unreachable" in t]
        assert len(said) == 1 and not said[0].startswith("sync:"), toasts(app)
        own_postgres_server.resume()
        assert await _wait_for(pilot, lambda: "While the database is down" in screen_text(app), timeout=30)


@pilot_test
async def test_what_another_agent_does_shows_in_the_queue_within_seconds(store, ids, database, monkeypatch):
    # Each app re-read the database only after its own actions or when its own sync stored new mail: a
    # ticket another agent took stayed free on screen, and mail the watcher stored first never showed.
    import tui.app

    monkeypatch.setattr(tui.app, "CHANGES_EVERY", 0.2, raising=False)
    app = make_app(store)
    app.follow_changes = True
    ben = Store(database)  # another agent's heard, on its own connections
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert "Ben" not in screen_text(app)
            take_ticket(ben, None, agent="Ben", now=NOW)
            with ben.write_conn() as conn:
                ing = Ingest(conn, ben.search, NOW)
                ing.add(new_message("Refund for order 7781", "zoe@cust.example", "Please refund."), None, "new ticket")
                ing.flush()
            deadline = time.monotonic() + 10
            while "Refund for order 7781" not in screen_text(app) and time.monotonic() < deadline:
                await pilot.pause(0.2)
            text = screen_text(app)
            assert "Refund for order 7781" in text and "Ben" in text, (toasts(app), app._seen_version)
            assert "7 open" in text
    finally:
        ben.close()


@pilot_test
async def test_a_pasted_log_of_50000_lines_opens_at_once_and_v_reads_it_whole(store):
    # The ticket screen laid the whole message out as it opened: 3 MB of pasted log took 8.5 s.
    from tui.reader import ReaderScreen

    log = [f"10:{i // 60 % 60:02d}:{i % 60:02d} ERROR worker {i} failed: connection reset by peer" for i in range(50_000)]
    log.append("LAST LINE [b]not bold[/b] \x1b[31mred \u202eevil")
    (tid,) = seed(store, [("Huge log pasted", "ann@cust.example", "Ann Lee", 3, "Here is the log:\n" + "\n".join(log), {})])
    later = seed(store, [("Unrelated", "zed@cust.example", "", 1, "Short question.", {})])
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_ticket(tid)
        await settle(pilot)
        await pilot.press("G")
        await pilot.pause()
        text = screen_text(app)
        assert isinstance(app.screen, TicketScreen)
        assert "more lines of this message not shown here · v reads it whole" in text, text[-600:]
        assert "LAST LINE" not in text
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, ReaderScreen)
        assert "1. Ann Lee <ann@cust.example>" in screen_text(app)  # at the message it could not show whole
        await pilot.press("G")
        await pilot.pause()
        text = screen_text(app)
        assert "ERROR worker 49999 failed" in text
        assert "LAST LINE [b]not bold[/b] red evil" in text  # data, not markup; no escape, no bidi override
        await pilot.press("g")
        await pilot.pause()
        assert "Here is the log:" in screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, TicketScreen) and app.screen.ticket_id == tid
        # A short conversation reads whole too, at its latest message.
        app.open_ticket(later[0])
        await settle(pilot)
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, ReaderScreen) and "Short question." in screen_text(app)


@pilot_test
async def test_a_subject_of_100000_characters_leaves_the_ticket_screen_room_for_the_mail(store):
    # The header printed the whole subject: 850 rows of it, and neither the customer nor the mail showed.
    from tui.reader import ReaderScreen

    subject = "Refund please " + "A" * 100_000 + " END"
    (tid,) = seed(store, [(subject, "ann@cust.example", "Ann Lee", 3, "The body of the mail.", {})])
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_ticket(tid)
        await settle(pilot)
        text = screen_text(app)
        assert "Refund please" in text and "AAAA…" in text and " END" not in text
        assert "Ann Lee <ann@cust.example>" in text and "The body of the mail." in text
        # Two rows of subject (three when the cut word wraps), the customer's line, the rule.
        assert app.screen.query_one("#ticket-summary").outer_size.height <= 5
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, ReaderScreen)
        await pilot.press("g")
        await pilot.pause()
        assert "Subject\n" in screen_text(app)  # the reader has it whole, first
        assert subject in app.screen.lines


@pytest.mark.parametrize("line, width, rows", [
    ("short", 10, ["short"]),
    ("connection reset by peer", 10, ["connection", "reset by", "peer"]),
    ("abcdefghijklmnop", 6, ["abcdef", "ghijkl", "mnop"]),  # a word longer than the row is cut
    ("日本語のテキスト", 6, ["日本語", "のテキ", "スト"]),  # two cells a character
    ("", 5, [""]),
])
def test_the_reader_wraps_between_words_and_by_cells(line, width, rows):
    from tui.reader import wrap_line

    assert wrap_line(line, width) == rows


@pytest.mark.parametrize("text, shown_lines, rest", [
    ("a\nb\nc", 3, 0),
    ("\n".join(f"line {i}" for i in range(1000)), 300, 700),
    ("x" * 100_000, 1, 1),  # one line longer than the limit: its start
])
def test_the_ticket_screen_shows_the_start_of_a_long_message(text, shown_lines, rest):
    from tui.screens import shown_part

    shown, left = shown_part(text)
    assert (len(shown.split("\n")), left) == (shown_lines, rest)
    assert text.startswith(shown)


@pilot_test
async def test_on_a_friday_afternoon_a_promise_due_monday_morning_is_at_risk(store, ids):
    # The margin (2h) was compared on the clock: at 16:00 on Friday a promise due Monday 10:00 was not at
    # risk, so nothing warned the agent before the weekend, with two business hours left to keep it.
    from sqlalchemy import update

    friday = datetime(2026, 11, 27, 16, 0, tzinfo=timezone.utc)
    with store.write_conn() as conn:
        conn.execute(update(Ticket.__table__).where(Ticket.__table__.c.id == ids[2]).values(
            promise_deadline=datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc), acknowledged_at=friday - timedelta(days=1)))
    cfg = make_config(store.url.removeprefix("sqlite:///"))
    app = HeardApp(cfg, store=store, clock=lambda: friday, start_sync=False, tz=timezone.utc)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "1 at risk" in screen_text(app)
        assert queue(app).ids[0] == ids[2]  # at risk first, as take next would choose


@pilot_test
async def test_the_timeline_pane_follows_the_terminal_width_until_t_chooses(store, ids):
    app = make_app(store)
    async with app.run_test(size=(160, 36)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, TicketScreen)
        conversation, timeline = screen.query_one("#conversation"), screen.query_one("#timeline")
        assert timeline.display and "joined: new ticket" in screen_text(app)
        # Shrunk to 80 columns: the conversation gets the whole width, not 36 columns beside the timeline.
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.1)
        assert not timeline.display and conversation.size.width >= 78, conversation.size
        # Wide again: the timeline is back.
        await pilot.resize_terminal(160, 36)
        await pilot.pause(0.1)
        assert timeline.display
        # `t` hides it: a resize does not bring it back, and `t` again shows it at 80 columns too.
        await pilot.press("t")
        await pilot.pause()
        await pilot.resize_terminal(150, 36)
        await pilot.pause(0.1)
        assert not timeline.display
        await pilot.press("t")
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.1)
        assert timeline.display


@pilot_test
async def test_a_ticket_opened_again_after_a_resize_fits_the_new_width(store, ids):
    app = make_app(store)
    async with app.run_test(size=(160, 36)) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        timeline = app.screen.query_one("#timeline")
        assert timeline.display
        await pilot.press("escape")
        await settle(pilot)
        await pilot.resize_terminal(80, 24)  # while the queue is on screen
        await pilot.pause(0.1)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen) and not timeline.display


@pytest.mark.parametrize("size", [(80, 24), (160, 45)])
@pilot_test
async def test_help_lists_the_queue_marks_as_a_table_across_the_dialog(store, ids, size):
    # The marks legend sat in half the dialog under the right-hand column, every mark padded to the
    # width of "by Tue 14:00", and its sentences wrapped back under the marks ("marked with / space: the
    # next change applies / to every marked ticket").
    app = make_app(store)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        await pilot.pause()
        screen = app.screen
        body = screen.query_one("#help-body")
        legend = screen.query_one(".help-keys.-legend")
        marks, sentences = list(legend.query(".help-key")), list(legend.query(".help-what"))
        assert [str(m.render()) for m in marks] == ["●", "!", "?", "auto:", "by Tue 14:00"]
        # Under both columns, the width of the dialog.
        assert legend.region.width >= body.scrollable_content_region.width - 2, (legend.region, body.region)
        # Every sentence starts in one column, right of the widest mark, wrapped lines included.
        assert len({s.region.x for s in sentences}) == 1
        assert sentences[0].region.x > max(m.region.right for m in marks)
        if size == (160, 45):
            # Each on one line, and the whole help (marks and "esc close") without scrolling.
            assert all(s.region.height == 1 for s in sentences), [s.region for s in sentences]
            assert body.max_scroll_y == 0
            assert "promised deadline; yellow when at risk, red when broken" in screen_text(app)
        else:
            assert all(s.region.height <= 2 for s in sentences), [s.region for s in sentences]


def footer_line(app: HeardApp) -> str:
    return screen_text(app).rstrip("\n").splitlines()[-1]


@pilot_test
async def test_the_footer_under_a_dialog_keeps_the_keys_of_the_screen_it_belongs_to(store, ids):
    # Opening the reason dialog or help made "n Take next" vanish from the footer underneath (and come
    # back on closing), as if the queue no longer offered it.
    app = make_app(store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = footer_line(app)
        assert "n Take next" in before, before
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        assert footer_line(app) == before
        await pilot.press("escape", "question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and footer_line(app) == before
        await pilot.press("n")  # over a dialog, take next still does nothing
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        assert all(ticket(store, i)["holder"] is None for i in ids)
        await pilot.press("escape", "enter")
        await settle(pilot)
        assert isinstance(app.screen, TicketScreen)
        on_ticket = footer_line(app)
        assert "n Take next" in on_ticket, on_ticket
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and footer_line(app) == on_ticket
