"""`heard doctor` checks IMAP, SMTP and a real round trip through both servers."""

from __future__ import annotations

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
