"""Turn raw RFC 822 bytes into what the store needs, cheaply and without ever raising.

Contract used by the sync: ``parse_message(raw) -> ParsedMessage``. It never
raises; whatever it cannot make sense of is listed in ``defects`` and the
message is still stored (raw bytes kept) and flagged.

The parser is deliberately lean (the sync must store thousands of messages a
second): headers are split at the first blank line and unfolded by hand, only
the headers threading and display need are decoded, MIME boundaries are found
with ``bytes.find``, each text part is decoded once, and attachment payloads
are never decoded (their size is estimated from the encoded length). The
stdlib parser is only used as a safety net if this code itself fails.
"""

from __future__ import annotations

import binascii
import hashlib
import codecs
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote_to_bytes

try:  # keeps "no zone" / "-0000" apart from "+0000", unlike the public parsedate_tz
    from email._parseaddr import _parsedate_tz
except ImportError:  # pragma: no cover - another Python
    from email.utils import parsedate_tz as _parsedate_tz

__all__ = ["Attachment", "ParsedMessage", "parse_message"]


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
    # A delivery report (multipart/report): the Message-IDs of the mail it reports on (from its
    # text/rfc822-headers or message/rfc822 part), and whether it says a delivery failed.
    reported_ids: list[str] = field(default_factory=list)
    report_failed: bool = False


# Limits that keep hostile input cheap. Going over one is a defect, never an error.
MAX_DEPTH = 16  # nested multiparts
MAX_PARTS = 500  # MIME parts looked at in one message
MAX_TEXT_BYTES = 4 * 1024 * 1024  # decoded bytes kept from one text part
MAX_PARAM_CHARS = 16 * 1024  # of a Content-Type / Content-Disposition value looked at

_TEXT_TYPES = ("text/plain", "text/html")


# ---------------------------------------------------------------- entry point


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse raw message bytes. Never raises; problems go to ``defects``."""
    pm = ParsedMessage()
    try:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raw = str(raw).encode("utf-8", "replace") if raw is not None else b""
            pm.defects.append("input was not bytes")
        _parse(bytes(raw), pm)
    except Exception as exc:  # a bug here must never block the sync
        pm = _fallback(raw, f"internal parser error ({type(exc).__name__})")
    return pm


# ---------------------------------------------------------------- the lean parser


def _parse(raw: bytes, pm: ParsedMessage) -> None:
    defects = pm.defects
    if raw[:1] in _ASCII_SPACE and not raw.strip():  # (strip() would copy the whole message)
        defects.append("empty message")
        defects.append("missing From")
        defects.append("missing Message-ID")
        return
    # CRLF is left alone in bodies: MIME splitting and decoding cope with both,
    # and only the decoded text is normalised to "\n" (cheaper than copying it all).
    if b"\n" not in raw and b"\r" in raw:  # old Mac line endings
        raw = raw.replace(b"\r", b"\n")
    # The body is a span of ``raw`` (buf, start, end) all the way down: slicing it would copy a big
    # attachment once for the message body, once for its part and once more for the part's body.
    head, start = _split_head_at(raw, 0, len(raw))
    buf = raw
    htext = _decode_head(head, defects)
    more_from: list[str] = []
    h, bad_line = _parse_headers(htext, more_from)
    if bad_line is not None:
        if bad_line == 0 and not h:
            defects.append("no headers")
        else:
            defects.append("missing header/body separator")
        rest = b"\n".join(head.split(b"\n")[bad_line:])
        buf = rest + b"\n" + raw[start:] if start < len(raw) else rest
        start = 0
    pm.headers = h

    # Threading.
    mid = h.get("message-id")
    if mid is None:
        defects.append("missing Message-ID")
    else:
        ids = _ids(mid)
        if ids:
            pm.message_id = ids[0]
            if len(mid) > MAX_ID and pm.message_id.endswith("@long-message-id.invalid"):
                defects.append(f"Message-ID over {MAX_ID} characters: kept as its digest")
        else:
            defects.append("malformed Message-ID")
    v = h.get("in-reply-to")
    if v:
        pm.in_reply_to = _ids(v)
    v = h.get("references")
    if v:
        pm.references = _ids(v)

    # Display.
    v = h.get("subject")
    if v:
        pm.subject = _decode_words(v, defects)
    v = h.get("from")
    if v:
        boxes = _mailboxes(v)
        for name, addr in boxes:
            if addr:
                pm.from_name = _decode_words(name, defects) if name else ""
                pm.from_addr = addr
                if len(addr) > MAX_ADDRESS:  # no mail server takes it; the store indexes it
                    pm.from_addr = addr[:MAX_ADDRESS]
                    defects.append(f"sender address over {MAX_ADDRESS} characters: cut")
                break
        else:  # "From: Jane Doe": a name and no address; the name is still who wrote
            name = next((n for n, _ in boxes if n), "")
            if name:
                pm.from_name = _decode_words(name, defects)
    if not pm.from_addr:
        defects.append("From has a name but no address" if pm.from_name else "missing From")
    if more_from:
        _note_more_from(pm, more_from, defects)
    v = h.get("to")
    if v:
        pm.to_addrs = [a for _, a in _mailboxes(v) if a]
    v = h.get("date")
    if v is None:
        defects.append("missing Date")
    else:
        _set_date(pm, v)

    # Body.
    ctype, params = _content_type(h.get("content-type"), "text/plain", defects)
    pm.content_type = ctype
    state = _State(defects, pm.attachments)
    text, is_html = _walk(state, h, ctype, params, buf, start, len(buf), 0, None)
    pm.reported_ids = state.reported
    pm.report_failed = state.failed
    if text is not None:
        if is_html:
            from mail.html import html_to_text

            text = html_to_text(text())
            pm.html_only = True
        if "\x00" in text:
            text = text.replace("\x00", "")
            defects.append("NUL bytes in body")
        pm.text = text


def _note_more_from(pm: ParsedMessage, more_from: list[str], defects: list[str]) -> None:
    """Several From headers: the first is the sender heard shows and answers; the mail is flagged, and the
    flag names who the others claim to be (a forged second From is a way to pass for someone else)."""
    others = []
    for value in more_from:
        boxes = _mailboxes(value)
        who = next((a for _, a in boxes if a), "") or next((n for n, _ in boxes if n), "") or value
        who = _clip(who, 60)
        if who not in others:
            others.append(who)
    first = pm.from_addr or "(no address)"
    shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
    defects.append(f"{len(more_from) + 1} From headers: shown as from the first ({_clip(first, 60)}); "
                   f"the other{'s say' if len(more_from) > 1 else ' says'} {shown}")


_ASCII_SPACE = frozenset((b"", b" ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c"))  # what bytes.strip() removes


class _State:
    __slots__ = ("defects", "attachments", "parts", "stopped", "reported", "failed")

    def __init__(self, defects: list[str], attachments: list[Attachment]):
        self.defects = defects
        self.attachments = attachments
        self.parts = 0
        self.stopped = False
        self.reported: list[str] = []  # Message-IDs a delivery report is about
        self.failed = False  # a delivery report with "Action: failed"


def _split_head(raw: bytes) -> tuple[bytes, bytes]:
    """Split at the first blank line, CRLF or LF."""
    head, at = _split_head_at(raw, 0, len(raw))
    return head, raw[at:]


def _split_head_at(buf: bytes, start: int, end: int) -> tuple[bytes, int]:
    """The head of ``buf[start:end]`` (up to its first blank line, CRLF or LF) and where its body starts."""
    if buf[start : min(start + 1, end)] == b"\n":
        return b"", start + 1
    if buf[start : min(start + 2, end)] == b"\r\n":
        return b"", start + 2
    j = buf.find(b"\n\r\n", start, end)
    i = buf.find(b"\n\n", start, j if j != -1 else end)
    if i != -1:
        return buf[start:i], i + 2
    if j != -1:
        return buf[start:j], j + 3
    return buf[start:end], end


def _decode_head(head: bytes, defects: list[str]) -> str:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        try:
            text = head.decode("utf-8")  # RFC 6532 allows UTF-8 in headers
        except UnicodeDecodeError:
            # Line by line: one Latin-1 header (a gateway's, an old client's) must not turn
            # a UTF-8 From name into mojibake ("JÃ¶rg").
            text = "\n".join(_decode_line(line) for line in head.split(b"\n"))
            defects.append("8-bit junk in headers")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", " ")
    if "\x00" in text:
        text = text.replace("\x00", "")
        defects.append("NUL bytes in headers")
    return text


def _decode_line(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("cp1252", "replace")


def _parse_headers(text: str, more_from: list[str] | None = None) -> tuple[dict[str, str], int | None]:
    """Lower-cased name -> first value (unfolded, whitespace collapsed).

    Returns the headers and, when a line is neither a header nor a
    continuation, its index: the body starts there. The values of every
    From header after the first go to ``more_from`` when it is given.
    """
    h: dict[str, str] = {}
    if not text:
        return h, None
    # Fast path: unfold with str.replace, one partition per header.
    unfolded = text.replace("\n\t", " ").replace("\n ", " ") if "\n\t" in text or "\n " in text else text
    for line in unfolded.split("\n"):
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name or "\t" in name:
            if line.startswith("From ") and not h:  # mbox separator line
                continue
            name = name.rstrip()
            if not colon or not name or " " in name or "\t" in name:
                if more_from:
                    more_from.clear()
                return _parse_headers_slow(text, more_from)
        key = name.lower()
        if key not in h:
            value = value.strip()
            if "  " in value or "\t" in value:
                value = " ".join(value.split())
            h[key] = value
        elif key == "from" and more_from is not None:
            more_from.append(" ".join(value.split()))
    return h, None


def _parse_headers_slow(text: str, more_from: list[str] | None = None) -> tuple[dict[str, str], int | None]:
    h: dict[str, str] = {}
    if not text:
        return h, None
    key = None
    val = ""
    for idx, line in enumerate(text.split("\n")):
        c = line[:1]
        if c == " " or c == "\t":
            if key is not None:
                val += line
            continue
        if key is not None and key not in h:
            h[key] = " ".join(val.split())
        elif key == "from" and more_from is not None:
            more_from.append(" ".join(val.split()))
        name, colon, value = line.partition(":")
        name = name.rstrip()
        if not colon or not name or " " in name or "\t" in name:
            if not h and line.startswith("From "):  # mbox separator line
                key = None
                continue
            if not line:
                key = None
                continue
            return h, idx
        key = name.lower()
        val = value
    if key is not None and key not in h:
        h[key] = " ".join(val.split())
    elif key == "from" and more_from is not None:
        more_from.append(" ".join(val.split()))
    return h, None


# ---------------------------------------------------------------- MIME walk


def _walk(
    st: _State,
    h: dict[str, str],
    ctype: str,
    params: dict[str, str],
    buf: bytes,
    start: int,
    end: int,
    depth: int,
    parent: str | None,
) -> tuple:
    """Walk one part, whose body is ``buf[start:end]``. Returns (text, is_html) of its readable body,
    or (None, False).

    For HTML, ``text`` is a zero-argument callable returning the decoded HTML.
    """
    st.parts += 1
    if st.parts > MAX_PARTS:
        if not st.stopped:
            st.stopped = True
            st.defects.append(f"more than {MAX_PARTS} MIME parts, rest ignored")
        return None, False

    if ctype.startswith("multipart/"):
        boundary = params.get("boundary", "")
        if depth >= MAX_DEPTH:
            st.defects.append("multipart nested too deep")
            if not boundary:
                return None, False
            return _walk_deep(st, ctype, boundary.encode("utf-8", "replace"), buf, start, end)
        if not boundary:
            guessed = _guess_boundary(buf, start, end)
            if guessed is None:
                st.defects.append("multipart without boundary")
                return _leaf_text(st, "text/plain", params, h, buf, start, end)
            st.defects.append("multipart without boundary parameter")
            boundary = guessed
        parts = _split_multipart(buf, start, end, boundary.encode("utf-8", "replace"), st.defects)
        if parts is None:  # not one delimiter line: the body is all there is
            if _NOT_SPACE.search(buf, start, end) is None:
                return None, False
            return _leaf_text(st, "text/plain", params, h, buf, start, end)
        results = []
        for pstart, pend in parts:
            ph_bytes, pbody = _split_head_at(buf, pstart, pend)
            ph = _part_headers(ph_bytes, st.defects) if ph_bytes else {}
            default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
            pct, pparams = _content_type(ph.get("content-type"), default, st.defects)
            results.append(_walk(st, ph, pct, pparams, buf, pbody, pend, depth + 1, ctype))
            if st.stopped:
                break
        return _combine(ctype, results)

    disp, dparams = _disposition(h.get("content-disposition"))
    if parent == "multipart/report" and ctype in _REPORTED_MAIL:
        _note_reported(st, buf, start, end)
    if ctype in ("message/delivery-status", "message/global-delivery-status", "message/disposition-notification"):
        # The machine-readable half of a report: useful to read, short, ASCII.
        if _ACTION_FAILED.search(buf, start, min(end, start + 65536)):
            st.failed = True
        return _leaf_text(st, "text/plain", params, h, buf, start, end)
    if ctype == "text/rfc822-headers" and parent == "multipart/report":
        return None, False
    fname = dparams.get("filename") or params.get("name") or ""
    if fname:
        fname = _decode_words(fname, st.defects)
    if ctype in _TEXT_TYPES and disp != "attachment" and (not fname or disp == "inline"):
        return _leaf_text(st, ctype, params, h, buf, start, end)
    st.attachments.append(Attachment(fname or _unnamed(ctype, buf[start : min(end, start + 65536)]), ctype,
                                     _encoded_size(h, buf, start, end)))
    return None, False


def _walk_deep(st: _State, ctype: str, boundary: bytes, buf: bytes, start: int, end: int) -> tuple:
    """The readable text of a multipart nested deeper than MAX_DEPTH, read in one forward pass.

    No recursion and no splitting of whole multiparts (each level of the recursive walk scans its whole
    body: hundreds of levels over a big part would be quadratic). Each multipart's first delimiter is
    looked for from where the reading is, each leaf ends at its parent's next delimiter, and the reading
    only moves forward. The structure is lost (every text leaf is kept, in order, the plain ones
    preferred to the HTML ones): the mail is flagged, and its raw bytes are kept.
    """
    stack = [(boundary, ctype)]  # the open multiparts, innermost last
    pos = start
    plain: list[str] = []
    html: list = []
    while stack:
        delim = b"--" + stack[-1][0]
        i = _next_delimiter(buf, pos, end, delim)
        if i == -1:  # unterminated: what is left was read as the last leaf
            break
        i += len(delim)
        if buf[i : i + 2] == b"--":  # closing delimiter: back to the parent
            stack.pop()
            pos = i + 2
            continue
        eol = buf.find(b"\n", i, end)
        if eol == -1:
            break
        st.parts += 1
        if st.parts > MAX_PARTS:
            if not st.stopped:
                st.stopped = True
                st.defects.append(f"more than {MAX_PARTS} MIME parts, rest ignored")
            break
        pstart = eol + 1
        # A part's head is looked for in a bounded window: its end is not known yet.
        ph_bytes, pbody = _split_head_at(buf, pstart, min(end, pstart + 65536))
        ph = _part_headers(ph_bytes, st.defects) if ph_bytes else {}
        default = "message/rfc822" if stack[-1][1] == "multipart/digest" else "text/plain"
        pct, pparams = _content_type(ph.get("content-type"), default, st.defects)
        if pct.startswith("multipart/") and pparams.get("boundary"):
            stack.append((pparams["boundary"].encode("utf-8", "replace"), pct))
            pos = pbody
            continue
        nxt = _next_delimiter(buf, pbody, end, delim)
        pend = end if nxt == -1 else max(nxt - 1, pbody)
        if pend > pbody and buf[pend - 1 : pend] == b"\r":
            pend -= 1
        disp, dparams = _disposition(ph.get("content-disposition"))
        fname = dparams.get("filename") or pparams.get("name") or ""
        if pct in _TEXT_TYPES and disp != "attachment" and (not fname or disp == "inline"):
            text, is_html = _leaf_text(st, pct, pparams, ph, buf, pbody, pend)
            (html if is_html else plain).append(text)
        elif not pct.startswith("multipart/"):
            if fname:
                fname = _decode_words(fname, st.defects)
            st.attachments.append(Attachment(fname or _unnamed(pct, buf[pbody : min(pend, pbody + 65536)]), pct,
                                             _encoded_size(ph, buf, pbody, pend)))
        if nxt == -1:
            break
        pos = nxt
    if len(plain) == 1:
        return plain[0], False
    if plain:
        return "\n".join(t.rstrip("\n") for t in plain), False
    if html:
        return (lambda: "\n".join(t() for t in html)), True
    return None, False


def _next_delimiter(buf: bytes, pos: int, end: int, delim: bytes) -> int:
    """Where the next line that is the delimiter ``delim`` (``--boundary``) starts, from ``pos`` on; -1 if none."""
    dlen = len(delim)
    while True:
        if (pos == 0 or buf[pos - 1 : pos] == b"\n") and buf.startswith(delim, pos, end):
            i = pos
        else:
            j = buf.find(b"\n" + delim, pos, end)
            if j == -1:
                return -1
            i = j + 1
        if buf[i + dlen : min(i + dlen + 1, end)] in (b"", b"\n", b"-", b" ", b"\t", b"\r"):
            return i
        pos = i + 1  # the boundary is only a prefix of this line


# The part of a delivery report that carries the reported mail (or its headers).
_REPORTED_MAIL = ("text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers")
_ACTION_FAILED = re.compile(rb"(?im)^action:[ \t]*failed\b")


def _note_reported(st: _State, buf: bytes, start: int, end: int) -> None:
    """Record the Message-ID of the mail a delivery report is about: the bounce of a reply we sent
    names it only there (no In-Reply-To, no ticket tag), so it can join that reply's ticket."""
    head = _split_head_at(buf, start, min(end, start + 65536))[0]
    mid = _parse_headers(_decode_head(head, []))[0].get("message-id")
    if mid:
        st.reported.extend(i for i in _ids(mid)[:1] if i not in st.reported)


# Part headers repeat from message to message ("Content-Type: text/plain;
# charset=utf-8" + a transfer encoding): parsed once, shared read-only.
_PH_CACHE: dict[bytes, tuple[dict[str, str], tuple[str, ...]]] = {}
CACHE_SIZE = 1024  # entries in each of the parser's caches; a full cache starts over


def _remember(cache: dict, key, value, *, longest: int) -> None:
    """Keep ``value`` for ``key`` unless the key is longer than ``longest`` (a one-off)."""
    if len(key) <= longest:
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[key] = value


def _cached_with_defects(cache: dict, key, compute, defects: list[str], *, longest: int):
    """``compute(found_defects)`` once per distinct ``key``; its defects are replayed on every hit."""
    hit = cache.get(key)
    if hit is None:
        found: list[str] = []
        hit = (compute(found), tuple(found))
        _remember(cache, key, hit, longest=longest)
    if hit[1]:
        defects.extend(hit[1])
    return hit[0]


def _part_headers(ph_bytes: bytes, defects: list[str]) -> dict[str, str]:
    """The headers of a MIME part (never modified by the caller: the dict may be shared)."""
    return _cached_with_defects(_PH_CACHE, ph_bytes, lambda found: _parse_headers(_decode_head(ph_bytes, found))[0],
                                defects, longest=512)


def _combine(ctype: str, results: list[tuple]) -> tuple:
    """One readable body from the parts of a multipart.

    HTML comes back as a zero-argument callable so that the HTML half of a
    multipart/alternative is never even decoded when there is a plain half.
    """
    found = [r for r in results if r[0] is not None]
    if not found:
        return None, False
    if ctype == "multipart/alternative":
        for r in found:
            if not r[1]:
                return r
        return found[0]
    if len(found) == 1:
        return found[0]
    if all(is_html for _, is_html in found):
        return (lambda: "\n".join(t() for t, _ in found)), True
    from mail.html import html_to_text

    return "\n".join(html_to_text(t()) if is_html else t.rstrip("\n") for t, is_html in found), False


def _split_multipart(buf: bytes, first: int, last: int, boundary: bytes,
                     defects: list[str]) -> list[tuple[int, int]] | None:
    """The parts of the multipart body ``buf[first:last]``, each as its (start, end) in ``buf``."""
    delim = b"--" + boundary
    dlen = len(delim)
    nl_delim = b"\n" + delim
    parts: list[tuple[int, int]] = []

    def find(start: int) -> int:
        """Position of the next delimiter line (the delimiter itself), or -1."""
        while True:
            if start == first and buf.startswith(delim, first, last):
                i = first
            else:
                j = buf.find(nl_delim, max(start - 1, first), last)
                if j == -1:
                    return -1
                i = j + 1
            after = buf[i + dlen : min(i + dlen + 1, last)]
            if after in (b"", b"\n", b"-", b" ", b"\t", b"\r"):
                return i
            start = i + 1  # boundary is only a prefix of this line

    i = find(first)
    if i == -1:
        defects.append("multipart without any boundary line")
        return None
    while True:
        if buf[i + dlen : min(i + dlen + 2, last)] == b"--":
            return parts  # closing delimiter
        eol = buf.find(b"\n", i + dlen, last)
        if eol == -1:
            defects.append("unterminated multipart")
            return parts
        start = eol + 1
        nxt = find(start)
        if nxt == -1:
            defects.append("unterminated multipart")
            parts.append((start, last))
            return parts
        end = max(nxt - 1, start)
        if end > start and buf[end - 1 : end] == b"\r":
            end -= 1
        parts.append((start, end))
        i = nxt
        if len(parts) > MAX_PARTS:
            return parts


def _guess_boundary(buf: bytes, start: int, end: int) -> str | None:
    """A multipart without a boundary parameter: take the first "--x" line seen twice."""
    for m in re.finditer(rb"(?m)^--([^\s]{1,70}?)(?:--)?[ \t]*\r?$", buf[start : min(end, start + 65536)]):
        cand = m.group(1)
        if buf.count(b"--" + cand, start, end) >= 2:
            return cand.decode("ascii", "replace")
        break
    return None


def _leaf_text(
    st: _State, ctype: str, params: dict[str, str], h: dict[str, str], buf: bytes, start: int, end: int
) -> tuple:
    if end - start > 3 * MAX_TEXT_BYTES:  # never copy, let alone decode, a huge part just to cut it
        cut = buf.rfind(b"\n", start, start + 3 * MAX_TEXT_BYTES)  # at a line end: base64 stays whole
        end = cut if cut > start else start + 3 * MAX_TEXT_BYTES
        st.defects.append(f"text part over {MAX_TEXT_BYTES // (1024 * 1024)} MB truncated")
    body = buf[start:end] if start or end != len(buf) else buf
    if ctype == "text/html":
        return (lambda: _decode_text(st, params, h, body)), True
    return _decode_text(st, params, h, body), False


def _decode_text(st: _State, params: dict[str, str], h: dict[str, str], body: bytes) -> str:
    cte = h.get("content-transfer-encoding", "").strip().lower()
    if cte in ("", "7bit", "8bit", "binary"):
        data = body
    elif cte == "quoted-printable":
        data = binascii.a2b_qp(body)
    elif cte == "base64":
        data = _b64decode(body, st.defects)
    else:
        st.defects.append(f"unknown transfer encoding {_clip(cte)}")
        data = body
    if len(data) > MAX_TEXT_BYTES:
        msg = f"text part over {MAX_TEXT_BYTES // (1024 * 1024)} MB truncated"
        if msg not in st.defects:
            st.defects.append(msg)
        data = data[:MAX_TEXT_BYTES]
    text = _decode_bytes(data, params.get("charset", ""), st.defects, "")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


B64_JUNK = "junk in or after the base64 of a text part: left out"


def _b64decode(data: bytes, defects: list[str]) -> bytes:
    try:
        out = binascii.a2b_base64(data)
    except binascii.Error:
        defects.append("bad base64 in text part")
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        rem = len(clean) % 4
        if rem == 1:
            clean = clean[:-1]
        elif rem:
            clean += b"=" * (4 - rem)
        try:
            return binascii.a2b_base64(clean)
        except binascii.Error:  # pragma: no cover - clean input always decodes
            return b""
    # a2b_base64 skips what is not base64 and stops at the padding, silently: text after the end of the
    # base64 (or junk within it) was lost with no flag. Valid base64 decodes to exactly 3/4 of its
    # characters less line ends and padding: two counting passes (no copy), and only when they
    # disagree a closer look that forgives spaces and tabs.
    chars = len(data) - data.count(b"\n") - data.count(b"\r")
    if len(out) != (chars - data[-8:].count(b"=")) * 3 // 4:
        chars -= data.count(b" ") + data.count(b"\t") + data.count(b"=")
        if len(out) != chars * 3 // 4:
            defects.append(B64_JUNK)
    return out


BIG_PART = 1024 * 1024
_NOT_SPACE = re.compile(rb"[^ \t\n\r\x0b\x0c]")  # what bytes.strip() would keep


def _encoded_size(h: dict[str, str], buf: bytes, start: int, end: int) -> int:
    """Decoded size of an attachment (``buf[start:end]``), estimated without decoding or copying it."""
    cte = h.get("content-transfer-encoding", "").strip().lower()
    size = end - start
    if cte == "base64":
        if size > BIG_PART:  # counting allocates nothing: a big attachment is not copied
            n = size - buf.count(b"\r", start, end) - buf.count(b"\n", start, end) - buf.count(b" ", start, end)
        else:  # deleting each byte with bytes.replace (memchr-based) beats counting or translating
            n = len(buf[start:end].replace(b"\r", b"").replace(b"\n", b"").replace(b" ", b""))
        pad = 0
        j = end  # the last two bytes before any trailing white space, read a window at a time from the end
        while j > start:
            w = max(start, j - 4096)
            kept = len(buf[w:j].rstrip())
            if kept:
                tail = buf[max(start, w + kept - 2) : w + kept]
                pad = 2 if tail == b"==" else 1 if tail[-1:] == b"=" else 0
                break
            j = w
        return max(n * 3 // 4 - pad, 0)
    if cte == "quoted-printable":
        return max(size - 2 * buf.count(b"=", start, end) - buf.count(b"\r", start, end), 0)
    return size


_EXT = {
    "application/pdf": ".pdf",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/jpg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "text/plain": ".txt",
    "text/html": ".html",
    "text/calendar": ".ics",
    "text/csv": ".csv",
    "message/rfc822": ".eml",
    "application/zip": ".zip",
}


def _unnamed(ctype: str, body: bytes) -> str:
    if ctype == "message/rfc822":
        # A forwarded or bounced message: name it after its subject.
        head = _split_head(body[:65536])[0]
        sub = _parse_headers(_decode_head(head, []))[0].get("subject", "")
        sub = _decode_words(sub, []).strip() if sub else ""
        return (sub[:80] or "message") + ".eml"
    return "unnamed" + _EXT.get(ctype, "")


# ---------------------------------------------------------------- header values


def _clip(s: str, n: int = 40) -> str:
    """A short, printable rendering of untrusted text for a defect phrase."""
    s = "".join(ch if ch.isprintable() else "?" for ch in s[:n])
    return s or '""'


# Type and subtype are RFC 2045 tokens: no control characters (an escape sequence in an attachment's
# type would reach the terminal of `heard show`), no tspecials.
_CT_MAIN = re.compile(r"\s*([!#$%&'*+\-.^_`{|}~0-9A-Za-z]+)\s*/\s*([!#$%&'*+\-.^_`{|}~0-9A-Za-z]+)")
_PARAM = re.compile(r"""[;\s]\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)""", re.S)
_CT_CACHE: dict[str, tuple[str, dict[str, str], str | None]] = {}


def _content_type(value: str | None, default: str, defects: list[str]) -> tuple[str, dict[str, str]]:
    if value is None:
        return default, {}
    hit = _CT_CACHE.get(value)
    if hit is None:
        m = _CT_MAIN.match(value)
        if m is None:
            hit = ("text/plain", {}, f"bad Content-Type {_clip(value)}")
        else:
            ctype = (m.group(1) + "/" + m.group(2)).lower()
            hit = (ctype, _params(value[m.end() :]), None)
        if len(_CT_CACHE) > 2048:
            _CT_CACHE.clear()
        _CT_CACHE[value] = hit
    if hit[2]:
        defects.append(hit[2])
    return hit[0], hit[1]


def _disposition(value: str | None) -> tuple[str, dict[str, str]]:
    if not value:
        return "", {}
    head, _, rest = value.partition(";")
    return head.strip().lower(), (_params(";" + rest) if rest else {})


def _params(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if len(text) > MAX_PARAM_CHARS:
        text = text[:MAX_PARAM_CHARS]
    for m in _PARAM.finditer(text):
        k = m.group(1).lower()
        v = m.group(2).strip()
        if v[:1] == '"':
            v = v[1:-1] if len(v) > 1 and v[-1] == '"' else v[1:]
            if "\\" in v:
                v = re.sub(r"\\(.)", r"\1", v)
        if k not in out:
            out[k] = v
    if "*" in text and any("*" in k for k in out):  # (names are parts of the text)
        _rfc2231(out)
    return out


def _rfc2231(params: dict[str, str]) -> None:
    """Merge RFC 2231 ``name*=charset'lang'%xx`` and ``name*0*=`` continuations in place."""
    groups: dict[str, dict[int, tuple[str, bool]]] = {}
    for k in [k for k in params if "*" in k]:
        v = params.pop(k)
        base, _, rest = k.partition("*")
        extended = rest.endswith("*") or rest == ""
        num = rest.rstrip("*")
        if num == "":
            idx = 0
        elif num.isdigit() and len(num) < 4:
            idx = int(num)
        else:
            continue
        groups.setdefault(base, {}).setdefault(idx, (v, extended))
    for base, sections in groups.items():
        charset = ""
        chunks = []
        for i, idx in enumerate(sorted(sections)):
            v, extended = sections[idx]
            if extended:
                if i == 0 and v.count("'") >= 2:
                    charset, _lang, v = v.split("'", 2)
                chunks.append(unquote_to_bytes(v))
            else:
                chunks.append(v.encode("utf-8", "replace"))
        params[base] = _decode_bytes(b"".join(chunks), charset, [], "")


_EW = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


# Encoded subjects and sender names repeat (a thread, a customer): decoded once.
_EW_CACHE: dict[str, tuple[str, tuple[str, ...]]] = {}


def _decode_words(value: str, defects: list[str]) -> str:
    """RFC 2047 encoded words -> text. Adjacent words of one charset are joined as bytes."""
    if "=?" not in value:
        return value
    return _cached_with_defects(_EW_CACHE, value, lambda found: _decode_encoded_words(value, found), defects,
                                longest=1024)


def _decode_encoded_words(value: str, defects: list[str]) -> str:
    out: list[str] = []
    cs_pending = None
    pending: list[bytes] = []
    pos = 0
    prev_ew = False
    for m in _EW.finditer(value):
        between = value[pos : m.start()]
        if between and not (prev_ew and between.isspace()):
            if pending:
                out.append(_decode_bytes(b"".join(pending), cs_pending, defects, " in header"))
                pending = []
                cs_pending = None
            out.append(between)
        cs = m.group(1).partition("*")[0]
        data = m.group(3).encode("ascii", "replace")
        try:
            if m.group(2) in "bB":
                data = binascii.a2b_base64(data + b"=" * (-len(data) % 4))
            else:
                data = binascii.a2b_qp(data, header=True)
        except binascii.Error:
            defects.append("bad encoded word in header")
            if pending:
                out.append(_decode_bytes(b"".join(pending), cs_pending, defects, " in header"))
                pending = []
                cs_pending = None
            out.append(m.group(0))
            pos = m.end()
            prev_ew = False
            continue
        if pending and cs.lower() != (cs_pending or "").lower():
            out.append(_decode_bytes(b"".join(pending), cs_pending, defects, " in header"))
            pending = []
        cs_pending = cs
        pending.append(data)
        pos = m.end()
        prev_ew = True
    if pending:
        out.append(_decode_bytes(b"".join(pending), cs_pending, defects, " in header"))
    out.append(value[pos:])
    text = "".join(out)
    if "\n" in text or "\r" in text or "\x00" in text:
        text = " ".join(text.replace("\x00", "").split())
    return text


# Labels whose real-world meaning is a superset of the official one.
_CHARSET_ALIASES = {
    "ascii": "utf-8",  # undeclared / us-ascii mail is very often UTF-8
    "iso8859-1": "cp1252",  # as browsers do: windows-1252 is what is really sent
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
    "iso2022_jp": "iso2022_jp_ext",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "x-user-defined": "cp1252",
    "unicode-1-1-utf-7": "utf-7",
    "x-mac-roman": "mac-roman",
    "windows-874": "cp874",
}
_CODEC_CACHE: dict[str, str | None] = {}


def _codec(label: str) -> str | None:
    try:
        return _CODEC_CACHE[label]
    except KeyError:
        pass
    name = label.strip().strip("\"'").lower()
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
        name = info.name if getattr(info, "_is_text_encoding", True) else None
    except (LookupError, ValueError, TypeError):
        name = None
    if name is not None:
        name = _CHARSET_ALIASES.get(name, name)
        try:
            b"".decode(name)
        except LookupError:
            name = None
    if len(_CODEC_CACHE) > 1024:
        _CODEC_CACHE.clear()
    _CODEC_CACHE[label] = name
    return name


def _decode_bytes(data: bytes, charset: str | None, defects: list[str], where: str) -> str:
    """Bytes in a declared charset -> text, never failing (errors="replace")."""
    lenient = True  # no charset, or us-ascii: UTF-8 first, then windows-1252
    name = "utf-8"
    if charset:
        name = _codec(charset)
        if name is None:
            defects.append(f"unknown charset {_clip(charset)}{where}")
            name = "utf-8"
        elif name == "utf-8":
            lenient = codecs.lookup(charset.strip().strip("\"'")).name == "ascii"
    if name == "utf-8":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            if not lenient:
                defects.append(f"invalid UTF-8{where or ' in body'}")
                return data.decode("utf-8", "replace")
            defects.append(f"undeclared 8-bit text{where}")
            return data.decode("cp1252", "replace")
    try:
        return data.decode(name, "replace")
    except Exception:  # a codec that still cannot cope
        defects.append(f"undecodable {_clip(charset or '')} text{where}")
        return data.decode("utf-8", "replace")


_BRACKETED_ID = re.compile(r"<\s*([^<>\s]+)\s*>")


MAX_ID = 500  # characters of a Message-ID kept as is (real ones are under 100; RFC 5322 lines stop at 998)
MAX_ADDRESS = 254  # characters of an address (RFC 5321's limit for a path)


def bounded_id(mid: str) -> str:
    """A Message-ID as stored and matched: one longer than ``MAX_ID`` becomes its digest.

    The store indexes Message-IDs, and PostgreSQL refuses an index entry over about 2,700 bytes:
    one hostile mail with a 9,000-character Message-ID stopped every sync there. The same id in a
    reply's In-Reply-To or References becomes the same digest, so such a thread still threads.
    """
    if len(mid) <= MAX_ID:
        return mid
    return hashlib.sha256(mid.encode("utf-8", "surrogatepass")).hexdigest() + "@long-message-id.invalid"


def _ids(value: str) -> list[str]:
    """Message ids from Message-ID / In-Reply-To / References, without brackets."""
    if "<" in value:
        out = [i for i in _BRACKETED_ID.findall(value) if "@" in i]
        if out:
            return out if len(value) <= MAX_ID else [bounded_id(i) for i in out]
    out = []
    for part in value.replace(",", " ").split():
        part = part.strip("<>")
        if part and "@" in part:
            out.append(bounded_id(part))
    return out


# From and To values repeat (a customer, our own address): split once, shared read-only.
_MAILBOX_CACHE: dict[str, list[tuple[str, str]]] = {}


def _mailboxes(value: str) -> list[tuple[str, str]]:
    """(display name still RFC 2047 encoded, lower-cased address) for an address list.

    The list may be shared between calls: read it, never change it."""
    hit = _MAILBOX_CACHE.get(value)
    if hit is None:
        hit = _split_mailboxes(value)
        _remember(_MAILBOX_CACHE, value, hit, longest=1024)
    return hit


def _split_mailboxes(value: str) -> list[tuple[str, str]]:
    if '"' in value or "(" in value:
        pieces = _split_addresses(value)
    else:
        pieces = value.split(",")
    out = []
    for s in pieces:
        s = s.strip()
        if not s:
            continue
        lt = s.rfind("<")
        if lt != -1:
            gt = s.find(">", lt)
            addr = s[lt + 1 : gt if gt != -1 else len(s)]
            name = s[:lt].strip()
            if ":" in name and not name.startswith('"'):  # group label
                name = name.split(":", 1)[1].strip()
        else:
            name = ""
            paren = s.find("(")
            if paren != -1:
                close = s.rfind(")")
                name = s[paren + 1 : close if close > paren else len(s)].strip()
                addr = s[:paren]
            else:
                addr = s
        if name[:1] == '"':
            name = name[1:-1] if len(name) > 1 and name[-1] == '"' else name[1:]
            if "\\" in name:
                name = re.sub(r"\\(.)", r"\1", name)
        if ":" in addr:  # group syntax or a source route
            addr = addr.rsplit(":", 1)[1]
        addr = addr.strip().strip(";\"'")
        if " " in addr or "\t" in addr:
            if "@" not in addr:  # a bare name, no address at all
                name, addr = name or addr, ""
            addr = "".join(addr.split())
        addr = addr.lower()
        out.append((" ".join(name.split()), addr))
    return out


def _split_addresses(value: str) -> list[str]:
    """Split on commas outside quotes, angle brackets and comments."""
    pieces = []
    buf_start = 0
    quote = False
    angle = 0
    paren = 0
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == '"':
                quote = False
        elif c == '"':
            quote = True
        elif c == "(":
            paren += 1
        elif c == ")" and paren:
            paren -= 1
        elif c == "<":
            angle += 1
        elif c == ">" and angle:
            angle -= 1
        elif c == "," and not angle and not paren:
            pieces.append(value[buf_start:i])
            buf_start = i + 1
        i += 1
    pieces.append(value[buf_start:])
    return pieces


# ---------------------------------------------------------------- dates

_MONTHS = {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}
_DATE = re.compile(
    r"\s*(?:[A-Za-z]{3},?\s*)?(\d{1,2})\s+([A-Za-z]{3})[A-Za-z]*\.?\s+(\d{4})\s+"
    r"(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\.\d+)?\s*([+-])(\d{2})(\d{2})\b"
)


def _set_date(pm: ParsedMessage, value: str) -> None:
    try:
        m = _DATE.match(value)
        month = _MONTHS.get(m.group(2).lower()) if m is not None else None
        if month is not None:
            day, _, year, hour, minute, second, sign, oh, om = m.groups()
            off = int(oh) * 60 + int(om)
            if sign == "-":
                off = -off
            unknown = off == 0 and sign == "-"
            d = datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0), tzinfo=timezone.utc)
        else:
            t = _parsedate_tz(value)
            if t is None:
                raise ValueError
            d = datetime(*t[:6], tzinfo=timezone.utc)
            unknown = t[9] is None
            off = 0 if unknown else t[9] // 60
        if unknown:  # "-0000": the offset is not known
            pm.date = d
            return
        if not -1440 < off < 1440:
            raise ValueError
        pm.date = d - timedelta(minutes=off) if off else d
        pm.date_offset_minutes = off
    except (ValueError, OverflowError, TypeError, IndexError):
        pm.defects.append(f"bad Date header {_clip(value)}")
        pm.date = None
        pm.date_offset_minutes = None


# ---------------------------------------------------------------- safety net


def _fallback(raw: object, why: str) -> ParsedMessage:
    """Our own code failed: try the stdlib parser (compat32); never raise."""
    pm = ParsedMessage(defects=[why])
    try:
        import email
        import email.policy
        import email.utils

        data = raw if isinstance(raw, bytes) else bytes(raw)  # type: ignore[arg-type]
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        for k, v in msg.items():
            pm.headers.setdefault(str(k).lower(), " ".join(str(v).split()))
        h = pm.headers
        ids = _ids(h.get("message-id", ""))
        pm.message_id = ids[0] if ids else None
        pm.in_reply_to = _ids(h.get("in-reply-to", ""))
        pm.references = _ids(h.get("references", ""))
        pm.subject = _decode_words(h.get("subject", ""), pm.defects)
        name, addr = email.utils.parseaddr(h.get("from", ""))
        pm.from_name, pm.from_addr = _decode_words(name, pm.defects), addr.lower()[:MAX_ADDRESS]
        pm.content_type = msg.get_content_type()
        for part in msg.walk():
            if part.get_content_type() == "text/plain" and not part.is_multipart():
                payload = part.get_payload(decode=True) or b""
                pm.text = _decode_bytes(payload, part.get_content_charset(), pm.defects, "")
                break
    except Exception:
        pass
    return pm
