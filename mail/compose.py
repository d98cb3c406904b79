"""Building outgoing mail: the reply draft, its checks, and the exact bytes.

Pure apart from ``reply_context`` (one read of the store). The message is
built with the ``email`` package under ``policy.SMTP`` (CRLF line ends):

- From: the support address, with the agent's name as display name;
  Reply-To: the support address (answers come back to the shared inbox);
- In-Reply-To: the customer's last message; References: the thread's
  Message-IDs, oldest first, so any of them threads the answer back;
- Subject: the customer's subject, "Re: " once, and the tag ``[#N]``;
- a Message-ID on our own domain; a text/plain UTF-8 body.

A header value holding CR, LF (raw, or hidden in an RFC 2047 encoded word)
or another control character is refused: it could add headers (a Bcc).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.header import decode_header, make_header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from sqlalchemy.engine import Connection

from mail.threads import tag_subject
from mail.tone import ToneWarning, check_tone, strip_quoted
from mail.untrusted import safe_line, safe_text

__all__ = [
    "ComposeError",
    "HeaderInjectionError",
    "UnfilledPlaceholderError",
    "ReplyContext",
    "reply_context",
    "first_name",
    "draft_reply",
    "complete_body",
    "unfilled_placeholders",
    "require_no_placeholders",
    "has_own_words",
    "reply_subject",
    "new_message_id",
    "build_message",
    "check_header_value",
    "tone_warnings",
]


class ComposeError(ValueError):
    """A message that cannot be built as asked; one line saying what to change."""


class HeaderInjectionError(ComposeError):
    pass


class UnfilledPlaceholderError(ComposeError):
    pass


# -- header safety -----------------------------------------------------------------------
# CR, LF and the other C0 controls, DEL, NEL and the Unicode line/paragraph separators.
_BAD_HEADER_CHARS = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")  # RFC 5322 ftext: printable ASCII but ":"


def check_header_value(name: str, value: str) -> str:
    """``value`` if it is safe as one header line; HeaderInjectionError otherwise."""
    if not _HEADER_NAME.match(name or ""):
        raise HeaderInjectionError(f"refused: {name!r} is not a valid header name")
    if _BAD_HEADER_CHARS.search(value):
        raise HeaderInjectionError(
            f"refused: the {name} header contains a line break or control character, "
            "which could add headers (such as a Bcc): remove it"
        )
    if _ENCODED_WORD.search(value):
        try:
            decoded = str(make_header(decode_header(value)))
        except Exception:
            decoded = value
        if _BAD_HEADER_CHARS.search(decoded):
            raise HeaderInjectionError(
                f"refused: the {name} header hides an encoded line break (RFC 2047), "
                "which could add headers (such as a Bcc): remove it"
            )
    return value


def _clean_subject(subject: str) -> str:
    # A customer's folded subject may carry whitespace runs or newlines after decoding: one line. Control
    # characters and bidi overrides go too: the customer's own subject must never make our reply unsendable.
    return " ".join(safe_line(subject or "").split())


# -- the thread we answer ----------------------------------------------------------------
@dataclass
class ReplyContext:
    """What a reply to one ticket needs to know, as plain values."""

    ticket_id: int
    subject: str  # the customer's subject (their last message's, else the ticket's)
    status: str
    customer_name: str
    customer_address: str
    in_reply_to: str | None  # the Message-ID we answer (no brackets)
    references: list[str]  # thread Message-IDs, oldest first (no brackets)
    last_customer_text: str = ""
    last_customer_date: datetime | None = None
    last_customer_name: str = ""
    our_texts: list[str] = field(default_factory=list)
    customer_texts: list[str] = field(default_factory=list)
    saved_replies_used: list[str] = field(default_factory=list)

    @property
    def customer_first_name(self) -> str:
        return first_name(self.customer_name, self.customer_address)


MAX_REFERENCES = 20


def reply_context(conn: Connection, ticket_id: int) -> ReplyContext:
    """Read one ticket's thread for a reply (TicketError if it does not exist)."""
    from storage.tickets import events_of, messages_of, require_ticket

    row = require_ticket(conn, ticket_id)
    msgs = messages_of(conn, ticket_id)
    customer_msgs = [m for m in msgs if m["direction"] == "in" and not m["automated"]]
    last = customer_msgs[-1] if customer_msgs else next((m for m in reversed(msgs) if m["direction"] == "in"), None)
    ids = [m["message_id"] for m in msgs if m["message_id"]]
    if len(ids) > MAX_REFERENCES:  # the root plus the nearest ancestors, as RFC 5322 suggests
        ids = ids[:1] + ids[-(MAX_REFERENCES - 1):]
    last_date = None
    if last and last["date"]:
        last_date = datetime.fromisoformat(last["date"].replace("Z", "+00:00"))
    return ReplyContext(
        ticket_id=ticket_id,
        subject=_clean_subject((last or {}).get("subject") or row["subject"]),
        status=row["status"],
        # The name as the customer's mail gave it, less control characters: it goes into our To header.
        customer_name=safe_line(last["from_name"] if last and last["from_name"] else row.get("customer_name") or ""),
        customer_address=(last["from"] if last and last["from"] else row["customer"]),
        in_reply_to=last["message_id"] if last else None,
        references=ids,
        # Quoted in the draft, which the composer shows as it is: no escape sequences, no bidi overrides.
        last_customer_text=safe_text(last["text"]) if last else "",
        last_customer_date=last_date,
        last_customer_name=safe_line(last["from_name"] or last["from"]) if last else "",
        our_texts=[m["text"] for m in msgs if m["direction"] == "out"],
        customer_texts=[m["text"] for m in customer_msgs],
        saved_replies_used=[e["new"] for e in events_of(conn, ticket_id) if e["kind"] == "saved_reply" and e["new"]],
    )


_NAME_NOISE = re.compile(r"[\"'()<>]")
# Bracketed or braced parts of a display name are never what a person is called: "[red]Admin[/red]" is
# markup, "Ann [ACME]" a company tag, and "{x}" in our greeting would read as an unfilled placeholder.
_NAME_TAGS = re.compile(r"\[[^\]]*\]|\{[^}]*\}|[\[\]{}]")
# Honorifics before a first name: "Dr. Anna Schmidt" is greeted "Hi Anna,", never "Hi Dr.,".
_TITLES = frozenset("mr mrs ms miss mx dr prof professor sir madam mme mlle herr frau sr sra srta dra dott dottssa"
                    .split())
_TITLES_WITH_DOT = frozenset("m hr fr sig ing mag dipl".split())  # "M. Dupont", "Ing. Rossi"; "Mag Li" is a name
# Words that make a display name an organisation or a role, not a person ("Hello," then).
_NOT_A_PERSON = frozenset("""support team helpdesk service services billing accounts accounting sales info admin
administrator department dept inc ltd llc gmbh corp corporation company noreply no-reply notifications""".split())


def first_name(name: str, address: str = "") -> str:
    """The customer's first name for a greeting; "" when we do not know it.

    "Lee, Ann" -> "Ann"; "ann.lee@x" gives nothing (guessing from an address
    gets it wrong too often to greet someone with).
    """
    name = _NAME_NOISE.sub(" ", _NAME_TAGS.sub(" ", safe_line(name or ""))).strip()  # never a control character
    if not name or "@" in name:
        return ""
    shouted = name.isupper()
    words = name.split()
    if any(w.lower().strip(".&-") in _NOT_A_PERSON for w in words):
        return ""  # "Support Team", "ACME Corp", "Ledgerly Billing": nobody is called that
    surname_first = "," in name
    if surname_first:
        last, _, rest = name.partition(",")
        words = rest.split() or last.split()
    while words and _is_title(words[0]):
        words = words[1:]
        if len(words) < (1 if surname_first else 2):
            return ""  # "Dr. Schmidt", "Mr Smith": a surname, not a first name
    word = words[0] if words else ""
    if not any(ch.isalpha() for ch in word):
        return ""
    if word.islower() or shouted:
        return "-".join(part[:1].upper() + part[1:].lower() for part in word.split("-"))  # "JOHN" -> "John"
    return word


def _is_title(word: str) -> bool:
    w = word.lower()
    return w.rstrip(".") in _TITLES or (w.endswith(".") and w[:-1] in _TITLES_WITH_DOT)


def greeting(first: str) -> str:
    return f"Hi {first}," if first else "Hello,"


def quote(text: str, *, who: str, when: datetime | None) -> str:
    head = f"On {when:%a, %d %b %Y at %H:%M} UTC, {who} wrote:" if when else f"{who} wrote:"
    lines = (text or "").rstrip().splitlines() or [""]
    return "\n".join([head, *(f"> {ln}" if ln else ">" for ln in lines)])


def _signature_block(signature: str, agent_name: str) -> str:
    sig = (signature or "").strip("\n")
    return sig if sig.strip() else (agent_name or "")


def draft_reply(ctx: ReplyContext, *, agent_name: str, signature: str) -> str:
    """The composer's starting text: greeting, room to write, signature, the customer's message quoted."""
    parts = [greeting(ctx.customer_first_name), "", "", "", _signature_block(signature, agent_name)]
    text = "\n".join(parts).rstrip() + "\n"
    if ctx.last_customer_text.strip():
        text += "\n" + quote(ctx.last_customer_text, who=ctx.last_customer_name, when=ctx.last_customer_date) + "\n"
    return text


def complete_body(body: str, ctx: ReplyContext, *, agent_name: str, signature: str) -> str:
    """A body written outside the composer (``heard reply``) with the signature and quote added when missing."""
    text = (body or "").replace("\r\n", "\n").replace("\r", "\n").rstrip() + "\n"
    sig = _signature_block(signature, agent_name)
    if sig.strip() and sig.strip() not in text:
        text += "\n" + sig + "\n"
    has_quote = any(ln.lstrip().startswith(">") for ln in text.splitlines())
    if ctx.last_customer_text.strip() and not has_quote:
        text += "\n" + quote(ctx.last_customer_text, who=ctx.last_customer_name, when=ctx.last_customer_date) + "\n"
    return text


def has_own_words(body: str, ctx: ReplyContext, *, agent_name: str, signature: str) -> bool:
    """Whether ``body`` says anything besides what the draft starts with: the greeting, the
    signature and the quote. A reply of only those would reach the customer as an empty mail."""
    text = strip_quoted(_without_attribution((body or "").replace("\r\n", "\n")))
    sig = _signature_block(signature, agent_name).strip()
    if sig:
        text = text.replace(sig, "")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines and lines[0] in (greeting(ctx.customer_first_name), greeting("")):
        lines = lines[1:]
    return bool(lines)


# -- placeholders --------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\{[A-Za-z_][A-Za-z0-9_ .-]{0,60}\}|\[\[[^\]\n]{0,200}\]\]")


def unfilled_placeholders(text: str) -> list[str]:
    """Placeholders still in the draft ({order_number}, [[...]]), quoted lines and their "... wrote:" line
    ignored (the customer's name there is theirs to choose)."""
    seen: list[str] = []
    for m in _PLACEHOLDER.finditer(strip_quoted(_without_attribution(text or ""))):
        if m.group(0) not in seen:
            seen.append(m.group(0))
    return seen


def require_no_placeholders(text: str) -> None:
    left = unfilled_placeholders(text)
    if left:
        raise UnfilledPlaceholderError(
            f"the draft still has {', '.join(left)}: fill in or delete every placeholder before sending"
        )


# -- building -------------------------------------------------------------------------------
_RE_PREFIX = re.compile(r"^\s*(re|aw|sv|antw|vs|ref)\s*(\[\d+\])?\s*:", re.I)


def reply_subject(subject: str, ticket_id: int) -> str:
    """The customer's subject with one "Re: " and our tag [#N]."""
    s = _clean_subject(subject) or "Your request"
    if not _RE_PREFIX.match(s):
        s = f"Re: {s}"
    return _clean_subject(tag_subject(s, ticket_id))


def new_message_id(domain: str) -> str:
    """A fresh Message-ID on our domain, without angle brackets."""
    return make_msgid(idstring="heard", domain=domain).strip("<>")


def _bracket(mid: str) -> str:
    return f"<{mid.strip().strip('<>').strip()}>"


def _address(name: str, addr: str, what: str) -> Address:
    check_header_value(what, name or "")
    check_header_value(what, addr or "")
    if "@" not in (addr or ""):
        raise ComposeError(f"{what} address {addr!r} is not an email address")
    local, _, domain = addr.rpartition("@")
    try:
        return Address(display_name=name or "", username=local, domain=domain)
    except Exception as exc:
        raise ComposeError(f"{what} address {addr!r} cannot be used ({exc})") from None


# Headers the builder owns; extra_headers may replace only the threading ones.
_OWN_HEADERS = {"from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "mime-version",
                "content-type", "content-transfer-encoding"}


def build_message(
    *,
    from_name: str,
    from_addr: str,
    to: Sequence[tuple[str, str]],
    subject: str,
    body: str,
    message_id: str,
    date: datetime,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    references: Iterable[str] = (),
    extra_headers: Mapping[str, str] | None = None,
) -> bytes:
    """The exact bytes to hand to SMTP (CRLF, UTF-8 text/plain)."""
    if not to:
        raise ComposeError("a message needs a recipient")
    check_header_value("Subject", subject)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _address(from_name, from_addr, "From")
    msg["To"] = [_address(n, a, "To") for n, a in to]
    if reply_to:
        msg["Reply-To"] = _address("", reply_to, "Reply-To")
    msg["Subject"] = subject
    msg["Date"] = format_datetime(date.astimezone(timezone.utc) if date.tzinfo else date.replace(tzinfo=timezone.utc))
    msg["Message-ID"] = _bracket(check_header_value("Message-ID", message_id))
    extra = dict(extra_headers or {})
    threading_override = {k.lower(): v for k, v in extra.items() if k.lower() in ("in-reply-to", "references")}
    irt = threading_override.get("in-reply-to", _bracket(in_reply_to) if in_reply_to else None)
    refs = threading_override.get("references", " ".join(_bracket(r) for r in references if r and r.strip("<> ")))
    if irt:
        msg["In-Reply-To"] = check_header_value("In-Reply-To", irt)
    if refs:
        msg["References"] = check_header_value("References", refs)
    for name, value in extra.items():
        if name.lower() in ("in-reply-to", "references"):
            continue
        if name.lower() in _OWN_HEADERS:
            raise ComposeError(f"extra header {name} is set by the builder: pass it as its own argument")
        msg[name] = check_header_value(name, str(value))
    text = (body or "").replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    # Quoted-printable keeps non-ASCII text and very long lines safe through any server (no 8BITMIME needed).
    plain = text.isascii() and all(len(line) <= 900 for line in text.split("\n"))
    msg.set_content(text, charset="utf-8", cte="7bit" if plain else "quoted-printable")
    return msg.as_bytes(policy=policy.SMTP)


_ATTRIBUTION = re.compile(r"^[^\n>]*\bwrote:[ \t]*\n(?=[ \t]*>)", re.M)


def _without_attribution(draft: str) -> str:
    # "On <date>, Ann wrote:" belongs to the quote below it: its date is not a promise of ours.
    return _ATTRIBUTION.sub("\n", draft)


# -- tone ------------------------------------------------------------------------------------
def tone_warnings(ctx: ReplyContext, draft: str, *, now: datetime,
                  saved_reply: str | Sequence[str] | None = None) -> list[ToneWarning]:
    """The review step's checks on ``draft``, with the thread as context (``saved_reply``: each one
    inserted into the draft)."""
    return check_tone(
        _without_attribution(draft),
        thread_texts_ours=ctx.our_texts,
        customer_texts=ctx.customer_texts,
        saved_replies_used_in_thread=ctx.saved_replies_used,
        saved_reply_used=saved_reply,
        channel="email",
        now=now,
    )
