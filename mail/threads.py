"""Which ticket a message belongs to, and why. Pure.

Headers first (In-Reply-To, then References, newest first) against every
Message-ID we have seen or sent, then a ``[#N]`` tag in the subject; never
the subject text alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

TAG = re.compile(r"\[#(\d{1,12})\]")


def subject_tag(subject: str) -> int | None:
    m = TAG.search(subject or "")
    return int(m.group(1)) if m else None


def tag_subject(subject: str, ticket_id: int) -> str:
    """The customer's subject with our tag, added once."""
    subject = (subject or "").strip() or "Your request"
    if subject_tag(subject) == ticket_id:
        return subject
    return f"{TAG.sub('', subject).strip()} [#{ticket_id}]"


def thread_decision(
    *,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    subject: str,
    ticket_for_message_id: Callable[[str], int | None],
    ticket_exists: Callable[[int], bool],
    sent_parents: Callable[[str], Sequence[str]] = lambda mid: (),
) -> tuple[int | None, str]:
    """(ticket id or None for a new ticket, the reason it joined).

    ``sent_parents`` gives, for a message in our Sent folder that heard did not
    send itself (webmail, another client), the ids it replied to: a customer
    whose client sets only In-Reply-To to that message still joins the ticket.
    """
    for mid in in_reply_to:
        tid = ticket_for_message_id(mid)
        if tid is not None:
            return tid, f"In-Reply-To <{mid}>"
    for mid in reversed(references):  # the nearest ancestor is last
        tid = ticket_for_message_id(mid)
        if tid is not None:
            return tid, f"References <{mid}>"
    for mid in [*in_reply_to, *reversed(references)]:
        for parent in reversed(list(sent_parents(mid))):
            tid = ticket_for_message_id(parent)
            if tid is not None:
                return tid, f"In-Reply-To <{mid}>, our sent reply to <{parent}>"
    tag = subject_tag(subject)
    if tag is not None and ticket_exists(tag):
        return tag, f"subject tag [#{tag}]"
    return None, "new ticket: no known Message-ID in In-Reply-To/References and no [#N] tag"
