"""The acknowledgement review in the app (`a` on the queue), driven by keys through Textual's pilot,
sending through a real SMTP server (aiosmtpd) on loopback."""

from __future__ import annotations

import asyncio
import email
import functools
import re
import time
from datetime import datetime, timedelta, timezone
from email import policy

import pytest

from factories import add_ticket
from storage import ledger
from storage.db import Store
from storage.tickets import events_of, ticket_row
from test_ack import ack_all, make_config
from test_app import screen_lines, screen_text
from tui.screens import TicketScreen
from tui.ack import AckReviewScreen, DeadlineDialog, TemplateDialog, UpdateDialog, update_screen
from tui.dialogs import ConfirmDialog
from tui.app import HeardApp

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
SIZE = (130, 40)


def run_async(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        asyncio.run(fn(*args, **kwargs))

    return run


async def wait_until(pilot, condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting in the app")
        await pilot.pause(0.05)


@pytest.fixture
def setup(tmp_path, smtp_server):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, agent_name="Ana")
    store = Store(cfg.database)
    ids = {
        "ann": add_ticket(store, "Export to CSV stops", "ann@cust.example", "It stops.", from_name="Ann Lee"),
        "bob": add_ticket(store, "Invoice [b]PDF[/b] blank", "bob@cust.example", "Blank.", from_name="Bob"),
        "cy": add_ticket(store, "Second user", "cy@cust.example", "Cannot add.", from_name="Cy"),
        "robot": add_ticket(store, "Your receipt", "noreply@shop.example", "x", automated_reason="sender noreply"),
        "list": add_ticket(store, "Digest", "news@list.example", "x", automated_reason="List-Id header"),
    }
    yield cfg, store, ids
    store.close()


def make_app(cfg, store) -> HeardApp:
    return HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)


async def open_review(pilot, app) -> None:
    """`a` on the queue, and wait until the review has its plan."""
    await pilot.pause()
    await pilot.press("a")
    await wait_until(pilot, lambda: isinstance(app.screen, AckReviewScreen) and app.screen.plan is not None)


def _text(widget) -> str:
    return str(widget.render())


@run_async
async def test_review_lists_eligible_and_skipped_leave_one_out_send_and_record(setup, smtp_server):
    cfg, store, ids = setup
    app = make_app(cfg, store)
    async with app.run_test(size=SIZE) as pilot:
        await open_review(pilot, app)
        screen = app.screen
        eligible = screen.query_one("#ack-eligible")
        skipped = screen.query_one("#ack-skipped")
        assert eligible.row_count == 3 and skipped.row_count == 2
        rules = {str(skipped.get_row_at(i)[0]): str(skipped.get_row_at(i)[2]) for i in range(skipped.row_count)}
        assert rules[f"#{ids['robot']}"] == "automated sender (sender noreply)"
        assert rules[f"#{ids['list']}"] == "mailing list (List-Id header)"
        rows = [str(eligible.get_row_at(i)[1]) for i in range(eligible.row_count)]
        assert sorted(rows) == sorted(f"#{ids[k]}" for k in ("ann", "bob", "cy"))
        # A hostile subject is shown literally, never as markup.
        assert any("[b]PDF[/b]" in str(eligible.get_row_at(i)[4]) for i in range(eligible.row_count))

        left_out = int(rows[0].lstrip("#"))
        await pilot.press("space")  # leave the highlighted ticket out
        assert [c.include for c in screen.plan.candidates if c.ticket_id == left_out] == [False]
        await pilot.press("j")
        assert "Hi " in str(screen.query_one("#ack-preview").render())

        await pilot.press("y")
        await wait_until(pilot, lambda: len(smtp_server.messages) == 2 and not screen.sending)
        status = _text(screen.query_one("#ack-status"))
        assert "2 acknowledgements sent" in status
        bar = screen.query_one("#ack-progress")
        assert bar.total == 2 and bar.progress == 2
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, AckReviewScreen)

    got = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    expected = sorted(addr for k, addr in (("ann", "ann@cust.example"), ("bob", "bob@cust.example"),
                                           ("cy", "cy@cust.example")) if ids[k] != left_out)
    assert got == expected
    with store.read() as s:
        conn = s.connection()
        for key in ("ann", "bob", "cy"):
            tid = ids[key]
            acks = [e for e in events_of(conn, tid) if e["kind"] == "ack"]
            if tid == left_out:
                assert acks == [] and ticket_row(conn, tid)["acknowledged_at"] is None
            else:
                assert len(acks) == 1 and re.fullmatch(r"acknowledged by Ana; promised by \w{3} \d+ Nov \d\d:\d\d", acks[0]["reason"])
        assert conn.exec_driver_sql("SELECT count(*) FROM outbox WHERE state = 'sent'").scalar() == 2


@run_async
async def test_change_a_deadline_and_edit_the_message_before_sending(setup, smtp_server):
    cfg, store, ids = setup
    app = make_app(cfg, store)
    async with app.run_test(size=SIZE) as pilot:
        await open_review(pilot, app)
        screen = app.screen
        first = screen._current()
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, DeadlineDialog))
        await pilot.press(*"sat 15:00", "enter")  # nobody is at the desk to keep it: refused, with what would do
        await pilot.pause()
        assert isinstance(app.screen, DeadlineDialog)
        error = _text(app.screen.query_one("#deadline-error"))
        assert "Saturday 28 November is not a business day (Mon-Fri 09:00-17:00)" in error
        assert "e.g. Mon 30 Nov 15:00" in error
        app.screen.query_one("#deadline-input").value = ""
        await pilot.press(*"thu 15:00", "enter")
        await wait_until(pilot, lambda: app.screen is screen)
        assert first.deadline == datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc) and first.deadline_edited

        await pilot.press("e")
        await wait_until(pilot, lambda: isinstance(app.screen, TemplateDialog))
        area = app.screen.query_one("TextArea")
        area.text = "{greeting}\n\nNo placeholder for the date here.\n"
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, TemplateDialog)  # refused: the promise is the point
        assert "{deadline}" in _text(app.screen.query_one("#template-error"))
        area.text = "{greeting}\n\nI will have an answer for you by {deadline}.\n\n{signature}\n"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        for _ in range(2):  # only the first one goes
            await pilot.press("j", "space")
        await pilot.press("y")
        await wait_until(pilot, lambda: len(smtp_server.messages) == 1 and not screen.sending)
    msg = email.message_from_bytes(smtp_server.messages[0].data, policy=policy.default)
    assert msg.get_content().replace("\r\n", "\n").startswith(f"Hi {first.first_name},\n\nI will have an answer for you by Thursday 26 "
                                        "November, 15:00 UTC.")


@run_async
async def test_update_dialog_for_an_at_risk_promise_asks_before_a_second_update(tmp_path, smtp_server):
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, ack={"window": "1h"})
    store = Store(cfg.database)
    tid = add_ticket(store, "Export", "ann@cust.example", "It stops.", from_name="Ann")
    ack_all(store, cfg, now=NOW)
    with store.read() as s:
        deadline = ledger.promise_in_force(s.connection(), tid, now=NOW)["deadline"]
    clock = {"now": deadline - H}
    app = HeardApp(cfg, store=store, clock=lambda: clock["now"], start_sync=False, tz=timezone.utc)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for n, when in enumerate(("thu 14:00", "fri 14:00")):
            if n == 0:  # the key on the ticket screen
                app.open_ticket(tid)
                await wait_until(pilot, lambda: isinstance(app.screen, TicketScreen) and app.screen.detail)
                await pilot.pause()
                summary = _text(app.screen.query_one("#ticket-summary"))
                assert "promised by" in summary and "u: tell them the new deadline" in summary
                await pilot.press("u")
            else:
                app.push_screen(update_screen(app, tid))
            await wait_until(pilot, lambda: isinstance(app.screen, UpdateDialog) and app.screen.settings is not None)
            assert "at risk" in _text(app.screen.query_one("#update-title")) or n == 1
            await pilot.press(*when, "enter", *"the supplier is late", "enter")
            if n == 1:  # the second update: asked to confirm, then sent
                await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
                question = _text(app.screen.query_one("#confirm-question"))
                # the whole reason, the time of the promise in force uncut
                assert re.fullmatch(rf"#{tid} already had an update \(promise now by \w{{3}} \d+ \w{{3}} \d\d:\d\d\): "
                                    r"send it anyway\?", question), question
                await pilot.press("y")
            await wait_until(pilot, lambda: not isinstance(app.screen, UpdateDialog))
            clock["now"] = clock["now"] + 2 * H  # past the 1 h window
        await wait_until(pilot, lambda: len(smtp_server.messages) >= 2)
    with store.read() as s:
        assert ledger.updates_sent(s.connection(), tid) == 2
    store.close()


@run_async
async def test_a_refusal_while_acknowledging_is_shown_without_the_servers_escape_sequences(setup, smtp_server):
    # The server's answer is data: "\x1b[8m" in a toast would reach the terminal and hide what follows.
    cfg, store, ids = setup
    smtp_server.fail_next(*["554 5.7.1 \x1b[8mrejected\x1b]0;owned\x07 as spam"] * 3)
    app = make_app(cfg, store)
    async with app.run_test(size=SIZE) as pilot:
        await open_review(pilot, app)
        await pilot.press("y")
        await wait_until(pilot, lambda: any("rejected" in n.message for n in app._notifications))
        shown = [n.message for n in app._notifications]
        assert any("rejected as spam" in m for m in shown), shown
        assert not any("\x1b" in m or "\x07" in m for m in shown), shown


@run_async
async def test_send_all_with_the_smtp_server_down_says_the_batch_waits_and_why(setup, smtp_server):
    # The review said "sending 3…" for as long as the server stayed down: the error was a toast for ten
    # seconds, then the screen went on claiming the mail was on its way.
    cfg, store, ids = setup
    smtp_server.stop()
    app = make_app(cfg, store)
    async with app.run_test(size=SIZE) as pilot:
        await open_review(pilot, app)
        screen = app.screen
        await pilot.press("y")
        await wait_until(pilot, lambda: not screen.sending)
        status = _text(screen.query_one("#ack-status"))
        assert status.startswith(f"0 sent, 3 waiting: 127.0.0.1:{cfg.smtp.port} refused the connection: check [smtp] "
                                 "host and port"), status
        assert "heard keeps trying in the background (`heard outbox`)" in status and "sending" not in status
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, AckReviewScreen)
    with store.read() as s:  # queued, promises made: they go out when the server is back
        assert s.connection().exec_driver_sql("SELECT count(*) FROM outbox WHERE state = 'queued'").scalar() == 3


@run_async
async def test_the_deadline_dialogs_show_every_way_to_write_a_deadline_uncut(setup, smtp_server):
    # The hint was one Label wider than the dialog: its end ("... business time from now") was cut off.
    cfg, store, ids = setup
    app = make_app(cfg, store)
    async with app.run_test(size=SIZE) as pilot:
        await open_review(pilot, app)
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, DeadlineDialog))
        await pilot.pause()
        text = " ".join(screen_text(app).split())
        assert '"tomorrow 10:00"' in text and 'business time from now, "4h" or "1d"' in text
        await pilot.press("escape", "q")
        await wait_until(pilot, lambda: not isinstance(app.screen, AckReviewScreen))
        ack_all(store, cfg, now=NOW)  # a promise to update
        app.push_screen(update_screen(app, ids["ann"]))
        await wait_until(pilot, lambda: isinstance(app.screen, UpdateDialog) and app.screen.settings is not None)
        await pilot.pause()
        text = " ".join(screen_text(app).split())
        assert '"tomorrow 10:00"' in text and 'business time from now, "4h" or "1d"' in text
        assert 'goes to the customer: "I need until …, because …")' in text


@run_async
async def test_on_80_columns_the_skipped_rule_shows_which_ticket_or_mail_stopped_it(tmp_path, smtp_server):
    # The rule column is narrow: the part that says why (the other ticket, the time of the last
    # automatic mail) comes first, not "customer already acknowledged within the window (...".
    cfg = make_config(tmp_path, smtp_port=smtp_server.port)
    store = Store(cfg.database)
    add_ticket(store, "Login loops", "bob@cust.example", "Loops.")
    ack_all(store, cfg, now=NOW - 3 * H)  # bob had an acknowledgement three hours ago
    first = add_ticket(store, "Export to CSV stops", "ann.long-address@customer-domain.example", "It stops.")
    second = add_ticket(store, "And the PDF is blank", "ann.long-address@customer-domain.example", "Blank.")
    add_ticket(store, "Second user", "bob@cust.example", "Cannot add.")
    app = make_app(cfg, store)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("a")
        await wait_until(pilot, lambda: isinstance(app.screen, AckReviewScreen) and app.screen.plan is not None)
        await pilot.pause()
        table = app.screen.query_one("#ack-skipped")
        *before, rule_col = list(table.columns.values())
        # What fits on the screen beside the number and the address (the table scrolls sideways for the rest).
        width = (table.scrollable_content_region.width - sum(c.get_render_width(table) for c in before)
                 - 2 * table.cell_padding)
        assert width >= len(f"one mail per customer: #{first} in this batch")  # the whole of the longest rule
        shown = {}
        for row_key in table.rows:
            shown[int(row_key.value)] = str(table.get_cell(row_key, rule_col.key))[:width]
        assert shown[second] == f"one mail per customer: #{first} in this batch", shown
        assert "had automatic mail Tue 24 Nov 07:00" in [v for k, v in shown.items() if k != second][0], shown
        await pilot.press("q")
    store.close()


@run_async
async def test_the_queue_shows_each_promise_on_the_desks_clock(tmp_path, smtp_server):
    # The desk keeps Tokyo hours; the app shows the promise at the hour the event and the customer's
    # mail name, whatever zone the machine is in.
    cfg = make_config(tmp_path, smtp_port=smtp_server.port, hours={"timezone": "Asia/Tokyo"})
    store = Store(cfg.database)
    tid = add_ticket(store, "Export to CSV stops", "ann@cust.example", "It stops.", from_name="Ann Lee",
                     date=NOW - 3 * H)
    ack_all(store, cfg, now=NOW)
    with store.read() as s:
        reason = next(e["reason"] for e in events_of(s.connection(), tid) if e["kind"] == "ack")
    day, hour = re.search(r"promised by (\w{3}) \d+ \w{3} (\d\d:\d\d)", reason).groups()
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: "Export to CSV stops" in screen_text(app))
            assert f"by {day} {hour}" in screen_text(app), (reason, screen_text(app))
    finally:
        store.close()


LONG_SUBJECT = "Password reset mail never arrives, not even in the spam folder"


def long_subject_review(tmp_path, smtp_server):
    """Two waiting customers, one with a subject too long for 80 columns."""
    cfg = make_config(tmp_path, smtp_port=smtp_server.port)
    store = Store(cfg.database)
    add_ticket(store, LONG_SUBJECT, "bob@cust.example", "Nothing arrives.", from_name="Bob Ray")
    add_ticket(store, "Short one", "cy@cust.example", "Cannot add.", from_name="Cy")
    return cfg, store, make_app(cfg, store)


@run_async
async def test_on_80_columns_a_long_subject_ends_in_an_ellipsis_not_at_the_screen_edge(tmp_path, smtp_server):
    # The subject came last and the table scrolled sideways for it: at 80 columns the screen's
    # edge cut "Password reset mail never arrives" to "Password reset mail ne".
    cfg, store, app = long_subject_review(tmp_path, smtp_server)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_review(pilot, app)
        await pilot.pause()
        await pilot.pause()
        table = app.screen.query_one("#ack-eligible")
        assert sum(c.get_render_width(table) for c in table.columns.values()) <= table.scrollable_content_region.width
        row = next(line for line in screen_lines(app) if "Bob Ray" in line)
        assert "Password reset" in row and row.rstrip().endswith("…") and LONG_SUBJECT not in row, row
        assert any("Short one" in line for line in screen_lines(app))
        await pilot.resize_terminal(160, 24)
        await pilot.pause()
        await pilot.pause()
        assert any(LONG_SUBJECT in line for line in screen_lines(app))  # the whole of it where it fits
        await pilot.press("q")
    store.close()


@run_async
async def test_on_80_columns_an_edited_promise_shows_whole_and_the_subject_gives_way(tmp_path, smtp_server):
    # "(edited)" made the promise wider than its column: it was cut ("Thursday 26 November, 15:00 UT")
    # and the columns after it no longer lined up with the header.
    cfg, store, app = long_subject_review(tmp_path, smtp_server)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_review(pilot, app)
        await pilot.pause()
        screen = app.screen
        first = screen._current()
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, DeadlineDialog))
        await pilot.press(*"thu 15:00", "enter")
        await wait_until(pilot, lambda: app.screen is screen)
        await pilot.pause()
        await pilot.pause()
        table = screen.query_one("#ack-eligible")
        promise = str(table.get_row_at(0)[3])
        assert promise.endswith("(edited)"), promise
        lines = screen_lines(app)
        row = next(line for line in lines if (first.customer_name or first.customer) in line)
        assert promise in row, (promise, row)  # the whole promise, not cut by its column
        assert row.rstrip().endswith("…") and "Password reset" in row, row  # the subject gives way, with an ellipsis
        columns = list(table.columns.values())
        assert columns[3].get_render_width(table) >= len(promise) + 2 * table.cell_padding
        assert sum(c.get_render_width(table) for c in columns) <= table.scrollable_content_region.width
        assert any("Short one" in line for line in lines)
        await pilot.press("q")
    store.close()
