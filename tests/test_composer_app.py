"""The composer in a terminal (Textual pilot): write, review the tone, send, give the next state a reason."""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timezone

import pytest
from textual.app import App
from textual.widgets import Input, Static, TextArea

from factories import add_ticket
from storage import outbox as ob
from storage.db import Store
from storage.tickets import save_saved_reply, ticket_detail
from test_send import make_config, smtp  # noqa: F401  (the fixture, over conftest's smtp_server)
from tui.compose import ComposeScreen, NextStateDialog, ReviewScreen

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
KEYS = {" ": "space", ",": "comma", ".": "full_stop", "\n": "enter", "{": "left_curly_bracket",
        "}": "right_curly_bracket", "_": "underscore", "!": "exclamation_mark", "'": "apostrophe"}


def sync(fn):
    """Run an async pilot test with plain pytest (no async plugin needed)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        asyncio.run(fn(*args, **kwargs))

    return run


class Host(App):
    """The smallest app that can hold the composer."""

    def __init__(self, store, cfg, ticket_id):
        super().__init__()
        self.store, self.cfg, self.ticket_id = store, cfg, ticket_id
        self.clock = lambda: NOW
        self.result = "not dismissed"

    def on_mount(self) -> None:
        self.push_screen(ComposeScreen(self.store, self.cfg, self.ticket_id, self.clock), self.done)

    def done(self, result) -> None:
        self.result = result


@pytest.fixture
def env(tmp_path, smtp):  # noqa: F811
    cfg = make_config(tmp_path, smtp_port=smtp.port)
    store = Store(cfg.database)
    tid = add_ticket(store, "Export fails", "ann@cust.example", "The CSV export fails.", from_name="Ann Lee")
    yield cfg, store, tid
    store.close()


async def type_text(pilot, text: str) -> None:
    await pilot.press(*[KEYS.get(ch, ch) for ch in text])


def texts(screen) -> str:
    return "\n".join(str(w.render()) for w in screen.query(Static))


async def wait_for(pilot, predicate, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached")


@sync
async def test_reply_review_send_and_reason(env, smtp):  # noqa: F811
    cfg, store, tid = env
    app = Host(store, cfg, tid)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ComposeScreen)
        area = screen.query_one(TextArea)
        assert area.text.startswith("Hi Ann,\n")
        assert "> The CSV export fails." in area.text and "Zoë Martin" in area.text
        await type_text(pilot, "Thank you, but the export works again.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        review = app.screen
        assert isinstance(review, ReviewScreen)
        shown = texts(review)
        assert "thanks-but" in shown and "Thank you, but" in shown and "cancels it" in shown
        assert "without the \"but\"" in shown  # what to change, not only why
        await pilot.press("y")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, NextStateDialog) and dialog.chosen == "pending"
        await pilot.press("enter")  # no reason: refused, the dialog stays
        await pilot.pause()
        assert app.screen is dialog and "reason is required" in texts(dialog)
        await type_text(pilot, "asked Ann to retry the export")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.result, int))
        await wait_for(pilot, lambda: len(smtp.messages) == 1)
        await app.workers.wait_for_complete()
    oid = app.result
    with store.read() as s:
        row = ob.outbox_row(s.connection(), oid)
        t = ticket_detail(s.connection(), tid)
    assert row["state"] == "sent"
    assert t["status"] == "pending"
    assert any(e["new"] == "pending" and e["reason"] == "asked Ann to retry the export" for e in t["events"])
    assert b"Thank you, but the export works again." in smtp.messages[0].data


@sync
async def test_an_untouched_draft_does_not_reach_the_review(env, smtp):  # noqa: F811
    from tui import compose

    cfg, store, tid = env
    compose._DRAFTS.pop(tid, None)
    app = Host(store, cfg, tid)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")  # greeting, signature and quote only
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen)
        assert "nothing written yet: your answer goes under the greeting" in texts(app.screen)
        await type_text(pilot, "Fixed now.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)


@sync
async def test_placeholder_blocks_review_and_saved_reply_fills_variables(env, smtp):  # noqa: F811
    cfg, store, tid = env
    save_saved_reply(store, "order", "Your order {order_number} left our store, {customer_first_name}.")
    app = Host(store, cfg, tid)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press("enter")  # the first (only) saved reply
        await pilot.pause()
        area = app.screen.query_one(TextArea)
        assert "left our store, Ann." in area.text and "{order_number}" in area.text
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen)  # blocked: no review
        assert "{order_number}" in texts(app.screen)
        area.text = area.text.replace("{order_number}", "#5521")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen)
        await pilot.press("q")  # cancel: nothing queued, the draft is kept
        await pilot.pause()
        assert app.result is None
    with store.read() as s:
        assert ob.outbox_rows(s.connection(), states=None) == []
    app2 = Host(store, cfg, tid)
    async with app2.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        assert "#5521" in app2.screen.query_one(TextArea).text


@sync
async def test_a_kept_draft_remembers_its_saved_replies_for_the_repeat_check_and_the_timeline(env, smtp):  # noqa: F811
    from tui import compose

    cfg, store, tid = env
    compose._DRAFTS.pop(tid, None)  # a draft kept by an earlier test of the same ticket number
    save_saved_reply(store, "a-steps", "Please try these steps, {customer_first_name}.")
    save_saved_reply(store, "b-thanks", "Thanks for your patience.")
    app = Host(store, cfg, tid)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        for _ in range(2):  # "a-steps", then "b-thanks": the picker lists them by name
            await pilot.press("ctrl+t")
            await pilot.pause()
            await pilot.press(*(["down"] if _ else []), "enter")
            await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("q")  # cancel: the draft is kept
        await pilot.pause()
    app2 = Host(store, cfg, tid)
    async with app2.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        await type_text(pilot, "sent the steps")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app2.result, int))
        await app2.workers.wait_for_complete()
    with store.read() as s:
        used = [e["new"] for e in ticket_detail(s.connection(), tid)["events"] if e["kind"] == "saved_reply"]
    assert used == ["a-steps", "b-thanks"]
    app3 = Host(store, cfg, tid)  # the next reply with "a-steps" again is warned about
    async with app3.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app3.screen, ReviewScreen)
        shown = texts(app3.screen)
        assert "template-repeat" in shown and "a-steps" in shown


@sync
async def test_escape_then_e_runs_the_editor(env, monkeypatch, tmp_path):
    cfg, store, tid = env
    script = tmp_path / "fake-editor.sh"
    script.write_text("#!/bin/sh\nprintf 'Hi Ann,\\n\\nWritten in my editor.\\n' > \"$1\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(script))
    monkeypatch.delenv("VISUAL", raising=False)
    app = Host(store, cfg, tid)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        app.suspend = _fake_suspend  # a headless test driver cannot hand over the terminal
        await pilot.press("escape")
        await pilot.press("e")
        await pilot.pause()
        assert app.screen.query_one(TextArea).text == "Hi Ann,\n\nWritten in my editor.\n"


@sync
async def test_r_on_a_ticket_in_the_app_opens_the_composer_and_sends(env, smtp):  # noqa: F811
    from tui.app import HeardApp

    cfg, store, tid = env
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.open_ticket(tid)
        await pilot.pause()
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen)
        await type_text(pilot, "Actually, it works now.")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ReviewScreen) and "actually" in texts(app.screen)
        await pilot.press("y")
        await pilot.pause()
        await pilot.press("down")  # solved
        await type_text(pilot, "fixed on our side")
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(smtp.messages) == 1)
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not isinstance(app.screen, ComposeScreen)
    with store.read() as s:
        assert ticket_detail(s.connection(), tid)["status"] == "solved"


from contextlib import contextmanager  # noqa: E402


@contextmanager
def _fake_suspend():
    yield


@sync
async def test_a_vague_first_mail_offers_the_clarifying_questions_first(tmp_path, smtp):  # noqa: F811
    cfg = make_config(tmp_path, smtp_port=smtp.port)
    store = Store(cfg.database)
    tid = add_ticket(store, "help", "kev@cust.example", "nothing works!!", from_name="Kevin Murphy",
                     vague_reason="no product, error or steps mentioned")
    app = Host(store, cfg, tid)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert "this first mail is vague" in texts(app.screen)
        await pilot.press("ctrl+t")
        await pilot.pause()
        await pilot.press("enter")  # the first entry
        await pilot.pause()
        text = app.screen.query_one(TextArea).text
        assert "Kevin" in text and "what were you doing" in text.lower()
    store.close()


@sync
async def test_the_draft_quotes_the_customer_without_escape_sequences_or_bidi_overrides(tmp_path, smtp):  # noqa: F811
    # The composer shows the draft as it is: "\x1b[5m" in the quote reached the terminal and made it blink.
    cfg = make_config(tmp_path, smtp_port=smtp.port)
    store = Store(cfg.database)
    tid = add_ticket(store, "Invoice \x1b[2J77", "eve@cust.example", "Charged \x1b[5mtwice\x1b[0m \u202eexe.pdf",
                     from_name="\x1b[31mEve\x1b[0m Stone")
    app = Host(store, cfg, tid)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        text = app.screen.query_one(TextArea).text
        assert "> Charged twice exe.pdf" in text and "Eve Stone wrote:" in text and text.startswith("Hi Eve,")
        assert not any(ch in text for ch in "\x1b\x07\u202e")
        assert "Subject: Re: Invoice 77 [#" in texts(app.screen)
    store.close()


@sync
async def test_a_ticket_another_agent_solved_while_the_reply_was_written_says_who_and_offers_what_it_can_become(
        env, smtp):  # noqa: F811
    # Bob solved the ticket while Zoë wrote her reply: her send was refused with "a solved ticket cannot
    # become waiting on customer; reopen it first", and every later try offered the same states again
    # (the ticket as it was when the composer opened), so it was refused again.
    from storage.tickets import set_status

    cfg, store, tid = env
    app = Host(store, cfg, tid)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        await type_text(pilot, "The export works again.")
        set_status(store, tid, "solved", reason="fixed on the phone", actor="Bob", now=NOW)
        await pilot.press("ctrl+s", "y")
        await pilot.pause()
        await type_text(pilot, "asked Ann to retry")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen) and not app.screen._sending)
        shown = texts(app.screen)
        assert 'Bob made #1 solved meanwhile ("fixed on the phone"): your reply was not sent' in shown
        assert "The export works again." in app.screen.query_one(TextArea).text  # the draft is kept
        await pilot.press("ctrl+s", "y")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, NextStateDialog) and dialog.choices == ["open", "closed", None]
        await type_text(pilot, "Ann still needs the export")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.result, int))
        await wait_for(pilot, lambda: len(smtp.messages) == 1)
        await app.workers.wait_for_complete()
    with store.read() as s:
        t = ticket_detail(s.connection(), tid)
    assert t["status"] == "open" and len([e for e in t["events"] if e["kind"] == "reply"]) == 1
    assert [(e["old"], e["new"]) for e in t["events"] if e["kind"] == "status"][-1] == ("solved", "open")


async def _app_in_composer(pilot, app, tid):
    await pilot.pause()
    app.open_ticket(tid)
    await pilot.pause()
    await pilot.press("r")
    await pilot.pause()
    assert isinstance(app.screen, ComposeScreen)


@sync
async def test_a_screen_closing_over_the_composer_leaves_single_keys_as_commands(env):
    # After escape (done typing) the hint says "q cancel"; help (?) opened and closed over the
    # composer gave the focus back to the text area, so q, s and e went into the customer's reply.
    from tui import compose
    from tui.app import HeardApp
    from test_app import footer_line
    from tui.dialogs import HelpScreen

    cfg, store, tid = env
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)
    async with app.run_test(size=(120, 40)) as pilot:
        await _app_in_composer(pilot, app, tid)
        await type_text(pilot, "Try the new export.")
        await pilot.press("escape")
        await pilot.pause()
        footer = footer_line(app)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        # The composer's footer underneath is as it was: take next, refused while a reply is being
        # written, does not appear because a dialog is open over it.
        assert "Take next" not in footer_line(app) and footer_line(app) == footer
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen) and app.screen.focused is None
        await pilot.press("q")
        await pilot.pause()
        assert not isinstance(app.screen, ComposeScreen)
    kept = compose._DRAFTS.pop(tid)[0]
    assert "Try the new export." in kept and "q" not in kept.split("Try the new export.")[1].split("\n")[0]


@sync
async def test_take_next_is_not_a_key_in_the_composer(env):
    # n in the composer (not typing) took the next ticket and opened it over the reply being written,
    # the one ticket screen twice on the stack: escape led back into the half-written reply.
    from tui import compose
    from tui.app import HeardApp

    cfg, store, tid = env
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)
    async with app.run_test(size=(120, 40)) as pilot:
        await _app_in_composer(pilot, app, tid)
        await pilot.press("escape", "n")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen)
        assert "app.take_next" not in {b.binding.id for b in app.screen.active_bindings.values()}
        assert ticket_detail_of(store, tid)["holder"] is None
        await pilot.press("q")
        await pilot.pause()
        await pilot.press("n")  # on the ticket screen it takes as before
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert ticket_detail_of(store, tid)["holder"] is not None
    compose._DRAFTS.pop(tid, None)


def ticket_detail_of(store, tid):
    with store.read() as s:
        return ticket_detail(s.connection(), tid)


@sync
async def test_quitting_with_an_unsent_reply_asks_first(env):
    # A draft is kept only in memory ("kept until you quit"): q quit at once and lost it.
    from tui import compose
    from tui.app import HeardApp
    from tui.dialogs import ConfirmDialog

    cfg, store, tid = env
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)
    async with app.run_test(size=(120, 40)) as pilot:
        await _app_in_composer(pilot, app, tid)
        await type_text(pilot, "The export is fixed.")
        await pilot.press("ctrl+q")  # with the composer still open
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog)
        assert f"Your unsent reply to #{tid} will be lost. Quit anyway?" in texts(app.screen)
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(app.screen, ComposeScreen) and "The export is fixed." in app.screen.draft
        await pilot.press("escape", "q", "escape")  # the draft kept, back in the queue
        await pilot.pause()
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmDialog) and f"#{tid}" in texts(app.screen)
        await pilot.press("y")
        await pilot.pause()
        assert app.return_code == 0
    compose._DRAFTS.pop(tid, None)


@sync
async def test_quitting_after_a_reply_left_untouched_asks_nothing(env):
    from tui import compose
    from tui.app import HeardApp

    cfg, store, tid = env
    app = HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)
    async with app.run_test(size=(120, 40)) as pilot:
        await _app_in_composer(pilot, app, tid)
        await pilot.press("escape", "q", "escape")
        await pilot.pause()
        assert tid not in compose._DRAFTS
        await pilot.press("q")
        await pilot.pause()
        assert app.return_code == 0
