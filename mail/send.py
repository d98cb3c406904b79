"""Queueing outgoing mail and draining the outbox over SMTP.

``queue_reply`` / ``queue_message`` build the exact bytes and write, in ONE
transaction: the outbox row (Message-ID and bytes), our message on the
ticket (direction "out", so the customer's answer threads back by its
Message-ID) and the ticket change. SMTP is spoken later, by
``drain_outbox``, from a worker thread or `heard outbox send`:

- each row is claimed (``queued -> sending``, committed) before MAIL FROM;
- 250 after the data: ``sent``; 4xx before that: queued again with backoff;
  5xx: ``failed``, the agent is told; recipients refused one by one are kept;
- a connection lost after the data went out, or a process that died in
  ``sending``: ``unknown``, never resent blindly. The Sent folder is searched
  by Message-ID; found means ``sent``, otherwise the agent decides
  (`heard outbox retry ID` / `cancel ID`).
- a copy of each sent message is appended to ``[smtp] sent_folder`` when set
  (Gmail and Microsoft 365 file their own: leave it empty there).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import smtplib
import socket
import ssl
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from mail.autoreply import AUTOMATIC_MAIL_HEADERS
from mail.compose import (
    ComposeError,
    ReplyContext,
    build_message,
    has_own_words,
    new_message_id,
    reply_context,
    reply_subject,
    require_no_placeholders,
)
from mail.config import Config, ConfigError, ServerConfig, desk_timezone
from mail.imap import (
    MailServerError,
    connect_imap,
    network_error,
    oauth2_refused,
    tls_context,
    track_connection,
    was_cut,
    xoauth2_responder,
)
from mail.tone import strip_quoted
from storage import outbox as ob
from storage.db import Store, utcnow
from storage.ingest import Ingest, NewMessage
from storage.lifecycle import Change
from storage.ledger import settle_replied
from storage.tickets import append_event, change_status_in, mark_replied

log = logging.getLogger(__name__)

KINDS = ("reply", "ack", "update", "checkin", "close")
# After this long in temporary failure (4xx), a message fails for good.
GIVE_UP_AFTER = timedelta(days=2)
# An unknown row's Sent folder is looked at again after this long.
RECHECK_UNKNOWN = timedelta(minutes=15)
# A `sending` claim older than this is dead whatever its process: no SMTP transaction lasts that long.
CLAIM_LEASE = timedelta(minutes=10)
# Sent copies are appended for messages sent this recently (an IMAP outage then catches up).
COPY_WINDOW = timedelta(days=7)
# Rows read (with their bytes) per query while draining.
SEND_BATCH = 100


# -- queueing ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QueuedMessage:
    outbox_id: int
    message_id: str  # without angle brackets
    raw: bytes


def queue_message(
    store: Store,
    cfg: Config,
    ticket_id: int,
    body: str,
    *,
    kind: str,
    agent: str,
    now: datetime,
    to: tuple[str, str] | None = None,
    subject: str | None = None,
    in_reply_to: str | None = None,
    references: list[str] | None = None,
    extra_headers: Mapping[str, str] | None = None,
    conn=None,
    ctx: ReplyContext | None = None,
) -> QueuedMessage:
    """Build one message to the customer of ``ticket_id`` and queue it.

    Defaults come from the ticket's thread: ``to`` the customer, ``subject``
    "Re: <their subject> [#N]", ``in_reply_to`` their last message,
    ``references`` the thread. Automatic kinds (ack, update, checkin, close)
    always carry ``AUTOMATIC_MAIL_HEADERS`` (Auto-Submitted, X-Auto-Response-
    Suppress); ``extra_headers`` adds to them (and may replace In-Reply-To /
    References). Exactly one recipient, always.

    With ``conn`` it joins the caller's write transaction (so an
    acknowledgement's promise and the outbox row commit together); without,
    it opens its own.
    """
    if conn is None:
        with store.write_conn() as c:
            return queue_message(store, cfg, ticket_id, body, kind=kind, agent=agent, now=now, to=to,
                                 subject=subject, in_reply_to=in_reply_to, references=references,
                                 extra_headers=extra_headers, conn=c, ctx=ctx)
    if kind not in KINDS:
        raise ComposeError(f"unknown outbox kind {kind!r}: use one of {', '.join(KINDS)}")
    ctx = ctx or reply_context(conn, ticket_id)
    headers = dict(extra_headers or {})
    automatic = kind != "reply"
    if automatic:
        headers = {**AUTOMATIC_MAIL_HEADERS, **headers}
    elif any(k.lower() == "auto-submitted" for k in headers):
        raise ComposeError("a reply written by a person is not automatic mail: no Auto-Submitted header")
    name, addr = to or (ctx.customer_name, ctx.customer_address)
    if "@" not in (addr or ""):  # its mail came without an address: "Jane Doe (no address)"
        raise ComposeError(f"#{ticket_id} has no sender address to answer (its mail came without a usable From): "
                           f"solve it with a reason, or write to the customer from your mail client")
    if addr.lower() in cfg.own_addresses:
        raise ComposeError(f"#{ticket_id}'s mail claims to come from our own address {addr}: a reply would only "
                           f"reach the support inbox; solve it with a reason instead")
    message_id = new_message_id(cfg.own_domain)
    subj = subject if subject is not None else reply_subject(ctx.subject, ticket_id)
    irt = in_reply_to if in_reply_to is not None else ctx.in_reply_to
    refs = references if references is not None else ctx.references
    from_name = cfg.agent_name or ""
    raw = build_message(
        from_name=from_name, from_addr=cfg.address, to=[(name, addr)], subject=subj, body=body,
        message_id=message_id, date=now, reply_to=cfg.address, in_reply_to=irt, references=refs,
        extra_headers=headers,
    )
    outbox_id = ob.insert_outbox(
        conn, ticket_id=ticket_id, kind=kind, message_id=message_id, mail_from=cfg.address,
        recipients=[addr.lower()], raw=raw, agent=agent, now=now,
    )
    ing = Ingest(conn, store.search, now)
    content_hash = hashlib.sha256(raw).hexdigest()
    ing.prefetch([], [content_hash], [ticket_id])
    ing.add(
        NewMessage(
            raw=raw, content_hash=content_hash, message_id=message_id,
            refs=([irt] if irt else []) + [r for r in refs if r != irt],
            subject=subj, from_addr=cfg.address, from_name=from_name, date=now, direction="out",
            automated_reason=f"our automatic {kind} (Auto-Submitted)" if automatic else None,
            text=body.replace("\r\n", "\n"),
        ),
        ticket_id,
        f"sent by us ({kind}, outbox #{outbox_id})",
    )
    ing.flush()
    return QueuedMessage(outbox_id, message_id, raw)


def queue_reply(
    store: Store,
    cfg: Config,
    ticket_id: int,
    body: str,
    *,
    agent: str,
    now: datetime,
    next_status: str | None = "pending",
    reason: str | None = None,
    saved_reply: str | Sequence[str] | None = None,
) -> int:
    """Queue an agent's reply and move the ticket on, in one transaction; the outbox id.

    ``saved_reply``: the saved reply (or every one, in order) the body was written from; each is
    recorded in the timeline, for the repeat check of later replies.

    ``next_status`` None (or the ticket's current status) leaves the status
    alone; any change needs ``reason``. Unfilled placeholders and an empty
    reply are refused before anything is written.
    """
    require_no_placeholders(body)
    if not strip_quoted(body or "").strip():
        raise ComposeError("the reply is empty: write something above the quote")
    with store.write_conn() as conn:
        ctx = reply_context(conn, ticket_id)
        if not has_own_words(body, ctx, agent_name=cfg.agent_name, signature=cfg.signature):
            raise ComposeError("the reply has only the greeting, the signature and the quote: "
                               "write your answer under the greeting")
        q = queue_message(store, cfg, ticket_id, body, kind="reply", agent=agent, now=now, conn=conn, ctx=ctx)
        mark_replied(conn, ticket_id, now=now)
        append_event(conn, ticket_id, Change(
            "reply", None, f"outbox #{q.outbox_id}",
            f"replied to {ctx.customer_address} (Message-ID <{q.message_id}>)", agent, now,
        ))
        names = [saved_reply] if isinstance(saved_reply, str) else list(saved_reply or ())
        for name in dict.fromkeys(n for n in names if n):
            append_event(conn, ticket_id, Change(
                "saved_reply", None, name, f"the reply used the saved reply {name!r}", agent, now,
            ))
        if next_status:
            change_status_in(conn, ticket_id, next_status, reason=reason, actor=agent, now=now)
        # The reply handles any promise in force: the queue stops showing it as at risk.
        settle_replied(conn, now=now, ticket_ids=[ticket_id])
    return q.outbox_id


# -- SMTP --------------------------------------------------------------------------------
class _SMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):  # tracked from before the greeting: a silent server can be cut
        sock = super()._get_socket(host, port, timeout)
        track_connection(sock)
        return sock


class _SMTP_SSL(smtplib.SMTP_SSL):  # noqa: N801 - smtplib's naming
    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        track_connection(sock)
        return sock


def connect_smtp(cfg: ServerConfig, *, timeout: float = 60.0) -> smtplib.SMTP:
    """A connected (and, with a username, logged-in) SMTP client; failures as one line naming [smtp]."""
    helo = socket.gethostname() or "localhost"
    try:
        if cfg.security == "tls":
            client = _SMTP_SSL(cfg.host, cfg.port, local_hostname=helo, timeout=timeout, context=tls_context())
        else:
            client = _SMTP(cfg.host, cfg.port, local_hostname=helo, timeout=timeout)
            if cfg.security == "starttls":
                client.ehlo()
                if not client.has_extn("starttls"):
                    client.close()
                    raise MailServerError(
                        f"{cfg.host}:{cfg.port} does not offer STARTTLS: check [smtp] security and port "
                        "(tls is usually port 465, starttls 587)"
                    )
                client.starttls(context=tls_context())
                track_connection(client.sock)  # the TLS socket that replaced the plain one
        client.ehlo_or_helo_if_needed()
    except MailServerError:
        raise
    except smtplib.SMTPConnectError as exc:
        raise MailServerError(f"{cfg.host}:{cfg.port} turned us away ({_reply_text(exc.smtp_code, exc.smtp_error)}): "
                              "check [smtp] host and port") from None
    except smtplib.SMTPServerDisconnected as exc:
        if _timed_out(exc):  # it took the connection and then said nothing: not a closed connection
            raise MailServerError(
                f"{cfg.host}:{cfg.port} took the connection but did not answer within {timeout:.0f} s: check [smtp] "
                "host and port, or try again later (what is queued stays queued)") from None
        raise MailServerError(f"{cfg.host}:{cfg.port} closed the connection at once: check [smtp] port and security "
                              "(tls, starttls or none)") from None
    except (OSError, ssl.SSLError) as exc:
        raise network_error(cfg, exc) from None
    if cfg.username:
        try:
            if cfg.oauth2_command:
                _xoauth2_login(client, cfg)
            else:
                client.login(cfg.username, cfg.password())
        except ConfigError:
            _quit(client)
            raise
        except smtplib.SMTPAuthenticationError:
            _quit(client)
            if cfg.oauth2_command:
                raise oauth2_refused(cfg) from None
            raise MailServerError(
                f"{cfg.host} refused the login for {cfg.username!r}: check [smtp] username and the password it gets"
            ) from None
        except smtplib.SMTPNotSupportedError:
            _quit(client)
            raise MailServerError(
                f"{cfg.host}:{cfg.port} offers no login (AUTH): set [smtp] security to tls or starttls, "
                "or leave username empty for a server that needs none"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            _quit(client)
            raise MailServerError(f"login to {cfg.host}:{cfg.port} failed ({exc}): check [smtp] username") from None
    return client


def _timed_out(exc: BaseException) -> bool:
    """A socket timeout, also behind smtplib's "Connection unexpectedly closed: timed out"."""
    return isinstance(exc, (TimeoutError, socket.timeout)) or isinstance(exc.__context__, (TimeoutError, socket.timeout))


def _xoauth2_login(client: smtplib.SMTP, cfg: ServerConfig) -> None:
    """AUTH XOAUTH2 with the token ``oauth2_command`` prints (Gmail, Microsoft 365)."""
    token = cfg.oauth2_token()
    if not client.has_extn("auth"):
        raise smtplib.SMTPNotSupportedError("no AUTH")
    if "XOAUTH2" not in client.esmtp_features.get("auth", "").upper().split():
        _quit(client)
        raise MailServerError(
            f"{cfg.host}:{cfg.port} does not offer OAuth2 login (AUTH XOAUTH2): "
            "use password_command instead of [smtp] oauth2_command"
        )
    client.auth("XOAUTH2", xoauth2_responder(cfg.username, token), initial_response_ok=True)


def _quit(client) -> None:
    try:
        client.quit()
    except Exception:
        try:
            client.close()
        except Exception:
            pass


def _close(client) -> None:
    try:
        client.close()
    except Exception:
        pass


def _reply_text(code: int, resp: bytes | str | None) -> str:
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return f"{code} {' '.join((resp or '').split())}".strip()


@dataclass
class _Outcome:
    state: str  # sent | deferred | failed | unknown
    reply: str = ""
    refused: list[str] = field(default_factory=list)
    connection_lost: bool = False  # stop using this connection
    interrupted: bool = False  # ctrl+c (or SIGTERM, as the command line takes it) in the middle of it


_DOT = re.compile(rb"(?m)^\.")


def _send_one(smtp, mail_from: str, recipients: list[str], raw: bytes) -> _Outcome:
    """One MAIL/RCPT/DATA transaction, knowing whether the bytes were handed over when it broke."""
    handed_over = False
    try:
        code, resp = smtp.mail(mail_from)
        if code != 250:
            return _refusal(smtp, code, resp)
        accepted, refused, temporary = [], [], []
        for rcpt in recipients:
            code, resp = smtp.rcpt(rcpt)
            if code in (250, 251):
                accepted.append(rcpt)
            elif 400 <= code < 500:
                temporary.append(f"{rcpt} ({_reply_text(code, resp)})")
                if code == 421:
                    return _Outcome("deferred", _reply_text(code, resp), connection_lost=True)
            else:
                refused.append(f"{rcpt} ({_reply_text(code, resp)})")
        if not accepted:
            _rset(smtp)
            if temporary:
                return _Outcome("deferred", "; ".join(temporary), refused=refused)
            return _Outcome("failed", "every recipient was refused", refused=refused)
        smtp.putcmd("data")
        code, resp = smtp.getreply()
        if code != 354:
            return _refusal(smtp, code, resp, refused)
        data = _DOT.sub(b"..", raw)
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        handed_over = True
        smtp.send(data + b".\r\n")
        code, resp = smtp.getreply()
        if code == 250:
            return _Outcome("sent", _reply_text(code, resp), refused=refused + temporary)
        return _refusal(smtp, code, resp, refused)
    except KeyboardInterrupt:  # settled like a dropped connection (then the interrupt goes on)
        return _Outcome("unknown" if handed_over else "deferred", "heard was interrupted", connection_lost=True,
                        interrupted=True)
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        if _timed_out(exc):
            wait = getattr(smtp, "timeout", None)
            what = f"no answer within {wait:.0f} s" if isinstance(wait, (int, float)) else "no answer in time"
        else:
            what = f"the connection broke ({type(exc).__name__}: {exc})".replace(": )", ")")
        if handed_over:
            return _Outcome("unknown", what, connection_lost=True)
        return _Outcome("deferred", what, connection_lost=True)


def _rset(smtp) -> None:
    try:
        smtp.rset()
    except Exception:
        pass


def _refusal(smtp, code: int, resp, refused: list[str] | None = None) -> _Outcome:
    reply = _reply_text(code, resp)
    if code == 421:
        return _Outcome("deferred", reply, refused or [], connection_lost=True)
    _rset(smtp)
    if 400 <= code < 500:
        return _Outcome("deferred", reply, refused or [])
    return _Outcome("failed", reply, refused or [])


# -- who is alive ------------------------------------------------------------------------
_HOST = socket.gethostname()
_PROCESS_TOKEN = uuid.uuid4().hex[:12]


def claim_owner() -> str:
    """This process, as written on the rows it claims."""
    return f"{_HOST}:{os.getpid()}:{_PROCESS_TOKEN}"


def _as_utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def claim_is_dead(owner: str | None, claimed_at: datetime | None, *, now: datetime) -> bool:
    """Did the process holding a `sending` claim die? Only called while this process drains nothing else."""
    claimed_at = _as_utc(claimed_at)
    if not owner or claimed_at is None or now - claimed_at > CLAIM_LEASE:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != _HOST:
        return False  # another machine: only the lease tells
    try:
        pid = int(pid_text)
    except ValueError:
        return True
    if pid == os.getpid():
        return True  # drains in one process take turns (a lock): our own claim here is left over

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# -- draining ----------------------------------------------------------------------------
@dataclass
class DrainResult:
    sent: list[int] = field(default_factory=list)
    deferred: list[int] = field(default_factory=list)  # 4xx or connection trouble: retried later
    failed: list[int] = field(default_factory=list)  # 5xx: the agent must act
    unknown: list[int] = field(default_factory=list)  # may have gone out: never resent without a check
    reconciled: list[int] = field(default_factory=list)  # unknown -> sent, found in the Sent folder
    copied: int = 0  # appended to the Sent folder
    errors: list[str] = field(default_factory=list)  # one line each, for the agent
    busy: bool = False  # another drain in this process was running; it will run again

    @property
    def attempted(self) -> int:
        return len(self.sent) + len(self.deferred) + len(self.failed) + len(self.unknown)

    def line(self) -> str:
        parts = [f"{len(self.sent)} sent"]
        for name in ("deferred", "failed", "unknown", "reconciled"):
            n = len(getattr(self, name))
            if n:
                parts.append(f"{n} {name}")
        if self.copied:
            parts.append(f"{self.copied} copied to the Sent folder")
        return ", ".join(parts)


_drain_lock = threading.Lock()
_drain_again = threading.Event()

SmtpFactory = Callable[[ServerConfig], smtplib.SMTP]
ImapFactory = Callable[[Config], object]


def drain_outbox(
    store: Store,
    cfg: Config,
    *,
    now: datetime | None = None,
    smtp_factory: SmtpFactory | None = None,
    imap_factory: ImapFactory | None = None,
) -> DrainResult:
    """Send every due message over one SMTP connection; blocking, so call it from a worker thread.

    Safe to call from several threads and processes at once: each row is
    claimed atomically. Within one process a second call while one runs
    returns at once (``busy``) and the running one goes round again.
    """
    if not _drain_lock.acquire(blocking=False):
        _drain_again.set()
        return DrainResult(busy=True)
    try:
        total = DrainResult()
        for _ in range(5):
            _drain_again.clear()
            r = _drain(store, cfg, now=now, smtp_factory=smtp_factory, imap_factory=imap_factory)
            for name in ("sent", "deferred", "failed", "unknown", "reconciled", "errors"):
                getattr(total, name).extend(getattr(r, name))
            total.copied += r.copied
            if not _drain_again.is_set():
                break
        return total
    finally:
        _drain_lock.release()


def recover_interrupted_sends(store: Store, cfg: Config, *, now: datetime | None = None) -> list[int]:
    """Rows left in ``sending`` by a process that died (``kill -9`` mid-send) become ``unknown``, with a
    timeline event; their ids. What `heard outbox` does before it lists, retries or cancels, so a
    dead send is not shown as "being sent right now" until the next drain. Nothing while this process
    drains (its own claims are alive then).
    """
    if not _drain_lock.acquire(blocking=False):
        return []
    try:
        now = now or utcnow()
        result = DrainResult(unknown=ob.recover_interrupted(store, is_dead=lambda o, at: claim_is_dead(o, at, now=now)))
        _record_outcomes(store, cfg, result, now)
        return result.unknown
    finally:
        _drain_lock.release()


def _drain(store: Store, cfg: Config, *, now, smtp_factory, imap_factory) -> DrainResult:
    clock = (lambda: now) if now is not None else utcnow
    result = DrainResult()
    t0 = clock()
    result.unknown.extend(ob.recover_interrupted(store, is_dead=lambda o, at: claim_is_dead(o, at, now=t0)))
    imap = _LazyImap(cfg, imap_factory)
    try:
        try:
            # The unknown rows to look for in the Sent folder are those of before this drain; they are looked
            # for after sending, so an IMAP server that is slow or silent never holds up the mail that is due.
            with store.read() as s:
                to_check = ob.unknown_to_check(s.connection(), now=clock())
            if cfg.smtp is None:
                _reconcile_unknown(store, cfg, imap, clock, result, to_check)
                with store.read() as s:
                    if ob.due_ids(s.connection(), now=clock(), limit=1):
                        result.errors.append("no [smtp] section in the config: add one to send mail (see README)")
                return result
            try:
                _send_due(store, cfg, smtp_factory or connect_smtp, clock, result)
            finally:
                _reconcile_unknown(store, cfg, imap, clock, result, to_check)
        finally:
            _record_outcomes(store, cfg, result, clock())
        if cfg.smtp.sent_folder:
            _append_copies(store, cfg, imap, clock, result)
    finally:
        imap.close()
    return result


def _send_due(store: Store, cfg: Config, factory: SmtpFactory, clock, result: DrainResult) -> None:
    with store.read() as s:
        due = ob.due_ids(s.connection(), now=clock())
    if not due:
        return
    try:
        smtp = factory(cfg.smtp)
    except (MailServerError, ConfigError) as exc:
        _note_connection_error(store, due, str(exc))
        result.errors.append(str(exc))
        return
    except (OSError, smtplib.SMTPException) as exc:
        line = str(network_error(cfg.smtp, exc))
        _note_connection_error(store, due, line)
        result.errors.append(line)
        return
    owner = claim_owner()
    # Each outcome commits together with the next row's claim: one transaction per message,
    # and still every claim is committed before its MAIL FROM.
    settle: tuple[dict, _Outcome] | None = None
    ledger = ob.SendLedger(store)
    try:
        for start in range(0, len(due), SEND_BATCH):
            with store.read() as s:
                rows = ob.rows_for_sending(s.connection(), due[start:start + SEND_BATCH])
            for row in rows:
                with ledger.transaction():
                    if settle is not None:
                        _settle(ledger, cfg, *settle, clock(), result)
                        settle = None
                    claimed = ledger.claim(row["id"], owner=owner, now=clock())
                if not claimed:
                    continue  # sent or cancelled meanwhile, or another drain has it
                row["attempts"] += 1
                sock = smtp.sock
                try:
                    outcome = _send_one(smtp, row["mail_from"], row["recipients"].split(), row["raw"])
                except Exception as exc:  # a bug or an odd server: settle the row before anything else
                    outcome = _Outcome("unknown", f"sending stopped unexpectedly ({type(exc).__name__}: {exc})",
                                       connection_lost=True)
                if outcome.connection_lost and was_cut(sock):  # heard is closing (the app quit), not a server fault
                    outcome.reply = "heard was closed while waiting for the server's answer"
                settle = (row, outcome)
                if outcome.interrupted:
                    raise KeyboardInterrupt  # after the finally below has settled the row
                if outcome.connection_lost:
                    if outcome.state in ("deferred", "unknown"):
                        result.errors.append(f"[smtp] {cfg.smtp.host}: {outcome.reply}; the rest of the queue waits")
                    return
    finally:
        try:
            if settle is not None:
                with ledger.transaction():
                    _settle(ledger, cfg, *settle, clock(), result)
        finally:
            ledger.close()
            if settle is not None and settle[1].interrupted:
                _close(smtp)  # no QUIT: a server that stopped answering would keep us waiting for its reply
            else:
                _quit(smtp)


_KIND_WORDS = {"reply": "reply", "ack": "acknowledgement", "update": "update", "checkin": "check-in",
               "close": "closing notice"}
OUTBOX_ACTOR = "heard outbox"


def _record_outcomes(store: Store, cfg: Config, result: DrainResult, now: datetime) -> None:
    """The ticket's timeline says what became of its mail when that was not plain delivery: refused
    for good, maybe sent (``unknown``), or found in the Sent folder after all. An acknowledgement or
    update the server refused for good never reached the customer: it made no promise.
    """
    from storage.ledger import withdraw_promise

    outcomes = ([(oid, "sending", "failed") for oid in result.failed]
                + [(oid, "sending", "unknown") for oid in result.unknown]
                + [(oid, "unknown", "sent") for oid in result.reconciled])
    if not outcomes:
        return
    with store.write_conn() as conn:
        for oid, old, new in outcomes:
            row = ob.outbox_row(conn, oid)
            what = f"the {_KIND_WORDS.get(row['kind'], row['kind'])} to {row['recipients']} (outbox #{oid})"
            if new == "failed":
                why = f"{what} was not delivered: {row['last_error']}"
            elif new == "unknown":
                why = f"{what} may or may not have gone out: {row['last_error']}"
            else:
                why = f"{what} went out: {row['last_error']}"
            append_event(conn, row["ticket_id"], Change("outbox", old, new, why, OUTBOX_ACTOR, now))
            if new == "failed":
                withdraw_promise(conn, oid, now=now, actor=OUTBOX_ACTOR, why=f"outbox #{oid} refused by the server",
                                 tz=desk_timezone(cfg))


def _note_connection_error(store: Store, ids: list[int], line: str) -> None:
    from sqlalchemy import update

    with store.write_conn() as conn:
        conn.execute(update(ob.O).where(ob.O.c.id.in_(ids), ob.O.c.state == "queued").values(last_error=line))


def _send_again(row: dict) -> str:
    """What to run after a refusal for good. An acknowledgement or update that failed made no promise (its
    deadline is withdrawn), so it is not retried but made afresh."""
    oid, cancel = row["id"], f"`heard outbox cancel {row['id']}` clears it"
    if row.get("kind") == "ack":
        return f"acknowledge the ticket again for a fresh deadline (a in the queue, or `heard ack`); {cancel}"
    if row.get("kind") == "update":
        return f"send a new update (u on the ticket, or `heard update {row['ticket_id']}`); {cancel}"
    return f"`heard outbox retry {oid}`, or `heard outbox cancel {oid}`"


def _settle(ledger: ob.SendLedger, cfg: Config, row: dict, out: _Outcome, now: datetime, result: DrainResult) -> None:
    oid = row["id"]
    refused = "; ".join(out.refused)
    host = cfg.smtp.host
    if out.state == "sent":
        note = f"refused: {refused}" if refused else None
        ledger.sent(oid, now=now, refused=refused, note=note)
        result.sent.append(oid)
        if refused:
            result.errors.append(f"outbox #{oid} went out, but {host} refused {refused}")
    elif out.state == "failed":
        err = f"{host} refused it ({out.reply}): fix the cause, then {_send_again(row)}"
        if refused:
            err += f"; refused: {refused}"
        ledger.failed(oid, error=err, refused=refused)
        result.failed.append(oid)
        result.errors.append(f"outbox #{oid} (ticket #{row['ticket_id']}) failed: {err}")
    elif out.state == "deferred":
        created = _as_utc(row["created_at"]) or now
        if now - created > GIVE_UP_AFTER:
            err = (f"gave up after {row['attempts']} attempts over {GIVE_UP_AFTER.days} days of temporary "
                   f"errors (last: {out.reply}): {_send_again(row)}")
            ledger.failed(oid, error=err, refused=refused)
            result.failed.append(oid)
            result.errors.append(f"outbox #{oid} (ticket #{row['ticket_id']}) failed: {err}")
        else:
            wait = timedelta(0) if out.interrupted else ob.backoff(row["attempts"])  # nothing went out: due now
            said = f"{host}: {out.reply};" if out.connection_lost and not out.reply[:1].isdigit() else \
                f"{host} said {out.reply}:"
            err = f"{said} trying again at {(now + wait):%H:%M} UTC"
            if out.interrupted:
                err = f"{out.reply} before the message went out: it goes with the next send (`heard outbox send`)"
            ledger.deferred(oid, error=err, next_attempt_at=now + wait)
            result.deferred.append(oid)
    else:
        err = (f"{host}: {out.reply} after the message was handed over, so it may or may not have gone "
               f"out: heard checks the Sent folder; `heard outbox retry {oid}` sends it again")
        ledger.unknown(oid, error=err)
        result.unknown.append(oid)


# -- the Sent folder -----------------------------------------------------------------------
class _LazyImap:
    """One IMAP connection per drain, opened only when needed."""

    def __init__(self, cfg: Config, factory: ImapFactory | None):
        self.cfg = cfg
        self.factory = factory or (lambda c: connect_imap(c.imap))
        self.client = None
        self._sent_folder: str | None = None

    def get(self):
        if self.client is None:
            self.client = self.factory(self.cfg)
        return self.client

    def sent_folder(self) -> str | None:
        """[smtp] sent_folder, or the server's \\Sent folder (Gmail's "[Gmail]/Sent Mail")."""
        if self.cfg.smtp and self.cfg.smtp.sent_folder:
            return self.cfg.smtp.sent_folder
        if self._sent_folder is None:
            from imapclient.exceptions import IMAPClientError
            from imapclient.imapclient import SENT

            client = self.get()  # a server that cannot be reached says so (the caller reports it)
            try:
                self._sent_folder = client.find_special_folder(SENT) or ""
            except IMAPClientError:  # the server would not list its folders: no Sent folder to look in
                self._sent_folder = ""
        return self._sent_folder or None

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.logout()
            except Exception:
                pass
            self.client = None


def _reconcile_unknown(store: Store, cfg: Config, imap: _LazyImap, clock, result: DrainResult,
                       rows: list[dict]) -> None:
    if not rows:
        return
    try:
        folder = imap.sent_folder()
        found: dict[int, bool] = {}
        if folder:
            client = imap.get()
            client.select_folder(folder, readonly=True)
            for r in rows:
                found[r["id"]] = bool(client.search(["HEADER", "Message-ID", f"<{r['message_id']}>"]))
    except Exception as exc:
        line = str(exc) if isinstance(exc, (MailServerError, ConfigError)) else str(network_error(cfg.imap, exc))
        result.errors.append(f"cannot check the Sent folder for unsure sends: {line}")
        _check_again_later(store, [r["id"] for r in rows], clock() + RECHECK_UNKNOWN)  # not at every drain
        return
    now = clock()
    with store.write_conn() as conn:
        for r in rows:
            oid = r["id"]
            if found.get(oid):
                if ob.mark_found_in_sent(conn, oid, folder=folder, now=now):
                    result.reconciled.append(oid)
                continue
            where = f"not in the Sent folder {folder!r}" if folder else "no Sent folder to look in ([smtp] sent_folder)"
            ob.note_unknown_checked(
                conn, oid, next_check_at=now + RECHECK_UNKNOWN,
                error=(f"the send was interrupted and the message is {where} (checked {now:%H:%M} UTC): "
                       f"`heard outbox retry {oid}` sends it again, `heard outbox cancel {oid}` drops it"),
            )


def _check_again_later(store: Store, ids: list[int], at: datetime) -> None:
    from sqlalchemy import update

    with store.write_conn() as conn:
        conn.execute(update(ob.O).where(ob.O.c.id.in_(ids), ob.O.c.state == "unknown").values(next_attempt_at=at))


def _append_copies(store: Store, cfg: Config, imap: _LazyImap, clock, result: DrainResult) -> None:
    now = clock()
    with store.read() as s:
        rows = ob.sent_without_copy(s.connection(), since=now - COPY_WINDOW)
    if not rows:
        return
    folder = cfg.smtp.sent_folder
    done: list[int] = []
    try:
        client = imap.get()
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for r in rows:
            client.append(folder, r["raw"], flags=[b"\\Seen"], msg_time=_as_utc(r["sent_at"]))
            done.append(r["id"])
    except Exception as exc:
        line = str(exc) if isinstance(exc, (MailServerError, ConfigError)) else str(network_error(cfg.imap, exc))
        result.errors.append(f"cannot copy sent mail to {folder!r}: {line}; it is retried on the next send")
    finally:
        if done:
            with store.write_conn() as conn:
                ob.mark_copied(conn, done)
            result.copied += len(done)
