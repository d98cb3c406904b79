"""Untrusted mail text made safe to put on a terminal, and attachment names safe to write.

Subjects, names, bodies, filenames and server errors are data. Before they
reach the screen every terminal control is removed: ANSI / ECMA-48 escape
sequences are dropped whole (so an OSC 8 hyperlink loses its hidden URL, not
only its ESC byte), as are C0 controls other than tab and newline, DEL, C1
controls and the bidirectional overrides that can make ``invoice\\u202efdp.exe``
look like ``invoiceexe.pdf``, and invisible format characters that can hide
text (Unicode tag characters, the soft hyphen, invisible operators; the tag
sequences of the England, Scotland and Wales flags are kept). A flood of combining marks ("Zalgo" text: hundreds
of accents stacked on one letter, drawn over the lines above and below it) is
cut to MAX_MARKS marks on each character, as is a run of zero-width spaces and
joiners. Everything else in Unicode (accents, CJK, emoji, joiners) is kept.

Markup is *not* this module's business: ``[b]bold[/b]`` passes through
unchanged. The TUI must still render these strings with ``markup=False`` /
``Text`` / ``Content``.

Pure functions, no terminal library imported.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["safe_text", "safe_line", "safe_filename", "DEFAULT_FILENAME", "MAX_FILENAME_BYTES", "MAX_MARKS"]

DEFAULT_FILENAME = "attachment"
MAX_FILENAME_BYTES = 200

# ECMA-48 sequences, in both 7-bit (ESC x) and 8-bit (C1) introducer forms.
# Order matters: string controls first (their payload goes with them), then
# CSI, then the two-or-more byte escape sequences, then a lone ESC.
_ST = r"(?:\x07|\x1b\\|\x9c)"  # BEL (xterm's OSC terminator), ESC \, 8-bit ST
_ESCAPES = re.compile(
    "|".join(
        [
            # OSC, DCS, SOS, PM, APC: introducer ... terminator (payload dropped).
            # The payload stops at any ESC or C1 string control, which keeps
            # the scan linear on hostile input.
            r"(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x90\x98\x9c-\x9f]*" + _ST,
            # CSI: parameters, intermediates, final byte.
            r"(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]",
            # Unterminated string control or CSI: drop the introducer only;
            # without its ESC the rest is inert text.
            r"\x1b[\]PX^_\[]",
            # nF / Fp / Fe / Fs escape: ESC, intermediates, one final byte.
            r"\x1b[\x20-\x2f]*[\x30-\x7e]",
            r"\x1b",
        ]
    )
)

_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# Format characters that draw nothing and mean nothing in mail, so can only hide text: the soft hyphen
# ("pay\u00adpal" reads "paypal"), the invisible math operators, the deprecated shaping controls, the
# interlinear annotation marks (whose annotation a terminal shows as plain text, or not at all).
_INVISIBLE = "\u00ad\u2061-\u2064\u206a-\u206f\ufff9-\ufffb"
# C0 except \t and \n (and \r, handled before), DEL, C1, bidi controls, invisible format characters.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + _BIDI + _INVISIBLE + "]")
# Outside the Basic Multilingual Plane: the tag characters (U+E0000-E007F), which spell out text no
# terminal draws ("ASCII smuggling") and are dropped, except in the three flags that are tag sequences
# (England, Scotland, Wales), kept whole; the musical and shorthand format controls; and runs of the
# supplementary variation selectors, which carry hidden bytes one per selector after a visible
# character (an ideograph needs one).
_TAGS = "\U000e0000-\U000e007f"
_FLAG_TAGS = "|".join("".join(chr(0xE0000 + ord(c)) for c in region) for region in ("gbeng", "gbsct", "gbwls"))
_ASTRAL_HIDDEN = re.compile(
    f"(\U0001f3f4(?:{_FLAG_TAGS})\U000e007f)|[{_TAGS}\U0001d173-\U0001d17a\U0001bca0-\U0001bca3]"
    "|([\U000e0100-\U000e01ef])[\U000e0100-\U000e01ef]+"
)
_FIRST_ASTRAL_HIDDEN = "\U0001bca0"  # no character below this is one of them


def _astral_kept(m: re.Match[str]) -> str:
    return m.group(1) or m.group(2) or ""
_NEWLINES = re.compile("\r\n?|[\u2028\u2029\x85]")

MAX_MARKS = 4  # combining marks kept on one character: real text needs at most about 3 (pointed Hebrew)
_ZERO_WIDTH = "\u200b-\u200d\u2060-\u2064\ufeff"
_marks: re.Pattern[str] | None = None


def _mark_run() -> re.Pattern[str]:
    """A run of more than MAX_MARKS combining marks (categories Mn, Me) or zero-width characters.

    Built on first use from the Unicode database (the Basic Multilingual Plane's marks, where every
    script's accents and Zalgo generators' marks are: a class that stays in it is matched by a
    bitmap, several times faster), about 10 ms, and only for text that is not ASCII."""
    global _marks
    if _marks is None:
        ranges, start = [], None
        for cp in range(0x300, 0x10001):
            mark = cp < 0x10000 and unicodedata.category(chr(cp)) in ("Mn", "Me")
            if mark and start is None:
                start = cp
            elif not mark and start is not None:
                ranges.append(f"{chr(start)}-{chr(cp - 1)}" if cp - 1 > start else chr(start))
                start = None
        cls = "[" + "".join(ranges) + _ZERO_WIDTH + "]"
        _marks = re.compile(f"({cls}{{{MAX_MARKS}}}){cls}+")
    return _marks


def safe_text(s: str) -> str:
    """Text with every terminal control removed; tab and newline kept.

    ``\\r\\n`` and a lone ``\\r`` become ``\\n`` (a bare CR would let a line
    overwrite itself on screen), as do U+2028/U+2029/NEL.
    """
    if not s:
        return ""
    s = _ESCAPES.sub("", s)
    s = _NEWLINES.sub("\n", s)
    if not s.isascii():
        s = _mark_run().sub(r"\1", s)
        if max(s) >= _FIRST_ASTRAL_HIDDEN:
            s = _ASTRAL_HIDDEN.sub(_astral_kept, s)
    return _CONTROLS.sub("", s)


_FOLD = re.compile(r"[\t\n]+")


def safe_line(s: str) -> str:
    """``safe_text`` on one line: runs of newlines and tabs fold to one space, ends trimmed.

    For subjects, names and other values shown in a table row.
    """
    return _FOLD.sub(" ", safe_text(s)).strip()


_WINDOWS_RESERVED = re.compile(
    r"^(con|prn|aux|nul|com[0-9\u00b9\u00b2\u00b3]|lpt[0-9\u00b9\u00b2\u00b3]|conin\$|conout\$|clock\$)$",
    re.I,
)
_BAD_FILENAME_CHARS = re.compile(r'[<>:"|?*\x00-\x1f]')
_MAX_EXTENSION_CHARS = 16


def _truncate_utf8(s: str, limit: int) -> str:
    raw = s.encode("utf-8")
    if len(raw) <= limit:
        return s
    return raw[:limit].decode("utf-8", errors="ignore")


def safe_filename(name: str) -> str:
    """A single, harmless file name for an attachment; never a path, never empty.

    Directories (``/`` or ``\\``) are dropped, leaving the last component;
    ``..`` and leading dots go, as do terminal controls, bidi overrides, NUL
    and characters Windows refuses (``<>:"|?*``, replaced by ``_``). Trailing
    dots and spaces go (Windows drops them silently). Reserved device names
    (CON, NUL, COM1, ...) get a ``_`` prefix. The result is at most 200 bytes
    of UTF-8, cut in the stem so the extension survives; an empty result is
    ``"attachment"``.
    """
    name = unicodedata.normalize("NFC", safe_line(name or ""))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _BAD_FILENAME_CHARS.sub("_", name)
    name = name.strip().lstrip(".").rstrip(". ").strip()
    if not name or set(name) <= {"_", " ", "."}:
        return DEFAULT_FILENAME

    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > _MAX_EXTENSION_CHARS or " " in ext:
        stem, ext = name, ""
    else:
        ext = "." + ext
    stem = stem.rstrip(". ")
    if _WINDOWS_RESERVED.match(stem.split(".", 1)[0].strip()):
        stem = "_" + stem

    room = MAX_FILENAME_BYTES - len(ext.encode("utf-8"))
    stem = _truncate_utf8(stem, room).rstrip(". ")
    name = stem + ext if stem else DEFAULT_FILENAME + ext
    return name or DEFAULT_FILENAME
