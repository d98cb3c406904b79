"""Tone checks on an outgoing draft, shown at the reply review step.

Each check traces back to a complaint in the seed articles. A warning is
advice for the agent, never a block: the agent may send anyway.

Warning codes are a contract (the TUI and saved settings refer to them):

    thanks-but         "but" / "however" / "although" right after a thank-you or an apology
    actually           "actually" sounds condescending in writing
    repeated-apology   more than one apology across our messages in the thread and this draft
    blame              "as I already said", "you should have", "obviously", ...
    channel-switch     asking an email customer to phone us, unless they asked for it
    upsell             upgrade / plan / offer / discount / add-on the customer did not raise
    template-repeat    the same saved reply already used in this thread, or twice in this draft
    past-date          a date in the draft that is already past (a stale promise)
    we-not-i           "we will get back to you" where "I will" is what the customer needs

``ToneWarning.found`` holds the words as written in the draft (whitespace runs
folded to one space); for ``template-repeat`` it is the saved reply's name.
Lines starting with ">" (quoted mail) and an Outlook-style history below an
"Original Message" separator are ignored. All matching is
case-insensitive and on word boundaries.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

__all__ = ["ToneWarning", "check_tone", "CODES", "strip_quoted"]


@dataclass(frozen=True, slots=True)
class ToneWarning:
    code: str
    found: str  # the words as written in the draft (template-repeat: the saved reply name)
    why: str  # one sentence: why customers dislike it


WHY = {
    "thanks-but": (
        "A \"but\" or \"however\" right after a thank-you or an apology cancels it: "
        "it reads as if you were not really sorry (seed 000, #5). End the thanks with a full stop "
        "and give the rest as a sentence of its own, without the \"but\"."
    ),
    "actually": (
        "\"Actually\" carries an air of condescension in writing, where tone cannot soften it (seed 000, #5). "
        "Delete the word: the sentence says the same without it."
    ),
    "repeated-apology": (
        "Apologize gracefully, just once: apologizing again and again feels like being bombarded (seed 000, #1). "
        "Keep one apology in the thread and drop this one; say what you did instead."
    ),
    "blame": (
        "Pointing out the customer's mistakes turns help into a battle of wits and leaves them "
        "harassed and frustrated (seed 000, #3). Drop these words and give the steps again, plainly."
    ),
    "channel-switch": (
        "Asking an email customer to phone you ignores the channel they chose; switch only if they ask (seed 000, #2). "
        "Answer here by email, or ask in writing what you need to know."
    ),
    "upsell": (
        "A sales pitch the customer did not ask for tells them you care more about the sale than "
        "their problem (seeds 000 #7, 002). Remove the offer and solve the problem they wrote about."
    ),
    "template-repeat": (
        "The same saved reply twice in one conversation sounds robotic and shows you did not read "
        "what they said (seeds 000 #6, 004 #7). Rewrite it in your own words for what they wrote last."
    ),
    "past-date": (
        "A date that has already passed reads as a broken or copy-pasted promise (seed 004, #6). "
        "Change it to a date still ahead, one you can stand by."
    ),
    "we-not-i": (
        "A personal \"I will take care of this\" tells the customer someone owns their problem; "
        "\"we\" sounds like nobody does (seeds 001, 002). Write \"I will\" and say when."
    ),
}
CODES = tuple(WHY)

_FLAGS = re.I


# Outlook quotes the history unmarked, below a separator ("-----Original Message-----", or a rule
# of underscores then "From:"): the words below it were written before, often by us.
_HISTORY_SEPARATOR = re.compile(
    r"^\s*-{2,}\s*(?:original\s+message|forwarded\s+message|message\s+d'origine|urspr(?:ü|ue)ngliche\s+nachricht)\s*-{2,}\s*$"
    r"|^\s*_{10,}\s*\n\s*(?:from|von|de|van)\s*:", re.I | re.M)


def strip_quoted(text: str) -> str:
    """The text with quoted lines (first non-blank character ">") blanked out, and an Outlook-style
    history (everything from an "Original Message" separator on).

    Line count is kept, so sentences never join across a quote.
    """
    lines = text.splitlines()
    if (m := _HISTORY_SEPARATOR.search(text)) is not None:
        keep = text.count("\n", 0, m.start())
        lines = lines[:keep] + [""] * (len(lines) - keep)
    return "\n".join("" if line.lstrip().startswith(">") else line for line in lines)


def _fold(s: str) -> str:
    return " ".join(s.split())


# --- sentences --------------------------------------------------------------

_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)|\n\s*\n")


def _sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of sentences; blank lines end a sentence too."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


# --- thanks-but ---------------------------------------------------------------

_THANKS = re.compile(
    r"\b(?:thank\s+you|thanks|many\s+thanks|sorry|i\s+apologi[sz]e|(?:my\s+)?apologies)\b", _FLAGS
)
_BUT = re.compile(r"\b(?:but|however|although)\b", _FLAGS)
_NEXT_BUT = re.compile(r"[\s\W]*(?:but|however|although)\b", _FLAGS)


# "Right after": a "but" further on in a long sentence answers something else, and the words
# reported stay short enough to read in the review.
_MAX_WORDS_BETWEEN = 20


def _thanks_but(text: str) -> Iterator[str]:
    spans = _sentences(text)
    starts = [s for s, _ in spans]
    buts = list(_BUT.finditer(text))
    but_starts = [b.start() for b in buts]
    nearest: dict[int, tuple[int, int]] = {}  # a "but"'s start -> the thank-you nearest before it
    for m in _THANKS.finditer(text):
        idx = bisect_right(starts, m.start()) - 1
        b = None
        k = bisect_left(but_starts, m.end())
        if k < len(buts) and buts[k].end() <= spans[idx][1]:
            b = buts[k]
        if b is None and idx + 1 < len(spans):
            # The next sentence counts when it opens with the conjunction:
            # "Sorry for the wait. However, ..."
            start, end = spans[idx + 1]
            b = _NEXT_BUT.match(text, start, end)
        if b is None or b.start() - m.end() > _MAX_WORDS_BETWEEN * 40:
            continue
        if len(text[m.end() : b.start()].split()) <= _MAX_WORDS_BETWEEN:
            nearest[b.start()] = (m.start(), b.end())
    for start, end in sorted(nearest.values()):
        yield text[start:end]


# --- simple phrase checks -----------------------------------------------------

_ACTUALLY = re.compile(r"\bactually\b", _FLAGS)

_APOLOGY = re.compile(r"\b(?:sorry|apologi[sz]e[sd]?|apologi[sz]ing|apolog(?:y|ies)|regret)\b", _FLAGS)

_BLAME = re.compile(
    r"\b(?:"
    r"as\s+(?:i|we)\s+(?:already\s+|previously\s+|have\s+|had\s+)*(?:said|mentioned|stated|explained|told\s+you)"
    r"(?:\s+(?:before|earlier|previously))?"
    r"|as\s+(?:already\s+|previously\s+)?(?:mentioned|stated|explained)(?!\s+(?:in|by)\s+you)"
    r"|as\s+per\s+my\s+(?:last|previous|earlier)\s+(?:e-?mail|message|mail|reply)"
    r"|you\s+should\s+have(?!\s+(?:received|got|gotten|been|a|an|the|access|now|some|no|one|it|this|that|these|those|your|all|full|any|already\s+received)\b)"
    r"|you\s+failed\s+to"
    r"|you\s+need\s+to\s+read"
    r"|did\s+you\s+(?:even\s+)?read"
    r"|obviously"
    r")\b",
    _FLAGS,
)

_CALL_US = re.compile(
    r"\b(?:"
    r"give\s+(?:us|me|our\s+\w+(?:\s+team)?)\s+a\s+(?:quick\s+)?(?:call|ring|buzz)"
    r"|(?:call|phone|ring|telephone)\s+(?:us|me)\b"
    r"|(?:call|phone|ring|telephone)\s+(?:our|the)\s+(?:support\s+|service\s+|customer\s+service\s+)?(?:hotline|helpline|support\s+line|phone\s+line|number|support\s+team|support|office|team)"
    r"|(?:contact|reach)(?:\s+out\s+to)?\s+(?:us|me)\s+(?:by|via|on|over)\s+(?:the\s+)?(?:tele)?phone"
    r"|(?:call|phone|ring)\s+you(?:\s+back)?\b|give\s+you\s+a\s+(?:quick\s+)?(?:call|ring)"
    r"|our\s+(?:tele)?phone\s+number|dial\s+(?:our|us\b|\+?\d[\d\s()/-]*\d)|(?:call|phone|ring)\s+support\s+(?:on|at)\b"
    r"|(?:hop|jump|get)\s+on\s+a\s+(?:quick\s+)?(?:phone\s+)?call"
    r"|(?:schedule|arrange|book|set\s+up)\s+a\s+(?:quick\s+|short\s+)?(?:phone\s+)?call"
    r"|(?:speak|talk)\s+(?:to|with)\s+(?:us|me|someone|an\s+agent)\s+(?:by|on|over)\s+(?:the\s+)?(?:tele)?phone"
    r"|our\s+(?:support\s+)?hotline"
    r")",
    _FLAGS,
)
_CUSTOMER_WANTS_CALL = re.compile(
    r"\b(?:"
    r"call\s+me|phone\s+me|ring\s+me|give\s+me\s+a\s+(?:call|ring)"
    r"|(?:can|could|would|will)\s+(?:you|someone|somebody|anyone|we)\s+(?:please\s+)?(?:call|phone|ring)"
    r"(?!\s+(?:the|an?|it|this|that|these|those)\b)"
    r"|call\s+back|(?:request|want|like|need|get|arrange)\s+a\s+call-?\s?back"
    r"|(?:reach|contact|talk|speak|discuss(?:\s+\w+)?)(?:\s+(?:to|with))?(?:\s+(?:me|us|you|someone|somebody))?"
    r"\s+(?:by|over|on)\s+(?:the\s+)?(?:tele)?phone"
    r"|(?:number|someone)\s+(?:i|we)\s+(?:can|could)\s+call|can\s+i\s+call\s+(?:you|someone)"
    r"|my\s+(?:(?:phone|mobile|cell)\s+)?number\s+is|my\s+(?:phone|mobile|cell)\s+is\s*:?\s*[+(]?\d+"
    r"|(?:prefer|rather)\s+(?:a\s+)?(?:call|phone|talk)"
    r"|speak\s+to\s+(?:someone|a\s+person|a\s+human)"
    r")\b",
    _FLAGS,
)


@dataclass(frozen=True, slots=True)
class _Upsell:
    draft: re.Pattern[str]
    customer: re.Pattern[str]


# Words in the customer's own text that mean they raised money or options
# themselves: then any of the families may be discussed.
_COMMERCIAL = r"pric(?:e|es|ing)|cost|cheaper|buy|purchase|plans|options|licen[cs]e|subscription|billing|quote"
_UPSELL = (
    _Upsell(
        re.compile(
            r"\bupgrad(?:e|es|ed|ing)\b(?!\s+(?:to\s+(?:(?:the\s+)?(?:latest|newest|current|most\s+recent|newer|new)\b"
            r"|version|release|v?\d)"
            r"|(?:your|the)\s+(?:[\w.-]+\s+)?(?:app|browser|os|operating\s+system|client|software|firmware|drivers?"
            r"|phone|version|plugin|extension)))",
            _FLAGS,
        ),
        re.compile(rf"\b(?:upgrad\w*|{_COMMERCIAL})\b", _FLAGS),
    ),
    _Upsell(
        re.compile(
            r"\b(?:(?:premium|pro|business|enterprise|paid|plus)\s+(?:plan|tier|subscription|edition|package|version)"
            r"|(?:higher|bigger|larger)\s+(?:plan|tier|subscription|package))s?\b",
            _FLAGS,
        ),
        re.compile(rf"\b(?:premium|pro|plan|tier|enterprise|{_COMMERCIAL})\b", _FLAGS),
    ),
    _Upsell(
        re.compile(
            r"\b(?:special|exclusive|limited[- ]time|introductory|promotional|great|current|latest|our|this)\s+offers?\b",
            _FLAGS,
        ),
        re.compile(rf"\b(?:offers?|deals?|promo\w*|discount\w*|{_COMMERCIAL})\b", _FLAGS),
    ),
    _Upsell(
        re.compile(r"\bdiscount(?:s|ed)?\b|\bcoupon\b|\bpromo\s+code\b", _FLAGS),
        re.compile(rf"\b(?:discount\w*|coupon|promo\w*|refund|{_COMMERCIAL})\b", _FLAGS),
    ),
    _Upsell(
        re.compile(r"\badd-?ons?\b", _FLAGS),
        re.compile(rf"\b(?:add-?ons?|extensions?|plugins?|modules?|{_COMMERCIAL})\b", _FLAGS),
    ),
)

_WE_WILL = re.compile(
    r"\bwe(?:'ll|’ll|\s+will|(?:\s+are|'re|’re)\s+going\s+to|\s+shall)\s+"
    r"(?:take\s+care\s+of|handle|look\s+into|get\s+back\s+to|reply|respond|be\s+in\s+touch|contact\s+you|follow\s+up)\b",
    _FLAGS,
)


# --- past-date ------------------------------------------------------------------

_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "sept": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Month names must be capitalised ("May" the month, not "may" the verb).
_MONTH_NAMES = (
    ("Jan", "uary"), ("Feb", "ruary"), ("Mar", "ch"), ("Apr", "il"), ("May", ""), ("Jun", "e"),
    ("Jul", "y"), ("Aug", "ust"), ("Sep", "tember"), ("Oct", "ober"), ("Nov", "ember"), ("Dec", "ember"),
)  # fmt: skip


def _month_alternatives() -> str:
    alts = []
    for head, tail in _MONTH_NAMES:
        for h, t in ((head, tail), (head.upper(), tail.upper())):
            alts.append(rf"{h}(?:{t}|\.)?" if t else h)
    alts += [r"Sept\.?", r"SEPT\.?"]
    return "|".join(sorted(alts, key=len, reverse=True))


# Month names must be capitalised ("May" the month, not "may" the verb); a
# dot may follow an abbreviation only.
_MONTH = r"(?P<{g}>" + _month_alternatives().replace("{", "{{").replace("}", "}}") + ")"
_WEEKDAY = (
    r"(?:(?P<wd>(?:Mon|Tues?|Wed(?:nes)?|Thu(?:rs?)?|Fri|Sat(?:ur)?|Sun)(?:day)?\.?)\s*,?\s+(?:the\s+)?)?"
)
_DAY = r"(?P<{g}>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(?P<{g}>(?:19|20|21)\d\d))?"

_DATE_PATTERNS = (
    # 2026-11-24 (and 2026-11-24T10:00)
    re.compile(r"(?<![\w.\-/])(?P<y>(?:19|20|21)\d\d)-(?P<m>[01]?\d)-(?P<d>[0-3]?\d)(?![\d\-/])"),
    # Monday, 24 November 2026 / 24th of Nov / 24 Nov.
    re.compile(
        r"(?<![\w.])"
        + _WEEKDAY
        + _DAY.format(g="d")
        + r"(?:\s+of)?\s+"
        + _MONTH.format(g="mon")
        + _YEAR.format(g="y")
        + r"(?![\w])"
    ),
    # Monday, November 24th, 2026 / Nov 24
    re.compile(
        r"(?<![\w.])"
        + _WEEKDAY
        + _MONTH.format(g="mon")
        + r"\s+(?:the\s+)?"
        + _DAY.format(g="d")
        + _YEAR.format(g="y")
        + r"(?![\w:])"
    ),
    # 24/11/2026, 24/11/26, 24.11.2026 (day first unless impossible)
    re.compile(
        r"(?<![\w.\-/])" + _WEEKDAY + r"(?P<a>[0-3]?\d)/(?P<b>[0-3]?\d)/(?P<y>\d{4}|\d\d)(?![\w/]|\.\d)"
        r"|(?<![\w.\-/])(?P<a2>[0-3]?\d)\.(?P<b2>[01]?\d)\.(?P<y2>(?:19|20|21)\d\d)(?![\w/]|\.\d)"
    ),
)


_VERSION_BEFORE = re.compile(r"\b(?:version|release|build|v)\s*$", re.I)


def _safe_date(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def _weekday_index(word: str | None) -> int | None:
    if not word:
        return None
    return _WEEKDAYS.index(word[:3].lower())


def _yearless(m: int, d: int, today: date, weekday: int | None) -> date | None:
    """The year a yearless date means: the one nearest to today (weekday decides if given)."""
    candidates = [c for y in (today.year - 1, today.year, today.year + 1) if (c := _safe_date(y, m, d))]
    if not candidates:
        return None
    if weekday is not None:
        matching = [c for c in candidates if c.weekday() == weekday]
        if matching:
            candidates = matching
    return min(candidates, key=lambda c: abs((c - today).days))


def _dates(text: str, today: date) -> Iterator[tuple[int, int, str, list[date]]]:
    """(start, end, words, possible dates) for each date written in the text."""
    taken = bytearray(len(text))  # 1 where a date was already found
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(taken[m.start() : m.end()]):
                continue
            if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                continue  # "version 1.2.2020" is not a date
            g = m.groupdict()
            options: list[date] = []
            if g.get("mon"):
                month = _MONTHS[g["mon"].rstrip(".").lower()[:3]]
                day = int(g["d"])
                if g.get("y"):
                    found = _safe_date(int(g["y"]), month, day)
                else:
                    found = _yearless(month, day, today, _weekday_index(g.get("wd")))
                if found:
                    options.append(found)
            elif g.get("a") or g.get("a2"):
                a, b = int(g.get("a") or g["a2"]), int(g.get("b") or g["b2"])
                year_text = g.get("y") or g["y2"]
                year = int(year_text) + (2000 if len(year_text) == 2 else 0)
                for d, mo in {(a, b), (b, a)}:
                    if (c := _safe_date(year, mo, d)) is not None:
                        options.append(c)
            else:
                if (c := _safe_date(int(g["y"]), int(g["m"]), int(g["d"]))) is not None:
                    options.append(c)
            if options:
                taken[m.start() : m.end()] = b"\x01" * (m.end() - m.start())
                yield m.start(), m.end(), m.group(0), options


def _today(now: datetime, customer_tz: tzinfo | str | None) -> date:
    if customer_tz is not None and now.tzinfo is not None:
        if isinstance(customer_tz, str):
            from zoneinfo import ZoneInfo

            customer_tz = ZoneInfo(customer_tz)
        return now.astimezone(customer_tz).date()
    return now.date()


# --- the check ------------------------------------------------------------------


def check_tone(
    draft: str,
    *,
    thread_texts_ours: Sequence[str],
    customer_texts: Sequence[str],
    saved_replies_used_in_thread: Collection[str],
    saved_reply_used: str | Sequence[str] | None,
    channel: str = "email",
    now: datetime,
    customer_tz: tzinfo | str | None = None,
) -> list[ToneWarning]:
    """Tone warnings for ``draft``, in check order, then in order of appearance.

    ``thread_texts_ours``: bodies of our earlier messages in this thread
    (acknowledgements included). ``customer_texts``: the customer's messages
    in the thread. ``now`` (with ``customer_tz``, a tzinfo or IANA name)
    decides which dates are past: a date is past when it is before the
    customer's today. ``saved_reply_used``: the saved reply, or every one in
    the order inserted, the draft was written from. Each distinct wording is
    reported once per code.
    """
    text = strip_quoted(draft)
    customer = "\n".join(strip_quoted(t) for t in customer_texts)
    out: list[ToneWarning] = []
    seen: set[tuple[str, str]] = set()

    def add(code: str, found: str) -> None:
        found = _fold(found)
        key = (code, found.lower())
        if found and key not in seen:
            seen.add(key)
            out.append(ToneWarning(code, found, WHY[code]))

    for found in _thanks_but(text):
        add("thanks-but", found)

    for m in _ACTUALLY.finditer(text):
        add("actually", m.group(0))

    draft_apologies = [m.group(0) for m in _APOLOGY.finditer(text)]
    if draft_apologies:
        earlier = sum(len(_APOLOGY.findall(strip_quoted(t))) for t in thread_texts_ours)
        if earlier + len(draft_apologies) > 1:
            add("repeated-apology", draft_apologies[-1] if earlier == 0 else draft_apologies[0])

    for m in _BLAME.finditer(text):
        add("blame", m.group(0))

    if channel.lower() not in ("phone", "call") and not _CUSTOMER_WANTS_CALL.search(customer):
        for m in _CALL_US.finditer(text):
            add("channel-switch", m.group(0))

    for family in _UPSELL:
        if family.customer.search(customer):
            continue
        for m in family.draft.finditer(text):
            add("upsell", m.group(0))

    used = [saved_reply_used] if isinstance(saved_reply_used, str) else list(saved_reply_used or ())
    for i, name in enumerate(used):
        if name in saved_replies_used_in_thread or name in used[:i]:
            add("template-repeat", name)

    today = _today(now, customer_tz)
    for _start, _end, words, options in sorted(_dates(text, today)):
        if all(d < today for d in options):
            add("past-date", words)

    for m in _WE_WILL.finditer(text):
        add("we-not-i", m.group(0))

    return out
