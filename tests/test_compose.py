"""Composing a reply: pure rules (names, subjects, placeholders, drafts, saved replies, header safety)."""

from __future__ import annotations

import email
from datetime import datetime, timezone
from email import policy

import pytest

from mail.compose import (
    HeaderInjectionError,
    ReplyContext,
    build_message,
    check_header_value,
    complete_body,
    draft_reply,
    has_own_words,
    first_name,
    reply_subject,
    unfilled_placeholders,
)
from mail.templates import render_saved_reply, template_values

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def ctx(**kw) -> ReplyContext:
    base = dict(
        ticket_id=42, subject="Export fails", status="open", customer_name="Ann Lee",
        customer_address="ann@cust.example", in_reply_to="first@cust.example", references=["first@cust.example"],
        last_customer_text="The export fails.\nError 500.", last_customer_date=NOW, last_customer_name="Ann Lee",
    )
    base.update(kw)
    return ReplyContext(**base)


@pytest.mark.parametrize(
    "name, address, expected",
    [
        ("Ann Lee", "ann@x", "Ann"),
        ("Lee, Ann", "ann@x", "Ann"),
        ('"Ann Lee"', "ann@x", "Ann"),
        ("ann lee", "ann@x", "Ann"),
        ("ann@cust.example", "ann@cust.example", ""),  # no greeting by address
        ("", "ann.lee@cust.example", ""),
        ("José Ñúñez", "j@x", "José"),
        ("42", "x@y", ""),
        # Titles, shouting, roles and companies: never "Hi Dr.," or "Hi Support,".
        ("Dr. Anna Schmidt", "a@x", "Anna"),
        ("Prof. Dr. Hans Meier", "h@x", "Hans"),
        ("Schmidt, Dr. Anna", "a@x", "Anna"),
        ("M. Jean Dupont", "j@x", "Jean"),
        ("Dr. Schmidt", "s@x", ""),
        ("Mr Smith", "s@x", ""),
        ("MR JOHN SMITH", "j@x", "John"),
        ("jean-luc picard", "j@x", "Jean-Luc"),
        ("AJ Smith", "aj@x", "AJ"),
        ("Don Draper", "d@x", "Don"),
        ("Support Team", "s@x", ""),
        ("ACME Corp", "a@x", ""),
        ("Ledgerly Billing", "b@x", ""),
        # Markup, tags and braces in a display name are not part of anyone's name.
        ("[red]Admin[/red] \u202eevil", "r@x", ""),  # a role, once the markup is gone
        ("[b]Ann[/b] Lee", "a@x", "Ann"),
        ("Ann Lee [ACME]", "a@x", "Ann"),
        ("{order_number} Ann", "a@x", "Ann"),
        ("{customer_first_name}", "a@x", ""),
        ("Ann{x", "a@x", "Ann"),
    ],
)
def test_first_name(name, address, expected):
    assert first_name(name, address) == expected


@pytest.mark.parametrize(
    "body, own",
    [
        ("", False),
        ("Hi Ann,\n\n\n\nSam\n\nOn Mon, Ann Lee wrote:\n> The export fails.\n", False),  # the draft untouched
        ("Hello,\n\nSam\n", False),
        ("Hi Ann,\n\nFixed.\n\nSam\n", True),
        ("Fixed.\n", True),
        ("Hi Ann,\n", False),
        ("Hi Ann,\nHi Ann,\n", True),  # odd, but written
        ("Sam\n", False),
    ],
)
def test_has_own_words(body, own):
    assert has_own_words(body, ctx(), agent_name="Sam", signature="") is own


@pytest.mark.parametrize("name", ["{order_number}", "[[name]]", "[red]Admin[/red] {x}"])
def test_a_customer_name_that_looks_like_a_placeholder_never_blocks_the_draft(name):
    draft = draft_reply(ctx(customer_name=name, last_customer_name=name), agent_name="Sam", signature="")
    assert unfilled_placeholders(draft) == []
    assert unfilled_placeholders(draft + "\nYour order {order_number}\n") == ["{order_number}"]


@pytest.mark.parametrize(
    "subject, expected",
    [
        ("Export fails", "Re: Export fails [#42]"),
        ("Re: Export fails", "Re: Export fails [#42]"),
        ("RE: Export fails [#42]", "RE: Export fails [#42]"),
        ("AW: Export fails", "AW: Export fails [#42]"),
        ("Export\r\n fails", "Re: Export fails [#42]"),  # a folded subject is one line
        ("", "Re: Your request [#42]"),
        ("Old [#7] thing", "Re: Old thing [#42]"),
    ],
)
def test_reply_subject(subject, expected):
    assert reply_subject(subject, 42) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Your order {order_number} shipped.", ["{order_number}"]),
        ("Fixed in [[version]], see {link}.", ["{link}", "[[version]]"]),
        ("Hi Ann,\n\nAll good.", []),
        ("> quoted {not_ours}\nAll good.", []),  # the customer's quoted text is theirs
        ("Use a JSON like {\"a\": 1}.", []),
    ],
)
def test_unfilled_placeholders(text, expected):
    assert sorted(unfilled_placeholders(text)) == sorted(expected)


def test_draft_has_greeting_signature_and_quote():
    text = draft_reply(ctx(), agent_name="Zoë Martin", signature="Zoë\nExample Support")
    assert text.startswith("Hi Ann,\n")
    assert "Zoë\nExample Support" in text
    assert "> The export fails.\n> Error 500." in text
    assert text.index("Example Support") < text.index("> The export")
    assert draft_reply(ctx(customer_name=""), agent_name="Z", signature="").startswith("Hello,\n")


def test_complete_body_adds_what_is_missing_once():
    body = complete_body("Hi Ann,\n\nFixed.", ctx(), agent_name="Zoë", signature="Zoë\nSupport")
    assert body.count("Zoë\nSupport") == 1 and "> Error 500." in body
    again = complete_body(body, ctx(), agent_name="Zoë", signature="Zoë\nSupport")
    assert again.count("Zoë\nSupport") == 1 and again.count("> Error 500.") == 1


def test_saved_reply_fills_known_variables_and_keeps_the_rest():
    values = template_values(ctx(), agent_name="Zoë Martin", support_address="support@example.com")
    text = render_saved_reply("Hi {customer_first_name}, {agent_first_name} here about {ticket_tag}: "
                              "order {order_number}.", values)
    assert text == "Hi Ann, Zoë here about [#42]: order {order_number}."
    assert unfilled_placeholders(text) == ["{order_number}"]


@pytest.mark.parametrize(
    "value",
    ["a\r\nBcc: x@y", "a\nb", "a\rb", "a\x00b", "a\x1bb", "a\u2028b", "a\x85b",
     "=?utf-8?q?a=0D=0ABcc:_x@y?=", "=?UTF-8?Q?a=0Ab?=", "=?utf-8?b?YQ0KYg==?="],
)
def test_header_values_with_line_breaks_are_refused(value):
    with pytest.raises(HeaderInjectionError):
        check_header_value("Subject", value)


@pytest.mark.parametrize("value", ["Re: Ça marche [#4]", "=?utf-8?q?=C3=87a?=", "tab\tinside"])
def test_ordinary_header_values_pass(value):
    assert check_header_value("Subject", value) == value


def test_long_non_ascii_subject_is_encoded_and_folded_safely():
    subject = "Re: " + "Ünïcödé " * 20 + "[#42]"
    raw = build_message(from_name="Zoë", from_addr="support@example.com", to=[("Ann", "ann@cust.example")],
                        subject=subject, body="x" * 300 + "\n" + "y" * 2000, message_id="a@example.com", date=NOW)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert head.isascii()
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == subject and msg.get_content().split() == ["x" * 300, "y" * 2000]


def test_review_checks_the_agents_words_not_the_quote():
    from mail.compose import tone_warnings

    c = ctx(last_customer_date=datetime(2026, 11, 1, tzinfo=timezone.utc),
            last_customer_text="Thank you, but actually it still fails.")
    draft = draft_reply(c, agent_name="Zoë", signature="Zoë").replace("Hi Ann,\n", "Hi Ann,\n\nThank you, but no.\n", 1)
    assert [w.code for w in tone_warnings(c, draft, now=NOW)] == ["thanks-but"]
