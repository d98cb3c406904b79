"""`heard init` and the config file: every mistake is one line naming the key."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest

from mail.config import ConfigError, load_config
from tui.cli import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_init_by_flags_writes_a_config_heard_can_load(tmp_path, capsys):
    path = tmp_path / "conf" / "heard.toml"
    code, out, err = run(
        capsys, "--config", str(path), "init", "--yes", "--address", "Support@Example.com",
        "--imap-host", "imap.example.com", "--password-command", "pass show mail/support",
        "--agent-name", "Ana Lopez", "--database", str(tmp_path / "h.db"),
    )
    assert code == 0, err
    assert f"wrote {path}" in out
    cfg = load_config(path)
    assert cfg.address == "support@example.com"
    assert (cfg.imap.host, cfg.imap.port, cfg.imap.security, cfg.imap.username) == (
        "imap.example.com", 993, "tls", "Support@Example.com")
    assert cfg.imap.password_command == "pass show mail/support"
    assert cfg.agent == "Ana Lopez"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "pass show" in path.read_text() and "password =" not in path.read_text()


def test_init_writes_business_hours_in_this_machines_zone_not_utc(tmp_path, capsys, monkeypatch):
    # Without [hours] a desk in Chicago promised UTC hours: "by 17:00" meant 11:00 at the desk.
    from mail.ack import ack_settings

    monkeypatch.setenv("TZ", "America/Chicago")
    flags = ["init", "--yes", "--address", "s@shop.example", "--imap-host", "imap.shop.example",
             "--password-command", "pass show shop", "--agent-name", "Ana"]
    code, out, err = run(capsys, "--config", str(tmp_path / "a.toml"), *flags)
    assert code == 0, err
    assert "business hours Mon-Fri 09:00-17:00 America/Chicago" in out
    hours = ack_settings(load_config(tmp_path / "a.toml")).hours
    assert (hours.tz.key, hours.start.hour, hours.end.hour, sorted(hours.days)) == ("America/Chicago", 9, 17,
                                                                                    [0, 1, 2, 3, 4])
    code, out, err = run(capsys, "--config", str(tmp_path / "b.toml"), *flags, "--timezone", "Europe/Berlin")
    assert code == 0 and ack_settings(load_config(tmp_path / "b.toml")).hours.tz.key == "Europe/Berlin"
    code, out, err = run(capsys, "--config", str(tmp_path / "c.toml"), *flags, "--timezone", "Berlin")
    assert code == 1 and not (tmp_path / "c.toml").exists()
    assert err == "heard: --timezone = 'Berlin' is not a time zone: use an IANA name, e.g. Europe/Berlin\n"


def test_init_refuses_to_overwrite_and_to_guess(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("x")
    code, _, err = run(capsys, "--config", str(path), "init", "--yes")
    assert code == 1 and "already exists" in err and "--force" in err
    code, _, err = run(capsys, "--config", str(tmp_path / "new.toml"), "init", "--yes", "--address", "s@x.example")
    assert code == 1 and err.strip() == "heard: --imap-host is needed when not asking interactively"


def init_interactively(path, answers: str) -> subprocess.CompletedProcess:
    """`heard init` as on a terminal, with ``answers`` typed at its prompts."""
    script = (
        # No full name from the account database: the same prompts on every machine.
        "import sys; sys.stdin.isatty = lambda: True; import tui.cli; tui.cli._full_name = lambda: None; "
        "from tui.cli import main; "
        f"sys.exit(main(['--config', {str(path)!r}, 'init']))"
    )
    return subprocess.run([sys.executable, "-c", script], input=answers, capture_output=True, text=True, timeout=60)


def test_init_asks_when_run_interactively(tmp_path):
    """Driven through a real prompt: answers typed on stdin."""
    path = tmp_path / "asked.toml"
    res = init_interactively(path, "help@shop.example\nmail.shop.example\nstarttls\n\n\n\npass show shop\n\nAna\n\n")
    assert res.returncode == 0, res.stderr
    cfg = load_config(path)
    assert (cfg.address, cfg.imap.security, cfg.imap.port, cfg.imap.host) == ("help@shop.example", "starttls", 143, "mail.shop.example")
    assert "IMAP host" in res.stdout


def test_init_asks_again_after_a_wrong_or_missing_answer(tmp_path):
    """A typo costs one line, not every answer given so far; "keyring" picks the system keyring."""
    path = tmp_path / "again.toml"
    res = init_interactively(path, "help at shop\nhelp@shop.example\n\nssl\n\n99999\n\n\n\n\nkeyring\n\n\nAna\n\n")
    assert res.returncode == 0, res.stderr
    assert "that needs to be an email address, like support@example.com" in res.stderr
    assert "that needs to be one of tls, starttls, none" in res.stderr
    assert "that needs to be a port number (1-65535)" in res.stderr
    assert "this one is needed (or pass it as --password-command)" in res.stderr
    assert "this one is needed (or pass it as --agent-name)" in res.stderr  # customers read it under every promise
    cfg = load_config(path)
    assert cfg.agent_name == "Ana"
    assert (cfg.address, cfg.imap.security, cfg.imap.port, cfg.imap.host) == (
        "help@shop.example", "tls", 993, "imap.shop.example")
    assert cfg.imap.keyring and not cfg.imap.password_command
    # Flags are checked the same way.
    res = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(tmp_path / "f.toml"), "init", "--yes",
                          "--address", "help@shop.example", "--imap-host", "h", "--imap-security", "ssl",
                          "--password-command", "true"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1 and res.stderr.strip() == (
        "heard: --imap-security = 'ssl' is not one of tls, starttls, none")


def test_init_asked_for_an_smtp_relay_that_takes_no_login_writes_none(tmp_path):
    # "-" (or "none") at the SMTP username: no username, and the IMAP password is not copied to [smtp].
    for answer in ("-", "none"):
        path = tmp_path / f"relay{len(answer)}.toml"
        res = init_interactively(path, "help@shop.example\nmail.shop.example\n\n\n\n\npass show shop\n"
                                       f"relay.shop.example\nnone\n\n{answer}\n\nAna\n\n")
        assert res.returncode == 0, res.stderr
        assert "SMTP username ('-' for a relay that takes no login)" in res.stdout
        cfg = load_config(path)
        assert (cfg.smtp.host, cfg.smtp.port, cfg.smtp.security, cfg.smtp.username) == ("relay.shop.example", 25,
                                                                                          "none", "")
        assert not (cfg.smtp.password_command or cfg.smtp.keyring or cfg.smtp.oauth2_command)
        assert "[smtp]" in path.read_text() and path.read_text().count("pass show shop") == 1
    # Any other answer is the account to log in as, with the IMAP login's password source.
    path = tmp_path / "login.toml"
    res = init_interactively(path, "help@shop.example\nmail.shop.example\n\n\n\n\npass show shop\n"
                                   "smtp.shop.example\nstarttls\n\nsender@shop.example\n\nAna\n\n")
    assert res.returncode == 0, res.stderr
    cfg = load_config(path)
    assert (cfg.smtp.username, cfg.smtp.password_command) == ("sender@shop.example", "pass show shop")


def test_init_by_flags_for_an_smtp_relay_that_takes_no_login(tmp_path, capsys):
    flags = ["init", "--yes", "--address", "s@shop.example", "--imap-host", "imap.shop.example",
             "--password-command", "pass show shop", "--agent-name", "Ana", "--smtp-host", "relay.lan",
             "--smtp-security", "none"]
    code, out, err = run(capsys, "--config", str(tmp_path / "a.toml"), *flags, "--smtp-no-login")
    assert code == 0, err
    cfg = load_config(tmp_path / "a.toml")
    assert (cfg.smtp.host, cfg.smtp.port, cfg.smtp.username, cfg.smtp.password_command) == ("relay.lan", 25, "", None)
    code, out, err = run(capsys, "--config", str(tmp_path / "b.toml"), *flags, "--smtp-no-login",
                         "--smtp-username", "s@shop.example")
    assert code == 1 and not (tmp_path / "b.toml").exists()
    assert err == "heard: --smtp-no-login and --smtp-username: pass one (no login, or the account to log in as)\n"


BASE = """
[account]
address = "support@example.com"
[imap]
host = "imap.example.com"
username = "support@example.com"
password_command = "echo pw"
"""


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "[account] section is missing"),
        (BASE.replace('host = "imap.example.com"\n', ""), "[imap] host is missing"),
        (BASE + "port = 99999\n", "[imap] port = 99999"),
        (BASE + 'port = "993"\n', "[imap] port must be a whole number (no quotes)"),
        (BASE + 'security = "ssl"\n', "[imap] security = 'ssl': use one of tls, starttls, none"),
        (BASE.replace('password_command = "echo pw"', 'password = "hunter2"'), "[imap] set password_command"),
        (BASE + 'password = "hunter2"\n', "[imap] password must not be in the config file"),
        (BASE + "[smtpp]\nhost='x'\n", "unknown section [smtpp]"),
        ("[account\n", "is not valid TOML"),
        (BASE.replace('username = "support@example.com"\n', ""), "[imap] username is missing"),
        (BASE + '[smtp]\nhost = "smtp.example.com"\nusername = "support@example.com"\n',
         '[smtp] set password_command = "...", keyring = true or oauth2_command = "...", '
         'or username = "" for a server that needs no login'),
        (BASE + 'oauth2_command = "oama access support@example.com"\n',
         "[imap] both oauth2_command and password_command are set: keep oauth2_command for an OAuth2 login"),
        (BASE.replace('password_command = "echo pw"', 'keyring = true\noauth2_command = "x"'),
         "[imap] both oauth2_command and keyring are set"),
        (BASE + '[smtp]\nhost = "smtp.example.com"\nusername = ""\noauth2_command = "x"\n',
         "[smtp] oauth2_command needs username: the account the token belongs to"),
    ],
)
def test_config_mistakes_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "text,message",
    [
        (BASE + 'foldr = "Support"\n', "[imap] foldr is not a known key: did you mean folder?"),
        (BASE + '[smtp]\nhost = "relay.lan"\nusername = ""\nsent_foldr = "Sent"\n',
         "[smtp] sent_foldr is not a known key: did you mean sent_folder?"),
        (BASE + '[agent]\nname = "Ana"\nsignatur = "Ana"\n', "[agent] signatur is not a known key: did you mean signature?"),
        (BASE + '[storage]\ndatabse = "x.db"\n', "[storage] databse is not a known key: did you mean database?"),
        (BASE.replace("[imap]", 'own_adresses = ["a@example.com"]\n[imap]'),
         "[account] own_adresses is not a known key: did you mean own_addresses?"),
    ],
)
def test_a_misspelt_key_is_one_line_not_silently_its_default(tmp_path, capsys, text, message):
    # "foldr" used to sync INBOX instead of the folder meant, "sent_foldr" to thread without the Sent folder
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, out, err = run(capsys, "--config", str(path), "tickets")
    assert code == 1 and out == ""
    assert err == f"heard: {message} (see README, Configuration)\n"


def test_a_config_path_that_is_a_directory_is_one_line(tmp_path, capsys):
    code, out, err = run(capsys, "--config", str(tmp_path), "tickets")
    assert code == 1
    assert err == f"heard: {tmp_path} is a directory: give --config the config file itself (e.g. {tmp_path / 'config.toml'})\n"


@pytest.mark.parametrize(
    "keys,message",
    [
        ('"app.take_nxt" = "N"', "heard: [keys] 'app.take_nxt' is not a binding id: did you mean app.take_next?"),
        ('"solve" = "S"', "heard: [keys] 'solve' is not a binding id: did you mean change.solve?"),
        ('"app.take_next" = 5', "heard: [keys] 'app.take_next' = 5: write the key in quotes, e.g. \"N\" or \"ctrl+n\""),
    ],
)
def test_a_keymap_that_remaps_nothing_stops_the_app_with_one_line(tmp_path, keys, message):
    # A misspelt binding id used to be ignored: the app opened with the old key and nothing said why.
    path = tmp_path / "c.toml"
    path.write_text(BASE + f'[storage]\ndatabase = "{tmp_path / "h.db"}"\n[keys]\n{keys}\n')
    res = subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(path), "app"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr == message + "\n"


def test_an_smtp_relay_that_needs_no_login_needs_no_password(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(BASE + '[smtp]\nhost = "relay.lan"\nport = 25\nsecurity = "none"\nusername = ""\n')
    cfg = load_config(path)
    assert (cfg.smtp.host, cfg.smtp.port, cfg.smtp.username, cfg.smtp.password_command) == ("relay.lan", 25, "", None)


def test_missing_config_says_how_to_start(tmp_path, capsys):
    code, out, err = run(capsys, "--config", str(tmp_path / "none.toml"), "tickets")
    assert code == 1
    assert err.strip().endswith("run `heard init` (or `heard demo` to try it without an account)")


def test_heard_config_env_is_honoured(tmp_path, monkeypatch, capsys):
    path = tmp_path / "env.toml"
    path.write_text(BASE + f'[storage]\ndatabase = "{tmp_path / "e.db"}"\n')
    monkeypatch.setenv("HEARD_CONFIG", str(path))
    code, out, err = run(capsys, "tickets")
    assert code == 0 and out.strip() == "no tickets"


def test_config_may_come_after_the_command(tmp_path, capsys):
    path = tmp_path / "after.toml"
    path.write_text(BASE + f'[storage]\ndatabase = "{tmp_path / "a.db"}"\n')
    for args, said in ((("tickets", "--config", str(path)), "no tickets"),
                       (("report", f"--config={path}"), "promises made so far: 0"),
                       (("--config", str(tmp_path / "none.toml"), "tickets", "--config", str(path)), "no tickets")):
        code, out, err = run(capsys, *args)
        assert code == 0 and err == "" and out.startswith(said), (args, out, err)
    code, out, err = run(capsys, "tickets", "--config", str(tmp_path / "none.toml"))
    assert code == 1 and "none.toml" in err


@pytest.mark.parametrize(
    "command,message",
    [("exit 3", "password_command failed with exit 3"), ("true", "password_command printed nothing")],
)
def test_a_broken_password_command_is_one_line(tmp_path, capsys, command, message):
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace("echo pw", command) + f'[storage]\ndatabase = "{tmp_path / "e.db"}"\n')
    code, out, err = run(capsys, "--config", str(path), "sync")
    assert code == 1 and message in err and err.count("\n") == 1


def test_a_keyring_that_cannot_be_read_is_one_line(tmp_path, capsys):
    keyring = pytest.importorskip("keyring")
    from keyring.backends.fail import Keyring as NoKeyring

    path = tmp_path / "k.toml"
    path.write_text(BASE.replace('password_command = "echo pw"', "keyring = true")
                    + f'[storage]\ndatabase = "{tmp_path / "k.db"}"\n')
    before = keyring.get_keyring()
    keyring.set_keyring(NoKeyring())
    try:
        with pytest.raises(ConfigError) as exc:
            load_config(path).imap.password()
    finally:
        keyring.set_keyring(before)
    message = str(exc.value)
    assert "\n" not in message and message.startswith("[imap] keyring = true, but the system keyring cannot be read")
    assert message.endswith('use password_command instead (e.g. "pass show mail/support")')


def test_tickets_on_a_terminal_is_one_line_per_ticket_cut_to_its_width():
    import unicodedata
    from datetime import datetime, timedelta, timezone

    from tui.cli import _ticket_table

    now = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
    base = dict(status="new", priority="normal", holder=None, promise_deadline=None)
    rows = [
        dict(base, id=7, customer="ann@cust.example", subject="Export to CSV stops at row 1000 every single time"),
        dict(base, id=12, customer="sato.hanako@example.com", subject="請求書のPDFがダウンロードできません、助けてください",
             priority="urgent", promise_deadline=now + timedelta(hours=3)),
        dict(base, id=130, customer="a-very-long-address-indeed@subdomain.customer.example", subject="Login",
             status="pending", holder="Ana", promise_deadline=now - timedelta(hours=1)),
    ]

    def cells(line: str) -> int:
        return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)

    lines = _ticket_table(rows, now, 120, timedelta(hours=2), timezone.utc)
    assert len(lines) == 3 and all(cells(line) <= 120 for line in lines), lines
    assert lines[0].startswith("#7    new ") and lines[0].endswith("…")  # the subject is cut, with an ellipsis
    assert "urgent" in lines[1] and " by " in lines[1] and lines[1].endswith("…")
    assert "broke " in lines[2] and "@Ana" in lines[2] and lines[2].endswith("Login")
    assert "a-very-long-address-indeed@su…" in lines[2]  # cut at 30 cells
    assert len({line.index("#") for line in lines}) == 1
    # 80 columns: the address column gives way so the subject keeps room.
    lines = _ticket_table(rows[:2], now, 80, timedelta(hours=2), timezone.utc)
    assert all(cells(line) <= 80 for line in lines), lines
    assert "Export to CSV" in lines[0] and "ann@cust.example" in lines[0] and "sato.hanako@" in lines[1] and "…  by " in lines[1]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["ack", "--bogus"], "heard ack: unrecognized arguments: --bogus (see `heard ack --help`)"),
        (["show"], "heard show: the following arguments are required: ID (see `heard show --help`)"),
        (["show", "twelve"],
         "heard show: argument ID: 'twelve' is not a ticket number: write 12 or '#12' (see `heard show --help`)"),
        (["take", "#"], "heard take: argument ID: '#' is not a ticket number: write 12 or '#12' (see `heard take --help`)"),
        (["outbox", "cancel", "x"],
         "heard outbox cancel: argument id: invalid int value: 'x' (see `heard outbox cancel --help`)"),
        (["tikets"], "heard: no command 'tikets': `heard --help` lists them"),
    ],
)
def test_a_wrong_flag_or_argument_is_one_line_naming_the_command(capsys, argv, message):
    # It used to be argparse's usage block, and a wrong flag showed the usage of `heard` itself.
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == message + "\n"


@pytest.mark.parametrize("argv", [
    ["show", "#12"], ["show", "12"], ["take", "#12"], ["status", "#12", "solved", "--reason", "x"],
    ["priority", "#12", "high", "--reason", "x"], ["release", "#12", "--reason", "x"],
    ["assign", "#12", "Ben", "--reason", "x"], ["reply", "#12", "--body-file", "-"],
    ["update", "#12", "--until", "4h", "--reason", "x"],
])
def test_a_ticket_number_is_taken_as_heard_writes_it(argv):
    # Every listing writes "#12"; `heard show '#12'` was "argument id: invalid int value: '#12'".
    from tui.cli import build_parser

    assert build_parser().parse_args(argv).id == 12
    assert build_parser().parse_args(["ack", "--dry-run", "--skip", "#12", "--skip", "3"]).skip == [12, 3]


def test_heard_keys_lists_every_binding_id_with_the_users_keys(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[account]\naddress = "support@example.com"\n[imap]\nhost = "127.0.0.1"\nsecurity = "none"\n'
        'username = "u"\npassword_command = "true"\n[keys]\n"app.take_next" = "N"\n')
    assert main(["--config", str(cfg), "keys"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^app\.take_next +N +Take next +\(remapped\)$", out, flags=re.M), out
    assert re.search(r"^change\.solve +s +Solve$", out, flags=re.M)
    assert re.search(r"^queue\.search +slash +Search$", out, flags=re.M)
    assert re.search(r"^reader\.bottom +G,end +Bottom$", out, flags=re.M)  # the whole-mail reader's keys too
    # Without a config yet: the defaults.
    assert main(["--config", str(tmp_path / "none.toml"), "keys"]) == 0
    assert re.search(r"^app\.take_next +n +Take next$", capsys.readouterr().out, flags=re.M)


def test_a_database_url_with_a_password_is_refused_in_one_line(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[account]\naddress = "support@example.com"\n[imap]\nhost = "127.0.0.1"\nsecurity = "none"\n'
        'username = "u"\npassword_command = "true"\n[storage]\ndatabase = "postgresql://heard:s3cret@db/heard"\n')
    assert main(["--config", str(cfg), "tickets"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[storage] database has a password in it" in err and "~/.pgpass" in err


def test_a_database_path_that_is_a_folder_is_one_line_naming_the_key(tmp_path, capsys):
    # It said "... unable to open database file; another heard may be writing: try again".
    folder = tmp_path / "data"
    folder.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        '[account]\naddress = "support@example.com"\n[imap]\nhost = "127.0.0.1"\nsecurity = "none"\n'
        f'username = "u"\npassword_command = "true"\n[storage]\ndatabase = "{folder}"\n')
    code, out, err = run(capsys, "--config", str(cfg), "tickets")
    assert code == 1 and out == ""
    assert err == (f"heard: database '{folder}' is a folder: give [storage] database a file in it, "
                   f"e.g. {folder / 'heard.db'}\n")
