"""`heard migrate`: a team's SQLite store copied whole into PostgreSQL, served by the real servers."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from mail.backlog import demo_backlog
from storage.db import Store
from test_postgres import SUPPORT, _ids, heard, write_config

pytestmark = pytest.mark.postgres


def test_a_sqlite_store_moves_to_postgres_whole_and_carries_on_there(pymap_server, postgres_url, tmp_path, capsys):
    # heard had no import: moving to PostgreSQL meant syncing again and losing every status, hold,
    # reason, promise, saved reply and queued mail that lived only in the SQLite file.
    now = datetime.now(timezone.utc)
    pymap_server.deliver_maildir(SUPPORT, demo_backlog(now, SUPPORT))
    lite = write_config(tmp_path, pymap_server, str(tmp_path / "heard.db"), name="lite.toml")
    pg = write_config(tmp_path, pymap_server, postgres_url, name="pg.toml")
    assert heard(lite, "sync", capsys=capsys)[0] == 0
    # What an agent did that is on record only in the store.
    assert heard(lite, "take", "3", capsys=capsys)[0] == 0
    assert heard(lite, "status", "5", "solved", "--reason", "refund sent by the bank", capsys=capsys)[0] == 0
    assert heard(lite, "priority", "7", "urgent", "--reason", "their payroll runs tonight", capsys=capsys)[0] == 0
    body = tmp_path / "saved.txt"
    body.write_text("Hello {customer_first_name}, could you send me a screenshot of the error?\n")
    assert heard(lite, "saved-replies", "--add", "screenshot", "--body-file", str(body), capsys=capsys)[0] == 0
    before = heard(lite, "export", capsys=capsys)[1]

    code, out, err = heard(lite, "migrate", "--to", postgres_url, capsys=capsys)
    assert code == 0, err
    assert out.startswith("copied ") and "tickets" in out and f"database = {postgres_url!r}" in out

    # The same tickets, messages, events and holds, byte for byte; the old store as it was.
    assert heard(pg, "export", capsys=capsys)[1] == before
    assert heard(lite, "export", capsys=capsys)[1] == before
    shown = json.loads(heard(pg, "show", "5", "--json", capsys=capsys)[1])
    assert shown["status"] == "solved" and shown["events"][-1]["reason"] == "refund sent by the bank"
    assert "screenshot" in heard(pg, "saved-replies", capsys=capsys)[1]
    for words in (["csv"], ["müller"], ["E-5021"], ["@ledgerly.example"]):  # searched alike
        assert _ids(heard(pg, "search", "--json", *words, capsys=capsys)[1]) == \
            _ids(heard(lite, "search", "--json", *words, capsys=capsys)[1]), words
    # It carries on there: new mail is a new ticket after the copied ones, nothing fetched twice.
    last = max(t["id"] for t in map(json.loads, before.splitlines()))
    pymap_server.append([b"From: Zoe <zoe@new.example>\r\nTo: " + SUPPORT.encode() + b"\r\nSubject: First time here"
                         b"\r\nMessage-ID: <zoe-1@new.example>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nHello.\r\n"])
    code, out, err = heard(pg, "sync", capsys=capsys)
    assert code == 0 and out.startswith("1 new messages, 1 tickets created"), (out, err)
    new = [t for t in json.loads(heard(pg, "tickets", "--json", "--status", "all", capsys=capsys)[1])
           if t["customer"] == "zoe@new.example"]
    assert [t["id"] for t in new] == [last + 1]
    # A second copy into a database that holds tickets is refused in one line.
    code, out, err = heard(lite, "migrate", "--to", postgres_url, capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and "already holds tickets" in err, err


def test_migrating_to_the_database_in_use_is_refused(tmp_path, capsys, pymap_server):
    lite = write_config(tmp_path, pymap_server, str(tmp_path / "heard.db"), name="lite.toml")
    Store(str(tmp_path / "heard.db")).close()
    code, out, err = heard(lite, "migrate", "--to", str(tmp_path / "heard.db"), capsys=capsys)
    assert code == 1 and err == "heard: --to names the database heard already uses: give the new one\n"
