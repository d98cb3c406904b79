"""The lean parser: what a user sees from real-looking mail, and that nothing makes it raise."""

from __future__ import annotations

import base64
import email
import email.policy
import importlib.util
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from mail.html import html_to_text
from mail.parse import Attachment, ParsedMessage, parse_message

ROOT = Path(__file__).resolve().parent.parent


def msg(*headers: str, body: str | bytes = "", crlf: bool = True) -> bytes:
    """A raw message from header lines and a body, CRLF by default."""
    nl = "\r\n" if crlf else "\n"
    head = nl.join(headers) + nl + nl
    if isinstance(body, str):
        body = body.replace("\n", nl).encode("utf-8")
    elif crlf:
        body = body.replace(b"\n", b"\r\n")
    return head.encode("utf-8") + body


BASE = (
    "From: =?utf-8?q?Anna_M=C3=BCller?= <anna@example.com>",
    "To: Support <support@heard.example>, bob@example.org",
    "Subject: Invoice 4821 is wrong",
    "Date: Tue, 4 Mar 2025 09:15:00 +0100",
    "Message-ID: <abc.123@example.com>",
)


# ---------------------------------------------------------------- plain mail and headers


def test_plain_message_reads_right():
    pm = parse_message(msg(*BASE, body="Hello,\n\nmy invoice is wrong.\n\nAnna\n"))
    assert pm.subject == "Invoice 4821 is wrong"
    assert pm.from_name == "Anna Müller"
    assert pm.from_addr == "anna@example.com"
    assert pm.to_addrs == ["support@heard.example", "bob@example.org"]
    assert pm.message_id == "abc.123@example.com"
    assert pm.text == "Hello,\n\nmy invoice is wrong.\n\nAnna\n"
    assert pm.content_type == "text/plain"
    assert pm.date == datetime(2025, 3, 4, 8, 15, tzinfo=timezone.utc)
    assert pm.date_offset_minutes == 60
    assert not pm.html_only and not pm.attachments
    assert pm.defects == []


def test_threading_headers_and_raw_header_values():
    raw = msg(
        *BASE,
        "In-Reply-To: <parent@heard.example>",
        "References: <root@heard.example>\r\n <mid@heard.example>\r\n\t<parent@heard.example>",
        "Auto-Submitted: auto-replied",
        "List-Unsubscribe: <mailto:leave@lists.example.com>",
        "Precedence: bulk",
        "X-Auto-Response-Suppress: All",
        "X-Loop: support@heard.example",
        "Received: from a (a [192.0.2.1])\r\n\tby b; Tue, 4 Mar 2025 09:15:00 +0100",
        "Received: from second",
        body="hi\n",
    )
    pm = parse_message(raw)
    assert pm.in_reply_to == ["parent@heard.example"]
    assert pm.references == ["root@heard.example", "mid@heard.example", "parent@heard.example"]
    h = pm.headers
    assert h["auto-submitted"] == "auto-replied"
    assert h["list-unsubscribe"] == "<mailto:leave@lists.example.com>"
    assert h["precedence"] == "bulk"
    assert h["x-auto-response-suppress"] == "All"
    assert h["x-loop"] == "support@heard.example"
    assert h["received"] == "from a (a [192.0.2.1]) by b; Tue, 4 Mar 2025 09:15:00 +0100"  # first, unfolded
    assert h["references"] == "<root@heard.example> <mid@heard.example> <parent@heard.example>"


@pytest.mark.parametrize(
    "header, expected",
    [
        ("Subject: =?utf-8?B?UmVjaG51bmcgZsO8ciBNw6Ryeg==?=", "Rechnung für März"),
        ("Subject: =?iso-8859-1?Q?Frage_zur_K=FCndigung?=", "Frage zur Kündigung"),
        ("Subject: Re: =?utf-8?q?Probl=C3=A8me?= de connexion", "Re: Problème de connexion"),
        # adjacent encoded words: the space between them goes, a multi-byte char split across them joins
        ("Subject: =?utf-8?q?Gr=C3?=\r\n =?utf-8?q?=BC=C3=9Fe?=", "Grüße"),
        ("Subject: =?ISO-2022-JP?B?GyRCQEE1YT1xJEskRCQkJEYbKEI=?=", "請求書について"),
        ("Subject: =?koi8-r?B?7sUgzc/H1SDXz8rUyQ==?=", "Не могу войти"),
        ("Subject: =?windows-1252?Q?=93Urgent=94_=96_invoice_=8049?=", "“Urgent” – invoice €49"),
        ("Subject: =?utf-8*en?q?language_tag?=", "language tag"),
        ("Subject: Re:   lots\r\n\tof   space", "Re: lots of space"),
        ("Subject: plain ascii =? not a word", "plain ascii =? not a word"),
        ("Subject: =?x-foo?q?caf=C3=A9?=", "café"),  # unknown charset: flagged, UTF-8 guessed
    ],
)
def test_subjects_read_right(header, expected):
    rest = [h for h in BASE if not h.startswith("Subject")]
    pm = parse_message(msg(*rest, header, body="x\n"))
    assert pm.subject == expected


def test_unknown_charset_in_subject_is_flagged():
    rest = [h for h in BASE if not h.startswith("Subject")]
    pm = parse_message(msg(*rest, "Subject: =?x-foo?q?caf=C3=A9?=", body="x\n"))
    assert any("unknown charset x-foo" in d for d in pm.defects)


@pytest.mark.parametrize(
    "header, name, addr",
    [
        ('From: "Doe, John" <John.Doe@Example.COM>', "Doe, John", "john.doe@example.com"),
        ("From: =?utf-8?q?J=C3=B6rg_Schr=C3=B6der?= <jorg@example.de>", "Jörg Schröder", "jorg@example.de"),
        ('From: "=?utf-8?b?0J7Qu9GM0LPQsA==?=" <olga@example.ru>', "Ольга", "olga@example.ru"),
        ("From: plain@example.com", "", "plain@example.com"),
        ("From: <bracket@example.com>", "", "bracket@example.com"),
        ("From: old@example.com (Old Style)", "Old Style", "old@example.com"),
        ('From: "Quote \\"Q\\" Person" <q@example.com>', 'Quote "Q" Person', "q@example.com"),
        ("From: MAILER-DAEMON@mx.example.net (Mail Delivery System)", "Mail Delivery System",
         "mailer-daemon@mx.example.net"),
    ],
)
def test_from_reads_right(header, name, addr):
    rest = [h for h in BASE if not h.startswith("From")]
    pm = parse_message(msg(*rest, header, body="x\n"))
    assert (pm.from_name, pm.from_addr) == (name, addr)


def test_to_list_with_groups_and_quoted_commas():
    rest = [h for h in BASE if not h.startswith("To")]
    pm = parse_message(
        msg(*rest, 'To: "Support, EU" <eu@heard.example>, team: a@x.org, B@Y.org;, undisclosed-recipients:;',
            body="x\n")
    )
    assert pm.to_addrs == ["eu@heard.example", "a@x.org", "b@y.org"]


@pytest.mark.parametrize(
    "date, utc, offset",
    [
        ("Tue, 4 Mar 2025 09:15:00 +0100", datetime(2025, 3, 4, 8, 15, tzinfo=timezone.utc), 60),
        ("4 Mar 2025 09:15 -0530", datetime(2025, 3, 4, 14, 45, tzinfo=timezone.utc), -330),
        ("Tue, 04 Mar 2025 23:30:00 +0900", datetime(2025, 3, 4, 14, 30, tzinfo=timezone.utc), 540),
        ("Tue, 4 Mar 2025 09:15:00 GMT", datetime(2025, 3, 4, 9, 15, tzinfo=timezone.utc), 0),
        ("Tue, 4 Mar 2025 09:15:00 EST", datetime(2025, 3, 4, 14, 15, tzinfo=timezone.utc), -300),
        ("Tue, 4 Mar 2025 09:15:00 -0000", datetime(2025, 3, 4, 9, 15, tzinfo=timezone.utc), None),
        ("Tue, 4 Mar 25 09:15:00 +0000", datetime(2025, 3, 4, 9, 15, tzinfo=timezone.utc), 0),
        ("Tuesday, 4 March 2025 09:15:00 +0200", datetime(2025, 3, 4, 7, 15, tzinfo=timezone.utc), 120),
    ],
)
def test_dates_become_utc_with_sender_offset(date, utc, offset):
    rest = [h for h in BASE if not h.startswith("Date")]
    pm = parse_message(msg(*rest, f"Date: {date}", body="x\n"))
    assert pm.date == utc
    assert pm.date.tzinfo is not None
    assert pm.date_offset_minutes == offset
    assert not any("Date" in d for d in pm.defects)


@pytest.mark.parametrize("date", ["next tuesday", "", "Tue, 31 Feb 2025 10:00:00 +0000", "99 Foo 2025 25:61 +0100",
                                  "Tue, 4 Mar 2025 09:15:00 +9999"])
def test_garbage_date_is_a_defect_and_later_fields_still_parse(date):
    rest = [h for h in BASE if not h.startswith("Date")]
    pm = parse_message(msg(*rest, f"Date: {date}", "X-After: still here", body="body text\n"))
    assert pm.date is None and pm.date_offset_minutes is None
    assert any(d.startswith("bad Date") for d in pm.defects)
    assert pm.headers["x-after"] == "still here"
    assert pm.subject == "Invoice 4821 is wrong" and pm.text == "body text\n"


def test_missing_headers_are_defects():
    pm = parse_message(b"Subject: only a subject\r\n\r\nbody\r\n")
    assert pm.subject == "only a subject"
    assert pm.text == "body\n"
    assert pm.message_id is None and pm.from_addr == ""
    assert {"missing Message-ID", "missing From", "missing Date"} <= set(pm.defects)


# ---------------------------------------------------------------- MIME structures

ALT = """\
--ALT
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Gr=C3=BC=C3=9Fe, die Rechnung ist falsch.=20
Zweite Zeile, sehr lang und umbrochen mit einem weichen Umbruch hier =
und weiter.

--ALT
Content-Type: text/html; charset=utf-8

<p>Gr&uuml;&szlig;e, <b>HTML</b></p>
--ALT--
"""


def test_multipart_alternative_prefers_plain_and_decodes_qp():
    pm = parse_message(msg(*BASE, "MIME-Version: 1.0", 'Content-Type: multipart/alternative; boundary="ALT"',
                           body=ALT))
    assert pm.content_type == "multipart/alternative"
    assert pm.text.startswith("Grüße, die Rechnung ist falsch. \nZweite Zeile")
    assert "Umbruch hier und weiter." in pm.text
    assert not pm.html_only and pm.defects == []


def test_html_only_mail_is_turned_into_text():
    html = (
        "<html><head><title>t</title><style>p {color: red}</style><script>alert(1)</script></head>"
        "<body><p>Dear support,</p><p>the <a href=\"https://shop.example.com/orders/42\">order page</a> is blank."
        "<br>Steps:</p><ul><li>log in</li><li>open orders</li></ul>"
        "<p>See https://shop.example.com or <a href=\"https://shop.example.com\">shop.example.com</a>."
        " Price &lt; 10&nbsp;&euro; &amp; fast.</p><img src=\"https://tracker.example/pixel.gif\"></body></html>"
    )
    pm = parse_message(msg(*BASE, "Content-Type: text/html; charset=utf-8", body=html))
    assert pm.html_only and pm.content_type == "text/html"
    assert pm.text == (
        "Dear support,\n\nthe order page (https://shop.example.com/orders/42) is blank.\nSteps:\n\n"
        "- log in\n- open orders\n\nSee https://shop.example.com or shop.example.com. Price < 10 € & fast."
    )
    assert "alert" not in pm.text and "color" not in pm.text and "pixel" not in pm.text


PDF = base64.encodebytes(b"%PDF-1.4 " + bytes(range(256)) * 20).decode()
PNG = base64.encodebytes(b"\x89PNG\r\n\x1a\n" + bytes(1000)).decode()


def test_attachments_are_listed_with_name_type_and_size():
    body = f"""\
This is a multi-part message in MIME format.

--MIX
Content-Type: multipart/related; boundary="REL"

--REL
Content-Type: text/html; charset=utf-8

<p>See the screenshot: <img src="cid:shot"></p>
--REL
Content-Type: image/png
Content-ID: <shot>
Content-Transfer-Encoding: base64

{PNG}
--REL--

--MIX
Content-Type: application/pdf; name="=?utf-8?q?Rechnung_M=C3=A4rz.pdf?="
Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf
Content-Transfer-Encoding: base64

{PDF}
--MIX
Content-Type: text/plain; charset=utf-8; name="log.txt"
Content-Disposition: attachment; filename="log.txt"

line 1 of the log
--MIX
Content-Type: application/octet-stream
Content-Disposition: attachment;
 filename*0*=iso-8859-1''%E9t%E9;
 filename*1="_report.bin"
Content-Transfer-Encoding: base64

AAECAwQF
--MIX--
"""
    pm = parse_message(msg(*BASE, 'Content-Type: multipart/mixed; boundary="MIX"', body=body))
    assert pm.content_type == "multipart/mixed"
    assert pm.html_only and pm.text == "See the screenshot:"
    names = [(a.name, a.content_type) for a in pm.attachments]
    assert names == [
        ("unnamed.png", "image/png"),
        ("Rechnung März.pdf", "application/pdf"),
        ("log.txt", "text/plain"),
        ("été_report.bin", "application/octet-stream"),
    ]
    sizes = {a.name: a.size for a in pm.attachments}
    assert abs(sizes["Rechnung März.pdf"] - (9 + 256 * 20)) <= 3
    assert abs(sizes["unnamed.png"] - 1008) <= 3
    assert sizes["été_report.bin"] == 6
    assert "line 1 of the log" not in pm.text  # an attached text file is not the body
    assert pm.defects == []


def test_rfc2047_filename_and_content_type_name_fallback():
    body = """\
--B
Content-Type: text/plain

see attached
--B
Content-Type: image/jpeg; name="=?utf-8?B?0YTQvtGC0L4uanBn?="
Content-Transfer-Encoding: base64

/9j/4AAQ
--B--
"""
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed; boundary=B", body=body))
    assert pm.text == "see attached"
    assert pm.attachments == [Attachment("фото.jpg", "image/jpeg", 6)]


def test_delivery_report_keeps_its_type_and_human_text():
    body = """\
--REP
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.
I'm sorry to have to inform you that your message could not be delivered.

--REP
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; gone@example.com
Action: failed
Status: 5.1.1

--REP
Content-Type: message/rfc822

From: Support <support@heard.example>
Subject: Your ticket [#42]
Message-ID: <ack42@heard.example>

I will handle this by Friday.
--REP--
"""
    pm = parse_message(
        msg("From: MAILER-DAEMON@mx.example.net (Mail Delivery System)", "To: support@heard.example",
            "Subject: Undelivered Mail Returned to Sender", "Date: Tue, 4 Mar 2025 09:15:00 +0100",
            "Message-ID: <bounce1@mx.example.net>",
            'Content-Type: multipart/report; report-type=delivery-status; boundary="REP"', body=body)
    )
    assert pm.content_type == "multipart/report"
    assert "could not be delivered" in pm.text
    assert "Final-Recipient: rfc822; gone@example.com" in pm.text
    assert pm.attachments == [Attachment("Your ticket [#42].eml", "message/rfc822", pm.attachments[0].size)]
    assert pm.from_addr == "mailer-daemon@mx.example.net"


@pytest.mark.parametrize(
    "charset, text",
    [
        ("utf-8", "Grüße 😊"),
        ("iso-8859-1", "Très bien, à bientôt"),
        ("windows-1252", "The “quick fix” didn’t work – 49 €"),
        ("iso-2022-jp", "ログインできません。"),
        ("koi8-r", "Здравствуйте, не могу войти."),
        ("shift_jis", "請求書について"),
        ("gb2312", "你好，我的订单"),
    ],
)
@pytest.mark.parametrize("cte", ["8bit", "base64", "quoted-printable"])
def test_body_charsets_and_transfer_encodings(charset, text, cte):
    import quopri

    data = (text + "\n").encode(charset)
    if cte == "base64":
        data = base64.encodebytes(data)
    elif cte == "quoted-printable":
        data = quopri.encodestring(data)
    pm = parse_message(msg(*BASE, f'Content-Type: text/plain; charset="{charset}"',
                           f"Content-Transfer-Encoding: {cte}", body=data))
    assert pm.text.strip() == text
    assert pm.defects == []


# ---------------------------------------------------------------- odd and broken mail


def defects_of(raw: bytes) -> list[str]:
    return parse_message(raw).defects


def test_unknown_body_charset_is_flagged_and_text_still_readable():
    pm = parse_message(msg(*BASE, "Content-Type: text/plain; charset=x-foo", body="café ok\n"))
    assert "unknown charset x-foo" in pm.defects
    assert pm.text == "café ok\n"


def test_undeclared_8bit_latin1_is_readable_and_flagged():
    raw = msg(*BASE, body=b"caf\xe9 au lait\n")
    pm = parse_message(raw)
    assert pm.text == "café au lait\n"
    assert "undeclared 8-bit text" in pm.defects


def test_missing_closing_boundary():
    body = "--B\nContent-Type: text/plain\n\nfirst part\n--B\nContent-Type: text/plain\n\nsecond part, cut off"
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed; boundary=B", body=body))
    assert "unterminated multipart" in pm.defects
    assert "first part" in pm.text and "second part, cut off" in pm.text


def test_missing_boundary_parameter_is_guessed():
    body = "--XyZ\nContent-Type: text/plain\n\nthe real text\n--XyZ--\n"
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed", body=body))
    assert any("without boundary" in d for d in pm.defects)
    assert pm.text.strip() == "the real text"


def test_missing_boundary_and_nothing_to_guess():
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed", body="just words\n"))
    assert "multipart without boundary" in pm.defects
    assert pm.text == "just words\n"


def test_boundary_never_appears_in_the_body():
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed; boundary=nope", body="Hello,\nplain words\n"))
    assert "multipart without any boundary line" in pm.defects
    assert pm.text == "Hello,\nplain words\n"


def test_boundary_that_is_a_prefix_of_another_line():
    body = "--b\nContent-Type: text/plain\n\none\n--bb not a delimiter\ntwo\n--b--\n"
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed; boundary=b", body=body))
    assert pm.text == "one\n--bb not a delimiter\ntwo"
    assert pm.defects == []


def test_deep_nesting_is_capped():
    depth = 200
    body = ""
    for i in range(depth):
        body += f"--b{i}\nContent-Type: multipart/mixed; boundary=b{i + 1}\n\n"
    body += "--b200\nContent-Type: text/plain\n\ndeep\n"
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed; boundary=b0", body=body))
    assert "multipart nested too deep" in pm.defects
    # Flagged, but the reader still sees the text (it showed "(no text)").
    assert pm.text == "deep\n"


def nested(depth: int, leaves: str, *, closed: bool = True) -> bytes:
    """A mail whose text sits ``depth`` multiparts down, each level a well-formed multipart/mixed."""
    body = leaves
    for i in reversed(range(depth)):
        inner = f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n{body}\n" + (f"--b{i}--\n" if closed else "")
        body = inner if i else inner.split("\n\n", 1)[1]
    return msg(*BASE, "Content-Type: multipart/mixed; boundary=b0", body=body)


def test_text_nested_deeper_than_the_walk_goes_is_read_with_its_attachments():
    leaves = ("Content-Type: text/plain; charset=utf-8\n\nThe export fails at row 1000.\n--b39\n"
              "Content-Type: application/pdf; name=invoice.pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQK\n--b39\n"
              "Content-Type: text/html\n\n<p>The export fails at row 1000.</p>")
    for closed in (True, False):
        pm = parse_message(nested(40, leaves, closed=closed))
        assert "multipart nested too deep" in pm.defects
        assert pm.text.strip() == "The export fails at row 1000."  # the plain leaf, not the HTML one too
        assert [a.name for a in pm.attachments] == ["invoice.pdf"]
    html_only = parse_message(nested(30, "Content-Type: text/html\n\n<p>Only <b>HTML</b> here</p>"))
    assert html_only.html_only and html_only.text == "Only HTML here"


def test_hundreds_of_levels_around_a_big_text_cost_one_pass():
    # Each level of the recursive walk scans its whole body: 450 levels around 3 MB would be 1.3 GB.
    big = "a log line that goes on and on\n" * 100_000
    raw = nested(450, "Content-Type: text/plain\n\n" + big)
    t0 = time.process_time()
    pm = parse_message(raw)
    assert time.process_time() - t0 < 0.5
    assert "multipart nested too deep" in pm.defects
    assert pm.text.startswith("a log line") and len(pm.text) >= len(big)


def test_many_parts_are_capped():
    body = "".join(f"--b\nContent-Type: text/plain\n\npart {i}\n" for i in range(3000)) + "--b--\n"
    pm = parse_message(msg(*BASE, "Content-Type: multipart/mixed; boundary=b", body=body))
    assert any("MIME parts" in d for d in pm.defects)
    assert pm.text.startswith("part 0\npart 1\n")


def test_eight_bit_junk_and_nul_bytes_in_headers():
    raw = (b"From: J\xf6rg <jorg@example.de>\r\nSubject: caf\xe9\x00 menu\r\nMessage-ID: <n@x>\r\n"
           b"Date: Tue, 4 Mar 2025 09:15:00 +0100\r\n\r\nbody\x00 text\r\n")
    pm = parse_message(raw)
    assert pm.subject == "café menu"
    assert pm.from_name == "Jörg" and pm.from_addr == "jorg@example.de"
    assert pm.text == "body text\n"
    assert "8-bit junk in headers" in pm.defects
    assert "NUL bytes in headers" in pm.defects and "NUL bytes in body" in pm.defects


def test_one_latin1_header_does_not_garble_a_utf8_name_in_another():
    # A UTF-8 From name (RFC 6532) next to a Latin-1 header a gateway added: each is read in its own charset.
    raw = (b"From: J\xc3\xb6rg M\xc3\xbcller <jorg@example.de>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n"
           b"X-Gateway: relay\xe9 Paris\r\nMessage-ID: <m@x>\r\nDate: Tue, 4 Mar 2025 09:15:00 +0100\r\n\r\nbody\r\n")
    pm = parse_message(raw)
    assert pm.from_name == "Jörg Müller"  # was "JÃ¶rg MÃ¼ller"
    assert pm.subject == "Grüße"
    assert pm.headers["x-gateway"] == "relayé Paris"


def test_raw_utf8_headers_are_fine():
    pm = parse_message("From: Jörg <j@example.de>\nSubject: Grüße\nMessage-ID: <u@x>\n"
                       "Date: Tue, 4 Mar 2025 09:15:00 +0100\n\nx\n".encode())
    assert pm.subject == "Grüße" and pm.from_name == "Jörg"
    assert pm.defects == []


def test_lf_only_and_cr_only_line_endings():
    lf = msg(*BASE, "Content-Type: multipart/alternative; boundary=\"ALT\"", body=ALT, crlf=False)
    crlf = msg(*BASE, "Content-Type: multipart/alternative; boundary=\"ALT\"", body=ALT)
    assert parse_message(lf).text == parse_message(crlf).text
    cr = msg(*BASE, body="one\ntwo\n", crlf=False).replace(b"\n", b"\r")
    pm = parse_message(cr)
    assert pm.subject == "Invoice 4821 is wrong" and pm.text == "one\ntwo\n"


def test_empty_input():
    pm = parse_message(b"")
    assert isinstance(pm, ParsedMessage)
    assert "empty message" in pm.defects


def test_no_header_body_separator():
    raw = b"From: a@example.com\r\nSubject: hi\r\nthis line is the body already\r\nand more\r\n"
    pm = parse_message(raw)
    assert pm.subject == "hi" and pm.from_addr == "a@example.com"
    assert "missing header/body separator" in pm.defects
    assert pm.text == "this line is the body already\nand more\n"


def test_only_headers():
    pm = parse_message(b"From: a@example.com\r\nSubject: hi")
    assert pm.subject == "hi" and pm.text == ""


def test_not_a_message_at_all():
    pm = parse_message(b"\x00\xff\xfe garbage \x1b[31m")
    assert isinstance(pm, ParsedMessage) and pm.defects


def test_mbox_from_line_is_skipped():
    pm = parse_message(b"From anna@example.com Tue Mar  4 09:15:00 2025\n" + msg(*BASE, body="x\n", crlf=False))
    assert pm.from_addr == "anna@example.com" and pm.defects == []


def test_bad_base64_text_still_decodes_what_it_can():
    pm = parse_message(msg(*BASE, "Content-Transfer-Encoding: base64", body="SGVsbG8gd29ybGQhI"))
    assert pm.text.startswith("Hello world")
    assert "bad base64 in text part" in pm.defects


@pytest.mark.parametrize("tail", [
    "!!! pay to IBAN DE00 1234 !!!\n",  # not base64 at all
    base64.encodebytes("and a second half nobody saw".encode()).decode(),  # base64 again, after the padding
])
def test_junk_after_the_base64_of_a_text_is_flagged(tail):
    # a2b_base64 stops at the padding and skips what is not base64: the rest was dropped with no flag.
    body = base64.encodebytes(b"Hello world").decode() + tail
    pm = parse_message(msg(*BASE, "Content-Transfer-Encoding: base64", body=body))
    assert pm.text == "Hello world"
    assert pm.defects == ["junk in or after the base64 of a text part: left out"]
    # Junk inside is the same loss.
    pm = parse_message(msg(*BASE, "Content-Transfer-Encoding: base64", body="SGVs*bG8g~d29y\nbGQh\n"))
    assert pm.defects == ["junk in or after the base64 of a text part: left out"]


@pytest.mark.parametrize("data", [b"", b"h", b"hi", b"hey", "Grüße, 日本語 😀".encode() * 50])
def test_valid_base64_text_is_not_flagged(data):
    for body in (base64.encodebytes(data), base64.b64encode(data) + b"\n", base64.encodebytes(data).replace(b"\n", b"\r\n"),
                 base64.encodebytes(data).replace(b"\n", b" \t\n") + b"\n\n\n\n"):  # a gateway's trailing blanks
        pm = parse_message(msg(*BASE, "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64",
                               body=body))
        assert pm.text == data.decode() and pm.defects == [], body


def test_unknown_transfer_encoding_and_bad_content_type():
    pm = parse_message(msg(*BASE, "Content-Type: garbage", "Content-Transfer-Encoding: x-foo", body="as is\n"))
    assert pm.text == "as is\n" and pm.content_type == "text/plain"
    assert "unknown transfer encoding x-foo" in pm.defects
    assert any(d.startswith("bad Content-Type") for d in pm.defects)


def test_huge_text_part_is_kept_but_capped():
    big = "A line of text.\n" * (300_000)  # 4.8 MB
    pm = parse_message(msg(*BASE, body=big, crlf=False))
    assert len(pm.text) == 4 * 1024 * 1024
    assert any("truncated" in d for d in pm.defects)
    huge = base64.encodebytes(b"x" * (20 * 1024 * 1024))  # 27 MB of base64 text
    pm = parse_message(msg(*BASE, "Content-Transfer-Encoding: base64", body=huge))
    assert len(pm.text) == 4 * 1024 * 1024 and set(pm.text) == {"x"}
    assert pm.defects == ["text part over 4 MB truncated"]


def test_quoted_history_is_kept():
    body = "Thanks!\n\nOn Mon, Support wrote:\n> I will handle this by Friday.\n> Anna\n"
    assert parse_message(msg(*BASE, body=body)).text == body


# ---------------------------------------------------------------- HTML to text


def test_html_to_text_blockquotes_tables_pre_and_entities():
    html = ("<div>Reply</div><blockquote>Earlier <b>text</b><br>line two</blockquote>"
            "<table><tr><td>Order</td><td>42</td></tr><tr><td>Total</td><td>&euro;9</td></tr></table>"
            "<pre>  code\n  block</pre><p>&#x1F600; &quot;q&quot; &#39;s&#39;</p>")
    assert html_to_text(html) == "Reply\n> Earlier text\n> line two\nOrder 42\nTotal €9\ncode\nblock\n\n😀 \"q\" 's'"


def test_html_to_text_line_breaks_like_a_mail_client():
    gmail = "<div dir=ltr>Hi,<div><br></div><div>first line</div><div>second<br></div></div>"
    assert html_to_text(gmail) == "Hi,\n\nfirst line\nsecond"
    assert html_to_text("<p>one</p><p>two</p><h2>Title</h2>a<br><br>b") == "one\n\ntwo\n\nTitle\n\na\n\nb"
    outlook = ('<p class=MsoNormal>Hi,<o:p></o:p></p>\n<p class=MsoNormal><o:p>&nbsp;</o:p></p>\n'
               '<p class=MsoNormal>line one<o:p></o:p></p>\n<p class=MsoNormal>line two<o:p></o:p></p>')
    assert html_to_text(outlook) == "Hi,\n\nline one\nline two"


def test_a_doctype_with_an_internal_subset_leaves_nothing_on_screen():
    # Its declarations were dropped one by one and "<!DOCTYPE x []>" was left as text.
    for doctype in ("<!DOCTYPE x []>", "<!DOCTYPE x [<!ENTITY a 'b'>]>", '<!doctype html [\n <!ENTITY a "x>y">\n <!-- c -->\n] >'):
        pm = parse_message(msg(*BASE, "Content-Type: text/html", body=f"{doctype}<html><body><p>Hello</p></body></html>"))
        assert pm.text == "Hello", doctype
    assert html_to_text("<p>Use [brackets] and a > b</p><!DOCTYPE html>") == "Use [brackets] and a > b"
    t0 = time.process_time()
    assert html_to_text("<!DOCTYPE x [ " * 20_000 + "<p>end</p>").endswith("end")  # unterminated: linear
    assert time.process_time() - t0 < 0.5


def test_html_to_text_malformed_is_fine():
    assert html_to_text("<p>unclosed <b>bold <i>it") == "unclosed bold it"
    assert html_to_text("a < b and c > d") == "a < b and c > d"
    assert html_to_text("<div>x<script>never closed") == "x"
    assert html_to_text("text <!-- unterminated comment") == "text"
    assert html_to_text("<a href='javascript:alert(1)'>click</a>") == "click"
    assert html_to_text("") == ""


@pytest.mark.timeout(60)
def test_html_to_text_stays_linear_on_hostile_input():
    hostile = [
        "<a " * 200_000,
        "<head>" * 100_000,
        "<!--" * 200_000,
        "<script>" + "x" * 1_000_000,
        "<pre>" * 100_000,
        "&" * 1_000_000,
        "<div><p>Hello <b>world</b> &nbsp;<a href='http://x'>link</a></p></div>\n" * 15_000,
        "<" * 1_000_000,
    ]
    for s in hostile:
        t0 = time.perf_counter()
        assert isinstance(html_to_text(s), str)
        assert time.perf_counter() - t0 < 10, s[:20]


# ---------------------------------------------------------------- never raises

SAMPLES = [
    msg(*BASE, body="Hello,\nplain text\n"),
    msg(*BASE, "Content-Type: multipart/alternative; boundary=\"ALT\"", body=ALT),
    msg(*BASE, "Content-Type: text/html; charset=windows-1252", "Content-Transfer-Encoding: quoted-printable",
        body="<p>=93Hi=94 <a href=3D'http://x'>x</a></p>"),
    msg(*BASE, "Content-Type: multipart/mixed; boundary=B",
        body=f"--B\nContent-Type: text/plain\n\nsee file\n--B\nContent-Type: application/pdf; name=a.pdf\n"
             f"Content-Transfer-Encoding: base64\n\n{PDF[:400]}\n--B--\n"),
    msg(*BASE, "Subject: =?utf-8?B?0JfQsNC60LDQtw==?=", "Content-Type: text/plain; charset=koi8-r",
        body="Здравствуйте".encode("koi8-r")),
]


def mutations(raw: bytes, rng: random.Random):
    yield raw[: rng.randrange(len(raw) + 1)]
    b = bytearray(raw)
    for _ in range(rng.randint(1, 20)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    yield bytes(b)
    i = rng.randrange(len(raw))
    yield raw[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 50))) + raw[i:]
    i, j = sorted(rng.randrange(len(raw)) for _ in range(2))
    yield raw[:i] + raw[j:]
    yield raw[:i] + raw[i:j] * rng.randint(2, 5) + raw[j:]
    yield raw.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]))
    tokens = [b"=?", b"?=", b"--B", b"--ALT", b"\x00", b"boundary=", b";", b'"', b"<", b">", b"\n\n", b"=\n",
              b"charset=x-foo", b"*0*=", b"'", b"%", b"&#", b"<!--", b"<script", b"multipart/", b":", b"\t"]
    out = bytearray(raw)
    for _ in range(rng.randint(1, 8)):
        k = rng.randrange(len(out) + 1)
        out[k:k] = rng.choice(tokens)
    yield bytes(out)


def test_mutated_and_truncated_messages_never_raise():
    rng = random.Random(1234)
    count = 0
    for round_ in range(12):
        for raw in SAMPLES:
            for mutated in mutations(raw, rng):
                pm = parse_message(mutated)
                assert isinstance(pm, ParsedMessage)
                assert isinstance(pm.text, str) and isinstance(pm.subject, str)
                assert all(isinstance(a, Attachment) and a.size >= 0 for a in pm.attachments)
                assert pm.date is None or pm.date.tzinfo is not None
                assert "\x00" not in pm.text and "\x00" not in pm.subject
                count += 1
    assert count >= 400


def test_a_bug_in_the_lean_parser_falls_back_to_the_stdlib(monkeypatch):
    import mail.parse

    def broken(raw, pm):
        raise RuntimeError("bug")

    monkeypatch.setattr(mail.parse, "_parse", broken)
    pm = parse_message(msg(*BASE, body="still readable\n"))
    assert pm.defects == ["internal parser error (RuntimeError)"]
    assert pm.subject == "Invoice 4821 is wrong" and pm.message_id == "abc.123@example.com"
    assert pm.from_addr == "anna@example.com" and "still readable" in pm.text


def test_from_without_an_address_keeps_the_name():
    rest = [h for h in BASE if not h.startswith("From")]
    for value in ("Mail Delivery System", '"Mail Delivery System"', "Mail Delivery System <>",
                  "=?utf-8?q?Mail_Delivery_System?= <>"):
        pm = parse_message(msg(*rest, f"From: {value}", body="x\n"))
        assert (pm.from_addr, pm.from_name) == ("", "Mail Delivery System"), value
        assert pm.defects == ["From has a name but no address"], value
    assert "missing From" in parse_message(msg(*rest, body="x\n")).defects


def test_several_from_headers_flag_the_mail_and_name_the_other_senders():
    # The first From was used and nothing said there was another: a forged second sender went unseen.
    rest = [h for h in BASE if not h.startswith("From")]
    for crlf in (True, False):
        pm = parse_message(msg("From: Anna <anna@example.com>", *rest, "FROM: Boss <ceo@example.com>",
                               "from:\n mallory@evil.example", body="Please pay.\n", crlf=crlf))
        assert pm.from_addr == "anna@example.com" and pm.from_name == "Anna"
        assert pm.defects == ["3 From headers: shown as from the first (anna@example.com); "
                              "the others say ceo@example.com, mallory@evil.example"]
    # The slow header path (a line that is not a header ends the head) says the same.
    pm = parse_message(msg(*BASE, "From: mallory@evil.example", "not a header line", body="x\n"))
    assert pm.from_addr == "anna@example.com"
    assert "2 From headers: shown as from the first (anna@example.com); the other says mallory@evil.example" in pm.defects
    # One From and an mbox "From " line are one sender.
    assert parse_message(b"From anna@example.com Tue Mar  4 09:15:00 2025\n" + msg(*BASE, body="x\n")).defects == []


def test_non_bytes_input_does_not_raise():
    assert isinstance(parse_message(None), ParsedMessage)  # type: ignore[arg-type]
    assert parse_message("Subject: s\n\nb").subject == "s"  # type: ignore[arg-type]


# ---------------------------------------------------------------- against the stdlib


def _corpus() -> list[bytes]:
    spec = importlib.util.spec_from_file_location("parse_bench", ROOT / "bench" / "parse_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate(150, seed=7) + SAMPLES


def test_same_subject_from_id_and_text_as_the_stdlib_on_well_formed_mail():
    for raw in _corpus():
        ours = parse_message(raw)
        ref = email.message_from_bytes(raw, policy=email.policy.default)
        assert ours.subject == str(ref["subject"])
        addr = ref["from"].addresses[0]
        assert (ours.from_name, ours.from_addr) == (addr.display_name, addr.addr_spec.lower())
        assert ours.message_id == str(ref["message-id"]).strip().strip("<>")
        body = ref.get_body(("plain", "html"))
        expected = body.get_content().replace("\r\n", "\n")
        if body.get_content_type() == "text/html":
            assert ours.html_only
            expected = html_to_text(expected)
        assert ours.text.rstrip("\n") == expected.rstrip("\n")
        names = [p.get_filename() for p in ref.iter_attachments() if p.get_filename()]
        assert [a.name for a in ours.attachments] == names
        assert ours.defects == []


def test_repeated_part_headers_parse_alike_with_their_defects():
    """Part header blocks are parsed once and reused: every message still gets its own defects."""
    body = ("--B\nContent-Type: text/plain; charset=utf-8\nX-Junk: caf\xe9\x00\n\nhello\n"
            "--B\nContent-Type: application/pdf; name=a.pdf\n\nPDF\n--B--\n")
    raw = msg(*BASE, "Content-Type: multipart/mixed; boundary=B", body=body.encode("latin-1"))
    first, second = parse_message(raw), parse_message(raw)
    assert first == second
    assert "8-bit junk in headers" in second.defects and "NUL bytes in headers" in second.defects
    assert second.text == "hello" and [a.name for a in second.attachments] == ["a.pdf"]


def test_repeated_encoded_subjects_and_senders_keep_their_defects():
    """Encoded words and address lists are decoded once and reused: each message still gets its defects."""
    rest = [h for h in BASE if not h.startswith(("Subject", "From"))]
    raw = msg(*rest, "Subject: =?x-no-such-charset?q?caf=E9?=", "From: =?utf-8?b?SvZyZw==?= <J@Example.DE>",
              body="x\n")
    first, second = parse_message(raw), parse_message(raw)
    assert first == second
    assert any(d.startswith("unknown charset") for d in second.defects)
    assert any(d.startswith("invalid UTF-8") for d in second.defects)
    assert second.from_addr == "j@example.de" and second.to_addrs == first.to_addrs


@pytest.mark.parametrize("nested", [False, True])
def test_a_big_attachment_is_sized_exactly_without_copying_it(nested):
    # The parser sliced the message body, then each part, then each part's body: a 50 MB attachment
    # cost 150 MB more while it was parsed (a sync of such mail peaked at 490 MB, now 280 MB).
    import tracemalloc

    data = bytes(range(256)) * (12 * 1024)  # 3 MB
    b64 = base64.encodebytes(data).replace(b"\n", b"\r\n")
    inner = (b"--b\r\nContent-Type: text/plain\r\n\r\nsee logs\r\n"
             b"--b\r\nContent-Type: application/octet-stream; name=logs.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + b64 + b"--b--\r\n")
    if nested:  # the attachment two levels down, after a forwarded message
        inner = (b"--o\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + inner +
                 b"\r\n--o\r\nContent-Type: message/rfc822\r\n\r\nSubject: the first report\r\n\r\nhello\r\n--o--\r\n")
    raw = (b"From: a@cust.example\r\nSubject: logs\r\nMessage-ID: <big@cust.example>\r\nMIME-Version: 1.0\r\n"
           + (b"Content-Type: multipart/mixed; boundary=o" if nested else b"Content-Type: multipart/mixed; boundary=b")
           + b"\r\n\r\n" + inner)
    tracemalloc.start()
    try:
        pm = parse_message(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    names = [("logs.bin", len(data))] + ([("the first report.eml", len(b"Subject: the first report\r\n\r\nhello"))]
                                         if nested else [])
    assert [(a.name, a.size) for a in pm.attachments] == names
    assert pm.text.strip() == "see logs" and pm.defects == ["missing Date"]
    assert peak < len(raw) // 10, f"{peak / len(raw):.1f}x the message"
