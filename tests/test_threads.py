"""Threading: headers first, then the [#N] tag, never the subject text alone."""

import pytest

from mail.threads import subject_tag, tag_subject, thread_decision

KNOWN = {"a1@cust.example": 1, "ours-9@heard.example": 9, "b1@cust.example": 2}
EXISTING = {1, 2, 9, 42}


def decide(irt=(), refs=(), subject=""):
    return thread_decision(
        in_reply_to=list(irt), references=list(refs), subject=subject,
        ticket_for_message_id=KNOWN.get, ticket_exists=EXISTING.__contains__,
    )


@pytest.mark.parametrize(
    "irt,refs,subject,ticket,why",
    [
        (["a1@cust.example"], [], "Re: Login", 1, "In-Reply-To <a1@cust.example>"),
        ([], ["b1@cust.example", "ours-9@heard.example"], "Re: x", 9, "References <ours-9@heard.example>"),
        (["unknown@x"], ["b1@cust.example"], "", 2, "References <b1@cust.example>"),
        (["ours-9@heard.example"], [], "Re: thing [#42]", 9, "In-Reply-To <ours-9@heard.example>"),
        ([], [], "Re: thing [#42]", 42, "subject tag [#42]"),
        ([], [], "Re: thing [#777]", None, "new ticket"),
        ([], [], "Re: Login", None, "new ticket"),
    ],
)
def test_thread_decision_table(irt, refs, subject, ticket, why):
    tid, reason = decide(irt, refs, subject)
    assert tid == ticket
    assert reason.startswith(why)


def test_a_reply_to_our_sent_mail_follows_it_to_the_customers_ticket():
    sent = {"webmail-3@heard.example": ["x@elsewhere", "b1@cust.example"]}
    tid, reason = thread_decision(
        in_reply_to=["webmail-3@heard.example"], references=[], subject="RE: billing",
        ticket_for_message_id=KNOWN.get, ticket_exists=EXISTING.__contains__,
        sent_parents=lambda mid: sent.get(mid, []),
    )
    assert (tid, reason) == (2, "In-Reply-To <webmail-3@heard.example>, our sent reply to <b1@cust.example>")


@pytest.mark.parametrize("sender, joins, reason", [
    ("ann@cust.example", True, "subject tag [#42]"),
    ("bo@cust.example", True, "subject tag [#42]"),  # wrote in the ticket before
    ("CFO@Cust.Example", True, "subject tag [#42], from cust.example like the ticket's customer"),  # a colleague
    ("ar@billing-notice.example", False, "new ticket: subject tag [#42] from someone who is not on that ticket"),
    ("", False, "new ticket: subject tag [#42] from someone who is not on that ticket"),
])
def test_a_tag_joins_only_from_the_tickets_own_people_or_their_organisation(sender, joins, reason):
    # Ticket numbers are easy to guess: a stranger's "[#42]" must not land in customer 42's conversation.
    people = {42: {"ann@cust.example", "bo@cust.example"}}
    got = thread_decision(in_reply_to=[], references=[], subject="Overdue invoice [#42]",
                          ticket_for_message_id=KNOWN.get, ticket_exists=EXISTING.__contains__,
                          sender=sender, ticket_people=lambda tid: people.get(tid, set()))
    assert got == ((42 if joins else None), reason)


def test_sharing_a_public_mail_provider_is_not_being_colleagues():
    people = {42: {"ann@gmail.com"}}
    tid, reason = thread_decision(in_reply_to=[], references=[], subject="[#42] refund", ticket_for_message_id=KNOWN.get,
                                  ticket_exists=EXISTING.__contains__, sender="mallory@gmail.com",
                                  ticket_people=lambda t: people[t])
    assert tid is None and "not on that ticket" in reason


def test_headers_are_not_a_guess_a_strangers_reply_naming_the_thread_joins_it():
    assert thread_decision(in_reply_to=["a1@cust.example"], references=[], subject="[#42]",
                           ticket_for_message_id=KNOWN.get, ticket_exists=EXISTING.__contains__,
                           sender="x@elsewhere.example", ticket_people=lambda tid: set())[0] == 1


def test_subject_alone_never_threads():
    tid, reason = decide(subject="Login broken")
    assert tid is None and "no [#N] tag" in reason


@pytest.mark.parametrize(
    "subject,out",
    [("Login broken", "Login broken [#5]"), ("Re: Login broken [#5]", "Re: Login broken [#5]"),
     ("Fwd: x [#4]", "Fwd: x [#5]"), ("", "Your request [#5]")],
)
def test_tag_subject_keeps_the_customers_words(subject, out):
    assert tag_subject(subject, 5) == out
    assert subject_tag(tag_subject(subject, 5)) == 5
