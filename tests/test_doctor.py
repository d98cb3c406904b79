"""`heard doctor` checks IMAP, SMTP and a real round trip through both servers."""

from __future__ import annotations

import json

import pytest

from mail.localservers import SmtpServer, free_port
from tests.test_sync import SUPPORT, write_config
from tui.cli import main


@pytest.fixture
def delivering_smtp(pymap_server, tmp_path):
    with SmtpServer(tmp_path / "smtp", deliver=lambda frm, rcpts, data: pymap_server.deliver_maildir(pymap_server.username, data)) as s:
        yield s


def with_smtp(path, port):
    path.write_text(path.read_text() + f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
                    'username = ""\npassword_command = "true"\n')
    return path


def test_doctor_reports_each_check_and_the_round_trip(pymap_server, delivering_smtp, tmp_path, capsys):
    cfg = with_smtp(write_config(tmp_path, pymap_server), delivering_smtp.port)
    code = main(["--config", str(cfg), "doctor", "--timeout", "20"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[0].startswith(f"ok   imap: {pymap_server.username}@127.0.0.1") and "offers IDLE" in out[0]
    assert out[1].startswith("ok   smtp:")
    assert out[2].startswith(f"ok   round trip: a message to {SUPPORT} reached INBOX")
    # The check message is recognised by the sync as automated, never a customer's ticket.
    main(["--config", str(cfg), "sync"])
    assert "1 automated" in capsys.readouterr().out
    # It is kept, but as a closed ticket: nothing in the queue for anyone to answer.
    main(["--config", str(cfg), "tickets", "--json"])
    assert json.loads(capsys.readouterr().out) == []
    main(["--config", str(cfg), "tickets", "--status", "closed", "--json"])
    (check,) = json.loads(capsys.readouterr().out)
    main(["--config", str(cfg), "show", str(check["id"]), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["subject"] == "heard doctor: round trip check"
    assert shown["messages"][0]["automated_reason"] == "heard doctor round trip"
    assert [(e["new"], e["reason"]) for e in shown["events"]] == [
        ("closed", "heard doctor's round-trip check: it needs no answer")]


def test_doctor_says_what_is_wrong_with_smtp(pymap_server, tmp_path, capsys):
    cfg = with_smtp(write_config(tmp_path, pymap_server), free_port())
    code = main(["--config", str(cfg), "doctor"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith("ok   imap")
    assert out[1].startswith("FAIL smtp: ") and "refused the connection" in out[1] and "[smtp]" in out[1]


def test_doctor_without_smtp_section_says_how_to_add_it(pymap_server, tmp_path, capsys):
    cfg = write_config(tmp_path, pymap_server)
    code = main(["--config", str(cfg), "doctor"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1 and out[-1].startswith("FAIL smtp: no [smtp] section")


def test_a_customer_mail_with_the_doctor_header_is_still_a_ticket_to_answer(pymap_server, tmp_path, capsys):
    from tests.test_sync import mail

    pymap_server.append([mail(1, "Please help", extra="X-Heard-Doctor: 1\r\n")])
    cfg = write_config(tmp_path, pymap_server)
    main(["--config", str(cfg), "sync"])
    capsys.readouterr()
    main(["--config", str(cfg), "tickets", "--json"])
    (ticket,) = json.loads(capsys.readouterr().out)
    assert ticket["subject"] == "Please help" and ticket["status"] == "new"


def test_doctor_sends_through_a_relay_that_takes_no_login_as_heard_init_wrote_it(pymap_server, delivering_smtp,
                                                                                tmp_path, capsys):
    # The test SMTP server offers no AUTH: a login attempt would fail the check.
    path = tmp_path / "relay.toml"
    code = main(["--config", str(path), "init", "--yes", "--address", SUPPORT, "--imap-host", pymap_server.host,
                 "--imap-port", str(pymap_server.port), "--imap-security", "none",
                 "--imap-username", pymap_server.username,
                 "--password-command", f"printf '%s' '{pymap_server.password}'", "--agent-name", "Ana",
                 "--smtp-host", "127.0.0.1", "--smtp-port", str(delivering_smtp.port), "--smtp-security", "none",
                 "--smtp-no-login", "--database", str(tmp_path / "heard.db")])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["--config", str(path), "doctor", "--timeout", "20"])
    out = capsys.readouterr().out.splitlines()
    assert code == 0, out
    assert out[1] == f"ok   smtp: 127.0.0.1:{delivering_smtp.port} (none, no login) accepted us"
    assert out[2].startswith(f"ok   round trip: a message to {SUPPORT} reached INBOX")
