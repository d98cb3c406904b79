"""Connecting to the IMAP server, with every failure as one actionable line."""

from __future__ import annotations

import imaplib
import re
import select
import socket
import ssl
import threading
import weakref

import imapclient
from imapclient import imap4, tls
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import _parse_untagged_response

from mail.config import ServerConfig


class MailServerError(RuntimeError):
    """A server problem in one line: which server, what happened, what to do."""


# -- connections that can be cut short -------------------------------------------------------
# Every IMAP and SMTP socket heard opens, by the thread that opened it: a program that is closing
# (the app after quit) cuts its workers' connections, so a server that stopped answering does not
# keep the process waiting for a read to time out (30 s for IMAP, 60 s for SMTP).
_live: dict[int, weakref.WeakSet] = {}
_cut: weakref.WeakSet = weakref.WeakSet()
_live_lock = threading.Lock()


def track_connection(sock) -> None:
    """Note ``sock`` as this thread's, for :func:`abort_connections`."""
    if sock is None:
        return
    me = threading.get_ident()
    with _live_lock:
        for ident in [i for i, socks in _live.items() if not socks]:
            del _live[ident]
        _live.setdefault(me, weakref.WeakSet()).add(sock)


def abort_connections(threads=None) -> int:
    """Cut every open mail-server connection of these threads (idents; None: every thread's but the caller's):
    a read waiting in them fails at once,
    as if the server had hung up, and the code around it settles as it does then (a send cut after the data is
    ``unknown``, before it queued again; a sync keeps what it committed). How many were cut."""
    with _live_lock:
        if threads is None:
            threads = [i for i in _live if i != threading.get_ident()]
        socks = [s for ident in threads for s in list(_live.get(ident, ()))]
    cut = 0
    for sock in socks:
        try:
            if sock.fileno() != -1:
                _cut.add(sock)
                sock.shutdown(socket.SHUT_RDWR)
                cut += 1
        except OSError:
            pass
    return cut


def was_cut(sock) -> bool:
    """Whether :func:`abort_connections` cut this socket (so its error is ours, not the server's)."""
    return sock is not None and sock in _cut


def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # verifies certificates and host names


# OpenSSL's verify codes for a certificate signed by no authority this machine trusts: self-signed,
# a self-signed one in the chain, an issuer not found (a company's own CA), the first one not found.
_UNTRUSTED_ISSUER = {18, 19, 20, 21}
_EXPIRED, _NOT_YET_VALID, _HOSTNAME_MISMATCH = 10, 9, 62


def _certificate_advice(code: int | None, key: str) -> str:
    """What to do about a certificate that failed its check: trusting its CA, the host name, or the server."""
    if code in _UNTRUSTED_ISSUER:
        return ("this machine does not trust who signed it: if the server's certificate comes from your "
                "own CA, point SSL_CERT_FILE at that CA's PEM file (or add it to the system's trust store); "
                "else the server needs a certificate from a public CA")
    if code in (_EXPIRED, _NOT_YET_VALID):
        return "the server's certificate is out of date: its administrator must renew it (or fix its clock)"
    if code == _HOSTNAME_MISMATCH:
        return f"set {key} host to a name the certificate is for"
    return f"fix {key} host to match the certificate, or the server's certificate"


def network_error(cfg: ServerConfig, exc: BaseException, *, connected: bool = False) -> MailServerError:
    """One line for a network failure. ``connected``: it happened after we were logged in (a sync, a send)."""
    where = f"{cfg.host}:{cfg.port}"
    key = f"[{cfg.section}]"
    if connected and isinstance(exc, (TimeoutError, socket.timeout)):
        return MailServerError(f"{where} stopped answering; what arrived so far is kept: sync again for the rest")
    if connected and isinstance(exc, imaplib.IMAP4.abort):  # imapclient's: the socket broke mid-command
        exc = ConnectionResetError(str(exc))
    if connected and isinstance(exc, OSError) and not isinstance(exc, ssl.SSLCertVerificationError):
        return MailServerError(f"lost the connection to {where} ({exc.strerror or exc}); "
                               "what arrived so far is kept: sync again for the rest")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailServerError(f"certificate check failed for {where} ({exc.verify_message}): "
                               + _certificate_advice(exc.verify_code, key))
    if isinstance(exc, ssl.SSLError):
        return MailServerError(
            f"TLS with {where} failed ({exc.reason or exc}): check {key} security (tls, starttls or none) and port"
        )
    if isinstance(exc, socket.gaierror):
        return MailServerError(f"cannot find host {cfg.host!r}: check {key} host and your network")
    if isinstance(exc, ConnectionRefusedError):
        return MailServerError(f"{where} refused the connection: check {key} host and port, and that the server runs")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return MailServerError(f"{where} did not answer in time: check {key} host and port, and your network")
    if isinstance(exc, OSError):
        return MailServerError(f"cannot reach {where} ({exc.strerror or exc}): check {key} host and port")
    return MailServerError(f"{where}: {exc}")


# RFC 5530 response codes that say the server could not do it just now, not that the folder is wrong.
_PASSING_CODES = ("SERVERBUG", "UNAVAILABLE", "INUSE", "LIMIT", "CORRUPTION", "EXPUNGEISSUED")
_CODE = re.compile(r"\[([A-Z][A-Z-]*)")


def folder_problem(client: imapclient.IMAPClient, folder: str, host: str, exc: BaseException) -> str:
    """One line for a SELECT/EXAMINE the server refused, with what to do: a folder that is not there
    lists the ones that are; a server problem (``[SERVERBUG]``, ``[UNAVAILABLE]``) says to try again."""
    said = str(exc)
    found = _CODE.search(said)
    code = found.group(1) if found else ""
    if code in _PASSING_CODES:
        return f"{host} could not open folder {folder!r} just now ({said}): try again in a moment"
    if code == "NOPERM":
        return f"{host} does not let this account read folder {folder!r} ({said}): check [imap] folder and username"
    try:
        names = sorted((name for _flags, _sep, name in client.list_folders()), key=lambda n: (n.upper() != "INBOX", n))
    except Exception:  # the hint is a nicety: the line stands without it
        names = []
    there = ""
    if names:
        shown = ", ".join(repr(n) for n in names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")
        there = f"; the folders there are {shown}"
    return f"cannot open folder {folder!r} on {host} ({said}): check [imap] folder{there}"


class _IMAP4(imap4.IMAP4WithTimeout):
    def _create_socket(self, timeout=None):  # tracked before the greeting: a silent server can be cut
        sock = super()._create_socket(timeout)
        track_connection(sock)
        return sock


class _IMAP4_TLS(tls.IMAP4_TLS):  # noqa: N801 - imapclient's naming
    def _create_socket(self, timeout=None):
        sock = socket.create_connection((self.host, self.port), timeout=self._timeout if timeout is None else timeout)
        track_connection(sock)  # during the TLS handshake
        wrapped = tls.wrap_socket(sock, self.ssl_context, self.host)
        track_connection(wrapped)
        return wrapped


class _IMAPClient(imapclient.IMAPClient):
    """imapclient's client, with its socket known to :func:`abort_connections` from the first byte."""

    def _create_IMAP4(self):
        connect_timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            return _IMAP4_TLS(self.host, self.port, self.ssl_context, connect_timeout)
        return _IMAP4(self.host, self.port, connect_timeout)


def connect_imap(cfg: ServerConfig, *, timeout: float = 30.0) -> imapclient.IMAPClient:
    """A logged-in client. Plain IMAP only when ``security = "none"`` is configured.

    With ``oauth2_command`` (Gmail, Microsoft 365) the login is SASL XOAUTH2
    with the token it prints, fetched afresh for every connection.
    """
    # A broken password or token source is reported before any network use.
    secret = cfg.oauth2_token() if cfg.oauth2_command else cfg.password()
    try:
        if cfg.security == "tls":
            client = _IMAPClient(cfg.host, cfg.port, ssl=True, ssl_context=tls_context(), timeout=timeout)
        else:
            client = _IMAPClient(cfg.host, cfg.port, ssl=False, timeout=timeout)
            if cfg.security == "starttls":
                client.starttls(tls_context())
    except (OSError, ssl.SSLError) as exc:
        raise network_error(cfg, exc) from None
    except IMAPClientError as exc:
        raise MailServerError(f"{cfg.host}:{cfg.port} is not speaking IMAP as expected ({exc}): check [imap] port and security") from None
    try:
        sock = client.socket()
        track_connection(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
    try:
        if cfg.oauth2_command:
            _xoauth2_login(client, cfg, secret)
        else:
            client.login(cfg.username, secret)
    except LoginError:
        quietly_close(client)
        raise MailServerError(
            f"{cfg.host} refused the login for {cfg.username!r}: check [{cfg.section}] username and the password it gets"
        ) from None
    except (OSError, IMAPClientError) as exc:
        quietly_close(client)
        raise network_error(cfg, exc) from None
    try:
        caps = client.capabilities()
        if b"CONDSTORE" in caps and b"ENABLE" in caps:
            # EXAMINE then reports HIGHESTMODSEQ, which the sync records with its cursor.
            client.enable("CONDSTORE")
    except (OSError, IMAPClientError) as exc:
        quietly_close(client)
        raise network_error(cfg, exc) from None
    return client


def xoauth2_responder(username: str, token: str):
    """The client's side of SASL XOAUTH2, for imaplib's ``authenticate`` and smtplib's ``auth``.

    The first answer is the token (Google's and Microsoft's format, before
    base64). A server refusing it sends a JSON error as a second challenge,
    which RFC 7628 says to answer with an empty response so it can finish.
    """
    answers = iter([f"user={username}\x01auth=Bearer {token}\x01\x01"])

    def respond(challenge: bytes | None = None) -> str:
        return next(answers, "")

    return respond


def oauth2_refused(cfg: ServerConfig) -> MailServerError:
    return MailServerError(
        f"{cfg.host} refused the OAuth2 token for {cfg.username!r}: check that [{cfg.section}] oauth2_command "
        "prints a fresh access token for this account (run it by hand)"
    )


def _xoauth2_login(client: imapclient.IMAPClient, cfg: ServerConfig, token: str) -> None:
    if b"AUTH=XOAUTH2" not in client.capabilities():
        quietly_close(client)
        raise MailServerError(
            f"{cfg.host} does not offer OAuth2 login (AUTH=XOAUTH2): "
            f"use password_command instead of [{cfg.section}] oauth2_command"
        )
    try:
        client._imap.authenticate("XOAUTH2", xoauth2_responder(cfg.username, token))
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error:
        quietly_close(client)
        raise oauth2_refused(cfg) from None
    client._cached_capabilities = None  # a server may announce more once logged in


def quietly_close(client: imapclient.IMAPClient) -> None:
    """Log out, or at least close the connection; never raises."""
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass


LINE_WAIT = 5.0  # seconds a response line that has begun may take to end
MORE_WAIT = 0.05  # seconds to wait for a further line once one has been read


def idle_check(client: imapclient.IMAPClient, timeout: float | None) -> list:
    """The server's responses during IDLE, waiting up to ``timeout`` seconds for the first.

    ``IMAPClient.idle_check`` reads with the socket non-blocking, so a line a
    server sends in two writes ("* 1 FETCH (" and "FLAGS ())", as pymap does
    on new mail) is cut in half: the connection aborts and the next command
    reads the rest as garbage. Here only the wait for a line's first byte is
    bounded (``timeout``, then ``MORE_WAIT`` for each further line); a line
    that has begun is read whole (given ``LINE_WAIT`` to end). A closed
    connection raises, like any other command.
    """
    imap = client._imap
    sock = client.socket()
    responses = []
    wait = timeout
    try:
        while _readable(imap.file, sock, wait):
            sock.settimeout(LINE_WAIT)
            responses.append(_parse_untagged_response(imap._get_line()))
            wait = MORE_WAIT
    finally:
        client._set_read_timeout()
    return responses


def _readable(file, sock: socket.socket, wait: float | None) -> bool:
    """Something to read: already buffered (by the reader or by TLS), or arriving within ``wait``."""
    sock.settimeout(0.0)
    try:
        if file.peek(1):  # non-blocking: the buffer, or what the socket has right now
            return True
    except ssl.SSLWantReadError:
        pass
    return bool(select.select([sock], [], [], wait)[0])  # also readable at end of stream: the read says so
