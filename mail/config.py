"""The config file: TOML, typed, every mistake reported in one line naming the key.

Credentials never live here: a ``password_command`` (first line of its
output), the system keyring (``keyring = true``), or, for Gmail and
Microsoft 365, an ``oauth2_command`` that prints a fresh OAuth2 access token
(heard then logs in with XOAUTH2).
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Any

from storage.deadlines import TierSpec, parse_duration, parse_tiers

SECURITY = ("tls", "starttls", "none")


class ConfigError(ValueError):
    """One line: which key or server, and what to do."""


def default_config_path() -> Path:
    env = os.environ.get("HEARD_CONFIG")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "heard" / "config.toml"


def default_database() -> str:
    if sys.platform == "darwin":
        return "~/Library/Application Support/heard/heard.db"
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return f"{base}/heard/heard.db"


@dataclass
class ServerConfig:
    section: str
    host: str
    port: int
    security: str
    username: str
    password_command: str | None = None
    keyring: bool = False
    oauth2_command: str | None = None  # prints an OAuth2 access token: XOAUTH2 instead of a password
    folder: str = "INBOX"
    sent_folder: str = ""
    idle: bool = True  # use IMAP IDLE when the server offers it; false forces polling
    poll_interval: int = 30  # seconds between polls without IDLE

    def _run(self, key: str, command: str, what: str) -> str:
        """The first line a credential command prints."""
        try:
            out = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"[{self.section}] {key} took over 60 s: check it runs on its own") from None
        if out.returncode != 0:
            err = (out.stderr or "").strip().splitlines()
            tail = f" ({err[-1]})" if err else ""
            raise ConfigError(f"[{self.section}] {key} failed with exit {out.returncode}{tail}: run it by hand to check")
        lines = out.stdout.splitlines()
        if not lines or not lines[0].strip():
            raise ConfigError(f"[{self.section}] {key} printed nothing: it must print {what}")
        return lines[0]

    def oauth2_token(self) -> str:
        """A fresh OAuth2 access token from ``oauth2_command``, fetched at every login (tokens expire)."""
        if not self.oauth2_command:
            raise ConfigError(f"[{self.section}] oauth2_command is not set")
        return self._run("oauth2_command", self.oauth2_command, "an access token").strip()

    def password(self) -> str:
        """Fetch the password now; never stored anywhere by heard."""
        if self.password_command:
            return self._run("password_command", self.password_command, "the password")
        if self.keyring:
            try:
                import keyring
            except ImportError:
                raise ConfigError(
                    f"[{self.section}] keyring = true needs the keyring package: pip install 'heard[keyring]'"
                ) from None
            try:
                secret = keyring.get_password("heard", f"{self.section}:{self.username}@{self.host}")
            except Exception as exc:  # keyring.errors.KeyringError: no backend, locked, refused
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
                raise ConfigError(
                    f"[{self.section}] keyring = true, but the system keyring cannot be read ({first}): "
                    "use password_command instead (e.g. \"pass show mail/support\")"
                ) from None
            if not secret:
                raise ConfigError(
                    f"[{self.section}] no password in the keyring for {self.username}@{self.host}: "
                    f"run `keyring set heard {self.section}:{self.username}@{self.host}`"
                )
            return secret
        raise ConfigError(f"[{self.section}] set password_command, keyring = true or oauth2_command")


@dataclass
class Config:
    path: Path
    address: str
    own_addresses: list[str]
    imap: ServerConfig
    smtp: ServerConfig | None
    database: str
    agent_name: str
    agent_email: str
    signature: str
    ack: dict[str, Any] = field(default_factory=dict)
    hours: dict[str, Any] = field(default_factory=dict)
    tiers: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def own_domain(self) -> str:
        return self.address.rsplit("@", 1)[-1].lower()

    @property
    def agent(self) -> str:
        """The name on holds and events."""
        return self.agent_name or self.agent_email or os.environ.get("USER", "agent")


_KINDS = {int: "a whole number (no quotes)", str: "text in quotes", bool: "true or false", float: "a number", list: "a list", dict: "a table"}


def _get(table: dict, section: str, key: str, kind: type, default: Any = ..., choices: tuple = ()) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"[{section}] {key} is missing: add it to the config (see README, Configuration)")
        return default
    value = table[key]
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"[{section}] {key} must be {_KINDS.get(kind, kind.__name__)}, not {value!r}")
    if choices and value not in choices:
        raise ConfigError(f"[{section}] {key} = {value!r}: use one of {', '.join(choices)}")
    return value


_SERVER_KEYS = ("host", "port", "security", "username", "password_command", "keyring", "oauth2_command",
                "folder", "sent_folder", "idle", "poll_interval")
_KNOWN_KEYS = {
    "account": ("address", "own_addresses"),
    "imap": _SERVER_KEYS,
    "smtp": _SERVER_KEYS,
    "storage": ("database",),
    "agent": ("name", "email", "signature"),
}


def _no_unknown_keys(table: dict, section: str) -> None:
    """A misspelt key ("foldr", "sent_foldr", "idel") would silently fall back to its default: refuse it."""
    known = _KNOWN_KEYS[section]
    for key in table:
        if key in known or key == "password":  # password gets its own message
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"use one of {', '.join(known)}"
        raise ConfigError(f"[{section}] {key} is not a known key: {hint} (see README, Configuration)")


def config_duration(table: dict, section: str, key: str, default: timedelta, *, day: timedelta) -> timedelta:
    """A duration key ("2h", "90m", "1d": ``day`` long) of a config section, or one line naming it."""
    if key not in table:
        return default
    value = table[key]
    if not isinstance(value, str):
        raise ConfigError(f'[{section}] {key} = {value!r}: write a duration in quotes, e.g. "2h" or "30m"')
    try:
        d = parse_duration(value, day=day)
    except ValueError as exc:
        raise ConfigError(f'[{section}] {key} = {value!r}: {exc}; write e.g. "2h", "90m" or "1d"') from None
    if d <= timedelta(0):
        raise ConfigError(f"[{section}] {key} = {value!r}: must be longer than zero")
    return d


def tier_specs(tiers: Any, *, day: timedelta = timedelta(hours=8)) -> dict[str, TierSpec]:
    """``[tiers]``, checked (one line naming the key), as the acknowledgements and the sync both read it."""
    if not isinstance(tiers, dict):
        raise ConfigError("[tiers] must hold tables such as [tiers.premium]")
    for name, spec in tiers.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"[tiers.{name}] must be a table with max_response and members")
        extra = sorted(set(spec) - {"max_response", "members"})
        if extra:
            raise ConfigError(f"[tiers.{name}] {extra[0]} is not a known key: use max_response and members")
        if "max_response" not in spec:
            raise ConfigError(f'[tiers.{name}] max_response is missing: e.g. max_response = "2h"')
        config_duration(spec, f"tiers.{name}", "max_response", timedelta(0), day=day)
        members = spec.get("members", [])
        if not isinstance(members, list) or any(not isinstance(m, str) for m in members):
            raise ConfigError(f'[tiers.{name}] members = {members!r}: a list of addresses or domains, '
                              'e.g. ["ceo@bigco.example", "bigco.example"]')
    return parse_tiers(tiers, day=day)


def _server(data: dict, section: str, default_port: dict[str, int]) -> ServerConfig:
    t = data.get(section)
    if not isinstance(t, dict):
        raise ConfigError(f"[{section}] section is missing: run `heard init` or add it (see README)")
    _no_unknown_keys(t, section)
    security = _get(t, section, "security", str, "tls", SECURITY)
    port = _get(t, section, "port", int, default_port[security])
    if not 0 < port < 65536:
        raise ConfigError(f"[{section}] port = {port}: use a port between 1 and 65535")
    cfg = ServerConfig(
        section=section,
        host=_get(t, section, "host", str),
        port=port,
        security=security,
        username=_get(t, section, "username", str, ""),
        password_command=_get(t, section, "password_command", str, None),
        keyring=_get(t, section, "keyring", bool, False),
        oauth2_command=_get(t, section, "oauth2_command", str, None) or None,
        folder=_get(t, section, "folder", str, "INBOX"),
        sent_folder=_get(t, section, "sent_folder", str, ""),
        idle=_get(t, section, "idle", bool, True),
        poll_interval=_get(t, section, "poll_interval", int, 30),
    )
    if cfg.poll_interval < 1:
        raise ConfigError(f"[{section}] poll_interval = {cfg.poll_interval}: use a number of seconds, 1 or more")
    if section == "imap" and not cfg.username:
        raise ConfigError("[imap] username is missing: add the login name (often the support address)")
    # An SMTP relay that needs no login (a local MTA, a relay on the LAN): username = "" and no password.
    if cfg.oauth2_command and (cfg.password_command or cfg.keyring):
        other = "password_command" if cfg.password_command else "keyring"
        raise ConfigError(f"[{section}] both oauth2_command and {other} are set: keep oauth2_command for an "
                          f"OAuth2 login (Gmail, Microsoft 365), or {other} for a password")
    if cfg.oauth2_command and not cfg.username:
        raise ConfigError(f"[{section}] oauth2_command needs username: the account the token belongs to")
    if cfg.username and not cfg.password_command and not cfg.keyring and not cfg.oauth2_command:
        raise ConfigError(f"[{section}] set password_command = \"...\", keyring = true or oauth2_command = \"...\""
                          + (', or username = "" for a server that needs no login' if section == "smtp" else ""))
    if "password" in t:
        raise ConfigError(f"[{section}] password must not be in the config file: use password_command or keyring")
    return cfg


def _loopback(host: str) -> bool:
    import ipaddress

    name = host.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def cleartext_login(cfg: ServerConfig) -> str | None:
    """A warning when ``security = "none"`` would send a login over the network unencrypted, else None.

    Plain text is for loopback (a local Dovecot, a bridge such as Proton's) or an SMTP relay that takes
    no login; a password or token to any other host could be read by anyone on the way.
    """
    if cfg.security != "none" or not cfg.username or _loopback(cfg.host):
        return None
    secret = "OAuth2 token" if cfg.oauth2_command else "password"
    return (f'[{cfg.section}] security = "none" sends the {secret} for {cfg.username!r} to {cfg.host} unencrypted: '
            f'set security = "tls" or "starttls" (none is for a server on this machine)')


KNOWN_SECTIONS = {"account", "imap", "smtp", "storage", "agent", "ack", "hours", "tiers", "pending", "keys"}


def parse_config(data: dict[str, Any], path: Path) -> Config:
    unknown = set(data) - KNOWN_SECTIONS
    if unknown:
        raise ConfigError(f"unknown section [{sorted(unknown)[0]}] in {path}: check the spelling (see README)")
    account = data.get("account")
    if not isinstance(account, dict):
        raise ConfigError("[account] section is missing: run `heard init`")
    _no_unknown_keys(account, "account")
    address = _get(account, "account", "address", str).strip().lower()
    if "@" not in address:
        raise ConfigError(f"[account] address = {address!r} is not an email address")
    imap = _server(data, "imap", {"tls": 993, "starttls": 143, "none": 143})
    smtp = _server(data, "smtp", {"tls": 465, "starttls": 587, "none": 25}) if "smtp" in data else None
    storage = data.get("storage", {})
    agent = data.get("agent", {})
    for name, table in (("storage", storage), ("agent", agent)):
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}] must be a table of keys (see README, Configuration)")
        _no_unknown_keys(table, name)
    database = _get(storage, "storage", "database", str, default_database())
    if "://" in database:
        from urllib.parse import urlsplit

        try:
            password = urlsplit(database).password
        except ValueError:
            password = None
        if password:
            raise ConfigError("[storage] database has a password in it: heard keeps no credentials in its config; "
                              "put it in ~/.pgpass (or PGPASSFILE, PGPASSWORD) and drop it from the URL")
    return Config(
        path=path,
        address=address,
        own_addresses=[a.lower() for a in _get(account, "account", "own_addresses", list, [])] + [address],
        imap=imap,
        smtp=smtp,
        database=database,
        agent_name=_get(agent, "agent", "name", str, ""),
        agent_email=_get(agent, "agent", "email", str, ""),
        signature=_get(agent, "agent", "signature", str, ""),
        ack=data.get("ack", {}),
        hours=data.get("hours", {}),
        tiers=data.get("tiers", {}),
        pending=data.get("pending", {}),
        keys=data.get("keys", {}),
        raw=data,
    )


def load_config(path: Path | str | None = None) -> Config:
    p = Path(path).expanduser() if path else default_config_path()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no config at {p}: run `heard init` (or `heard demo` to try it without an account)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML ({exc}): fix that line") from None
    except IsADirectoryError:
        raise ConfigError(f"{p} is a directory: give --config the config file itself (e.g. {p / 'config.toml'})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not UTF-8 text: save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config {p} ({exc.strerror}): check its permissions") from None
    return parse_config(data, p)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{s}"'


def render_config(sections: dict[str, dict[str, Any]]) -> str:
    lines = ["# heard configuration: see README.md, Configuration", ""]
    for name, table in sections.items():
        lines.append(f"[{name}]")
        for k, v in table.items():
            if v is None:
                continue
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def desk_timezone(cfg: "Config") -> tzinfo:
    """The desk's clock: ``[hours] timezone``, else this machine's zone. Deadlines are computed and
    written in it, and every time the app and the command line show is on it."""
    from datetime import timezone as _timezone
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(str((cfg.hours or {}).get("timezone") or local_timezone()))
    except (ZoneInfoNotFoundError, ValueError, AttributeError):
        return _timezone.utc


def local_timezone() -> str:
    """The machine's IANA zone name (for business hours), or UTC."""
    from zoneinfo import ZoneInfo

    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if not name:
            continue
        try:
            ZoneInfo(name)
            return name
        except Exception:
            continue
    return "UTC"


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_config(sections)
    parse_config(tomllib.loads(text), path)  # never write a config we would refuse
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
