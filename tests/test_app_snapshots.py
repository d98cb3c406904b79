"""Snapshots of the screens a person works in, at a fixed size and a fixed clock (pytest-textual-snapshot)."""

from datetime import timezone

import pytest

from storage.db import Store
from storage.tickets import set_status, take_ticket
from tests.test_app import AGENT, NOW, make_config, seed
from tui.app import HeardApp

SIZE = (120, 36)


@pytest.fixture
def app(tmp_path):
    store = Store(str(tmp_path / "heard.db"))
    ids = seed(store)
    take_ticket(store, ids[1], agent="Ben", now=NOW)
    set_status(store, ids[2], "pending", reason="asked which page fails", actor=AGENT, now=NOW)
    # Close to a real path so the snapshot does not depend on where tmp_path is.
    cfg = make_config("heard.db")
    yield HeardApp(cfg, store=store, clock=lambda: NOW, start_sync=False, tz=timezone.utc)
    store.close()


async def _settled(pilot):
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_queue(snap_compare, app):
    assert snap_compare(app, terminal_size=SIZE, run_before=_settled)


def test_ticket_screen(snap_compare, app):
    async def open_first(pilot):
        await _settled(pilot)
        await pilot.press("enter")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=open_first)


def test_reason_dialog_with_recent_reasons_and_an_empty_reason_refused(snap_compare, app):
    async def solve_without_reason(pilot):
        await _settled(pilot)
        await pilot.press("enter", "s", "enter")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=solve_without_reason)


def test_help_screen(snap_compare, app):
    async def help_(pilot):
        await _settled(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(120, 44), run_before=help_)
