"""Turn raw RFC 822 bytes into what the store needs, cheaply and without ever raising.

Contract used by the sync: ``parse_message(raw) -> ParsedMessage``. It never
raises; whatever it cannot make sense of is listed in ``defects`` and the
message is still stored (raw bytes kept) and flagged.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
from dataclasses import dataclass, field
from datetime import datetime, timezone


@dataclass(slots=True)
class Attachment:
    name: str
    content_type: str
    size: int


@dataclass(slots=True)
class ParsedMessage:
    message_id: str | None = None  # without angle brackets
    in_reply_to: list[str] = field(default_factory=list)  # ids without brackets
    references: list[str] = field(default_factory=list)
    subject: str = ""
    from_name: str = ""
    from_addr: str = ""  # lower-cased address, "" when missing
    to_addrs: list[str] = field(default_factory=list)
    date: datetime | None = None  # aware, UTC
    date_offset_minutes: int | None = None  # the sender's UTC offset, from the Date header
    # Lower-cased header names -> first value, unfolded, RFC 2047 left encoded.
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "text/plain"  # of the top-level part, lower-case
    text: str = ""  # readable body: text/plain, or HTML turned into text
    html_only: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)  # non-empty: flag the message


def _ids(value: str | None) -> list[str]:
    if not value:
        return []
    out = []
    for part in value.replace(",", " ").split():
        part = part.strip().strip("<>").strip()
        if part and "@" in part:
            out.append(part)
    return out


def parse_message(raw: bytes) -> ParsedMessage:
    """Reference implementation on the stdlib parser; replaced by a lean one."""
    pm = ParsedMessage()
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception as exc:  # pragma: no cover - compat32 hardly raises
        pm.defects.append(f"unparseable: {exc}")
        return pm
    for k, v in msg.items():
        pm.headers.setdefault(k.lower(), " ".join(str(v).split()))
    h = pm.headers
    mids = _ids(h.get("message-id"))
    pm.message_id = mids[0] if mids else None
    pm.in_reply_to = _ids(h.get("in-reply-to"))
    pm.references = _ids(h.get("references"))
    pm.subject = _decode_words(h.get("subject", ""))
    name, addr = email.utils.parseaddr(h.get("from", ""))
    pm.from_name = _decode_words(name)
    pm.from_addr = addr.lower()
    pm.to_addrs = [a.lower() for _, a in email.utils.getaddresses([h.get("to", "")]) if a]
    if "date" in h:
        try:
            d = email.utils.parsedate_to_datetime(h["date"])
            if d.tzinfo is not None:
                pm.date_offset_minutes = int(d.utcoffset().total_seconds() // 60)
                pm.date = d.astimezone(timezone.utc)
            else:
                pm.date = d.replace(tzinfo=timezone.utc)
        except Exception:
            pm.defects.append("bad Date header")
    pm.content_type = msg.get_content_type()
    plain, html = None, None
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        fname = part.get_filename()
        disp = (part.get("Content-Disposition") or "").lower()
        payload = part.get_payload(decode=True) or b""
        if fname or disp.startswith("attachment"):
            pm.attachments.append(Attachment(_decode_words(fname or "unnamed"), ctype, len(payload)))
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            body = payload.decode(charset, errors="replace")
        except LookupError:
            pm.defects.append(f"unknown charset {charset}")
            body = payload.decode("utf-8", errors="replace")
        if ctype == "text/plain" and plain is None:
            plain = body
        elif ctype == "text/html" and html is None:
            html = body
    if plain is not None:
        pm.text = plain
    elif html is not None:
        from mail.html import html_to_text

        pm.text = html_to_text(html)
        pm.html_only = True
    if not pm.message_id:
        pm.defects.append("missing Message-ID")
    if not pm.from_addr:
        pm.defects.append("missing From")
    return pm


def _decode_words(value: str) -> str:
    if not value or "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value
