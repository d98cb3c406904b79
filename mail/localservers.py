"""Real mail servers on loopback, for the tests, `heard demo` and the benchmarks.

Three servers, all on 127.0.0.1 with a random free high port, all files in a
directory the caller gives (a pytest ``tmp_path``, a demo temp dir), all
context managers that stop cleanly and leave no process behind:

- :class:`PymapServer`: the pure-Python IMAP server ``pymap`` (a dependency of
  heard) as a subprocess, on its *maildir* backend. It offers IDLE but not
  CONDSTORE/QRESYNC. It is multi-user: the maildir backend reads its users from
  ``pymap-etc-passwd`` / ``pymap-etc-shadow`` in its data directory on every
  login, so users can be added while it runs (the demo gives every customer a
  mailbox this way). The in-memory ``dict`` backend knows a single user only.
  A small launcher patches pymap 0.36 so that messages come back byte-exact
  (its maildir code re-generates them with bare LFs) and IDLE notices new
  mail within ~0.25 s (it polls once a second).
- :class:`DovecotServer`: a private Dovecot instance (IDLE, CONDSTORE, QRESYNC),
  with its own config, sockets, state, log and maildirs. Config for 2.3
  (``mail_location``, ``disable_plaintext_auth``) or 2.4 (``mail_driver``,
  ``auth_allow_cleartext``) by ``dovecot --version``. As root, mail runs as
  the system ``mail`` user (Dovecot refuses uid 0); when the given directory
  is not reachable by it (pytest's 0700 tmp dirs), the maildirs and user
  files live in a short ``/tmp/heard-dv-*`` dir, symlinked as ``<dir>/mail``
  and removed by ``cleanup()``. Unix socket paths are capped at 107 bytes, so
  a long directory gets its ``base_dir`` there too.
- :class:`SmtpServer`: an aiosmtpd server that records every message
  byte-exact, can hand each one to a delivery callback, and can be scripted
  to answer faults (4xx/5xx, refused recipients, a dropped connection).
  Given ``oauth2_tokens`` it offers AUTH XOAUTH2 and refuses other tokens
  the way Gmail does (a JSON challenge, then 535).
- :class:`OAuth2TokenServer`: an HTTP token-introspection endpoint (RFC 7662)
  that Dovecot's ``oauth2`` passdb asks, so a test can log in to a real
  Dovecot with XOAUTH2 (``DovecotServer(oauth2=...)``).

Seeding is fast: ``deliver_maildir()`` writes messages straight into a user's
Maildir (both servers pick them up on the next sync), and ``append()`` uses
one MULTIAPPEND over a TCP_NODELAY socket (a plain APPEND per message costs
~45 ms on loopback because of Nagle plus delayed ACK around the literal).
"""

from __future__ import annotations

import atexit
import collections
import email.utils
import itertools
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ServerStartError",
    "dovecot_binary",
    "PymapServer",
    "DovecotServer",
    "SmtpServer",
    "OAuth2TokenServer",
    "ReceivedMessage",
    "dovecot_available",
    "dovecot_version",
    "free_port",
    "DROP",
]

HOST = "127.0.0.1"
DROP = "DROP"  # an SmtpServer fault: close the connection after DATA, reply nothing
HANG = "HANG"  # an SmtpServer fault: never answer that command (until release_hangs() or stop())


class ServerStartError(RuntimeError):
    """A local server did not come up; the message carries the tail of its log."""


# --------------------------------------------------------------------------- helpers


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "(no log)"
    return data[-limit:].decode("utf-8", "replace")


def _imap_connect(host: str, port: int, username: str, password: str, timeout: float = 10.0):
    """An imapclient connection, logged in, with TCP_NODELAY set."""
    from imapclient import IMAPClient

    client = IMAPClient(host, port, ssl=False, timeout=timeout)
    try:
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    client.login(username, password)
    return client


def _imap_append(client, folder: str, raw_messages: Iterable[bytes], batch: int = 200) -> int:
    """Append messages in MULTIAPPEND batches (or one by one without it)."""
    msgs = [bytes(m) for m in raw_messages]
    if not msgs:
        return 0
    multi = b"MULTIAPPEND" in client.capabilities()
    if multi:
        for i in range(0, len(msgs), batch):
            chunk = msgs[i : i + batch]
            if len(chunk) == 1:
                client.append(folder, chunk[0])
            else:
                client.multiappend(folder, chunk)
    else:
        for m in msgs:
            client.append(folder, m)
    return len(msgs)


_DATE_RE = re.compile(rb"^Date:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_counter = itertools.count()
_HOSTNAME = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname() or "localhost")


def _header_date(raw: bytes) -> float | None:
    head = raw[: raw.find(b"\r\n\r\n") if b"\r\n\r\n" in raw[:65536] else 65536]
    m = _DATE_RE.search(head)
    if not m:
        return None
    try:
        return email.utils.parsedate_to_datetime(m.group(1).decode("ascii", "replace")).timestamp()
    except Exception:
        return None


def _maildir_folder_path(root: Path, folder: str) -> Path:
    """Maildir++ layout (both pymap's default and Dovecot's): INBOX is the root,
    other folders are ``.Name`` (nested with ``.``) beside cur/new/tmp."""
    if folder.upper() == "INBOX":
        return root
    name = folder.replace("/", ".")
    if name.startswith("INBOX."):
        name = name[len("INBOX.") :]
    return root / ("." + name)


def _make_maildir(path: Path, *, subfolder: bool, owner: tuple[int, int] | None) -> None:
    for sub in ("", "cur", "new", "tmp"):
        p = path / sub if sub else path
        if not p.exists():
            p.mkdir(mode=0o700, parents=True, exist_ok=True)
            if owner:
                os.chown(p, *owner)
    if subfolder:
        marker = path / "maildirfolder"
        if not marker.exists():
            marker.touch()
            if owner:
                os.chown(marker, *owner)


def _write_maildir(
    root: Path,
    folder: str,
    raw_messages: Iterable[bytes],
    *,
    seen: bool,
    owner: tuple[int, int] | None,
) -> int:
    """Write each message as one file (into cur/ with ``:2,S`` when *seen*,
    else into new/), with its mtime set from the Date header (that is the
    INTERNALDATE both servers report). Returns how many were written."""
    path = _maildir_folder_path(root, folder)
    _make_maildir(root, subfolder=False, owner=owner)
    if path != root:
        _make_maildir(path, subfolder=True, owner=owner)
    tmpdir = path / "tmp"
    dest = path / ("cur" if seen else "new")
    suffix = ":2,S" if seen else ""
    pid = os.getpid()
    now = time.time()
    n = 0
    for raw in raw_messages:
        raw = bytes(raw)
        seq = next(_counter)
        name = f"{int(now)}.M{seq}P{pid}Q{n}.{_HOSTNAME},S={len(raw)}"
        tmp = tmpdir / name
        with open(tmp, "wb") as fh:
            fh.write(raw)
        if owner:
            os.chown(tmp, *owner)
        ts = _header_date(raw)
        if ts is not None:
            os.utime(tmp, (ts, ts))
        os.rename(tmp, dest / (name + suffix))
        n += 1
    return n


_LIVE: "weakref.WeakSet[_ProcessServer]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # a last resort: a server nobody stopped
    for server in list(_LIVE):
        try:
            server.stop()
        except Exception:
            pass


def _child_setup() -> None:
    """In the child before exec: die with the parent process (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class _ProcessServer:
    """Start/stop a server subprocess in its own process group."""

    name = "server"
    host: str
    port: int
    username: str
    password: str

    def __init__(self, directory: str | os.PathLike[str] | None) -> None:
        if directory is None:
            directory = tempfile.mkdtemp(prefix=f"heard-{self.name}-")
        self.directory = Path(directory).resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / f"{self.name}.log"

    # subclasses: _command(), _prepare(), _check_ready()
    def _command(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self) -> None:
        pass

    def _check_ready(self) -> None:
        client = _imap_connect(self.host, self.port, self.username, self.password, timeout=5)
        client.logout()

    def _extra_log(self) -> str:
        return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0):
        if self.running:
            return self
        last_error = ""
        for attempt in range(3):  # a race on the free port: try another one
            if attempt or not self.port:  # a restart keeps its port, as a real server would
                self.port = free_port(self.host)
            self._prepare()
            log = open(self.log_path, "ab")
            try:
                on_main = threading.current_thread() is threading.main_thread()
                self.proc = subprocess.Popen(
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.directory,
                    start_new_session=True,
                    # PDEATHSIG fires when the *thread* that forked exits, so
                    # only tie the child to the main thread.
                    preexec_fn=_child_setup if on_main and sys.platform == "linux" else None,
                )
            finally:
                log.close()
            _LIVE.add(self)
            deadline = time.monotonic() + timeout
            error = None
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    error = f"exited with status {self.proc.returncode}"
                    break
                if _port_open(self.host, self.port):
                    try:
                        self._check_ready()
                        return self
                    except Exception as exc:  # auth not up yet, etc.
                        error = f"login failed: {exc!r}"
                time.sleep(0.05)
            else:
                error = error or f"port {self.port} not accepting after {timeout:.0f}s"
            log_text = _tail(self.log_path) + self._extra_log()
            self._kill()
            last_error = f"{self.name} did not start ({error}).\n--- log ---\n{log_text}"
            if "in use" not in log_text.lower() and "EADDRINUSE" not in log_text:
                break
        raise ServerStartError(last_error)

    def _kill(self, graceful: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the group id is the leader's pid
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(graceful)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
        # Whatever is left in the group (children of the server) goes now.
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        _LIVE.discard(self)

    # mail: the same for every IMAP server here ----------------------------
    def connect(self, username: str | None = None, password: str | None = None):
        """A logged-in imapclient.IMAPClient (TCP_NODELAY set). Log it out yourself."""
        username = username or self.username
        if password is None:
            password = self._users[username]
        return _imap_connect(self.host, self.port, username, password)

    def append(
        self,
        raw_messages: bytes | Iterable[bytes],
        *,
        username: str | None = None,
        folder: str = "INBOX",
    ) -> int:
        """APPEND over IMAP (MULTIAPPEND batches). Returns the number appended."""
        if isinstance(raw_messages, (bytes, bytearray)):
            raw_messages = [bytes(raw_messages)]
        client = self.connect(username)
        try:
            if folder.upper() != "INBOX" and not client.folder_exists(folder):
                client.create_folder(folder)
            return _imap_append(client, folder, raw_messages)
        finally:
            client.logout()

    def stop(self) -> None:
        """Stop the server and every process it started. Idempotent."""
        self._kill()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} in {self.directory}>"


# --------------------------------------------------------------------------- pymap


def _safe_dirname(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9@._+-]", "_", name).strip(".") or "user"
    if clean != name:
        import hashlib

        clean += "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
    return clean


def _check_credential(value: str, what: str) -> None:
    if not value or any(c in value for c in ":\r\n\x00"):
        raise ValueError(f"{what} must be non-empty without ':' or line breaks: {value!r}")


# pymap's maildir backend stores and serves messages through the stdlib
# ``mailbox`` module, which re-generates them with bare-LF line ends: a
# message would not come back byte-exact (and IMAP wants CRLF). This launcher
# patches two spots (pymap 0.36) so that APPEND writes the literal as is and
# FETCH serves the file as is; if pymap's internals differ it says so on
# stderr and runs unpatched.
_PYMAP_LAUNCHER = r"""
import sys
try:
    from pymap.backend.maildir import mailbox as _mb

    _orig_to_maildir = _mb.Message.to_maildir.__func__
    _orig_load = _mb.Message.load_content
    _orig_dump = _mb.Maildir._dump_message

    def _to_maildir(cls, append_msg, recent, maildir_flags):
        msg = _orig_to_maildir(cls, append_msg, recent, maildir_flags)
        msg._heard_raw = bytes(append_msg.literal)
        return msg

    def _dump_message(self, message, target, mangle_from_=False):
        raw = getattr(message, "_heard_raw", None)
        if raw is None:
            return _orig_dump(self, message, target, mangle_from_)
        target.write(raw)

    async def _load_content(self, requirement):
        if self._key is None or self._maildir is None \
                or requirement.has_none(_mb.FetchRequirement.CONTENT):
            return await _orig_load(self, requirement)
        try:
            with open(self._maildir._join(self._maildir._lookup(self._key)), "rb") as fh:
                raw = fh.read()
        except (KeyError, FileNotFoundError):
            return await _orig_load(self, requirement)
        if b"\r\n" not in raw:
            raw = raw.replace(b"\n", b"\r\n")
        return _mb.LoadedMessage(self, requirement, _mb.MessageContent.parse(raw))

    # IDLE: pymap rescans the maildir once a second; poll faster so new
    # mail shows within ~0.3 s (the app's IDLE target is 1 s end to end).
    _poll = float(__import__("os").environ.get("HEARD_PYMAP_IDLE_POLL", "0.25"))

    async def _update_selected(self, selected, *, wait_on=None):
        if wait_on is not None:
            await wait_on.wait(timeout=_poll)
        all_messages = [msg async for msg in self.messages()]
        selected.set_messages(all_messages)
        return selected

    _mb.MailboxData.update_selected = _update_selected
    _mb.Message.to_maildir = classmethod(_to_maildir)
    _mb.Maildir._dump_message = _dump_message
    _mb.Message.load_content = _load_content
except Exception as exc:  # pragma: no cover - another pymap version
    print("heard: pymap exact-bytes patch not applied:", repr(exc), file=sys.stderr)
from pymap.main import main
sys.argv[0] = "pymap"
sys.exit(main())
"""


class PymapServer(_ProcessServer):
    """pymap (maildir backend) on loopback, with any number of users.

    >>> with PymapServer(tmp_path) as imap:            # doctest: +SKIP
    ...     imap.add_user("ann@example.org", "pw")
    ...     imap.deliver_maildir("support@example.com", [raw])
    ...     client = imap.connect()                     # logged in as support
    """

    name = "pymap"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        username: str = "support@example.com",
        password: str = "support-password",
        users: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(directory)
        self.username = username
        self.password = password
        self.data_dir = self.directory / "pymap-data"
        self.data_dir.mkdir(exist_ok=True)
        self._users: dict[str, str] = {}
        self._lock = threading.Lock()
        self.add_user(username, password)
        for u, p in (users or {}).items():
            self.add_user(u, p)

    @staticmethod
    def executable() -> str:
        """pymap's console script next to the running interpreter."""
        cand = Path(sys.executable).parent / "pymap"
        if cand.exists():
            return str(cand)
        found = shutil.which("pymap")
        if found:
            return found
        raise ServerStartError(f"pymap not found next to {sys.executable} nor on PATH")

    def _command(self) -> list[str]:
        import importlib.util

        if importlib.util.find_spec("pymap") is not None:
            launcher = [sys.executable, "-c", _PYMAP_LAUNCHER]
        else:  # pymap lives elsewhere: run it unpatched
            launcher = [self.executable()]
        return [
            *launcher,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "maildir",
            str(self.data_dir),
        ]

    # users ---------------------------------------------------------------
    @property
    def users(self) -> dict[str, str]:
        """login -> password, the support user included."""
        return dict(self._users)

    def has_user(self, username: str) -> bool:
        return username in self._users

    def add_user(self, username: str, password: str) -> Path:
        """Create (or re-password) a user; takes effect at its next login,
        also while the server runs. Returns the user's Maildir path."""
        _check_credential(username, "username")
        _check_credential(password, "password")
        with self._lock:
            self._users[username] = password
            self._write_users()
        path = self.maildir(username)
        _make_maildir(path, subfolder=False, owner=None)
        return path

    def maildir(self, username: str) -> Path:
        return self.data_dir / _safe_dirname(username)

    def _write_users(self) -> None:
        # pymap's maildir backend: passwd(5)/shadow(5) style files, CRLF lines.
        # Cheap PBKDF2 (1000 rounds) keeps each LOGIN at ~1 ms; pymap reads
        # the round count from the hash itself.
        from pysasl.hashing import BuiltinHash

        hasher = BuiltinHash(rounds=1000)
        passwd = "".join(f"{u}:x::::{_safe_dirname(u)}:\r\n" for u in self._users)
        shadow = "".join(f"{u}:{hasher.hash(p)}:::::::\r\n" for u, p in self._users.items())
        for fname, text in (("pymap-etc-passwd", passwd), ("pymap-etc-shadow", shadow)):
            tmp = self.data_dir / (fname + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.data_dir / fname)

    # mail ----------------------------------------------------------------
    def deliver_maildir(
        self,
        username: str,
        raw_messages: bytes | Iterable[bytes],
        *,
        folder: str = "INBOX",
        seen: bool = False,
        password: str | None = None,
    ) -> int:
        """Write messages straight into the user's Maildir (created, with the
        given or a default password, when the user is new); pymap picks them
        up at the next command or IDLE poll. Returns the number written."""
        if isinstance(raw_messages, (bytes, bytearray)):
            raw_messages = [bytes(raw_messages)]
        if username not in self._users:
            self.add_user(username, password or "customer-password")
        return _write_maildir(self.maildir(username), folder, raw_messages, seen=seen, owner=None)

    deliver = deliver_maildir


# --------------------------------------------------------------------------- dovecot


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or next(
        (p for p in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(p, os.X_OK)),
        None,
    )


def dovecot_available() -> bool:
    """True when a dovecot binary is installed (PATH or /usr/sbin)."""
    return dovecot_binary() is not None


def dovecot_version() -> tuple[int, ...] | None:
    """(2, 3, 19, 1) for "2.3.19.1 (9b53102964)", None without Dovecot."""
    binary = dovecot_binary()
    if not binary:
        return None
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"\s*(\d+(?:\.\d+)*)", out)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def _traversable(path: Path, uid: int, gid: int) -> bool:
    """Can uid/gid reach *path* (x on every ancestor)?"""
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            return False
        mode = st.st_mode
        if mode & 0o001 or (st.st_uid == uid and mode & 0o100) or (st.st_gid == gid and mode & 0o010):
            continue
        return False
    return True


class DovecotServer(_ProcessServer):
    """A private Dovecot (IMAP only, no TLS, plaintext LOGIN on loopback).

    >>> with DovecotServer(tmp_path) as imap:          # doctest: +SKIP
    ...     imap.deliver_maildir("support", bench_mailbox(10_000, "support@example.com"))
    ...     imap.change_uidvalidity()
    """

    name = "dovecot"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        username: str = "support",
        password: str = "support-password",
        users: Mapping[str, str] | None = None,
        oauth2: "OAuth2TokenServer | None" = None,
    ) -> None:
        super().__init__(directory)
        self.oauth2 = oauth2  # also accept XOAUTH2 / OAUTHBEARER, checked against this endpoint
        binary = dovecot_binary()
        if not binary:
            raise ServerStartError("dovecot is not installed (apt-get install dovecot-imapd)")
        self.binary = binary
        self.version = dovecot_version() or (2, 3)
        self.username = username
        self.password = password
        self._users: dict[str, str] = {}
        self._scratch: Path | None = None  # a short /tmp dir, when needed
        self.conf_path = self.directory / "dovecot.conf"
        # One passwd-file per user (the path has %u in it): Dovecot opens a
        # new user's file on first use, while a shared file is re-read at
        # most once a second, so a user added while it runs could be refused.
        self.users_dir = self.directory / "users"
        self.state_dir = self.directory / "state"
        self._setup_identity()
        self._setup_dirs()
        self.add_user(username, password)
        for u, p in (users or {}).items():
            self.add_user(u, p)

    # setup ---------------------------------------------------------------
    def _setup_identity(self) -> None:
        if os.geteuid() == 0:
            # Dovecot refuses mail access as uid 0: use the system "mail" user.
            try:
                pw = pwd.getpwnam("mail")
                self.mail_uid, self.mail_gid = pw.pw_uid, pw.pw_gid
            except KeyError:
                self.mail_uid, self.mail_gid = 8, 8
            self.internal_user = self._existing_user("dovecot", "mail")
            self.login_user = self._existing_user("dovenull", self.internal_user)
            self._owner: tuple[int, int] | None = (self.mail_uid, self.mail_gid)
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
            me = pwd.getpwuid(self.mail_uid).pw_name
            self.internal_user = self.login_user = me
            self._owner = None

    @staticmethod
    def _existing_user(name: str, fallback: str) -> str:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            return fallback

    @staticmethod
    def _uid_gid(user: str) -> tuple[int, int]:
        pw = pwd.getpwnam(user)
        return pw.pw_uid, pw.pw_gid

    def _short_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="heard-dv-"))
            os.chmod(self._scratch, 0o755)
        return self._scratch

    def _setup_dirs(self) -> None:
        self.state_dir.mkdir(exist_ok=True)
        # Unix socket paths are limited to 107 bytes; pytest's tmp_path can be long.
        base = self.directory / "run"
        if len(str(base)) > 60:
            base = self._short_dir() / "run"
        base.mkdir(exist_ok=True)
        self.base_dir = base
        # The mail processes run as mail_uid: it must reach the maildirs
        # (pytest's tmp dirs are 0700 root, so use a scratch dir and a symlink).
        # Same for the auth process (default_internal_user) and the passwd file.
        mail_root = self.directory / "mail"
        if self._owner and not (
            _traversable(self.directory, *self._owner)
            and _traversable(self.directory, *self._uid_gid(self.internal_user))
        ):
            real = self._short_dir() / "mail"
            real.mkdir(exist_ok=True)
            if not mail_root.is_symlink():
                mail_root.symlink_to(real)
            mail_root = real
            self.users_dir = self._short_dir() / "users"
        else:
            mail_root.mkdir(exist_ok=True)
        if self._owner:
            os.chown(mail_root, *self._owner)
        self.mail_root = mail_root

    def _config(self) -> str:
        d = self.directory
        common = {
            "base": self.base_dir,
            "state": self.state_dir,
            "log": self.log_path,
            "passwd": self.users_dir,
            "mailroot": self.mail_root,
            "uid": self.mail_uid,
            "gid": self.mail_gid,
            "internal": self.internal_user,
            "login": self.login_user,
            "port": self.port,
            "host": self.host,
            "instance": f"heard-{os.getpid()}-{d.name[:20]}",
        }
        common.update(mechs="", plain_only="", oauth2_passdb="", oauth2_filter="")
        if self.oauth2 is not None:
            common["mechs"] = " xoauth2 oauthbearer"
            settings = self.oauth2.dovecot_settings()
            if self.version >= (2, 4):
                common["oauth2_filter"] = "oauth2 {\n" + "".join(f"  {k} = {v}\n" for k, v in settings.items()) + "}\n"
            else:
                ext = self.users_dir.parent / "oauth2.conf.ext"  # where the auth process reads the users
                ext.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
                os.chmod(ext, 0o644)
                common["plain_only"] = "\n  mechanisms = plain login"
                common["oauth2_passdb"] = (
                    f"\npassdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {ext}\n}}"
                )
        nonroot = ""
        if os.geteuid() != 0:
            # Unprivileged: every service runs as us, nothing chroots or chowns.
            try:
                common["group"] = grp.getgrgid(self.mail_gid).gr_name
            except KeyError:
                common["group"] = str(self.mail_gid)
            nonroot = """
default_internal_group = {group}
service imap-login {{
  chroot =
  user = {login}
}}
service anvil {{
  chroot =
}}
service auth-worker {{
  user = {internal}
}}
"""
        if self.version >= (2, 4):
            conf = (
                """dovecot_config_version = 2.4.0
dovecot_storage_version = 2.4.0
base_dir = {base}
state_dir = {state}
log_path = {log}
instance_name = {instance}
listen = {host}
protocols = imap
ssl = no
auth_allow_cleartext = yes
auth_mechanisms = plain login{mechs}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
default_internal_user = {internal}
default_login_user = {login}
mail_driver = maildir
mail_path = {mailroot}/%{{user}}
mail_fsync = never
passdb passwd-file {{
  passwd_file_path = {passwd}/%{{user}}
  default_password_scheme = PLAIN
}}
userdb passwd-file {{
  passwd_file_path = {passwd}/%{{user}}
}}
{oauth2_filter}service imap-login {{
  inet_listener imap {{
    listen = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
"""
                + nonroot
            )
        else:
            conf = (
                """base_dir = {base}
state_dir = {state}
log_path = {log}
instance_name = {instance}
listen = {host}
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login{mechs}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
default_internal_user = {internal}
default_login_user = {login}
mail_location = maildir:{mailroot}/%u
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}/%u{plain_only}
}}{oauth2_passdb}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 1000
}}
"""
                + nonroot
            )
        return conf.format(**common)

    def _prepare(self) -> None:
        self.conf_path.write_text(self._config())

    def _command(self) -> list[str]:
        return [self.binary, "-F", "-c", str(self.conf_path)]

    # users ---------------------------------------------------------------
    @property
    def users(self) -> dict[str, str]:
        return dict(self._users)

    def add_user(self, username: str, password: str) -> Path:
        """Create (or re-password) a user, also while Dovecot runs (each user
        has a passwd-file of their own). Returns the user's Maildir."""
        _check_credential(username, "username")
        _check_credential(password, "password")
        if "/" in username or username.startswith("."):
            raise ValueError(f"bad Dovecot user name {username!r}")
        self._users[username] = password
        self.users_dir.mkdir(exist_ok=True)
        os.chmod(self.users_dir, 0o755)
        line = f"{username}:{{PLAIN}}{password}:{self.mail_uid}:{self.mail_gid}::{self.mail_root / username}::\n"
        tmp = self.users_dir / f".{username}.tmp"
        tmp.write_text(line)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.users_dir / username)
        path = self.maildir(username)
        _make_maildir(path, subfolder=False, owner=self._owner)
        return path

    def maildir(self, username: str | None = None) -> Path:
        return self.mail_root / (username or self.username)

    # mail ----------------------------------------------------------------
    def deliver_maildir(
        self,
        username: str | None,
        raw_messages: bytes | Iterable[bytes],
        *,
        folder: str = "INBOX",
        seen: bool = False,
    ) -> int:
        """Write messages straight into the user's Maildir (new/, or cur/ with
        \\Seen); Dovecot assigns UIDs at its next sync. ~10,000 msgs/s."""
        if isinstance(raw_messages, (bytes, bytearray)):
            raw_messages = [bytes(raw_messages)]
        username = username or self.username
        if username not in self._users:
            raise KeyError(f"no Dovecot user {username!r}; add_user() first")
        return _write_maildir(self.maildir(username), folder, raw_messages, seen=seen, owner=self._owner)

    deliver = deliver_maildir

    def doveadm(self, *args: str, check: bool = True) -> str:
        """Run ``doveadm -c <our config> ARGS`` and return its stdout."""
        doveadm = shutil.which("doveadm") or str(Path(self.binary).with_name("doveadm"))
        res = subprocess.run(
            [doveadm, "-c", str(self.conf_path), *args], capture_output=True, text=True, timeout=30
        )
        if check and res.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed: {res.stderr.strip() or res.stdout.strip()}")
        return res.stdout

    def uidvalidity(self, folder: str = "INBOX", username: str | None = None) -> int:
        out = self.doveadm("mailbox", "status", "-u", username or self.username, "uidvalidity", folder)
        return int(out.split("uidvalidity=")[1].split()[0])

    def change_uidvalidity(
        self, folder: str = "INBOX", username: str | None = None, *, renumber: bool = True
    ) -> int:
        """Force a new UIDVALIDITY on *folder* and return it.

        With *renumber* (the default, what a real server rebuild looks like)
        Dovecot's uidlist and indexes for the folder are deleted first, so
        every message gets a fresh UID too; then the new UIDVALIDITY is set
        with ``doveadm mailbox update --uid-validity`` so it surely differs.
        Open connections may see the folder vanish; reconnect after this.
        """
        username = username or self.username
        old = self.uidvalidity(folder, username)
        if renumber:
            path = _maildir_folder_path(self.maildir(username), folder)
            for f in path.iterdir():
                if f.name == "dovecot-uidlist" or f.name.startswith("dovecot.index"):
                    f.unlink()
        new = max(old + 1, int(time.time()))
        if new == old:
            new += 1
        self.doveadm("mailbox", "update", "-u", username, "--uid-validity", str(new), folder)
        got = self.uidvalidity(folder, username)
        if got == old:  # pragma: no cover - defensive
            raise RuntimeError(f"UIDVALIDITY of {folder} did not change ({old})")
        return got

    def _extra_log(self) -> str:
        try:
            return "\n--- dovecot.conf ---\n" + self.conf_path.read_text()
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Stop, and remove the scratch dir outside *directory* (if any)."""
        self.stop()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def __del__(self) -> None:
        scratch = getattr(self, "_scratch", None)
        if scratch is not None and not self.running:
            shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------- SMTP


@dataclass
class ReceivedMessage:
    """One DATA transaction as the SMTP server saw it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes  # exactly the DATA bytes, dot-unstuffed, CRLF line ends as sent
    response: str  # what the server answered ("250 OK", "451 ...", "DROP")
    peer: tuple | None = None
    received_at: float = field(default_factory=time.time)
    mail_options: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.response.startswith("250")


class _Handler:
    def __init__(self, server: "SmtpServer") -> None:
        self.server = server

    async def handle_MAIL(self, smtp, session, envelope, address, mail_options):
        fault = await self.server._fault("MAIL")
        if fault:
            return fault
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options):
        refusal = self.server._refusal(address)
        if refusal:
            return refusal
        fault = await self.server._fault("RCPT")
        if fault:
            return fault
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope):
        srv = self.server
        data = bytes(envelope.original_content or b"")
        fault = await srv._fault("DATA")
        response = fault or "250 OK"
        if not fault and srv.deliver is not None:
            import asyncio

            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(
                    None, srv.deliver, envelope.mail_from, tuple(envelope.rcpt_tos), data
                )
            except Exception as exc:  # delivery failed: a temporary error, client retries
                response = f"451 4.3.0 local delivery failed: {type(exc).__name__}"
        record = ReceivedMessage(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=data,
            response=response,
            peer=session.peer,
            mail_options=tuple(envelope.mail_options),
        )
        srv._record(record)
        if response == DROP:
            # The message was received, but the client never hears back: the
            # "crash after DATA" case (the outbox must end up `unknown`).
            smtp.transport.abort()
            return "250 OK (never seen: connection dropped)"
        return response


class _OAuth2Handler(_Handler):
    """Also offers AUTH XOAUTH2 (aiosmtpd finds ``auth_*`` methods on the handler)."""

    async def auth_XOAUTH2(self, smtp, args):
        from base64 import b64decode

        from aiosmtpd.smtp import AuthResult

        if len(args) > 1:  # the initial response, in base64
            try:
                data = b64decode(args[1], validate=True)
            except ValueError:
                return AuthResult(success=False, handled=False)
        else:
            data = await smtp.challenge_auth("")  # decoded already
            if not isinstance(data, bytes):
                return AuthResult(success=False, handled=False)
        fields = dict(part.split("=", 1) for part in data.decode("utf-8", "replace").split("\x01") if "=" in part)
        user, auth = fields.get("user", ""), fields.get("auth", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        self.server.oauth2_attempts.append((user, token))
        if self.server.oauth2_tokens.get(token) == user and user:
            return AuthResult(success=True, auth_data=user)
        # What Gmail does: the error as a JSON challenge, then 535 once the client answers.
        await smtp.challenge_auth('{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}')
        return AuthResult(success=False, handled=False, message="535 5.7.8 Username and Password not accepted")


class OAuth2TokenServer:
    """A token-introspection endpoint (RFC 7662) on loopback, for Dovecot's ``oauth2`` passdb.

    ``tokens`` maps each valid access token to the user it belongs to; every
    token asked about is kept in ``asked``.

    >>> with OAuth2TokenServer({"tok-1": "support"}) as oauth, DovecotServer(d, oauth2=oauth) as imap:  # doctest: +SKIP
    ...     imap.connect().oauth2_login("support", "tok-1")
    """

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self.tokens: dict[str, str] = dict(tokens or {})
        self.asked: list[str] = []
        self.host = HOST
        self.port = 0
        self._httpd = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/introspect"

    def dovecot_settings(self) -> dict[str, str]:
        return {
            "introspection_mode": "post",
            "introspection_url": self.url,
            "force_introspection": "yes",
            "username_attribute": "username",
            "active_attribute": "active",
            "active_value": "true",
        }

    def start(self) -> "OAuth2TokenServer":
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
                token = (form.get("token") or [""])[0]
                owner.asked.append(token)
                user = owner.tokens.get(token)
                body = json.dumps({"active": "true", "username": user} if user else {"active": "false"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self._httpd = ThreadingHTTPServer((self.host, 0), Handler)
        self.port = self._httpd.server_address[1]
        threading.Thread(target=self._httpd.serve_forever, name="heard-oauth2-introspection", daemon=True).start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    def __enter__(self) -> "OAuth2TokenServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class SmtpServer:
    """An aiosmtpd server on loopback that records, delivers and misbehaves on cue.

    >>> with SmtpServer(deliver=lambda frm, rcpts, data: ...) as smtp:   # doctest: +SKIP
    ...     smtp.fail_next("451 4.3.0 try later")        # next DATA gets 451
    ...     smtp.refuse("nobody@example.org")             # RCPT refused (550)
    ...     smtp.wait_for(1)[0].data                      # the exact DATA bytes
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        deliver: Callable[[str, tuple[str, ...], bytes], None] | None = None,
        username: str = "",
        password: str = "",
        hostname: str = "heard-test-smtp.example.com",
        oauth2_tokens: Mapping[str, str] | None = None,
    ) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.host = HOST
        self.port = 0
        self.username = username  # no AUTH: plain SMTP on loopback
        self.password = password
        self.hostname = hostname
        # token -> user: offer AUTH XOAUTH2 (and nothing else) and accept these
        self.oauth2_tokens: dict[str, str] | None = dict(oauth2_tokens) if oauth2_tokens is not None else None
        self.oauth2_attempts: list[tuple[str, str]] = []
        self.deliver = deliver
        self._lock = threading.Condition()
        self._records: list[ReceivedMessage] = []
        self._faults: dict[str, collections.deque[str]] = {
            k: collections.deque() for k in ("MAIL", "RCPT", "DATA")
        }
        self._refusals: dict[str, str] = {}
        self._released = threading.Event()
        self.hanging = 0  # commands that got HANG so far
        self._controller = None

    # scripting ------------------------------------------------------------
    def fail_next(self, *responses: str, stage: str = "DATA") -> None:
        """Queue answers for the next transactions at *stage* (MAIL, RCPT or
        DATA): "421 4.3.2 try later", "451 4.3.0 temporary", "550 5.1.1 no
        such user", or DROP (DATA only: receive, then cut the connection
        without a reply), or HANG (take the command, then never answer it: a
        server that stopped responding; release_hangs() or stop() lets go).
        After the queue runs dry, answers are normal."""
        stage = stage.upper()
        if stage not in self._faults:
            raise ValueError(f"stage must be MAIL, RCPT or DATA, not {stage!r}")
        for r in responses:
            if r not in (DROP, HANG) and not re.match(r"^[245]\d\d[ -]", r + " "):
                raise ValueError(f"not an SMTP reply: {r!r}")
            if r == DROP and stage != "DATA":
                raise ValueError("DROP is only for DATA")
        with self._lock:
            self._faults[stage].extend(responses)

    def hang(self, stage: str = "DATA", count: int = 1) -> None:
        """The next *count* transactions get no answer at *stage* (after the data, for DATA)."""
        self.fail_next(*([HANG] * count), stage=stage)

    def release_hangs(self) -> None:
        """Commands left hanging get "421 4.4.2 timeout" now."""
        self._released.set()

    async def _fault(self, stage: str) -> str | None:
        fault = self._next_fault(stage)
        if fault != HANG:
            return fault
        import asyncio

        with self._lock:
            self.hanging += 1
            self._lock.notify_all()
        while not self._released.is_set():
            await asyncio.sleep(0.05)
        return "421 4.4.2 timeout"

    def drop_after_data(self, count: int = 1) -> None:
        """The next *count* messages are received but never acknowledged."""
        self.fail_next(*([DROP] * count))

    def refuse(self, address: str, response: str = "550 5.1.1 Recipient address rejected: no such user") -> None:
        """Refuse RCPT TO for *address* (case-insensitive) until unrefuse()."""
        with self._lock:
            self._refusals[address.lower()] = response

    def unrefuse(self, address: str | None = None) -> None:
        with self._lock:
            if address is None:
                self._refusals.clear()
            else:
                self._refusals.pop(address.lower(), None)

    def reset(self) -> None:
        """Forget records, queued faults and refusals."""
        with self._lock:
            self._records.clear()
            for q in self._faults.values():
                q.clear()
            self._refusals.clear()

    def _next_fault(self, stage: str) -> str | None:
        with self._lock:
            q = self._faults[stage]
            return q.popleft() if q else None

    def _refusal(self, address: str) -> str | None:
        with self._lock:
            return self._refusals.get(address.lower())

    def _record(self, record: ReceivedMessage) -> None:
        with self._lock:
            self._records.append(record)
            self._lock.notify_all()

    # results -------------------------------------------------------------
    @property
    def received(self) -> list[ReceivedMessage]:
        """Every DATA transaction, including refused and dropped ones."""
        with self._lock:
            return list(self._records)

    @property
    def messages(self) -> list[ReceivedMessage]:
        """The messages the server accepted (answered 250)."""
        with self._lock:
            return [r for r in self._records if r.accepted]

    def wait_for(self, count: int = 1, timeout: float = 10.0, *, accepted_only: bool = True) -> list[ReceivedMessage]:
        """Block until *count* messages arrived; return them (TimeoutError otherwise)."""
        deadline = time.monotonic() + timeout

        def current():
            return [r for r in self._records if r.accepted or not accepted_only]

        with self._lock:
            while len(current()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(current())} of {count} messages after {timeout}s")
                self._lock.wait(left)
            return current()

    # lifecycle -----------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self):
        if self._controller is not None:
            return self
        self._released.clear()
        from aiosmtpd.controller import Controller

        auth = {}
        if self.oauth2_tokens is not None:
            import warnings

            # Loopback without TLS: let AUTH through, but only XOAUTH2.
            auth = dict(auth_require_tls=False, auth_exclude_mechanism=["LOGIN", "PLAIN"])
            # aiosmtpd 1.4 warns about its own session attribute on every successful AUTH
            warnings.filterwarnings("ignore", message="Session.login_data is deprecated")
        last: Exception | None = None
        for _ in range(3):
            port = free_port(self.host)
            controller = Controller(
                (_OAuth2Handler if self.oauth2_tokens is not None else _Handler)(self),
                hostname=self.host,
                port=port,
                server_hostname=self.hostname,
                ready_timeout=10.0,
                enable_SMTPUTF8=True,
                decode_data=False,
                **auth,
            )
            try:
                controller.start()
            except Exception as exc:  # port raced away, or the loop failed
                last = exc
                try:
                    controller.stop()
                except Exception:
                    pass
                continue
            self._controller = controller
            self.port = port
            return self
        raise ServerStartError(f"SMTP server did not start: {last!r}")

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        self._released.set()
        if controller is not None:
            try:
                controller.stop()
            except Exception:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SmtpServer {self.host}:{self.port} {'running' if self.running else 'stopped'}>"


class SilentServer:
    """A TCP port on loopback that takes connections and never says a word: an IMAP or SMTP server that
    hangs before its greeting (a firewall black hole, a wedged daemon). ``accepted`` counts connections.

    >>> with SilentServer() as silent:                 # doctest: +SKIP
    ...     connect_smtp(ServerConfig(host=silent.host, port=silent.port, ...))   # must time out
    """

    def __init__(self) -> None:
        self.host = HOST
        self.port = 0
        self.accepted = 0
        self._sock: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._thread: threading.Thread | None = None

    def start(self) -> "SilentServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        sock.listen(16)
        sock.settimeout(0.2)
        self._sock, self.port = sock, sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="heard-silent-server", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            self._conns.append(conn)
            self.accepted += 1

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        self._conns.clear()
        if self._thread is not None:
            self._thread.join(2)

    def __enter__(self) -> "SilentServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
