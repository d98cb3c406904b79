"""Vague first mails ("Nothing works!", "it's broken", "help!!!"), and the reply that asks.

Seed 003: such mails get filtered out and ignored, while the customer sits
and waits. Here they are flagged instead, with a polite clarifying-question
reply ready to send. ``vague_reason`` is a cheap heuristic, deliberately
conservative: a short mail, a vague complaint, and nothing concrete (no
product or feature named, no error text, no numbers, no steps).
"""

from __future__ import annotations

import re

__all__ = ["vague_reason", "VAGUE_REASON", "CLARIFYING_REPLY", "CLARIFYING_REPLY_NAME", "MAX_VAGUE_WORDS"]

VAGUE_REASON = "no product, error or steps mentioned"
MAX_VAGUE_WORDS = 60  # subject plus body; longer mails usually say something concrete

_VAGUE_PHRASES = re.compile(
    r"\b(?:"
    r"nothing\s+(?:works|is\s+working|working|loads|happens)"
    r"|(?:does\s*n[o']?t|doesn't|doesnt|do\s+not|don't|dont|won't|wont|will\s+not|is\s*n[o']?t|isn't|isnt|is\s+not|not|never|stopped|still\s+not)\s+work(?:s|ing)?"
    r"|(?:it'?s|its|it\s+is|everything\s+is|all|is|totally|completely)\s+broken"
    r"|broken"
    r"|(?:you|it|this)\s+(?:do\s+not|don't|does\s+not|doesn't)\s+work"
    r"|(?:can'?t|cannot|can\s+not|unable\s+to)\s+(?:use|do)\s+(?:it|anything|this)"
    r"|help(?:\s+me)?\s*!+"
    r"|please\s+help|need\s+help|fix\s+(?:it|this)|do\s+something"
    r"|useless|(?:urgent|asap)\s*!+"
    # a few other languages seen in the support inbox
    r"|funktioniert\s+nicht|nichts\s+(?:funktioniert|geht)|geht\s+nicht|kaputt"
    r"|ne\s+(?:marche|fonctionne)\s+(?:pas|plus)|rien\s+ne\s+(?:marche|fonctionne)"
    r"|no\s+funciona|nada\s+funciona|non\s+funziona|niente\s+funziona"
    r"|werkt\s+niet|fungerar\s+inte|virker\s+ikke|funker\s+ikke"
    r")",
    re.I,
)
_HELP_ONLY = re.compile(r"^\W*(?:help|hilfe|aide|ayuda|aiuto|hjälp)\W*$", re.I)

# Anything concrete: an error, a quote, a number, a version, steps, a feature.
_CONCRETE = re.compile(
    r"\d"
    r"|[\"“”«»„]|(?<!\w)'[^'\n]{3,}'(?!\w)"
    r"|\b(?:error|errors|exception|traceback|stack\s*trace|warning|message\s+says|says|said|code|crash\w*|freez\w*|timeout|timed\s+out"
    r"|fehler|fehlermeldung|erreur|errore|fout|felmeddelande"
    r"|version|v\d|release|update[ds]?|upgrade[ds]?"
    r"|when\s+i|after\s+i|before\s+i|if\s+i|once\s+i|since\s+i|whenever\s+i|i\s+(?:tried|clicked|click|pressed|opened|typed|entered|selected|uploaded|installed|logged)"
    r"|steps?|first|then|screenshot|attached|attachment|log\s+file|logs?"
    r"|log\s*in|login|sign\s*in|sign[- ]?up|password|2fa|invoice|billing|payment|checkout|refund"
    r"|export|import|upload|download|sync\w*|search|report|dashboard|calendar|notifications?|printer|print\w*"
    r"|button|menu|settings|profile|page|tab|link|email|e-mail|inbox|api|webhook|integration"
    r"|chrome|firefox|safari|edge|windows|mac\s*os|macos|linux|android|ios|iphone|ipad"
    r")(?:e?s)?\b",  # the plural names the feature too: "my invoices", "the reports", "all payments"
    re.I,
)
_SIGNATURE = re.compile(r"^(?:--\s*|sent from my \w+.*|get outlook for \w+.*)$", re.I)
_REPLY_PREFIX = re.compile(r"^(?:(?:re|fwd?|aw|sv|tr)\s*:\s*)+", re.I)
_SIGNATURE_FIRST = frozenset("-sSgG\u017f")  # what a _SIGNATURE match can start with (re.I: long s too)
_PREFIX_CHARS = 640  # a long mail is usually decided within its first lines


def _body(text: str, max_words: int | None = None) -> str | None:
    """The customer's own words (no quotes, no signature); None once over ``max_words``."""
    if max_words is not None and len(text) > _PREFIX_CHARS:
        # Read the complete lines of a prefix first (the last one may be cut, so it
        # is left out): they are the first lines of the whole text, so a decision
        # reached among them is the one the whole text gives. Else read it all.
        lines = []
        words = 0
        for line in text[:_PREFIX_CHARS].splitlines()[:-1]:
            stripped = line.strip()
            if stripped.startswith(">"):
                continue
            if stripped[:1] in _SIGNATURE_FIRST and _SIGNATURE.match(stripped):
                return "\n".join(lines)
            words += len(stripped.split())
            if words > max_words:
                return None
            lines.append(line)
    lines = []
    words = 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">"):
            continue
        if stripped[:1] in _SIGNATURE_FIRST and _SIGNATURE.match(stripped):
            break
        if max_words is not None:
            words += len(stripped.split())
            if words > max_words:
                return None  # long mails are never vague: stop reading early
        lines.append(line)
    return "\n".join(lines)


def vague_reason(subject: str, text: str) -> str | None:
    """``VAGUE_REASON`` when a first mail complains without saying what, where or how; else None.

    Fires only when all hold: subject plus body is short (at most
    ``MAX_VAGUE_WORDS`` words), it contains a vague complaint ("nothing
    works", "it's broken", "doesn't work", "help!!!", a bare "Help"), and it
    has nothing concrete: no digits, no quotes, no error words, no version, no
    steps ("when I", "after I", "I tried"), no feature or platform named.
    Quoted lines (">") and signatures ("-- ", "Sent from my ...") are ignored.
    """
    subject = (subject or "").strip()
    subject = _REPLY_PREFIX.sub("", subject)
    body = _body(text or "", MAX_VAGUE_WORDS)
    if body is None:
        return None
    whole = f"{subject}\n{body}".strip()
    if not whole:
        return None
    if len(whole.split()) > MAX_VAGUE_WORDS:
        return None
    # Both tests must pass; the concrete one goes first as it usually stops early.
    if _CONCRETE.search(whole):
        return None
    if not (_VAGUE_PHRASES.search(whole) or _HELP_ONLY.match(subject) or _HELP_ONLY.match(body.strip())):
        return None
    return VAGUE_REASON


CLARIFYING_REPLY_NAME = "clarifying-questions"

# A saved reply: placeholders {customer_first_name}, {agent_name}, {ticket_id}.
# First person, warm, one apology, no "we"; passes check_tone cleanly.
CLARIFYING_REPLY = """\
Hi {customer_first_name},

I'm sorry this is getting in your way. I want to get it working for you, and a few details will help me find the cause quickly:

1. What were you doing when it happened?
2. What did you expect to happen?
3. What happened instead? If you saw an error message, please copy its exact wording (a screenshot is fine too).
4. When did it start, and has it worked before?
5. Which device, browser or app version are you using?

Whatever you can tell me helps, even if it is only part of the list. Reply to this email and it comes straight back to me.

{agent_name}
(ticket #{ticket_id})
"""
