"""HTML mail turned into readable text locally; nothing is ever fetched.

A handful of regular-expression passes, all linear in the input: tag patterns
never cross a ``<`` (``[^<>]*``), so malformed markup cannot make them
backtrack, and unterminated comments, scripts and styles simply end the text.
No network, no images, no parser that could be made to fetch anything.
"""

from __future__ import annotations

import html
import re

__all__ = ["html_to_text"]

def _ci(words: str) -> str:
    """A case-insensitive alternation without re.I (which disables the fast "<" scan)."""
    return "|".join(
        "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in w) for w in words.split()
    )


_DROP_OPEN = re.compile(rf"<({_ci('script style head title xml template')})\b[^<>]*>")
_DROP_CLOSE = {
    name: re.compile(rf"</{_ci(name)}\s*>") for name in ("script", "style", "title", "xml", "template")
}
_HEAD_END = re.compile(rf"</{_ci('head')}\s*>|<{_ci('body')}\b")
_PRE = re.compile(rf"<{_ci('pre')}\b[^<>]*>")
_PRE_END = re.compile(rf"</{_ci('pre')}\s*>")
# Tag name and attributes; "[^<>]" keeps every match linear on malformed markup.
_SPLIT = re.compile(r"<(/?[A-Za-z][A-Za-z0-9:_-]*)([^<>]*)>")
_DECL = re.compile(r"<[!?][^<>]*>")
_HREF = re.compile(r"""\bhref\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""", re.I)
_LINK = re.compile(r"\x01([^\x01\x02\x03]*)\x02([^\x01\x02\x03]*)\x03")
_LINK_LEFTOVER = re.compile(r"\x01[^\x01\x02\x03]*\x02|\x03")
_MARKERS = "\x01\x02\x03\x04\x05\x07\x08"
_NO_MARKERS = {ord(c): None for c in _MARKERS}
_HTML_SPACE = ("\n", "\t", "\r", "\f", "\v")  # all just spaces in HTML source
_ODD_SPACES = (("\u00a0", " "), ("\u2007", " "), ("\u202f", " "), ("\u200b", ""), ("\ufeff", ""))
_LINK_OPEN = "\x00"  # sentinel in _REPL: build the link marker from the attributes


def _replacements() -> dict[str, str]:
    # "\n": a block boundary (a line break unless already at a line start);
    # "\x08\n": <br>, a line break that can leave an empty line;
    # "\n\x07\n": a paragraph gap (at most one empty line).
    table = {}
    for name in (
        "div tr table thead tbody tfoot caption ul ol dl dt dd pre center section article header "
        "footer nav main aside address figure figcaption form fieldset details summary body html"
    ).split():
        table[name] = table["/" + name] = "\n"
    for name in "p h1 h2 h3 h4 h5 h6".split():
        table[name] = table["/" + name] = "\n\x07\n"
    table.update({"br": "\x08\n", "/br": "", "hr": "\n\x07\n"})
    table.update({"li": "\n- ", "/li": "", "td": " ", "/td": " ", "th": " ", "/th": " "})
    table.update({"a": _LINK_OPEN, "/a": "\x03", "blockquote": "\n\x04", "/blockquote": "\x05\n"})
    for name in "span b i u em strong font img o:p small big sup sub meta link col colgroup tt code".split():
        table[name] = table["/" + name] = ""
    table.update({k.upper(): v for k, v in table.items()})
    return table


_REPL = _replacements()
# Outlook writes every line as <p class=MsoNormal> with no margin, and a blank
# line as an empty one: there a paragraph is a line, not a gap.
_REPL_OUTLOOK = dict(_REPL, p="\n", P="\n", **{"/p": "\x08\n", "/P": "\x08\n"})


def html_to_text(markup: str) -> str:
    """Readable text from an HTML mail body. Never raises on malformed input."""
    if not markup:
        return ""
    s = markup
    if any(c in s for c in _MARKERS):
        s = s.translate(_NO_MARKERS)
    if "<!" in s:
        s = _drop_comments(s)
        if "[" in s:
            s = _drop_internal_subsets(s)
    if _DROP_OPEN.search(s):
        s = _drop_blocks(s)
    if _PRE.search(s):
        s = _keep_pre_lines(s)
    for c in _HTML_SPACE:  # source newlines are only spaces in HTML
        if c in s:
            s = s.replace(c, " ")
    if "<!" in s or "<?" in s:
        s = _DECL.sub("", s)
    parts = _SPLIT.split(_squeeze(s))
    get = (_REPL_OUTLOOK if "MsoNormal" in s else _REPL).get
    for i in range(1, len(parts), 3):
        name = parts[i]
        r = get(name)
        if r is None:
            r = get(name.lower(), "")
        if r == _LINK_OPEN:
            r = _link_open(parts[i + 1])
        parts[i] = r
        parts[i + 1] = ""
    s = "".join(parts)
    if "\x01" in s:
        s = _LINK.sub(_link_text, s)
    if "\x01" in s or "\x03" in s:
        s = _LINK_LEFTOVER.sub("", s)
    if "&" in s:
        s = _unescape(s)
        for c, rep in _ODD_SPACES:
            if c in s:
                s = s.replace(c, rep)
        if "\r" in s or "\t" in s:
            s = s.replace("\r", "").replace("\t", " ")
    return _tidy_lines(s)


def _squeeze(s: str) -> str:
    while "  " in s:
        s = s.replace("    ", " ").replace("  ", " ")
    return s


_COMMON_ENTITIES = (("&nbsp;", " "), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"))


def _unescape(s: str) -> str:
    for ent, ch in _COMMON_ENTITIES:
        if ent in s:
            s = s.replace(ent, ch)
    if "&" not in s:
        return s
    if "&" in s.replace("&amp;", ""):
        return html.unescape(s)
    return s.replace("&amp;", "&")


def _tidy_lines(s: str) -> str:
    out: list[str] = []
    depth = 0
    quoting = "\x04" in s
    blank = True  # drops leading blank lines
    for line in s.split("\n"):
        if quoting:
            depth += line.count("\x04")
            closes = line.count("\x05")
            if depth or closes:
                line = line.replace("\x04", "").replace("\x05", "")
        keep_empty = False
        if "\x08" in line or "\x07" in line:  # <br> or a paragraph gap: may leave an empty line
            line = line.replace("\x08", "").replace("\x07", "")
            keep_empty = True
        if "  " in line:
            line = _squeeze(line)
        line = line.strip()
        if quoting:
            if depth and line:
                line = ">" * depth + " " + line
            depth = max(depth - closes, 0)
        if not line:
            if keep_empty and not blank:
                out.append("")
                blank = True
            continue
        blank = False
        out.append(line)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def _drop_comments(s: str) -> str:
    out = []
    pos = 0
    while True:
        i = s.find("<!--", pos)
        if i == -1:
            break
        out.append(s[pos:i])
        j = s.find("-->", i + 4)
        if j == -1:
            return "".join(out)  # unterminated comment: the rest is comment
        pos = j + 3
    out.append(s[pos:])
    return "".join(out)


# <!DOCTYPE x [ <!ENTITY ...> ]>: the internal subset holds declarations, each a "<!...>" of its own, so
# _DECL dropped those and left "<!DOCTYPE x []>" on screen.
_SUBSET_OPEN = re.compile(rf"<!\s*(?:{_ci('doctype')})\b[^<>\[]*\[")
_SUBSET_END = re.compile(r"\]\s*>")


def _drop_internal_subsets(s: str) -> str:
    out = []
    pos = 0
    while True:
        m = _SUBSET_OPEN.search(s, pos)
        if m is None:
            break
        out.append(s[pos : m.start()])
        end = _SUBSET_END.search(s, m.end())
        if end is None:  # unterminated: only the opening goes (its declarations go with _DECL)
            pos = m.end()
            break
        pos = end.end()
    out.append(s[pos:])
    return "".join(out)


def _drop_blocks(s: str) -> str:
    out = []
    pos = 0
    head_ends = True
    while True:
        m = _DROP_OPEN.search(s, pos)
        if m is None:
            break
        out.append(s[pos : m.start()])
        name = m.group(1).lower()
        if name == "head":
            end = _HEAD_END.search(s, m.end()) if head_ends else None
            if end is None:
                head_ends = False  # never search again: keeps this linear  # no </head> nor <body>: keep the content, lose the tag
                pos = m.end()
                continue
            pos = end.end() if end.group(0)[1] == "/" else end.start()
        else:
            end = _DROP_CLOSE[name].search(s, m.end())
            if end is None:
                return "".join(out)  # unterminated script/style: the rest is code
            pos = end.end()
    out.append(s[pos:])
    return "".join(out)


def _keep_pre_lines(s: str) -> str:
    out = []
    pos = 0
    while True:
        m = _PRE.search(s, pos)
        if m is None:
            break
        end = _PRE_END.search(s, m.end())
        stop = end.start() if end else len(s)
        out.append(s[pos : m.end()])
        out.append(s[m.end() : stop].replace("\r\n", "\n").replace("\n", "<br>").replace("\r", "<br>"))
        pos = stop
    out.append(s[pos:])
    return "".join(out)


def _link_open(attrs: str) -> str:
    h = _HREF.search(attrs)
    if h is None:
        return ""
    url = (h.group(1) or h.group(2) or h.group(3) or "").strip()
    if not url or url.startswith("#") or url.lower().startswith("javascript:"):
        return ""
    return "\x01" + url.replace("\x02", "") + "\x02"


def _norm_url(u: str) -> str:
    if "&" in u:
        u = html.unescape(u)
    u = u.strip().lower()
    for prefix in ("mailto:", "tel:", "https://", "http://"):
        if u.startswith(prefix):
            u = u[len(prefix) :]
            break
    if u.startswith("www."):
        u = u[4:]
    return u.rstrip("/")


def _link_text(m: re.Match[str]) -> str:
    url, text = m.group(1), m.group(2)
    label = text.strip()
    if not label:
        return text
    if _norm_url(label) == _norm_url(url):
        return text
    return f"{text} ({url})"
