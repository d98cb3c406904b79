"""OAuth2 (XOAUTH2) logins, as Gmail and Microsoft 365 want them: a real Dovecot whose oauth2 passdb
checks each token with an introspection endpoint, and an SMTP server that takes AUTH XOAUTH2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import OAUTH2_TOKEN
from mail.config import load_config
from mail.localservers import SmtpServer
from tui.cli import main

SUPPORT = "support@heard.example"


def mail(n: int, subject: str) -> bytes:
    return (
        f"From: Ann Example <ann@cust.example>\r\nTo: {SUPPORT}\r\nSubject: {subject}\r\n"
        f"Message-ID: <oauth{n}@cust.example>\r\nDate: Mon, 23 Nov 2026 09:00:00 +0100\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        "The export stops at row 1000.\r\n"
    ).encode()


def token_command(tmp_path: Path, token: str) -> str:
    """A stand-in for oama / mailctl: prints the token, and counts how often it was asked."""
    script = tmp_path / "token.sh"
    script.write_text(f"#!/bin/sh\necho x >> {tmp_path / 'asked'}\nprintf '%s\\n' '{token}'\n")
    script.chmod(0o755)
    return str(script)


def times_asked(tmp_path: Path) -> int:
    path = tmp_path / "asked"
    return len(path.read_text().splitlines()) if path.exists() else 0


def write_config(tmp_path: Path, imap, smtp: SmtpServer | None, command: str) -> Path:
    path = tmp_path / "config.toml"
    text = f"""
[account]
address = "{SUPPORT}"
[imap]
host = "{imap.host}"
port = {imap.port}
security = "none"
username = "{imap.username}"
oauth2_command = "{command}"
[storage]
database = "{tmp_path / 'heard.db'}"
[agent]
name = "Ana"
"""
    if smtp is not None:
        text += f"""
[smtp]
host = "{smtp.host}"
port = {smtp.port}
security = "none"
username = "{SUPPORT}"
oauth2_command = "{command}"
"""
    path.write_text(text)
    return path


def heard(cfg: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--config", str(cfg), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def oauth_smtp():
    with SmtpServer(oauth2_tokens={OAUTH2_TOKEN: SUPPORT}) as server:
        yield server


def test_sync_and_reply_log_in_with_a_fresh_oauth2_token(oauth2_dovecot, oauth_smtp, tmp_path, capsys):
    oauth2_dovecot.append([mail(1, "Export to CSV fails")])
    cfg = write_config(tmp_path, oauth2_dovecot, oauth_smtp, token_command(tmp_path, OAUTH2_TOKEN))
    assert "password" not in cfg.read_text()

    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    assert "1 new messages, 1 tickets created" in out
    assert oauth2_dovecot.oauth2.asked == [OAUTH2_TOKEN]  # Dovecot checked the token we sent

    # The reply goes out over SMTP with the token too.
    body = tmp_path / "reply.txt"
    body.write_text("Hi Ann,\n\nThe export works again.\n")
    code, out, err = heard(cfg, "reply", "1", "--body-file", str(body), capsys=capsys)
    assert code == 0, err
    (sent,) = oauth_smtp.wait_for(1)
    assert sent.rcpt_tos == ("ann@cust.example",)
    assert oauth_smtp.oauth2_attempts == [(SUPPORT, OAUTH2_TOKEN)]

    # Tokens expire within the hour: the command runs again for every login, never cached by heard.
    oauth2_dovecot.append([mail(2, "Second question")])
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0 and "1 new messages" in out
    assert times_asked(tmp_path) == 3  # sync, send, sync

    code, out, err = heard(cfg, "doctor", "--no-round-trip", capsys=capsys)
    assert code == 0, out + err
    assert f"support@{oauth2_dovecot.host}:{oauth2_dovecot.port} (OAuth2), INBOX has 2 messages" in out
    assert "(none, OAuth2) accepted us" in out


def test_a_refused_token_is_one_line_and_the_reply_stays_queued(oauth2_dovecot, oauth_smtp, tmp_path, capsys):
    oauth2_dovecot.append([mail(1, "Export to CSV fails")])
    good = write_config(tmp_path, oauth2_dovecot, None, token_command(tmp_path, OAUTH2_TOKEN))
    assert heard(good, "sync", capsys=capsys)[0] == 0

    expired = write_config(tmp_path, oauth2_dovecot, oauth_smtp, "printf expired-token")
    code, out, err = heard(expired, "sync", capsys=capsys)
    assert code != 0
    assert err == ("heard: 127.0.0.1 refused the OAuth2 token for 'support': check that [imap] oauth2_command "
                   "prints a fresh access token for this account (run it by hand)\n")
    assert "Traceback" not in err
    assert "expired-token" in oauth2_dovecot.oauth2.asked

    body = tmp_path / "reply.txt"
    body.write_text("Hi Ann,\n\nThe export works again.\n")
    code, out, err = heard(expired, "reply", "1", "--body-file", str(body), capsys=capsys)
    assert "refused the OAuth2 token for 'support@heard.example': check that [smtp] oauth2_command" in err
    assert oauth_smtp.messages == []
    assert "queued reply to #1 as outbox #1" in out and "0 sent" in out
    code, out, err = heard(expired, "outbox", "--json", capsys=capsys)
    (row,) = json.loads(out)
    assert row["state"] == "queued"  # nothing lost: it goes once the token is good
    assert "refused the OAuth2 token for 'support@heard.example'" in row["last_error"]

    fixed = write_config(tmp_path, oauth2_dovecot, oauth_smtp, token_command(tmp_path, OAUTH2_TOKEN))
    code, out, err = heard(fixed, "outbox", "send", capsys=capsys)
    assert code == 0, err
    assert len(oauth_smtp.wait_for(1)) == 1


def test_a_failing_token_command_is_reported_before_any_network_use(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[account]
address = "{SUPPORT}"
[imap]
host = "imap.gmail.invalid"
username = "{SUPPORT}"
oauth2_command = "echo 'oama: no refresh token for {SUPPORT}' >&2; exit 3"
[storage]
database = "{tmp_path / 'heard.db'}"
""")
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code != 0
    assert err.strip() == (f"heard: [imap] oauth2_command failed with exit 3 (oama: no refresh token for {SUPPORT}): "
                           "run it by hand to check")


def test_a_server_without_xoauth2_says_so(pymap_server, tmp_path, capsys):
    cfg = write_config(tmp_path, pymap_server, None, "printf some-token")
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code != 0
    assert "does not offer OAuth2 login (AUTH=XOAUTH2): use password_command instead of [imap] oauth2_command" in err
    assert len(err.strip().splitlines()) == 1


def test_init_writes_an_oauth2_login_for_gmail(tmp_path, capsys):
    path = tmp_path / "gmail.toml"
    code = main(["--config", str(path), "init", "--yes", "--address", "help@gmail.com",
                 "--imap-host", "imap.gmail.com", "--oauth2-command", "oama access help@gmail.com",
                 "--smtp-host", "smtp.gmail.com", "--smtp-security", "starttls",
                 "--agent-name", "Ana"])
    assert code == 0, capsys.readouterr().err
    cfg = load_config(path)
    assert cfg.imap.oauth2_command == cfg.smtp.oauth2_command == "oama access help@gmail.com"
    assert cfg.imap.password_command is None and cfg.smtp.password_command is None
    assert (cfg.imap.port, cfg.smtp.port) == (993, 587)
    assert cfg.smtp.sent_folder == ""  # Gmail files its own copy of what is sent

    code = main(["--config", str(tmp_path / "both.toml"), "init", "--yes", "--address", "help@gmail.com",
                 "--imap-host", "imap.gmail.com", "--oauth2-command", "oama access help@gmail.com",
                 "--password-command", "pass show gmail"])
    assert code != 0
    assert "pass one" in capsys.readouterr().err


def test_init_asks_gmail_users_for_a_token_command(tmp_path):
    from test_config_cli import init_interactively

    path = tmp_path / "asked.toml"
    # address, security, host (suggested: imap.gmail.com), port, username, folder, token command,
    # smtp host (suggested: smtp.gmail.com), its security, port, username, sent folder (suggested: none), name, email
    res = init_interactively(path, "help@gmail.com\n\n\n\n\n\noama access help@gmail.com\n\n\n\n\n\nAna\n\n")
    assert res.returncode == 0, res.stderr
    assert "imap.gmail.com signs in with OAuth2" in res.stderr
    cfg = load_config(path)
    assert cfg.imap.host == "imap.gmail.com"
    assert cfg.imap.oauth2_command == "oama access help@gmail.com" and cfg.imap.password_command is None
    assert (cfg.smtp.host, cfg.smtp.security, cfg.smtp.port, cfg.smtp.sent_folder) == ("smtp.gmail.com", "tls", 465, "")
    assert cfg.smtp.oauth2_command == "oama access help@gmail.com"

    # Microsoft 365 sends over STARTTLS on 587.
    path = tmp_path / "m365.toml"
    res = init_interactively(path, "help@shop.example\noutlook.office365.com\n\n\n\n\noama access help@shop.example\n"
                                   "\n\n\n\n\nAna\n\n")
    assert res.returncode == 0, res.stderr
    cfg = load_config(path)
    assert (cfg.smtp.host, cfg.smtp.security, cfg.smtp.port) == ("smtp.office365.com", "starttls", 587)
