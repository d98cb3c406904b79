"""Which ticket a message belongs to, and why. Pure.

Headers first (In-Reply-To, then References, newest first) against every
Message-ID we have seen or sent, then a ``[#N]`` tag in the subject (from the
ticket's own people only: ticket numbers are easy to guess); never the subject
text alone.
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
    sender_in_ticket: Callable[[int], bool] = lambda tid: True,
) -> tuple[int | None, str]:
    """(ticket id or None for a new ticket, the reason it joined).

    ``sender_in_ticket`` says whether the sender is one of a ticket's people (its customer, or someone
    who wrote in it before). A ``[#N]`` tag from anyone else starts a new ticket: anyone can type
    ``[#12]``, and a stranger's mail must not land in (and reopen, and be quoted back to) another
    customer's conversation. Headers are not checked so: they name a Message-ID only the thread knows.

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
        if sender_in_ticket(tag):
            return tag, f"subject tag [#{tag}]"
        return None, f"new ticket: subject tag [#{tag}] from someone who is not on that ticket"
    return None, "new ticket: no known Message-ID in In-Reply-To/References and no [#N] tag"
