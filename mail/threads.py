"""Which ticket a message belongs to, and why. Pure.

Headers first (In-Reply-To, then References, newest first) against every
Message-ID we have seen or sent, then a ``[#N]`` tag in the subject (from the
ticket's own people only: ticket numbers are easy to guess); never the subject
text alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence

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


# Mail providers anyone can sign up with: sharing one says nothing about who a sender is.
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.fr", "live.com",
    "msn.com", "yahoo.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de", "ymail.com", "aol.com", "icloud.com", "me.com",
    "mac.com", "proton.me", "protonmail.com", "pm.me", "gmx.de", "gmx.net", "gmx.com", "web.de", "t-online.de",
    "mail.com", "zoho.com", "yandex.ru", "yandex.com", "mail.ru", "qq.com", "163.com", "126.com", "orange.fr",
    "free.fr", "laposte.net", "libero.it", "hey.com", "fastmail.com", "tutanota.com", "tuta.io",
})


def tag_sender_belongs(sender: str, people: Collection[str]) -> bool:
    """Whether a ``[#N]`` tag from ``sender``, who is not one of the ticket's ``people``, still joins it:
    a colleague at the customer's own organisation (the same mail domain, not a public provider's)."""
    domain = sender.rpartition("@")[2].lower()
    if not domain or domain in FREEMAIL_DOMAINS:
        return False
    return any(p.rpartition("@")[2].lower() == domain for p in people)


def thread_decision(
    *,
    in_reply_to: Sequence[str],
    references: Sequence[str],
    subject: str,
    ticket_for_message_id: Callable[[str], int | None],
    ticket_exists: Callable[[int], bool],
    sent_parents: Callable[[str], Sequence[str]] = lambda mid: (),
    sender: str | None = None,
    ticket_people: Callable[[int], Collection[str]] | None = None,
    reports: Sequence[str] = (),
) -> tuple[int | None, str]:
    """(ticket id or None for a new ticket, the reason it joined).

    ``ticket_people`` gives a ticket's people (its customer, and everyone who wrote in it). A ``[#N]``
    tag joins only mail from one of them, or from a colleague at their organisation (see
    :func:`tag_sender_belongs`): anyone can type ``[#12]``, and a stranger's mail must not land in (and
    reopen, and be quoted back to) another customer's conversation. Headers are not checked so: they
    name a Message-ID only the thread knows. Without ``ticket_people`` every tag counts.

    ``sent_parents`` gives, for a message in our Sent folder that heard did not
    send itself (webmail, another client), the ids it replied to: a customer
    whose client sets only In-Reply-To to that message still joins the ticket.

    ``reports`` are the Message-IDs a delivery report (a bounce, a read receipt) is about: a bounce of
    our reply names it only in its attached headers, and belongs in that reply's ticket.
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
    for mid in reports:
        tid = ticket_for_message_id(mid)
        if tid is not None:
            return tid, f"delivery report about <{mid}>"
    tag = subject_tag(subject)
    if tag is not None and ticket_exists(tag):
        if ticket_people is None:
            return tag, f"subject tag [#{tag}]"
        people = ticket_people(tag)
        if sender and sender in people:
            return tag, f"subject tag [#{tag}]"
        if sender and tag_sender_belongs(sender, people):
            return tag, f"subject tag [#{tag}], from {sender.rpartition('@')[2].lower()} like the ticket's customer"
        return None, f"new ticket: subject tag [#{tag}] from someone who is not on that ticket"
    return None, "new ticket: no known Message-ID in In-Reply-To/References and no [#N] tag"
