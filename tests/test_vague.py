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
    # a feature named in the plural is as concrete as in the singular
    ("VAT id missing", "Our VAT ids are missing on the December invoices. Please help. Ute"),
    ("Help!", "My invoices are broken."),
    ("Please help", "The reports don't work."),
    ("urgent!!!", "Payments are not working, please help"),
    ("Geht nicht", "Die Exports gehen nicht."),
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



def _body_reading_every_line(text, max_words):
    """The plain reading: every line, in order (what the prefix fast path must agree with)."""
    lines, words = [], 0
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(">"):
            continue
        if re.match(r"^(?:--\s*|sent from my \w+.*|get outlook for \w+.*)$", stripped, re.I):
            break
        words += len(stripped.split())
        if words > max_words:
            return None
        lines.append(line)
    return "\n".join(lines)


def test_long_texts_are_decided_as_if_read_whole():
    from mail.vague import _body

    import random

    rng = random.Random(3)
    pieces = ["broken", "help!", "> quoted", "-- ", "Sent from my iPhone", "\r\n", "\n", "\r", "\u2028",
              " ", "word " * 7, "nothing works", "   "]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.choice([100, 400, 1500]))) for _ in range(300)]
    for cut in range(600, 700):  # a signature or a line break right at the edge of the first read
        texts.append("a\n" * (cut // 2) + "-- \nsig broken " * 40)
        texts.append("a\n" * (cut // 2) + "--broken help " * 40)  # cut to "--" it would look like a signature
        texts.append("x" * cut + "\r\n" + "> q\n" * 30 + "help!\n")
    for text in texts:
        assert _body(text, 60) == _body_reading_every_line(text, 60)
        assert _body(text, 100_000) == _body_reading_every_line(text, 100_000)
