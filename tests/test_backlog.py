"""The generated support mail: realistic, complete, parseable, deterministic."""

from __future__ import annotations

import email
import email.header
import email.policy
import email.utils
import random
import time
from datetime import datetime, timedelta, timezone

import pytest

from mail.backlog import (
    PREMIUM_DOMAINS,
    bench_mailbox,
    customer_reply,
    demo_backlog,
    demo_sent,
    new_customer_mail,
)

NOW = datetime(2024, 5, 20, 14, 30, tzinfo=timezone.utc)
SUPPORT = "support@ledgerly.example"


@pytest.fixture(scope="module")
def inbox():
    return demo_backlog(NOW, SUPPORT)


@pytest.fixture(scope="module")
def parsed(inbox):
    return [email.message_from_bytes(raw, policy=email.policy.default) for raw in inbox]


@pytest.fixture(scope="module")
def sent():
    return demo_sent(NOW, SUPPORT)


def _ids(value) -> list[str]:
    return [p.strip("<>") for p in str(value or "").split()]


def _decoded(value: str) -> str:
    return str(email.header.make_header(email.header.decode_header(value)))


def test_size_and_senders(inbox, parsed):
    assert len(inbox) >= 150
    senders = {m["from"].addresses[0].addr_spec.lower() for m in parsed}
    assert len(senders) >= 40
    assert all(
        a.split("@")[1] in ("example.com", "example.org") or a.endswith((".example", ".example.com", ".example.org"))
        for a in senders
    ), senders
    assert sum(a.endswith("@" + PREMIUM_DOMAINS[0]) for a in senders) >= 3


def test_everything_parses_with_the_stdlib(inbox, sent):
    for raw in inbox + sent:
        for policy in (email.policy.default, email.policy.compat32):
            msg = email.message_from_bytes(raw, policy=policy)
            assert not msg.defects, raw[:400]
            for part in msg.walk():
                assert not part.defects, raw[:400]
                if not part.is_multipart():
                    part.get_payload(decode=True)
        assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # CRLF only


def test_two_weeks_oldest_first(parsed):
    dates = [m["date"].datetime for m in parsed]
    assert dates == sorted(dates)
    assert NOW - timedelta(days=14, hours=1) <= dates[0] < NOW - timedelta(days=10)
    assert NOW - timedelta(hours=12) < dates[-1] <= NOW


def test_threads_reference_earlier_messages(parsed, sent):
    seen: dict[str, datetime] = {}
    ours = {
        m["message-id"].strip("<>"): m["date"].datetime
        for m in (email.message_from_bytes(r, policy=email.policy.default) for r in sent)
    }
    assert ours and all(i.endswith("@ledgerly.example") for i in ours)
    to_inbox = to_ours = 0
    for m in parsed:
        irt = _ids(m["in-reply-to"])
        refs = _ids(m["references"])
        for ref in irt + refs:
            if ref in seen:
                to_inbox += 1
            elif ref in ours:
                assert ours[ref] <= m["date"].datetime
                to_ours += 1
        seen[m["message-id"].strip("<>")] = m["date"].datetime
    assert to_inbox >= 20  # customers following up their own mail, long threads
    assert to_ours >= 20  # customers answering our replies
    # long threads: some message carries 3+ references
    assert any(len(_ids(m["references"])) >= 3 for m in parsed)
    # a reply with In-Reply-To only (clients that drop References)
    assert any(m["in-reply-to"] and not m["references"] for m in parsed)


def test_contains_every_kind(inbox, parsed):
    def has(pred) -> bool:
        return any(pred(raw, m) for raw, m in zip(inbox, parsed))

    # out-of-office auto-reply
    assert has(lambda r, m: m["auto-submitted"] == "auto-replied" and "automatic reply" in str(m["subject"]).lower())
    # bounce: multipart/report from MAILER-DAEMON with an empty Return-Path
    assert has(
        lambda r, m: m.get_content_type() == "multipart/report"
        and m["return-path"] == "<>"
        and "mailer-daemon" in str(m["from"]).lower()
    )
    # mailing list
    assert has(lambda r, m: m["list-id"] and m["precedence"] == "list")
    # no-reply robot
    assert has(lambda r, m: str(m["from"]).lower().find("no-reply@") >= 0)
    # angry and vague customers
    assert has(lambda r, m: "unacceptable" in r.decode("latin-1").lower() or str(m["subject"]).isupper())
    assert has(lambda r, m: str(m["subject"]).lower() in ("nothing works!", "help", "problem", "urgent!!!"))
    # languages
    for lang in ("de-DE", "fr-FR", "es-ES", "ja-JP"):
        assert has(lambda r, m, lang=lang: m["content-language"] == lang), lang
    # RFC 2047 subjects (q and b), charsets and transfer encodings
    assert has(lambda r, m: b"Subject: =?utf-8?q?" in r)
    assert has(lambda r, m: b"Subject: =?utf-8?b?" in r)
    assert has(lambda r, m: b"=?ISO-2022-JP?B?" in r)
    assert has(lambda r, m: b"charset=iso-8859-1" in r)
    assert has(lambda r, m: b"Content-Transfer-Encoding: quoted-printable" in r)
    assert has(lambda r, m: b"Content-Transfer-Encoding: base64" in r)
    # HTML only, and text+HTML
    assert has(lambda r, m: m.get_content_type() == "text/html")
    assert has(lambda r, m: m.get_content_type() == "multipart/alternative")
    # attachments: PDF, PNG, a log
    kinds = set()
    for m in parsed:
        for part in m.walk():
            if part.get_content_disposition() == "attachment":
                kinds.add(part.get_content_type())
    assert {"application/pdf", "image/png", "text/plain"} <= kinds
    pngs = [p.get_payload(decode=True) for m in parsed for p in m.walk() if p.get_content_type() == "image/png"]
    assert pngs and all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    pdfs = [p.get_payload(decode=True) for m in parsed for p in m.walk() if p.get_content_type() == "application/pdf"]
    assert pdfs and all(p.startswith(b"%PDF-") and p.rstrip().endswith(b"%%EOF") for p in pdfs)


def test_hostile_mail_is_there(inbox, parsed):
    subjects = [str(m["subject"]) for m in parsed]
    assert any("[@click=app.quit]" in s and "[link=" in s and "[b]" in s for s in subjects)
    assert any(b"\x1b[" in raw for raw in inbox)  # ANSI escapes in a body, raw 8bit
    texts = [m.get_body(("plain",)).get_content() for m in parsed if m.get_body(("plain",))]
    assert any("\x1b]8;;" in t and "\x9b" in t for t in texts)  # OSC 8 link, C1 CSI
    names = [p.get_filename() or "" for m in parsed for p in m.walk()]
    assert any("\u202e" in n for n in names)  # bidi override in a filename
    assert any("../" in n for n in names)


def test_deterministic():
    assert demo_backlog(NOW, SUPPORT, seed=7) == demo_backlog(NOW, SUPPORT, seed=7)
    assert demo_backlog(NOW, SUPPORT, seed=8) != demo_backlog(NOW, SUPPORT, seed=7)
    assert list(bench_mailbox(50, SUPPORT, seed=3)) == list(bench_mailbox(50, SUPPORT, seed=3))


def test_customer_reply_threads_onto_our_reply(sent):
    ours = email.message_from_bytes(sent[5], policy=email.policy.default)
    raw = customer_reply(sent[5], seed=11, now=NOW)
    assert raw == customer_reply(sent[5], seed=11, now=NOW)
    m = email.message_from_bytes(raw, policy=email.policy.default)
    assert not m.defects
    assert m["from"].addresses[0].addr_spec == ours["to"].addresses[0].addr_spec
    assert m["to"].addresses[0].addr_spec == SUPPORT
    assert str(m["subject"]) == str(ours["subject"])  # already "Re: ..."; no "Re: Re:"
    assert _ids(m["in-reply-to"]) == _ids(ours["message-id"])
    assert _ids(m["references"])[-1] == ours["message-id"].strip("<>")
    assert set(_ids(ours["references"])) <= set(_ids(m["references"]))
    assert m["date"].datetime == NOW
    assert "> " in m.get_body(("plain", "html")).get_content()  # quotes the agent


def test_customer_reply_to_an_unknown_customer():
    agent = (
        b"From: Robin <support@ledgerly.example>\r\nTo: Pat Doe <pat@shop.example>\r\n"
        b"Subject: Your export\r\nDate: Mon, 20 May 2024 10:00:00 +0000\r\n"
        b"Message-ID: <r1@ledgerly.example>\r\n\r\nCould you send me a screenshot?\r\n"
    )
    m = email.message_from_bytes(customer_reply(agent, seed=1), policy=email.policy.default)
    assert m["from"].addresses[0].addr_spec == "pat@shop.example"
    assert str(m["subject"]) == "Re: Your export"
    assert _ids(m["in-reply-to"]) == ["r1@ledgerly.example"]
    assert m["date"].datetime > datetime(2024, 5, 20, 10, 0, tzinfo=timezone.utc)


def test_new_customer_mail():
    rng = random.Random(4)
    mails = [new_customer_mail(NOW, SUPPORT, rng) for _ in range(30)]
    assert len(set(mails)) == 30
    for raw in mails:
        m = email.message_from_bytes(raw, policy=email.policy.default)
        assert not m.defects
        assert m["to"].addresses[0].addr_spec == SUPPORT
        assert m["date"].datetime == NOW
        assert not m["in-reply-to"]
    assert mails == [new_customer_mail(NOW, SUPPORT, r) for r in [random.Random(4)] for _ in range(30)]


def test_bench_mailbox_shape():
    t = time.perf_counter()
    msgs = list(bench_mailbox(2000, SUPPORT, seed=1))
    elapsed = time.perf_counter() - t
    assert len(msgs) == 2000
    assert elapsed < 3.0, elapsed  # 10,000 in a few seconds
    avg = sum(map(len, msgs)) / len(msgs)
    assert 10_000 <= avg <= 14_000, avg
    share = lambda pred: sum(map(pred, msgs)) / len(msgs)  # noqa: E731
    assert 0.14 <= share(lambda m: b"multipart/mixed" in m) <= 0.24
    assert 0.03 <= share(lambda m: b"Auto-Submitted: auto-replied" in m) <= 0.08
    assert share(lambda m: b"In-Reply-To:" in m) >= 0.25
    assert share(lambda m: b"multipart/alternative" in m) >= 0.15
    assert share(lambda m: b"\r\n\r\n<html" in m or b"8bit\r\n\r\n<html" in m) > 0
    assert share(lambda m: b"=?utf-8?" in m or b"=?iso-8859-1?" in m) >= 0.05
    ids = set()
    for raw in msgs[:500]:
        m = email.message_from_bytes(raw, policy=email.policy.compat32)
        assert not m.defects
        mid = m["Message-ID"]
        assert mid not in ids
        ids.add(mid)
        for ref in (m["In-Reply-To"] or "").split():
            if "@ledgerly.example" not in ref:
                assert ref in ids  # threads point back to earlier messages
    dates = [email.utils.parsedate_to_datetime(email.message_from_bytes(r)["Date"]) for r in msgs[::100]]
    assert dates == sorted(dates)


def test_quoted_replies_carry_the_date_of_the_mail_they_quote(parsed, sent):
    """A customer answering our reply quotes it under "On <our reply's date>, ... wrote:"."""
    ours = {
        m["message-id"].strip("<>"): m["date"].datetime
        for m in (email.message_from_bytes(r, policy=email.policy.default) for r in sent)
    }
    checked = 0
    for m in parsed:
        parent = _ids(m["in-reply-to"])
        if not parent or parent[0] not in ours:
            continue
        body = m.get_body(preferencelist=("plain",))
        text = body.get_content() if body is not None else ""
        if "Support) <" not in text:
            continue
        header = next(line for line in text.splitlines() if line.startswith("On ") and line.endswith(" wrote:"))
        quoted_at = email.utils.parsedate_to_datetime(header[3:].split(", ", 2)[0] + ", " + header[3:].split(", ", 2)[1])
        assert quoted_at == ours[parent[0]], header
        checked += 1
    assert checked >= 10


def test_a_customer_who_says_they_attached_something_did(parsed):
    # A third of the calm customers wrote "I have attached what I could find" over a mail with nothing in it.
    def says_attached(m) -> bool:
        part = m.get_body(preferencelist=("plain",))
        return part is not None and "I have attached what I could find" in part.get_content()

    saying = [m for m in parsed if says_attached(m)]
    assert saying, "the demo should still have customers who attach files and say so"
    assert all(any(True for _ in m.iter_attachments()) for m in saying)
