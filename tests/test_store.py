"""The ticket store on a real SQLite file: WAL, migrations, atomic claims, the event log."""

import json
import os
import threading
import multiprocessing as mp
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from storage.db import MIGRATIONS, Store, StoreError
from storage.tickets import (
    TicketError,
    header_counts,
    queue_ids,
    queue_rows,
    set_holder,
    set_priority,
    set_status,
    take_ticket,
    ticket_detail,
)
from tests.factories import add_reply, add_ticket

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "heard.db"))
    yield s
    s.close()


def test_store_is_wal_and_migrations_run_once(tmp_path):
    path = tmp_path / "heard.db"
    Store(str(path)).close()
    again = Store(str(path))
    assert again.migrate() == []  # nothing left to apply
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = [r[0] for r in con.execute("SELECT name FROM schema_migrations ORDER BY name")]
    assert names == [n for n, _ in MIGRATIONS]


def test_the_search_index_merges_eight_segments_at_a_time(tmp_path):
    path = tmp_path / "heard.db"
    Store(str(path)).close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT v FROM message_fts_config WHERE k = 'automerge'").fetchone()[0] == 8


def test_an_older_database_is_migrated_not_replaced(tmp_path):
    path = tmp_path / "heard.db"
    s = Store(str(path))
    tid = add_ticket(s, "Keep me")
    s.close()
    con = sqlite3.connect(path)
    con.execute("DELETE FROM schema_migrations WHERE name = ?", (MIGRATIONS[-1][0],))
    con.commit()
    s = Store(str(path))
    with s.read() as r:
        assert ticket_detail(r.connection(), tid)["subject"] == "Keep me"


def test_status_change_lands_in_the_timeline_with_who_and_why(store):
    tid = add_ticket(store, "Export broken")
    set_status(store, tid, "solved", reason="fixed in 2.3", actor="Ana", now=NOW)
    with store.read() as r:
        t = ticket_detail(r.connection(), tid)
    assert t["status"] == "solved"
    assert t["events"][-1] == {"at": "2026-11-23T10:00:00Z", "actor": "Ana", "kind": "status",
                               "old": "new", "new": "solved", "reason": "fixed in 2.3"}


def test_a_change_without_a_reason_changes_nothing(store):
    tid = add_ticket(store)
    with pytest.raises(TicketError.__mro__[1]):
        set_priority(store, tid, "urgent", reason="  ", actor="Ana", now=NOW)
    with store.read() as r:
        t = ticket_detail(r.connection(), tid)
    assert t["priority"] == "normal" and t["events"] == []


def test_take_next_takes_the_most_urgent_and_only_one_at_a_time(store):
    old = add_ticket(store, "old normal")
    urgent = add_ticket(store, "newer but urgent", from_addr="bob@cust.example")
    set_priority(store, urgent, "urgent", reason="production down", actor="Ana", now=NOW)
    assert take_ticket(store, None, agent="Ana", now=NOW) == urgent
    with pytest.raises(TicketError, match="you hold #%d" % urgent):
        take_ticket(store, None, agent="Ana", now=NOW)
    set_status(store, urgent, "pending", reason="asked for logs", actor="Ana", now=NOW)
    assert take_ticket(store, None, agent="Ana", now=NOW) == old
    with store.read() as r:
        t = ticket_detail(r.connection(), old)
    assert t["status"] == "open" and t["holder"] == "Ana"
    assert [e["kind"] for e in t["events"]] == ["holder", "status"]


def test_release_needs_a_reason_and_frees_the_agent(store):
    tid = add_ticket(store)
    take_ticket(store, tid, agent="Ana", now=NOW)
    set_holder(store, tid, None, reason="needs billing access", actor="Ana", now=NOW)
    assert take_ticket(store, None, agent="Ana", now=NOW) == tid  # free again


def _claim(path, agent, q):
    s = Store(path)
    got = []
    try:
        while True:
            tid = take_ticket(s, None, agent=agent, now=datetime.now(timezone.utc))
            if tid is None:
                break
            got.append(tid)
            set_status(s, tid, "solved", reason="done", actor=agent, now=datetime.now(timezone.utc))
    except Exception as exc:  # an agent refused a ticket: the test shows why
        got.append(f"{type(exc).__name__}: {exc}")
    finally:
        q.put((agent, got))


def test_three_agents_on_one_database_never_get_the_same_ticket(database):
    """On SQLite (one shared file) and on PostgreSQL (one server) alike."""
    s = Store(database)
    ids = {add_ticket(s, f"t{i}", from_addr=f"c{i}@cust.example") for i in range(40)}
    s.close()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(database, f"agent{i}", q)) for i in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    taken = [t for _, got in results for t in got]
    assert all(isinstance(t, int) for t in taken), taken  # no agent was refused a ticket
    assert sorted(taken) == sorted(ids)  # every ticket once, none twice


def test_customer_reply_reopens_a_pending_ticket_with_a_reason(store):
    tid = add_ticket(store, message_id="first@cust.example")
    set_status(store, tid, "pending", reason="asked for a screenshot", actor="Ana", now=NOW)
    add_reply(store, tid, "first@cust.example", text="Here it is")
    with store.read() as r:
        t = ticket_detail(r.connection(), tid)
    assert t["status"] == "open"
    reopen = [e for e in t["events"] if e["actor"] == "heard sync"]
    assert [(e["old"], e["new"]) for e in reopen] == [("pending", "open")]
    assert reopen[0]["reason"].startswith("the customer replied")
    assert t["message_count"] == 2


def test_automated_reply_does_not_reopen(store):
    tid = add_ticket(store, message_id="q@cust.example")
    set_status(store, tid, "pending", reason="asked", actor="Ana", now=NOW)
    add_reply(store, tid, "q@cust.example", text="I am away", automated_reason="Auto-Submitted: auto-replied")
    with store.read() as r:
        assert ticket_detail(r.connection(), tid)["status"] == "pending"


def test_search_finds_words_in_subject_body_and_customer(store):
    a = add_ticket(store, "Invoice PDF empty", "ann@cust.example", "The exported Rechnung is blank")
    b = add_ticket(store, "Login", "bob@other.example", "Passwort vergessen")
    with store.read() as r:
        conn = r.connection()
        def found(query):
            return queue_ids(conn, view="all", now=NOW, matching=store.search.ticket_select(query))

        assert found("invoice") == [a]
        assert found("rechn") == [a]  # prefix
        assert found("bob@other") == [b]
        assert found('passwort "vergessen') == [b]  # stray quote is harmless
        assert found("nothing-like-this") == []


@pytest.mark.parametrize("query, hit", [
    ("ダウンロード", True),  # a word inside a Japanese sentence, not at its start
    ("PDF", True),  # Latin letters inside Japanese text
    ("請求書", True),
    ("エラー500", True),
    ("佐藤", True),  # the customer's name
    ("花子 ダウン", True),  # every word, the last one a prefix
    ("ドキュメント", True),
    ("ロードダウン", False),  # the characters, but not in that order
    ("請求書 pasta", False),
])
def test_search_finds_words_inside_japanese_text(store, query, hit):
    a = add_ticket(store, "請求書のPDFがダウンロードできません", "sato@cust.example",
                   "今朝から請求書のPDFをダウンロードしようとすると、「エラー500: ドキュメントを生成できませんでした」と表示されます。",
                   from_name="佐藤 花子")
    add_ticket(store, "Export", "bob@other.example", "The export is blank")
    with store.read() as r:
        found = queue_ids(r.connection(), view="all", now=NOW, matching=store.search.ticket_select(query))
    assert found == ([a] if hit else [])


def test_a_search_index_from_before_0010_finds_japanese_words_after_the_migration(tmp_path):
    path = tmp_path / "heard.db"
    s = Store(str(path))
    a = add_ticket(s, "請求書のPDFがダウンロードできません", "sato@cust.example", "エラー500が表示されます")
    s.close()
    # The index as 0006 built it: Japanese runs as one word each.
    con = sqlite3.connect(path)
    con.execute("INSERT INTO message_fts (message_fts) VALUES ('delete-all')")
    con.execute("INSERT INTO message_fts (rowid, subject, body, customer) "
                "SELECT (ticket_id << 32) | id, subject, text, from_name || ' ' || from_addr FROM messages")
    con.execute("DELETE FROM schema_migrations WHERE name = '0010_search_cjk_characters'")
    con.commit()
    con.close()
    s = Store(str(path))
    try:
        with s.read() as r:
            assert s.search.ticket_ids(r.connection(), "ダウンロード") == {a}
            assert s.search.ticket_ids(r.connection(), "表示") == {a}
    finally:
        s.close()


@pytest.mark.parametrize("query", ["#{n}", "{n}", " # {n} "])
def test_a_ticket_number_finds_that_ticket_as_well_as_mail_that_mentions_it(store, query):
    a = add_ticket(store, "Export", "ann@cust.example", "The export is blank")
    b = add_ticket(store, "Login", "bob@other.example", "Same problem as ticket #777")
    c = add_ticket(store, "Other", "cy@other.example", "Nothing")
    with store.read() as r:
        conn = r.connection()
        assert queue_ids(conn, view="all", now=NOW, matching=store.search.ticket_select(query.format(n=a))) == [a]
        assert store.search.ticket_ids(conn, query.format(n=a)) == {a}
        mention = store.search.ticket_select(query.format(n=777))
        assert queue_ids(conn, view="all", now=NOW, matching=mention) == [b]  # no such ticket: the mail naming it
        assert queue_ids(conn, view="all", now=NOW, matching=store.search.ticket_select(f"{c} export")) == []


def test_a_search_index_from_before_0006_is_rebuilt_and_still_finds_everything(tmp_path):
    path = tmp_path / "heard.db"
    s = Store(str(path))
    a = add_ticket(s, "Invoice PDF empty", "ann@cust.example", "The exported Rechnung is blank")
    b = add_ticket(s, "Login", "bob@other.example", "Passwort vergessen")
    add_reply(s, a, "m-" + str(a), text="Still blank after the update")
    s.close()
    # The index as it was: one row per message, keyed by the message pk.
    con = sqlite3.connect(path)
    con.execute("DROP TABLE message_fts")
    con.execute("CREATE VIRTUAL TABLE message_fts USING fts5(subject, body, customer, content='', "
                "tokenize='unicode61 remove_diacritics 2')")
    con.execute("INSERT INTO message_fts (rowid, subject, body, customer) "
                "SELECT id, subject, text, from_name || ' ' || from_addr FROM messages")
    con.execute("DELETE FROM schema_migrations WHERE name = '0006_search_by_ticket'")
    con.commit()
    con.close()
    s = Store(str(path))
    try:
        with s.read() as r:
            conn = r.connection()
            def found(query):
                return queue_ids(conn, view="all", now=NOW, matching=s.search.ticket_select(query))

            assert found("rechnung") == [a]
            assert found("update blank") == [a]  # a word of the reply, one of the first mail
            assert found("bob@other") == [b]
            assert s.search.ticket_ids(conn, "vergessen") == {b}
    finally:
        s.close()


def test_queue_json_shape_and_counts(store):
    tid = add_ticket(store, "Where is my invoice")
    with store.read() as r:
        rows = queue_rows(r.connection(), view="open", now=NOW)
        counts = header_counts(r.connection(), now=NOW)
    assert rows[0]["id"] == tid
    assert counts["open"] == 1 and counts["unacknowledged"] == 1 and counts["waiting"] == 0
    with store.read() as r:
        t = ticket_detail(r.connection(), tid)
    json.dumps(t)
    assert {"id", "subject", "status", "priority", "customer", "message_count", "created_at", "updated_at",
            "messages", "events"} <= set(t)
    assert {"message_id", "from", "date", "direction", "automated", "automated_reason", "thread_reason",
            "text"} <= set(t["messages"][0])


def test_search_in_the_queue_finds_every_match_in_work_order_not_just_the_best_500(store):
    ids = [add_ticket(store, f"Printer offline {i}", f"c{i}@cust.example", "The printer driver crashes")
           for i in range(520)]
    other = add_ticket(store, "Login", "z@cust.example", "Passwort vergessen")
    with store.read() as r:
        conn = r.connection()
        found = queue_ids(conn, view="open", now=NOW, matching=store.search.ticket_select("print driv"))
        assert sorted(found) == sorted(ids) and other not in found
        assert found == queue_ids(conn, view="open", now=NOW)[:520]  # the work order, unchanged
        assert queue_ids(conn, view="open", now=NOW, matching=store.search.ticket_select('vergessen "')) == [other]
    assert store.search.ticket_select("  !? ") is None


def _wal_bytes(path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_bulk_load_checkpoints_on_its_own_thread_and_keeps_the_wal_bounded(tmp_path, monkeypatch):
    import storage.db as db

    monkeypatch.setattr(db, "WAL_BOUND", 2 * 1024 * 1024)  # 512 pages: the floor of 1,000 applies
    path = tmp_path / "heard.db"
    s = Store(str(path))
    with s.write_conn() as conn:
        conn.exec_driver_sql("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)")
    other = sqlite3.connect(path, timeout=15)  # another writer, as another process would be
    biggest = 0
    writers = set()
    with s.bulk_load():
        assert "heard-checkpoint" in {t.name for t in threading.enumerate()}
        for i in range(40):
            with s.write_conn(bulk=True) as conn:  # 1 MB a transaction, 40 MB in all
                conn.exec_driver_sql("INSERT INTO blobs (b) VALUES (?)", [(os.urandom(1024),) for _ in range(1024)])
                writers.add(id(conn.connection.dbapi_connection))
                assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
                assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -db.BULK_CACHE // 1024
            if i % 10 == 0:
                with other:
                    other.execute("INSERT INTO blobs (b) VALUES (x'00')")
            biggest = max(biggest, _wal_bytes(path))
        with s.write_conn() as conn:  # a write outside the bulk run keeps SQLite's own setting
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    assert "heard-checkpoint" not in {t.name for t in threading.enumerate()}
    # Bounded by the writer's own checkpoint at 1,000 pages (4 MB) plus the transactions the
    # checkpoint thread is behind on a busy machine: far below the 40 MB written.
    assert biggest < 16 * 1024 * 1024, biggest
    assert len(writers) == 1  # one connection, its cache warm from batch to batch
    for _ in range(3):  # every pooled connection is back to the defaults
        with s.write_conn() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -2000
    assert other.execute("SELECT count(*) FROM blobs").fetchone()[0] == 40 * 1024 + 4
    other.close()
    s.close()


def test_a_failed_bulk_transaction_rolls_back_and_restores_the_setting(tmp_path):
    path = tmp_path / "heard.db"
    s = Store(str(path))
    with s.write_conn() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    with s.bulk_load():
        with pytest.raises(RuntimeError):
            with s.write_conn(bulk=True) as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                raise RuntimeError("boom")
        with s.write_conn(bulk=True) as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    with s.write_conn() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        assert [r[0] for r in conn.exec_driver_sql("SELECT x FROM t")] == [2]
    s.close()


def test_bulk_writes_from_two_threads_at_once_both_land(tmp_path):
    s = Store(str(tmp_path / "heard.db"))
    with s.write_conn() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    errors = []

    def work(k):
        try:
            for i in range(30):
                with s.write_conn(bulk=True) as conn:  # the second thread gets a pooled connection
                    conn.exec_driver_sql("INSERT INTO t VALUES (?)", (k * 100 + i,))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    with s.bulk_load():
        threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    with s.read() as r:
        assert r.connection().exec_driver_sql("SELECT count(*) FROM t").scalar() == 60
    s.close()


def test_the_sync_cursor_can_be_read_before_the_store_has_opened(tmp_path):
    """`heard sync` decides what to fetch while SQLAlchemy loads: the early read must agree with the store."""
    from storage.ingest import Ingest, known_uids, sync_state
    from storage.records import OpeningStore, sqlite_path

    path = tmp_path / "heard.db"
    assert OpeningStore(str(path)).sync_state("INBOX") == (None,)  # no file yet: nothing synced
    assert not path.exists()  # and reading did not create one
    store = Store(str(path))
    assert OpeningStore(str(path)).sync_state("INBOX") == (None,)
    with store.write_conn() as conn:
        Ingest(conn, store.search, datetime.now(timezone.utc)).set_cursor(
            "INBOX", uidvalidity=7, last_uid=41, uidnext=42, highestmodseq=None)
    add_ticket(store, folder="INBOX", uidvalidity=7, uid=40)
    add_ticket(store, folder="INBOX", uidvalidity=6, uid=39)  # from before a UIDVALIDITY change
    early = OpeningStore(f"sqlite:///{path}")
    with store.read() as s:
        state = sync_state(s.connection(), "INBOX")
        have = known_uids(s.connection(), "INBOX", 7)
    (got,) = early.sync_state("INBOX")
    assert {k: got[k] for k in ("uidvalidity", "last_uid", "uidnext")} == {"uidvalidity": 7, "last_uid": 41, "uidnext": 42}
    assert {k: state[k] for k in got if k != "folder"} == {k: got[k] for k in got if k != "folder"}
    assert early.known_uids("INBOX", 7) == have == {40}
    # Once open, the store itself answers; elsewhere than SQLite the caller waits for it.
    assert isinstance(early.get(), Store) and early.sync_state("INBOX") is None
    assert OpeningStore("postgresql://heard@db.example/heard").sync_state("INBOX") is None
    assert sqlite_path("sqlite:////var/lib/heard.db").as_posix() == "/var/lib/heard.db"
    assert sqlite_path("sqlite:///relative.db").as_posix() == "relative.db"
    assert sqlite_path("sqlite://") is None and sqlite_path("sqlite:///:memory:") is None


def test_a_database_that_cannot_be_opened_is_one_line_that_says_what_to_do(tmp_path):

    junk = tmp_path / "heard.db"
    junk.write_bytes(b"not a database " * 100)
    with pytest.raises(StoreError) as err:
        Store(str(junk))
    assert "\n" not in str(err.value) and "file is not a database" in str(err.value)
    assert "check [storage] database" in str(err.value)
    assert junk.read_bytes() == b"not a database " * 100  # nothing overwritten
    with pytest.raises(StoreError) as err:
        Store("/proc/no-such-dir/heard.db")
    assert "\n" not in str(err.value) and "check [storage] database" in str(err.value)


def _open_at_once(path, barrier, q):
    barrier.wait()
    try:
        Store(path)
        q.put("ok")
    except Exception as exc:  # the failure is the assertion's message
        q.put(f"{type(exc).__name__}: {exc}")


def test_several_processes_opening_a_new_database_at_once_all_work(database):
    """Two agents (or the app and `heard sync`) starting together on a fresh shared database (SQLite, PostgreSQL)."""
    path = database
    ctx = mp.get_context("spawn")
    barrier, q = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_open_at_once, args=(path, barrier, q)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert results == ["ok"] * 4
    with Store(path).read() as r:  # opening an up-to-date database applies nothing
        names = [row[0] for row in r.connection().exec_driver_sql("SELECT name FROM schema_migrations")]
    assert sorted(names) == sorted(n for n, _ in MIGRATIONS)  # each applied once


def test_a_new_database_still_opens_when_sqlite_says_locked_at_once(tmp_path, monkeypatch):
    """The race above, forced: SQLite's immediate "database is locked" while another process sets
    the file up is tried again, not shown to the agent; any other error still is."""
    from sqlalchemy.exc import OperationalError

    real, calls = Store.migrate, []

    def locked_once(self):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))
        return real(self)

    monkeypatch.setattr(Store, "migrate", locked_once)
    store = Store(str(tmp_path / "fresh.db"))
    assert len(calls) == 2
    with store.read() as s:
        names = [r[0] for r in s.connection().exec_driver_sql("SELECT name FROM schema_migrations")]
    assert sorted(names) == sorted(n for n, _ in MIGRATIONS)

    def broken(self):
        raise OperationalError("CREATE TABLE", {}, sqlite3.OperationalError("disk I/O error"))

    monkeypatch.setattr(Store, "migrate", broken)
    with pytest.raises(StoreError) as err:
        Store(str(tmp_path / "other.db"))
    assert "disk I/O error" in str(err.value)


def test_export_streams_every_ticket_exactly_as_show_prints_it_across_batches(store):
    from storage.tickets import export_tickets

    ids = []
    for i in range(7):
        tid = add_ticket(store, f"Question {i}", from_addr=f"c{i}@cust.example", message_id=f"q{i}@cust.example")
        ids.append(tid)
        if i % 2:
            add_reply(store, tid, f"q{i}@cust.example", text=f"More about {i}.", from_addr=f"c{i}@cust.example")
        if i % 3 == 0:
            set_status(store, tid, "pending", reason=f"asked customer {i}", actor="Ana", now=NOW)
    with store.read() as s:
        conn = s.connection()
        exported = list(export_tickets(conn, batch=3))  # three batches, the last one short
        shown = [ticket_detail(conn, tid) for tid in ids]
    assert exported == shown
    assert [len(t["messages"]) for t in exported] == [1, 2, 1, 2, 1, 2, 1]
    assert [len(t["events"]) for t in exported] == [1, 0, 0, 1, 0, 0, 1]


def test_dates_bound_for_a_bulk_insert_are_the_text_sqlalchemy_stores():
    from datetime import timedelta as td
    from zoneinfo import ZoneInfo

    from sqlalchemy.dialects import sqlite

    from storage.ingest import _bind_processor
    from storage.models import Message

    col = Message.__table__.c.date.type
    dialect = sqlite.dialect()
    fast, own = _bind_processor(col, dialect), col._cached_bind_processor(dialect)
    assert fast is not own  # the faster one is in use
    values = [NOW, NOW.replace(microsecond=1), datetime(1, 1, 1, tzinfo=timezone.utc),
              datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
              datetime(2026, 3, 29, 1, 30, tzinfo=ZoneInfo("Europe/Berlin")),
              datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=ZoneInfo("Europe/Berlin")),
              datetime(2026, 1, 1, tzinfo=timezone(td(hours=-3, minutes=-30)))]
    assert [fast(v) for v in values] == [own(v) for v in values]
    with pytest.raises(ValueError):
        fast(datetime(2026, 1, 1))  # a naive date is refused, as by the column type
