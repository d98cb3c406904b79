import re
from datetime import datetime, timezone

import pytest

from mail.tone import check_tone
from mail.vague import CLARIFYING_REPLY, CLARIFYING_REPLY_NAME, VAGUE_REASON, vague_reason

VAGUE = [
    ("Nothing works!", "Do something!"),
    ("NOTHING WORKS", ""),
    ("help!!!", ""),
    ("Help", ""),
    ("", "help!!!"),
    ("Re: help", "it's broken"),
    ("Problem", "It doesn't work. Please fix it."),
    ("Problem", "it does not work!!"),
    ("urgent!!!", "your thing is broken, do something"),
    ("Complaint", "You do not work! Useless."),
    ("Hello", "Hi,\n\nit stopped working. Please help.\n\nJane\n-- \nJane Doe | ACME | +1 555 0100"),
    ("Hello", "nothing works\n\nSent from my iPhone"),
    ("Fwd: hilfe", "Nichts funktioniert!"),
    ("Au secours", "Rien ne marche !"),
    ("Problema", "No funciona nada."),
    ("It won't work", "> On Monday we wrote: version 4.2 is out\nStill not working"),
]

NOT_VAGUE = [
    ("Export fails", "When I click Export, I get \"Error 500\"."),
    ("Broken", "It's broken since the update to 4.2."),
    ("Login doesn't work", "It doesn't work."),
    ("Help", "How do I change my password?"),
    ("Nothing works", "After I upgraded Firefox, the dashboard is blank."),
    ("doesn't work", "I tried to upload a PDF and it says 'file too large'."),
    ("Invoice question", "Can you resend the March invoice? Thanks!"),
    ("Thanks!", "That fixed it, thank you so much."),
    ("", ""),
    ("Hello", "Just wanted to say the new layout looks great."),
    # long mails usually contain something concrete; this one is long enough to leave alone
    ("nothing works", "nothing works " + "and I am really upset about it " * 10),
    ("it's broken", "The sync to Outlook calendar stopped working on my Android phone."),
    ("Problem", "It does not work, error code E42 appears."),
]


@pytest.mark.parametrize("subject, text", VAGUE)
def test_vague_fires(subject, text):
    assert vague_reason(subject, text) == VAGUE_REASON


@pytest.mark.parametrize("subject, text", NOT_VAGUE)
def test_vague_does_not_fire(subject, text):
    assert vague_reason(subject, text) is None


def filled():
    return CLARIFYING_REPLY.format(customer_first_name="Jane", agent_name="Sam Lee", ticket_id=1234)


def test_clarifying_reply_placeholders():
    names = set(re.findall(r"{(\w+)}", CLARIFYING_REPLY))
    assert names == {"customer_first_name", "agent_name", "ticket_id"}
    text = filled()
    assert "Jane" in text and "Sam Lee" in text and "1234" in text


@pytest.mark.parametrize(
    "asks_for",
    [r"were you doing", r"expect", r"happened instead", r"exact wording", r"when did it start", r"device, browser or app version"],
)
def test_clarifying_reply_asks(asks_for):
    assert re.search(asks_for, filled(), re.I)


def test_clarifying_reply_is_first_person_with_at_most_one_apology():
    text = filled()
    assert not re.search(r"\b(?:we|we're|we'll|us|our)\b", text, re.I)
    assert re.search(r"\bI\b", text)
    assert len(re.findall(r"\b(?:sorry|apologi[sz]e|apologies)\b", text, re.I)) <= 1


@pytest.mark.parametrize("customer", ["Nothing works!", "help!!!", "it's broken, call me"])
def test_clarifying_reply_passes_check_tone(customer):
    warnings = check_tone(
        filled(),
        thread_texts_ours=[],
        customer_texts=[customer],
        saved_replies_used_in_thread=(),
        saved_reply_used=CLARIFYING_REPLY_NAME,
        now=datetime(2026, 5, 4, 9, 0, tzinfo=timezone.utc),
    )
    assert warnings == []

