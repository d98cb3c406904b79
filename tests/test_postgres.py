"""heard on a real PostgreSQL: the team set-up, where every agent's heard points at one database.

The same commands as on SQLite, against a throwaway PostgreSQL cluster (tests/pgserver.py): a sync of
the demo backlog stores what SQLite stores and searches find the same tickets; a killed sync leaves
nothing twice; acknowledgements go out once and the ledger counts them. (Agents taking next together
and processes setting up one new database at once are tests/test_store.py's, run on both databases.)
Missing PostgreSQL is a skip on a developer machine and a failure in CI (.ci/run installs it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mail.backlog import bench_mailbox, demo_backlog
from storage.db import Store, StoreError
from tui.cli import main

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SUPPORT = "support@example.com"
ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, imap, database: str, *, smtp_port: int | None = None, name="config.toml") -> Path:
    path = tmp_path / name
    smtp = (f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\nusername = ""\n'
            f'sent_folder = ""\n' if smtp_port else "")
    path.write_text(
        f'[account]\naddress = "{SUPPORT}"\n'
        f'[imap]\nhost = "{imap.host}"\nport = {imap.port}\nsecurity = "none"\nusername = "{imap.username}"\n'
        f"password_command = \"printf '%s' '{imap.password}'\"\n"
        f'{smtp}[storage]\ndatabase = "{database}"\n[agent]\nname = "Ana"\n'
    )
    return path


def heard(cfg: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _ids(out: str) -> list[int]:
    return sorted(t["id"] for t in json.loads(out))


def test_the_demo_backlog_on_postgres_is_what_sqlite_stores_and_searches_alike(
        pymap_server, postgres_server, postgres_url, tmp_path, capsys):
    now = datetime.now(timezone.utc)
    pymap_server.deliver_maildir(SUPPORT, demo_backlog(now, SUPPORT))
    pg = write_config(tmp_path, pymap_server, postgres_url, name="pg.toml")
    lite = write_config(tmp_path, pymap_server, str(tmp_path / "heard.db"), name="lite.toml")
    code, out, err = heard(pg, "sync", capsys=capsys)
    assert code == 0, err
    assert "tickets created" in out
    assert heard(lite, "sync", capsys=capsys)[0] == 0
    # The same tickets, messages and events, byte for byte in the export (ids, dates, text, reasons).
    pg_export = heard(pg, "export", capsys=capsys)[1]
    assert pg_export == heard(lite, "export", capsys=capsys)[1]
    assert len(pg_export.splitlines()) > 50
    # A search means the same: every word a prefix, accents ignored, an address, an error code.
    for words in (["csv"], ["müller"], ["mueller"], ["factur"], ["réinitialiser"], ["E-5021"], ["nothing", "works"],
                  ["zahlung"], ["429"]):
        found = _ids(heard(pg, "search", "--json", *words, capsys=capsys)[1])
        assert found == _ids(heard(lite, "search", "--json", *words, capsys=capsys)[1]), words
        assert found or words == ["mueller"], words
    # Odd queries never fail and mean what they mean to FTS5: punctuation, symbols and "_" split a word
    # into a phrase ("@ledgerly.example" found nothing on PostgreSQL, "c++" and "a_b" nothing either),
    # "ß" and "¼" are not decomposed ("gross" found "Groß", "#4" the "¼" of a garbled "MÃ¼ller").
    odd = ['"', "'", "\\", ".*", "a.*b", "(csv", "[a-z]", "\\d", "$100", "^csv", "50%", "_", "a_b", "c++",
           "@ledgerly.example", "support@ledgerly.example", "E_5021", "e 5021", "#4", "[#12]", "gross", "Groß",
           "o'brien", 'say "hi"', "🙂", "佐藤", "a\x00b", "\x1b[31m", "x" * 300]
    for word in odd:
        on_pg = heard(pg, "search", "--json", "--", word, capsys=capsys)
        on_lite = heard(lite, "search", "--json", "--", word, capsys=capsys)
        assert on_pg[2].count("\n") <= 1 and "Traceback" not in on_pg[2], (word, on_pg)
        if on_pg[0] != 0:  # no words in it: the same one line on both
            assert on_pg == on_lite and "nothing to search for" in on_pg[2], word
            continue
        assert _ids(on_pg[1]) == _ids(on_lite[1]), word
    assert _ids(heard(pg, "search", "--json", "@ledgerly.example", capsys=capsys)[1])
    # UIDVALIDITY is an unsigned 32-bit number: the columns holding it are 64-bit.
    kinds = dict(postgres_server.query(
        postgres_url, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'sync_state'"))
    assert kinds["uidvalidity"] == kinds["last_uid"] == "bigint"
    # Nothing new: nothing changes.
    code, out, _ = heard(pg, "sync", capsys=capsys)
    assert code == 0 and out.startswith("0 new messages")


def test_a_kill_mid_sync_on_postgres_then_sync_again_stores_each_message_once(
        dovecot_server, postgres_server, postgres_url, tmp_path):
    from tests.test_sync import mail

    total = 1500
    dovecot_server.deliver_maildir(dovecot_server.username, [mail(i, f"Ticket {i}") for i in range(total)])
    cfg = write_config(tmp_path, dovecot_server, postgres_url)
    count = "SELECT count(*) FROM messages"
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg), "sync"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stored, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            stored = postgres_server.query(postgres_url, count)[0][0]
        except Exception:  # the tables are not there yet
            stored = 0
        if stored >= 100:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < stored < total, f"the kill should land mid-sync (stored {stored})"
    done = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg), "sync"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert postgres_server.query(postgres_url, count)[0][0] == total
    assert postgres_server.query(postgres_url, "SELECT count(DISTINCT message_id) FROM messages")[0][0] == total
    assert postgres_server.query(postgres_url, "SELECT count(*) FROM tickets")[0][0] == total
    assert postgres_server.query(postgres_url, "SELECT count(*) FROM search_text")[0][0] == total


def test_acknowledgements_on_postgres_go_out_once_and_the_ledger_counts_them(
        pymap_server, smtp_server, postgres_url, tmp_path, capsys):
    from tests.test_ack import backlog

    pymap_server.deliver_maildir(SUPPORT, backlog())
    cfg = write_config(tmp_path, pymap_server, postgres_url, smtp_port=smtp_server.port)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    code, out, err = heard(cfg, "ack", "--yes", capsys=capsys)
    assert code == 0 and "4 sent" in out, err
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == [
        "ann@cust.example", "bob@cust.example", "cy@cust.example", "dee@cust.example"]
    code, out, _ = heard(cfg, "ack", "--yes", capsys=capsys)
    assert "0 to acknowledge" in out and len(smtp_server.messages) == 4
    code, out, _ = heard(cfg, "report", "--json", capsys=capsys)
    assert json.loads(out)["made"] == 4


def test_a_postgres_server_that_is_not_there_is_one_line_without_the_password(tmp_path, capsys):
    from mail.localservers import free_port

    url = f"postgresql://heard:s3cret@127.0.0.1:{free_port()}/heard"
    with pytest.raises(StoreError) as exc:
        Store(url)
    line = str(exc.value)
    assert "\n" not in line and "s3cret" not in line and "***" in line
    assert "Connection refused" in line and "check the host and port in [storage] database" in line


def test_a_team_database_behind_a_password_takes_it_from_pgpass_and_says_what_to_fix_in_one_line(
        own_postgres_server, dovecot_server, tmp_path, capsys, monkeypatch):
    """A new team's server asks for a password (scram, as PostgreSQL is set up outside a laptop): heard
    takes it from PGPASSFILE, and each way of getting the URL or the password wrong is one line that
    says what to do about it, not only "check [storage] database"."""
    pg = own_postgres_server
    url = pg.new_database()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER ROLE heard PASSWORD 'team-secret'")
    hba = pg.data / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n")
    assert pg._run(pg_ctl(), "-D", str(pg.data), "reload").returncode == 0
    time.sleep(0.5)
    dovecot = dovecot_server
    dovecot.deliver_maildir(None, bench_mailbox(5, SUPPORT))
    pgpass = tmp_path / "pgpass"
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    name = url.rsplit("/", 1)[1]
    cfg = write_config(tmp_path, dovecot, url)

    code, _, err = heard(cfg, "sync", capsys=capsys)  # no password anywhere yet
    assert code == 1 and err.count("\n") == 1
    assert "no password supplied" in err and "put it in ~/.pgpass (or PGPASSFILE, PGPASSWORD)" in err

    pgpass.write_text(f"127.0.0.1:{pg.port}:*:heard:not-it\n")
    pgpass.chmod(0o600)
    code, _, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1 and err.count("\n") == 1
    assert 'password authentication failed for user "heard"' in err and "fix the password for this user" in err

    pgpass.write_text(f"127.0.0.1:{pg.port}:*:heard:team-secret\n")
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    assert out.startswith("5 new messages")

    wrong_db = write_config(tmp_path, dovecot, url.replace(f"/{name}", "/heard_typo"), name="db.toml")
    code, _, err = heard(wrong_db, "tickets", capsys=capsys)
    assert code == 1 and err.count("\n") == 1
    assert 'database "heard_typo" does not exist' in err and "create it on the server" in err

    pgpass.write_text(f"127.0.0.1:{pg.port}:*:*:team-secret\n")
    wrong_user = write_config(tmp_path, dovecot, url.replace("//heard@", "//hreard@"), name="user.toml")
    code, _, err = heard(wrong_user, "tickets", capsys=capsys)
    assert code == 1 and err.count("\n") == 1
    assert "hreard" in err and "the user in [storage] database" in err


def pg_ctl() -> str:
    from pgserver import _binary

    return _binary("pg_ctl")


def _heard_at_once(cfg: Path, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """The commands as separate `heard` processes, started together, as two agents or hosts would."""
    procs = [subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg), *args], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for args in commands]
    done = []
    for p, args in zip(procs, commands):
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(args, p.returncode, out, err))
    return done


def test_two_syncs_at_once_on_one_new_postgres_database_both_work_and_store_each_message_once(
        dovecot_server, postgres_server, postgres_url, tmp_path):
    # The everyday team set-up: `heard sync --watch` on a server and each agent's app syncing live all wake
    # for the same new mail. Two syncs storing the same messages at once: one died with a traceback
    # (duplicate key value violates unique constraint "ix_customers_address").
    from tests.test_sync import mail

    total = 1200
    dovecot_server.deliver_maildir(dovecot_server.username, [
        mail(i, f"Ticket {i}", sender=f"c{i % 37}@cust.example",
             irt=f"m{i - 5}@cust.example" if i % 3 == 0 and i > 5 else None) for i in range(total)])
    cfg = write_config(tmp_path, dovecot_server, postgres_url)
    Store(postgres_url).close()  # the tables exist: both syncs go straight to storing
    runs = _heard_at_once(cfg, ("sync",), ("sync",))
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-600:] for r in runs]
    assert sorted(int(r.stdout.split()[0]) for r in runs) == [0, total]  # one stored it all, the other nothing
    q = lambda sql: postgres_server.query(postgres_url, sql)[0][0]  # noqa: E731
    assert q("SELECT count(*) FROM messages") == total
    assert q("SELECT count(*) FROM customers") == 37
    assert q("SELECT count(*) FROM tickets") == total - len(range(6, total, 3))  # replies joined their ticket
    assert q("SELECT count(*) FROM tickets WHERE message_count = 0") == 0
    assert q("SELECT count(*) FROM search_text") == total


def test_two_agents_acknowledging_at_once_on_postgres_send_each_customer_one_acknowledgement(
        pymap_server, smtp_server, postgres_url, tmp_path, capsys):
    from tests.test_ack import customer_mail, days_ago

    customers = [f"cust{i}@cust.example" for i in range(30)]
    pymap_server.deliver_maildir(SUPPORT, [customer_mail(i, addr, f"Question {i}", date=days_ago(1))
                                           for i, addr in enumerate(customers)])
    cfg = write_config(tmp_path, pymap_server, postgres_url, smtp_port=smtp_server.port)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    runs = _heard_at_once(cfg, ("ack", "--yes"), ("ack", "--yes"))
    assert [r.returncode for r in runs] == [0, 0], [r.stderr[-600:] for r in runs]
    sent_to = sorted(r for m in smtp_server.messages for r in m.rcpt_tos)
    assert sent_to == sorted(customers)  # each customer once
    assert json.loads(heard(cfg, "report", "--json", capsys=capsys)[1])["made"] == len(customers)
