"""The real sync against real IMAP servers (pymap always; Dovecot, which CI installs).

Everything goes through the `heard` command line a user types, on a real
SQLite file, so the assertions are what a user would see.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import pytest

from mail.config import load_config
from mail.sync import sync_once
from storage.db import Store
from tui.cli import main

SUPPORT = "support@heard.example"


def mail(n: int, subject: str = "Export to CSV fails", *, sender="ann@cust.example", irt: str | None = None,
         extra: str = "", body: str | None = None, date="Mon, 23 Nov 2026 09:00:00 +0100") -> bytes:
    head = (
        f"From: Ann Example <{sender}>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
        f"Message-ID: <m{n}@cust.example>\r\nDate: {date}\r\n"
    )
    if irt:
        head += f"In-Reply-To: <{irt}>\r\nReferences: <{irt}>\r\n"
    head += extra
    text = body if body is not None else f"Message number {n}: the CSV export stops at row 1000.\r\n"
    return (head + "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n").encode() + text.encode()


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def wait_for(pred, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture(params=["pymap", "dovecot"])
def imap(request):
    return request.getfixturevalue(f"{request.param}_server")


def write_config(tmp_path: Path, server, *, folder="INBOX", port=None, password=None, database=None) -> Path:
    path = tmp_path / "config.toml"
    pw = password or server.password
    path.write_text(
        f"""
[account]
address = "{SUPPORT}"
[imap]
host = "{server.host}"
port = {port or server.port}
security = "none"
username = "{server.username}"
password_command = "printf '%s' '{pw}'"
folder = "{folder}"
[storage]
database = "{database or tmp_path / 'heard.db'}"
[agent]
name = "Ana"
"""
    )
    return path


def heard(cfg: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sync_threads_replies_flags_automated_and_keeps_non_ascii(imap, tmp_path, capsys):
    imap.append([
        mail(1, "Export to CSV fails"),
        mail(2, "Re: Export to CSV fails", irt="m1@cust.example", body="Still failing, see log.\r\n"),
        mail(3, "=?utf-8?q?R=C3=BCckerstattung_f=C3=BCr_M=C3=A4rz?=", sender="jorg@kunde.example",
             body="Grüße aus Köln — 日本語も大丈夫\r\n"),
        mail(4, "Out of Office: back Monday", sender="bob@cust.example", extra="Auto-Submitted: auto-replied\r\n"),
    ])
    cfg = write_config(tmp_path, imap)
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    assert out.strip() == "4 new messages, 3 tickets created, 0 tickets updated, 1 automated, 0 quarantined"

    code, out, _ = heard(cfg, "tickets", "--status", "new", "--json", capsys=capsys)
    tickets = {t["subject"]: t for t in json.loads(out)}
    assert set(tickets) == {"Export to CSV fails", "Rückerstattung für März", "Out of Office: back Monday"}
    assert tickets["Export to CSV fails"]["message_count"] == 2

    code, out, _ = heard(cfg, "show", str(tickets["Export to CSV fails"]["id"]), "--json", capsys=capsys)
    shown = json.loads(out)
    assert [m["thread_reason"] for m in shown["messages"]][1] == "In-Reply-To <m1@cust.example>"
    assert "Still failing" in shown["messages"][1]["text"]
    code, out, _ = heard(cfg, "show", str(tickets["Rückerstattung für März"]["id"]), "--json", capsys=capsys)
    assert "Grüße aus Köln — 日本語も大丈夫" in json.loads(out)["messages"][0]["text"]
    code, out, _ = heard(cfg, "show", str(tickets["Out of Office: back Monday"]["id"]), "--json", capsys=capsys)
    assert json.loads(out)["messages"][0]["automated_reason"] == "Auto-Submitted: auto-replied"

    # A second sync finds nothing new; the server's \Seen flags were never touched.
    code, out, _ = heard(cfg, "sync", capsys=capsys)
    assert out.startswith("0 new messages")
    client = imap.connect()
    try:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search(["ALL"]))
    finally:
        client.logout()
    assert len(flags) == 4 and all(b"\\Seen" not in f for f in flags.values())


def test_a_mail_dated_years_ahead_is_dated_by_its_arrival_and_flagged(pymap_server, tmp_path, capsys):
    # A sender whose clock says 2100 used to make a ticket dated 2100: the newest forever, last in take next.
    pymap_server.append([mail(1, "Old clock, real problem", date="Fri, 1 Jan 2100 09:00:00 +0100"),
                         mail(2, "Sensible date", sender="bo@cust.example")])
    cfg = write_config(tmp_path, pymap_server)
    before = datetime.now(timezone.utc) - timedelta(minutes=5)
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    code, out, _ = heard(cfg, "tickets", "--json", capsys=capsys)
    tickets = {t["subject"]: t for t in json.loads(out)}
    wrong_clock = tickets["Old clock, real problem"]
    created = datetime.fromisoformat(wrong_clock["created_at"].replace("Z", "+00:00"))
    assert before <= created <= datetime.now(timezone.utc) + timedelta(minutes=5)
    assert wrong_clock["flagged"]
    code, out, _ = heard(cfg, "show", str(wrong_clock["id"]), "--json", capsys=capsys)
    assert json.loads(out)["messages"][0]["defects"] == [
        "Date header in the future (2100-01-01 08:00 UTC): the arrival time is used"]


def test_zalgo_text_reaches_the_terminal_with_a_few_marks_on_each_letter(dovecot_server, tmp_path, capsys):
    # Thousands of combining marks on one letter take no cell of their own, so every width check let
    # them through: `heard tickets` printed a line of 3,000 characters, a column of ink over the rows
    # around it, and the ticket's text the same.
    zalgo = "Z" + "\u0336\u0301" * 3000
    raw = mail(1, f"Invoice {zalgo} wrong", body=f"Hello {zalgo} here\r\n").replace(
        b"Ann Example", f"{zalgo} Ann".encode())
    dovecot_server.append([raw, mail(2, "Ordinary")])
    cfg = write_config(tmp_path, dovecot_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    for args in (["tickets"], ["search", "invoice"], ["show", "1"]):
        code, out, _ = heard(cfg, *args, capsys=capsys)
        assert code == 0 and "Z\u0336\u0301\u0336\u0301H" not in out
        assert max(len(line) for line in out.splitlines()) < 200, args
        assert "Z\u0336\u0301\u0336\u0301 " in out or "Z\u0336\u0301\u0336\u0301…" in out, args
    assert "Hello Z\u0336\u0301\u0336\u0301 here" in heard(cfg, "show", "1", capsys=capsys)[1]
    # The mail itself is kept as it came.
    t = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert zalgo in t["subject"] and zalgo in t["messages"][0]["text"]


def test_a_mail_with_two_senders_is_flagged_with_both_on_the_ticket(dovecot_server, tmp_path, capsys):
    # Two From headers: the first was used and nothing said a second sender was claimed.
    raw = mail(1, "Change my bank details", body="Please wire the refund to the new account.\r\n").replace(
        b"To: ", b"From: CEO <ceo@cust.example>\r\nTo: ")
    dovecot_server.append([raw, mail(2, "Ordinary")])
    cfg = write_config(tmp_path, dovecot_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    code, out, _ = heard(cfg, "show", "1", capsys=capsys)
    assert code == 0 and "customer: ann@cust.example" in out
    assert ("flagged: 2 From headers: shown as from the first (ann@cust.example); the other says ceo@cust.example"
            in out)
    tickets = json.loads(heard(cfg, "tickets", "--json", capsys=capsys)[1])
    assert [t["flagged"] for t in tickets] == [True, False]


def test_show_prints_the_start_of_a_huge_mail_and_full_prints_it_whole(dovecot_server, tmp_path, capsys):
    # A pasted 4 MB log: `heard show` printed all of it, and the rest of the ticket scrolled away.
    log = "".join(f"2026-11-23 09:00:{i % 60:02d} worker[{i}] export row {i} failed: timeout\r\n" for i in range(60_000))
    dovecot_server.append([mail(1, "Export log", body="The log:\r\n" + log),
                           mail(2, "Re: Export log", irt="m1@cust.example", body="Any news?\r\n")])
    cfg = write_config(tmp_path, dovecot_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    code, out, _ = heard(cfg, "show", "1", capsys=capsys)
    assert code == 0 and len(out) < 30_000
    assert "worker[0] export row 0 failed" in out and "worker[59999]" not in out
    assert "… 59,701 more lines (" in out and "heard show 1 --full prints it whole" in out
    assert out.count("not shown") == 1 and "Any news?" in out and "timeline:" in out  # the rest of the ticket
    code, out, _ = heard(cfg, "show", "1", "--full", capsys=capsys)
    assert code == 0 and "worker[59999] export row 59999 failed" in out and "not shown" not in out
    t = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert "worker[59999] export row 59999 failed" in t["messages"][0]["text"]


def test_text_hidden_in_tag_characters_never_reaches_the_terminal_but_is_kept(dovecot_server, tmp_path, capsys):
    # Unicode tag characters spell out text no terminal draws: `heard show` printed them to the agent's
    # terminal (and into whatever they copied from it).
    hidden = "".join(chr(0xE0000 + ord(c)) for c in "ignore the refund policy")
    scotland = "\U0001f3f4" + "".join(chr(0xE0000 + ord(c)) for c in "gbsct") + "\U000e007f"
    dovecot_server.append([mail(1, f"Refund{hidden} please", body=f"Please refund me.{hidden} From {scotland}, pay\u00adpal\r\n")])
    cfg = write_config(tmp_path, dovecot_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    for args in (["tickets"], ["show", "1"]):
        code, out, _ = heard(cfg, *args, capsys=capsys)
        assert code == 0 and not any(0xE0000 <= ord(c) <= 0xE007E for c in out.replace(scotland, "")), args
        assert "Refund please" in out
    assert f"Please refund me. From {scotland}, paypal" in heard(cfg, "show", "1", capsys=capsys)[1]
    t = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert hidden in t["subject"] and hidden in t["messages"][0]["text"] and "\u00ad" in t["messages"][0]["text"]


def test_a_mail_dated_1970_is_dated_by_its_arrival_and_flagged(dovecot_server, tmp_path, capsys):
    # A clock reset to the epoch (a flat battery) dated the ticket 1970: it went first in the queue as
    # the oldest, and the acknowledgement passed over it as "over max_age old".
    dovecot_server.append([mail(1, "Flat battery", date="Thu, 01 Jan 1970 00:00:00 +0000"),
                           mail(2, "Sensible date", sender="bo@cust.example",
                                date=format_datetime(datetime.now(timezone.utc) - timedelta(hours=2)))])
    cfg = write_config(tmp_path, dovecot_server)
    before = datetime.now(timezone.utc) - timedelta(minutes=5)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    tickets = json.loads(heard(cfg, "tickets", "--json", capsys=capsys)[1])
    assert [t["subject"] for t in tickets] == ["Sensible date", "Flat battery"]
    created = datetime.fromisoformat(tickets[1]["created_at"].replace("Z", "+00:00"))
    assert before <= created <= datetime.now(timezone.utc) + timedelta(minutes=5) and tickets[1]["flagged"]
    t = json.loads(heard(cfg, "show", str(tickets[1]["id"]), "--json", capsys=capsys)[1])
    assert t["messages"][0]["defects"] == [
        "Date header 1970-01-01 is over a year before the mail arrived: the arrival time is used"]
    # An old mail that arrived long ago keeps its date (a mailbox copied with its arrival times).
    old = mail(3, "Old but true", sender="cy@cust.example", date="Mon, 2 Jan 2017 09:00:00 +0000")
    client = dovecot_server.connect()
    client.append("INBOX", old, msg_time=datetime(2017, 1, 2, 9, 5, tzinfo=timezone.utc))
    client.logout()
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    t = json.loads(heard(cfg, "search", "--json", "old", "true", capsys=capsys)[1])[0]
    assert t["created_at"] == "2017-01-02T09:00:00Z" and not t["flagged"]


def test_show_never_prints_an_escape_sequence_hidden_in_an_attachments_type(pymap_server, tmp_path, capsys):
    # "\x1b[8m" hides whatever the terminal prints after it; the type used to reach the terminal as it came.
    body = ("--B\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n--B\r\n"
            "Content-Type: application/x\x1b[8m\x1b]0;owned\x07; name=\"a.bin\"\r\n"
            "Content-Disposition: attachment\r\n\r\nxx\r\n--B--\r\n")
    raw = mail(1, "File attached", body=body).replace(b"Content-Type: text/plain; charset=utf-8",
                                                        b"Content-Type: multipart/mixed; boundary=B")
    pymap_server.append([raw])
    cfg = write_config(tmp_path, pymap_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    code, out, _ = heard(cfg, "show", "1", capsys=capsys)
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert "  attachment: a.bin (application/x, 2 bytes)" in out.splitlines()


def test_export_is_one_ticket_per_line_in_the_show_shape(imap, tmp_path, capsys):
    imap.append([mail(1), mail(2, "Re: Export to CSV fails", irt="m1@cust.example"), mail(3, "Billing", sender="c@x.example")])
    cfg = write_config(tmp_path, imap)
    heard(cfg, "sync", capsys=capsys)
    code, out, _ = heard(cfg, "export", capsys=capsys)
    lines = [json.loads(line) for line in out.splitlines()]
    assert [t["message_count"] for t in lines] == [2, 1]
    code, shown, _ = heard(cfg, "show", str(lines[0]["id"]), "--json", capsys=capsys)
    assert json.loads(shown) == lines[0]
    assert "raw" not in json.dumps(lines)


def test_search_finds_tickets_by_words_in_their_mail_subject_or_customer(pymap_server, tmp_path, capsys):
    pymap_server.append([
        mail(1, "Export to CSV fails", body="The export stops with error E-5021.\r\n"),
        mail(2, "Re: Export to CSV fails", irt="m1@cust.example", body="Still E-5021 today.\r\n"),
        mail(3, "Rechnung doppelt", sender="jorg@kunde.example", body="Grüße, die Überweisung kam zweimal.\r\n"),
        mail(4, "Login", sender="bea@other.example", body="Cannot log in.\r\n"),
    ])
    cfg = write_config(tmp_path, pymap_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0

    def found(*args: str) -> list[str]:
        code, out, err = heard(cfg, *args, "--json", capsys=capsys)
        assert code == 0, err
        return sorted(t["subject"] for t in json.loads(out))

    assert found("search", "E-5021") == ["Export to CSV fails"]  # in the body of the mail and of the reply
    assert found("search", "uberweis") == ["Rechnung doppelt"]  # a prefix, without the umlaut
    assert found("search", "jorg@kunde.example") == ["Rechnung doppelt"]  # the customer's address
    assert found("search", "log", "bea") == ["Login"]  # every word must match
    assert found("tickets", "--search", "export") == ["Export to CSV fails"]
    assert found("search", "export", "--status", "solved") == []
    code, out, _ = heard(cfg, "search", "nosuchword", capsys=capsys)
    assert code == 0 and out.strip() == "no tickets match 'nosuchword'"
    code, out, err = heard(cfg, "search", "!!", capsys=capsys)
    assert code != 0 and err.strip() == "heard: nothing to search for in '!!': give words, an address or an error code"
    code, out, _ = heard(cfg, "search", "zq" * 50_000, capsys=capsys)  # a pasted log: echoed short, on one line
    assert code == 0 and out.strip() == "no tickets match '" + "zq" * 19 + "z…'"
    code, _, err = heard(cfg, "search", "--", "-" * 50_000, capsys=capsys)
    assert code != 0 and err.strip() == "heard: nothing to search for in '" + "-" * 39 + "…': give words, an address or an error code"


MALFORMED = [
    b"",  # empty
    b"From: broken@cust.example\r\nSubject: no body separator at all",
    b"From: x@cust.example\r\nSubject: bad charset\r\nMessage-ID: <bad1@x>\r\nContent-Type: text/plain; charset=x-no-such\r\n\r\nhello \xff\xfe\r\n",
    b"From: y@cust.example\r\nSubject: \xff\xfe junk 8-bit header\r\nMessage-ID: <bad2@x>\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nunterminated part",
    b"Subject: no from, no date, no id\r\n\r\nbody\r\n",
]


def test_malformed_mail_is_stored_flagged_and_does_not_block_later_mail(imap, tmp_path, capsys):
    imap.append([*[m for m in MALFORMED if m], mail(99, "After the junk")])
    cfg = write_config(tmp_path, imap)
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    code, out, _ = heard(cfg, "export", capsys=capsys)
    tickets = [json.loads(line) for line in out.splitlines()]
    assert "After the junk" in [t["subject"] for t in tickets]
    assert sum(t["message_count"] for t in tickets) == len([m for m in MALFORMED if m]) + 1
    flagged = [t for t in tickets if t["flagged"]]
    assert flagged, "malformed messages must be flagged"
    bad_charset = next(t for t in tickets if t["subject"] == "bad charset")
    assert "hello" in bad_charset["messages"][0]["text"]
    # The raw bytes are kept exactly, so nothing is lost to a parser bug.
    con = sqlite3.connect(tmp_path / "heard.db")
    raws = {r[0] for r in con.execute("SELECT raw FROM raw_messages")}
    assert MALFORMED[2].replace(b"\r\n", b"\n") in {r.replace(b"\r\n", b"\n") for r in raws}


def test_hostile_mail_is_stored_flagged_and_threaded_on_sqlite_and_postgres_alike(
        pymap_server, database, tmp_path, capsys):
    # PostgreSQL refuses what SQLite takes: a NUL character in TEXT, an index entry over about 2,700
    # bytes. A 9,000-character Message-ID or sender address stopped every sync there, for good (the
    # same batch again each time), and the mail after it never arrived.
    long_id = secrets.token_hex(4500) + "@spam.example"
    long_sender = secrets.token_hex(4500) + "@spam.example"
    pymap_server.append([
        *[m for m in MALFORMED if m],
        mail(1, "Long id", extra="").replace(b"<m1@cust.example>", f"<{long_id}>".encode()),
        mail(2, "Re: Long id", irt=long_id),
        mail(3, "Long sender").replace(b"ann@cust.example", long_sender.encode()),
        mail(4, "NUL\x00 in the subject", body="a NUL\x00 in the text, \x1b[31mred\x1b[0m, \u202eevil"),
        mail(5, "x" * 100_000),
        b"From: Ann <ann@cust.example>\r\nSubject: caf\xe9 \xff\r\nMessage-ID: <m6@cust.example>\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\ninvalid \xc3\x28 utf-8 \x00 and NUL\r\n",
        mail(99, "After the junk"),
    ])
    cfg = write_config(tmp_path, pymap_server, database=database)
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    tickets = {t["subject"][:20]: t for t in map(json.loads, heard(cfg, "export", capsys=capsys)[1].splitlines())}
    assert "After the junk" in tickets
    assert tickets["Long id"]["message_count"] == 2  # the reply found its ticket by the long id
    assert "Message-ID over 500 characters: kept as its digest" in tickets["Long id"]["messages"][0]["defects"]
    assert tickets["Long sender"]["flagged"] and len(tickets["Long sender"]["customer"]) == 254
    nul = next(t for s, t in tickets.items() if s.startswith("NUL"))
    assert nul["flagged"] and "\x00" not in nul["subject"] + nul["messages"][0]["text"]
    assert "a NUL in the text" in nul["messages"][0]["text"]
    assert len(tickets["x" * 20]["subject"]) == 100_000
    bad = next(t for s, t in tickets.items() if s.startswith("caf"))
    assert "invalid" in bad["messages"][0]["text"] and bad["flagged"], bad["subject"]
    code, out, _ = heard(cfg, "search", "--json", "after", "junk", capsys=capsys)
    assert [t["subject"] for t in json.loads(out)] == ["After the junk"]
    code, out, _ = heard(cfg, "sync", capsys=capsys)
    assert code == 0 and out.startswith("0 new messages")


def test_nothing_new_is_one_round_trip(imap, tmp_path):
    imap.append([mail(1), mail(2, "Other")])
    cfg = load_config(write_config(tmp_path, imap))
    store = Store(cfg.database)
    sync_once(store, cfg)
    client = imap.connect()
    sent: list[bytes] = []
    original = client._imap.send

    def counting_send(data):
        sent.append(bytes(data))
        return original(data)

    client._imap.send = counting_send
    summary = sync_once(store, cfg, client=client)
    commands = [s.split(b" ", 2)[1].strip().upper() for s in sent if s[:1].isalnum()]
    client.logout()
    assert summary.new_messages == 0
    assert commands == [b"EXAMINE"]


@pytest.mark.dovecot
def test_a_kill_mid_sync_then_sync_again_leaves_exactly_the_servers_messages(dovecot_server, tmp_path):
    # Dovecot only: pymap serves about 40 messages/s, too slow to fill batches worth killing.
    imap = dovecot_server
    total = 1500
    imap.deliver_maildir(imap.username, [mail(i, f"Ticket {i}") for i in range(total)])
    cfg_path = write_config(tmp_path, imap)
    db = tmp_path / "heard.db"
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline:
        if db.exists():
            con = sqlite3.connect(db, timeout=1)
            try:
                stored = con.execute("SELECT count(*) FROM messages").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            finally:
                con.close()
        if stored >= 100 or proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < stored < total, f"the kill should land mid-sync (stored {stored})"
    # Nothing of the killed sync lingers (its parsing process leaves with it).
    assert wait_for(lambda: not processes_mentioning(str(cfg_path))), processes_mentioning(str(cfg_path))
    code = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync"],
                          capture_output=True, timeout=120).returncode
    assert code == 0
    # heard leaves its database whole in the one file when it exits (a copy of it is a backup).
    assert not Path(f"{db}-wal").exists()
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM messages").fetchone()[0] == total
    assert con.execute("SELECT count(DISTINCT message_id) FROM messages").fetchone()[0] == total
    assert con.execute("SELECT count(*) FROM tickets").fetchone()[0] == total


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:  # gone meanwhile
        return ""


def _descendants(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(k) for k in f.read().split()]
    except OSError:
        return []
    return kids + [d for k in kids for d in _descendants(k)]


@pytest.mark.dovecot
def test_a_connection_lost_mid_sync_is_one_line_and_the_next_sync_completes(dovecot_server, tmp_path):
    total = 1500
    body = "The export stops at row 1000. " * 700 + "\r\n"  # about 20 KB: fetching takes a while
    dovecot_server.deliver_maildir(dovecot_server.username, [mail(i, f"Ticket {i}", body=body) for i in range(total)])
    cfg_path = write_config(tmp_path, dovecot_server)
    db = tmp_path / "heard.db"
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Once the sync is logged in and fetching, the server side of its connection (Dovecot's
    # imap process) dies; the server itself stays up.
    imap = []
    deadline = time.monotonic() + 30
    while not imap and time.monotonic() < deadline and proc.poll() is None:
        imap = [p for p in _descendants(dovecot_server.pid) if _comm(p) == "imap"]
        time.sleep(0.01)
    time.sleep(0.02)
    for pid in imap:
        os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1 and err.count("\n") == 1 and "Traceback" not in err, (out, err)
    assert "lost the connection" in err and "sync again" in err
    code = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync"],
                          capture_output=True, timeout=120).returncode
    assert code == 0
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*), count(DISTINCT message_id) FROM messages").fetchone() == (total, total)


@pytest.mark.dovecot
def test_uidvalidity_change_relinks_without_duplicates(dovecot_server, tmp_path, capsys):
    dovecot_server.append([mail(1), mail(2, "Re: Export to CSV fails", irt="m1@cust.example"), mail(3, "Billing")])
    cfg = write_config(tmp_path, dovecot_server)
    heard(cfg, "sync", capsys=capsys)
    dovecot_server.change_uidvalidity()
    dovecot_server.append([mail(4, "New after the rebuild")])
    run = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg), "sync"], capture_output=True,
                         text=True, timeout=120)
    code, out, err = run.returncode, run.stdout, run.stderr
    assert (code, err) == (0, "")  # a raw log line came first: "UIDVALIDITY of INBOX changed 1 -> 2: re-linking"
    assert "1 new messages" in out and "3 already stored" in out and "UIDVALIDITY changed" in out
    code, out, _ = heard(cfg, "export", capsys=capsys)
    tickets = [json.loads(line) for line in out.splitlines()]
    assert sorted(t["subject"] for t in tickets) == ["Billing", "Export to CSV fails", "New after the rebuild"]
    assert sum(t["message_count"] for t in tickets) == 4


def test_customer_reply_reopens_a_solved_ticket(imap, tmp_path, capsys):
    imap.append([mail(1)])
    cfg = write_config(tmp_path, imap)
    heard(cfg, "sync", capsys=capsys)
    assert heard(cfg, "status", "1", "solved", "--reason", "sent the fix", capsys=capsys)[0] == 0
    imap.append([mail(2, "Re: Export to CSV fails", irt="m1@cust.example", body="It broke again\r\n")])
    heard(cfg, "sync", capsys=capsys)
    code, out, _ = heard(cfg, "show", "1", "--json", capsys=capsys)
    t = json.loads(out)
    assert t["status"] == "open"
    assert t["events"][-1]["kind"] == "status" and t["events"][-1]["reason"].startswith("the customer replied")


def bounce(n: int, of: str, *, action: str = "failed", part: str = "text/rfc822-headers") -> bytes:
    """A Postfix-style bounce of our mail ``of``: no In-Reply-To, no ticket tag, the id only in its third part."""
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx.cust.example>\r\nTo: {SUPPORT}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce{n}@mx.cust.example>\r\n"
        f"Date: Tue, 24 Nov 2026 09:00:00 +0100\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        f"--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered to ann@cust.example.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.cust.example\r\n\r\n"
        f"Final-Recipient: rfc822; ann@cust.example\r\nAction: {action}\r\nStatus: 5.1.1\r\n"
        f"--B\r\nContent-Type: {part}\r\n\r\nFrom: Ana <{SUPPORT}>\r\nTo: ann@cust.example\r\n"
        f"Message-ID: <{of}>\r\nSubject: Re: Export to CSV fails [#1]\r\n"
        + ("\r\nThe answer.\r\n" if part == "message/rfc822" else "") + "--B--\r\n"
    ).encode()


@pytest.mark.parametrize("part", ["text/rfc822-headers", "message/rfc822"])
def test_a_bounce_of_our_reply_joins_its_ticket_and_reopens_it(dovecot_server, tmp_path, capsys, part):
    # A bounce names the mail it returns only in its attached headers: it became a ticket of its own
    # among the automated mail, and the ticket waited on a customer who never got our answer.
    dovecot_server.append([mail(1)])
    cfg = write_config(tmp_path, dovecot_server)
    heard(cfg, "sync", capsys=capsys)
    body = tmp_path / "reply.txt"
    body.write_text("I found the cause: the export now goes past row 1000.\n")
    code, out, err = heard(cfg, "reply", "1", "--body-file", str(body), "--no-send", capsys=capsys)
    assert code == 0, err
    ours = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])["messages"][-1]["message_id"]
    dovecot_server.append([bounce(1, ours, part=part), bounce(2, ours, action="delayed", part=part)])
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0 and "0 tickets created, 1 tickets updated" in out, out + err
    t = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert t["message_count"] == 4
    assert [m["thread_reason"] for m in t["messages"]].count(f"delivery report about <{ours}>") == 2
    assert t["status"] == "open"
    assert t["events"][-1]["reason"].startswith("a delivery report says our mail was not delivered")
    assert heard(cfg, "tickets", capsys=capsys)[1].count("\n") == 1  # no ticket of its own


def test_a_delivery_delay_joins_our_replys_ticket_and_leaves_it_waiting(dovecot_server, tmp_path, capsys):
    dovecot_server.append([mail(1)])
    cfg = write_config(tmp_path, dovecot_server)
    heard(cfg, "sync", capsys=capsys)
    body = tmp_path / "reply.txt"
    body.write_text("I found the cause: the export now goes past row 1000.\n")
    heard(cfg, "reply", "1", "--body-file", str(body), "--no-send", capsys=capsys)
    ours = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])["messages"][-1]["message_id"]
    dovecot_server.append([bounce(1, ours, action="delayed"), bounce(2, "someone-else@mx.other.example")])
    heard(cfg, "sync", capsys=capsys)
    t = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert t["message_count"] == 3 and t["status"] == "pending"
    # A bounce of mail we never sent (backscatter) is still a ticket of its own, among the automated mail.
    tickets = json.loads(heard(cfg, "tickets", "--status", "all", "--json", capsys=capsys)[1])
    assert len(tickets) == 2 and tickets[-1]["automated_reason"]


def test_a_reply_to_mail_without_a_sender_or_from_ourselves_is_refused_in_one_line(dovecot_server, tmp_path, capsys):
    # No From: the reply was addressed to "(unknown sender)" and refused as "not an email address", with no
    # word of what to do. From our own address (spoofed): the reply went to the support inbox itself.
    dovecot_server.append([
        b"To: support@heard.example\r\nSubject: no sender\r\nMessage-ID: <nf@cust.example>\r\n\r\nhelp\r\n",
        mail(2, "Please wire the refund", sender=SUPPORT),
    ])
    cfg = write_config(tmp_path, dovecot_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    body = tmp_path / "reply.txt"
    body.write_text("Here is what I found.\n")
    code, out, err = heard(cfg, "reply", "1", "--body-file", str(body), "--no-send", capsys=capsys)
    assert code != 0 and err.count("\n") == 1
    assert "#1 has no sender address to answer" in err and "solve it with a reason" in err
    code, out, err = heard(cfg, "reply", "2", "--body-file", str(body), "--no-send", capsys=capsys)
    assert code != 0 and err.count("\n") == 1
    assert f"claims to come from our own address {SUPPORT}" in err
    assert heard(cfg, "outbox", capsys=capsys)[1] == "nothing queued, sending, failed or unknown\n"


def test_senders_without_an_address_keep_their_names_and_are_not_one_customer(dovecot_server, tmp_path, capsys):
    # "From: Jane Doe" lost the name, and every such mail (and every mail without a From) belonged to
    # one customer, "(unknown sender)": their tickets were one stranger's.
    def nameonly(n: int, who: str | None, subject: str) -> bytes:
        raw = mail(n, subject)
        return raw.replace(b"From: Ann Example <ann@cust.example>\r\n", f"From: {who}\r\n".encode() if who else b"")
    dovecot_server.append([
        nameonly(1, "Jane Doe", "Invoice wrong"), nameonly(2, "John Roe", "Cannot log in"),
        nameonly(3, '"Jane Doe" <>', "Invoice still wrong"), nameonly(4, None, "No sender at all"),
        nameonly(5, None, "No sender either"),
    ])
    cfg = write_config(tmp_path, dovecot_server)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    customers = {t["id"]: t["customer"] for t in json.loads(heard(cfg, "tickets", "--json", capsys=capsys)[1])}
    assert customers[1] == customers[3] == "Jane Doe (no address)"
    assert customers[2] == "John Roe (no address)"
    assert len({customers[1], customers[2], customers[4], customers[5]}) == 4
    code, out, _ = heard(cfg, "show", "2", capsys=capsys)
    assert "customer: John Roe (no address)" in out and "← John Roe (no address)  " in out
    assert "flagged: From has a name but no address" in out
    body = tmp_path / "reply.txt"
    body.write_text("Here is what I found.\n")
    code, out, err = heard(cfg, "reply", "1", "--body-file", str(body), "--no-send", capsys=capsys)
    assert code != 0 and err.count("\n") == 1 and "#1 has no sender address to answer" in err


def test_a_strangers_ticket_tag_starts_a_new_ticket_instead_of_joining_another_customers(
        pymap_server, database, tmp_path, capsys):
    # Ticket numbers count up from 1: a phishing mail titled "Overdue invoice [#1]" joined customer #1's
    # ticket, reopened it when solved, and was the mail the agent's next reply to them quoted.
    pymap_server.append([
        mail(1),
        mail(2, "Re: Export to CSV fails", sender="bob@cust.example", irt="m1@cust.example"),  # a colleague, CC'd
        mail(3, "Overdue invoice [#1]", sender="ar@billing-notice.example", body="Pay today.\r\n"),
        mail(4, "Still broken [#1]", body="No headers, just the tag.\r\n"),
    ])
    cfg = write_config(tmp_path, pymap_server, database=database)
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    assert heard(cfg, "status", "1", "solved", "--reason", "sent the fix", capsys=capsys)[0] == 0
    pymap_server.append([mail(5, "Re: Overdue invoice [#1]", sender="ar@billing-notice.example")])
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    first = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert first["status"] == "solved"
    assert [m["from"] for m in first["messages"]] == ["ann@cust.example", "bob@cust.example", "ann@cust.example"]
    assert first["messages"][2]["thread_reason"] == "subject tag [#1]"
    strangers = [t for t in json.loads(heard(cfg, "tickets", "--status", "all", "--json", capsys=capsys)[1])
                 if t["customer"] == "ar@billing-notice.example"]
    assert len(strangers) == 2 and all(t["message_count"] == 1 for t in strangers)
    shown = json.loads(heard(cfg, "show", str(strangers[0]["id"]), "--json", capsys=capsys)[1])
    assert shown["messages"][0]["thread_reason"] == "new ticket: subject tag [#1] from someone who is not on that ticket"
    # Someone who wrote in the ticket before may use its tag (and reopens it, as the customer would).
    pymap_server.append([mail(6, "One more thing [#1]", sender="bob@cust.example")])
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    first = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert first["status"] == "open" and first["message_count"] == 4
    # So may a colleague at the customer's organisation who never wrote before, with the tag alone.
    pymap_server.append([mail(7, "Finance asks about [#1]", sender="carol@cust.example")])
    assert heard(cfg, "sync", capsys=capsys)[0] == 0
    first = json.loads(heard(cfg, "show", "1", "--json", capsys=capsys)[1])
    assert first["message_count"] == 5
    assert first["messages"][-1]["thread_reason"] == "subject tag [#1], from cust.example like the ticket's customer"


# -- one clear line for each thing a user gets wrong --------------------------------------
def test_refused_login_is_one_line_naming_the_fix(imap, tmp_path, capsys):
    cfg = write_config(tmp_path, imap, password="wrong-password")
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1
    assert err.count("\n") == 1 and "refused the login" in err and "[imap] username" in err


def test_unreachable_server_is_one_line(pymap_server, tmp_path, capsys):
    from mail.localservers import free_port

    cfg = write_config(tmp_path, pymap_server, port=free_port())
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1 and err.count("\n") == 1
    assert "refused the connection" in err and "[imap] host and port" in err


def test_missing_folder_is_one_line(pymap_server, tmp_path, capsys):
    cfg = write_config(tmp_path, pymap_server, folder="No Such Folder")
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and "[imap] folder" in err


def test_a_tier_with_an_unreadable_max_response_stops_the_sync_with_one_line(pymap_server, tmp_path, capsys):
    pymap_server.append([mail(1)])
    cfg = write_config(tmp_path, pymap_server)
    cfg.write_text(cfg.read_text() + '[tiers.premium]\nmax_response = "soon"\nmembers = ["cust.example"]\n')
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1
    assert err == ("heard: [tiers.premium] max_response = 'soon': cannot read duration 'soon'; "
                   'write e.g. "2h", "90m" or "1d"\n')


def test_a_database_that_cannot_be_opened_stops_the_sync_with_one_line(pymap_server, tmp_path, capsys):
    """The store opens while the sync already fetches: its error still ends the sync, in one line."""
    pymap_server.append([mail(n) for n in range(1, 4)])
    cfg = write_config(tmp_path, pymap_server)
    (tmp_path / "heard.db").write_bytes(b"not a database " * 100)
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1 and err.count("\n") == 1, err
    assert "file is not a database" in err and "check [storage] database" in err
    assert (tmp_path / "heard.db").read_bytes() == b"not a database " * 100


@pytest.mark.dovecot
def test_condstore_modseq_is_recorded_with_the_cursor(dovecot_server, tmp_path, capsys):
    dovecot_server.append([mail(1)])
    cfg = write_config(tmp_path, dovecot_server)
    heard(cfg, "sync", capsys=capsys)
    con = sqlite3.connect(tmp_path / "heard.db")
    (modseq,) = con.execute("SELECT highestmodseq FROM sync_state WHERE folder = 'INBOX'").fetchone()
    assert modseq and modseq > 0


def test_a_reply_to_mail_we_sent_from_another_client_joins_the_ticket(imap, tmp_path, capsys):
    """The customer's client sets only In-Reply-To, to our reply that only the Sent folder has."""
    imap.append([mail(1, "Invoice PDF is blank")])
    ours = (f"From: Support <{SUPPORT}>\r\nTo: ann@cust.example\r\nSubject: Re: Invoice PDF is blank\r\n"
            f"Message-ID: <webmail-1@heard.example>\r\nDate: Mon, 23 Nov 2026 09:10:00 +0100\r\n"
            f"In-Reply-To: <m1@cust.example>\r\n"
            f"References: <m1@cust.example>\r\n\r\nCould you send a screenshot?\r\n").encode()
    imap.append([ours], folder="Sent")
    cfg = write_config(tmp_path, imap)
    cfg.write_text(cfg.read_text().replace('folder = "INBOX"', 'folder = "INBOX"\nsent_folder = "Sent"'))
    heard(cfg, "sync", capsys=capsys)
    imap.append([mail(2, "RE: Invoice PDF is blank", irt="webmail-1@heard.example",
                      date="Mon, 23 Nov 2026 09:20:00 +0100").replace(
        b"References: <webmail-1@heard.example>\r\n", b"")])
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    assert "0 tickets created, 1 tickets updated" in out
    code, out, _ = heard(cfg, "show", "1", "--json", capsys=capsys)
    t = json.loads(out)
    # Our reply itself is in the ticket too (mail/sent.py), so the customer's answer joins by it.
    assert t["message_count"] == 3
    assert t["messages"][-1]["thread_reason"] == "In-Reply-To <webmail-1@heard.example>"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
def test_the_parsing_process_gets_wide_pipes_and_still_parses():
    import fcntl

    from mail.convert import PIPE_BYTES, MessageConverter, _parse_pool, _worker_convert, close_parse_pool

    pool = _parse_pool(MessageConverter.from_parts(["support@heard.example"], "heard.example", {}))
    try:
        for end in (pool._call_queue._writer, pool._result_queue._writer):
            assert fcntl.fcntl(end.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_BYTES
        raw = b"From: a@cust.example\r\nSubject: Hi\r\nMessage-ID: <x@cust.example>\r\n\r\n" + b"body " * 100_000
        (m, _, _), = pool.submit(_worker_convert, [(7, raw, None)]).result()
        assert (m.uid, m.subject, m.raw) == (7, "Hi", b"")  # the bytes stay with the parent
        # It parses at a lower priority: storing (and the app's screen) come first.
        assert pool.submit(os.nice, 0).result() == os.nice(0) + 5
    finally:
        close_parse_pool(pool)


def test_batches_are_cut_by_count_and_by_bytes_in_uid_order():
    from mail.sync import SMALL, plan_batches

    uids = list(range(1, 11))
    # Small mail: by count only.
    assert plan_batches(uids, {}, batch=4, budget=10 * SMALL) == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    # Big mail closes a batch early; one bigger than the budget goes alone; order is kept.
    sizes = {3: 5 * SMALL, 4: 50 * SMALL, 8: 8 * SMALL}
    assert plan_batches(uids, sizes, batch=4, budget=10 * SMALL) == [[1, 2, 3], [4], [5, 6, 7], [8, 9, 10]]
    assert plan_batches([], {}, batch=4) == []


def test_large_batches_wait_for_room_and_everything_is_stored_in_order():
    """Mail fetched and not yet stored stays within the byte budget; a batch over it goes alone."""
    import threading

    from mail.sync import _pipeline

    chunks = [[1], [2], [3, 4], [5], [6], [7, 8, 9]]
    weights = [30, 30, 1, 1, 90, 2]  # e.g. MB: two big attachments, small mail, one over the budget
    lock = threading.Lock()
    held, peaks, stored = [0], [], []

    def fetch(chunk):
        with lock:
            held[0] += weights[chunks.index(chunk)]
            peaks.append((held[0], chunk))
        return {uid: b"x" for uid in chunk}

    def parse(chunk, fetched):
        return lambda: (chunk, None)

    def store(chunk, _cursor, count):
        stored.append(chunk)
        with lock:
            held[0] -= weights[chunks.index(chunk)]

    _pipeline(chunks, fetch=fetch, parse=parse, store=store, weights=weights, budget=40)
    assert stored == chunks
    assert all(h <= 40 or c == [6] for h, c in peaks), peaks
    assert (90, [6]) in peaks  # the one over the budget went through on its own


def _big_mail(n: int, megabytes: int = 4) -> bytes:
    import base64

    payload = base64.encodebytes(os.urandom(megabytes * 3 * 1024 * 1024 // 4)).replace(b"\n", b"\r\n")
    return mail(n, f"Logs {n}", body="").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nLogs attached.\r\n"
        b"--b\r\nContent-Type: application/octet-stream; name=logs.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    ) + payload + b"\r\n--b--\r\n"


def _sync_in_a_child(cfg) -> tuple[str, str, str]:
    """`heard sync` in a process of its own: (exit code, its peak memory in MB, its summary line)."""
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024, r.stdout.strip())")
    out = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "tui.cli", "--config", str(cfg), "sync"],
                         capture_output=True, text=True, timeout=300).stdout
    code, peak_mb, summary = out.split(" ", 2)
    return code, peak_mb, summary


@pytest.mark.dovecot
def test_a_mailbox_of_big_attachments_syncs_in_bounded_memory(dovecot_server, tmp_path):
    """40 mails of 4 MB: fetched a few at a time (by size), not 160 MB at once."""
    dovecot_server.deliver_maildir(dovecot_server.username, [_big_mail(n) for n in range(40)])
    cfg = write_config(tmp_path, dovecot_server)
    code, peak_mb, summary = _sync_in_a_child(cfg)
    out = f"{code} {peak_mb} {summary}"
    assert code == "0" and summary.startswith("40 new messages"), out
    assert int(peak_mb) < 150, f"peak memory {peak_mb} MB for a 160 MB mailbox"
    con = sqlite3.connect(tmp_path / "heard.db")
    assert con.execute("SELECT count(*), min(length(raw)) FROM raw_messages").fetchone() == (40, len(_big_mail(0)))


@pytest.mark.dovecot
def test_one_mail_with_a_40_mb_attachment_syncs_without_copies_of_it(dovecot_server, tmp_path):
    """Parsing copied such an attachment three times over (its body, its part, the part's body), and
    SQLite twice more as it stored it (the bound value, then the row): 204 MB at the peak, now 103 MB."""
    big = _big_mail(1, megabytes=40)  # 40 MB as sent, 30 MB decoded
    dovecot_server.deliver_maildir(dovecot_server.username, [big])
    cfg = write_config(tmp_path, dovecot_server)
    code, peak_mb, summary = _sync_in_a_child(cfg)
    out = f"{code} {peak_mb} {summary}"
    assert code == "0" and summary.startswith("1 new messages"), out
    # The program and the mail as read: no copy of it while it is parsed and stored.
    assert int(peak_mb) < 150, f"peak memory {peak_mb} MB for one mail of {len(big) >> 20} MB"
    con = sqlite3.connect(tmp_path / "heard.db")
    assert con.execute("SELECT raw FROM raw_messages").fetchone()[0] == big  # every byte, as the server has it
    shown = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg), "show", "1", "--json"],
                           capture_output=True, text=True, timeout=60)
    (message,) = json.loads(shown.stdout)["messages"]
    assert [(a["name"], a["size"]) for a in message["attachments"]] == [("logs.bin", 40 * 3 * 1024 * 1024 // 4)]


def test_a_sync_on_a_worker_thread_parses_in_a_spawned_process(imap, tmp_path, monkeypatch):
    """The app syncs on a worker thread, where forking is unsafe: its parsing process is spawned, and parses."""
    import threading

    import mail.sync as ms

    monkeypatch.setattr(ms, "PARALLEL_MIN", 2)  # a parsing process even for a handful of mails
    started = []
    real_pool = ms._parse_pool

    def spy(converter):
        pool = real_pool(converter)
        started.append(pool._mp_context.get_start_method() if pool is not None else None)
        return pool

    monkeypatch.setattr(ms, "_parse_pool", spy)
    imap.append([mail(i, f"Ticket {i}") for i in range(1, 6)])
    cfg = load_config(write_config(tmp_path, imap))
    store = Store(cfg.database)
    done = {}
    worker = threading.Thread(target=lambda: done.setdefault("summary", sync_once(store, cfg)))
    worker.start()
    worker.join(120)
    assert started == ["spawn"]
    assert (done["summary"].new_messages, done["summary"].tickets_created) == (5, 5)


@pytest.mark.dovecot
def test_a_folder_that_is_not_there_is_one_line_naming_the_folders_that_are(dovecot_server, tmp_path, capsys):
    dovecot_server.deliver_maildir(dovecot_server.username, [mail(1)], folder="Support")
    cfg = write_config(tmp_path, dovecot_server, folder="Suport")
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 1 and out == ""
    assert err.startswith(f"heard: cannot open folder 'Suport' on {dovecot_server.host} (")
    assert err.endswith("): check [imap] folder; the folders there are 'INBOX', 'Support'\n"), err
    code, out, err = heard(cfg, "doctor", "--no-round-trip", capsys=capsys)
    assert "check [imap] folder; the folders there are 'INBOX', 'Support'" in out + err


@pytest.mark.parametrize("said, line", [
    ("[SERVERBUG] Internal error occurred. Refer to server log for more information.",
     "example.net could not open folder 'INBOX' just now ([SERVERBUG] Internal error occurred. Refer to server log "
     "for more information.): try again in a moment"),
    ("[NOPERM] Permission denied", "example.net does not let this account read folder 'INBOX' ([NOPERM] Permission "
     "denied): check [imap] folder and username"),
])
def test_a_folder_the_server_cannot_open_right_now_says_so(said, line):
    from mail.imap import folder_problem

    assert folder_problem(None, "INBOX", "example.net", Exception(said)) == line
