"""Connecting to the IMAP server, with every failure as one actionable line."""

from __future__ import annotations

import socket
import ssl

import imapclient
from imapclient.exceptions import IMAPClientError, LoginError

from mail.config import ServerConfig


class MailServerError(RuntimeError):
    """A server problem in one line: which server, what happened, what to do."""


def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()  # verifies certificates and host names


def network_error(cfg: ServerConfig, exc: BaseException) -> MailServerError:
    where = f"{cfg.host}:{cfg.port}"
    key = f"[{cfg.section}]"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return MailServerError(
            f"certificate check failed for {where} ({exc.verify_message}): "
            f"fix {key} host to match the certificate, or the server's certificate"
        )
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


def connect_imap(cfg: ServerConfig, *, timeout: float = 30.0) -> imapclient.IMAPClient:
    """A logged-in client. Plain IMAP only when ``security = "none"`` is configured."""
    password = cfg.password()  # a broken password source is reported before any network use
    try:
        if cfg.security == "tls":
            client = imapclient.IMAPClient(cfg.host, cfg.port, ssl=True, ssl_context=tls_context(), timeout=timeout)
        else:
            client = imapclient.IMAPClient(cfg.host, cfg.port, ssl=False, timeout=timeout)
            if cfg.security == "starttls":
                client.starttls(tls_context())
    except (OSError, ssl.SSLError) as exc:
        raise network_error(cfg, exc) from None
    except IMAPClientError as exc:
        raise MailServerError(f"{cfg.host}:{cfg.port} is not speaking IMAP as expected ({exc}): check [imap] port and security") from None
    try:
        sock = client.socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
    try:
        client.login(cfg.username, password)
    except LoginError:
        _quietly_close(client)
        raise MailServerError(
            f"{cfg.host} refused the login for {cfg.username!r}: check [{cfg.section}] username and the password it gets"
        ) from None
    except (OSError, IMAPClientError) as exc:
        _quietly_close(client)
        raise network_error(cfg, exc) from None
    try:
        caps = client.capabilities()
        if b"CONDSTORE" in caps and b"ENABLE" in caps:
            # EXAMINE then reports HIGHESTMODSEQ, which the sync records with its cursor.
            client.enable("CONDSTORE")
    except (OSError, IMAPClientError) as exc:
        _quietly_close(client)
        raise network_error(cfg, exc) from None
    return client


def _quietly_close(client: imapclient.IMAPClient) -> None:
    try:
        client.logout()
    except Exception:
        try:
            client.shutdown()
        except Exception:
            pass
