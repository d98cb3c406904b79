"""Parse benchmark: heard's lean parser against the stdlib email parser.

Generates (deterministically, random.Random(42)) about 2,000 realistic support
messages of about 12 KB on average, in memory, then measures, in the same run:

- ``mail.parse.parse_message``;
- ``email.message_from_bytes`` with ``policy.default`` plus the headers the
  sync needs and ``get_body(("plain", "html")).get_content()``;
- ``email.message_from_bytes`` with ``policy.compat32`` plus the same headers
  and ``get_payload(decode=True)`` of the text parts.

Run: ``.venv/bin/python bench/parse_bench.py [count]``. ``generate()`` is also
used by tests/test_parse.py as a corpus to compare against the stdlib.
"""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
import random
import sys
import time
from email.header import Header
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mail.parse import parse_message  # noqa: E402

# ---------------------------------------------------------------- generator

_FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Eva", "François", "Grace", "Hiro", "Ingrid", "José",
          "Kenji", "Lena", "Marta", "Nils", "Olga", "Pedro", "Quinn", "Ruth", "Søren", "Tomás"]
_LAST = ["Müller", "Smith", "Dubois", "Ivanov", "García", "Tanaka", "Larsen", "Rossi", "Novák",
         "O'Brien", "Kowalski", "Nguyen", "Schmidt", "Andersson", "Jones"]
_DOMAINS = ["example.com", "mail.example.org", "kunde.example.de", "client.example.fr",
            "corp.example.net", "example.co.jp", "example.ru"]
_TOPICS = ["invoice", "login", "refund", "shipping", "password reset", "export to CSV",
           "API rate limit", "two-factor code", "billing address", "missing order"]
_SENTENCES = [
    "I have been trying to {t} since yesterday and it still does not work.",
    "Could you please tell me when the {t} will be fixed?",
    "This is the third time I write about the {t}, and nobody has answered yet.",
    "Our team relies on the {t} every morning, so this is urgent for us.",
    "I attached a screenshot of the error message I get with the {t}.",
    "Thanks for the quick answer last week, but the {t} problem is back.",
    "Nothing works! The {t} page is blank and the app keeps crashing.",
    "We are a premium customer and the {t} issue blocks our whole accounting.",
    "Can you check what happened to order 48213? The {t} shows no update.",
    "I would like to understand why the {t} changed without notice.",
]
_INTL = {
    "utf-8": ["Grüße aus Köln, die Rechnung ist leider falsch.", "Merci beaucoup, ça marche à nouveau ✓",
              "¿Podrían revisar mi pedido? Gracias 😊", "Спасибо за помощь, жду ответа."],
    "iso-8859-1": ["Grüße aus München, die Überweisung ist erledigt.", "Très bien, à bientôt et merci."],
    "windows-1252": ["The “quick fix” didn’t work – could you check again?", "Price: 49 € per seat…"],
    "iso-2022-jp": ["お世話になっております。請求書について質問があります。", "ログインできません。確認をお願いします。"],
    "koi8-r": ["Здравствуйте, не могу войти в систему.", "Прошу вернуть деньги за заказ."],
}
_SUBJ_INTL = {
    "utf-8": ["Rechnung für März – falscher Betrag", "Problème de connexion 🙁", "Заказ не пришёл"],
    "iso-8859-1": ["Frage zur Kündigung", "Réclamation commande n° 4821"],
    "iso-2022-jp": ["請求書について", "ログインできません"],
    "koi8-r": ["Не могу войти", "Возврат денег"],
    "windows-1252": ["“Urgent” – invoice €49"],
}


def _addr(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    local = (first + "." + last).lower().encode("ascii", "ignore").decode().replace("'", "")
    return f"{first} {last}", f"{local}@{rng.choice(_DOMAINS)}"


def _fmt_addr(name: str, addr: str) -> str:
    try:
        name.encode("ascii")
        if "'" in name or "," in name:
            return f'"{name}" <{addr}>'
        return f"{name} <{addr}>"
    except UnicodeEncodeError:
        return f"{Header(name, 'utf-8').encode()} <{addr}>"


def _paragraphs(rng: random.Random, target: int, topic: str) -> str:
    out, size = [], 0
    while size < target:
        para = " ".join(rng.choice(_SENTENCES).format(t=topic) for _ in range(rng.randint(2, 5)))
        out.append(para)
        size += len(para) + 2
    return "\n\n".join(out)


def _wrap(text: str, width: int = 72) -> str:
    lines = []
    for para in text.split("\n"):
        line = ""
        for word in para.split(" "):
            if line and len(line) + 1 + len(word) > width:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "\n".join(lines)


def _text_body(rng: random.Random, topic: str, name: str, reply: bool) -> tuple[str, str]:
    charset = rng.choices(list(_INTL), weights=[50, 15, 12, 12, 11])[0]
    body = "Hello,\n\n" + _paragraphs(rng, rng.randint(1200, 3000), topic)
    sign = name.encode(charset, "ignore").decode(charset)  # koi8-r has no "é"
    body += "\n\n" + rng.choice(_INTL[charset]) + "\n\nBest regards,\n" + sign + "\n"
    if reply:
        quoted = _paragraphs(rng, rng.randint(1000, 2500), topic)
        body += "\nOn Mon, 3 Mar 2025 at 10:02, Support <support@heard.example> wrote:\n"
        body += "\n".join("> " + line for line in _wrap(quoted).split("\n")) + "\n"
    return _wrap(body), charset


def _html_of(text: str) -> str:
    paras = []
    for para in text.split("\n\n"):
        esc = para.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        if esc.startswith("&gt;"):
            paras.append("<blockquote style=\"margin:0 0 0 .8ex;border-left:1px #ccc solid\">"
                         + esc.replace("\n", "<br>\n") + "</blockquote>")
        else:
            paras.append('<p class="MsoNormal"><span style="font-family:Arial,sans-serif;font-size:11pt">'
                         + esc.replace("\n", " ") + "<o:p></o:p></span></p>")
    return ("<html><head><meta http-equiv=\"Content-Type\" content=\"text/html\">"
            "<style>p.MsoNormal{margin:0;font-family:Calibri}</style></head><body lang=EN-US>"
            "<div class=WordSection1>\n" + "\n".join(paras)
            + '\n<p>See <a href="https://help.example.com/kb/42">our help page</a>.</p></div></body></html>\n')


def _encode_part(text: str, charset: str, subtype: str, rng: random.Random) -> bytes:
    data = text.encode(charset)
    if charset == "iso-2022-jp":
        cte = "7bit"
    elif charset == "utf-8" and rng.random() < 0.4:
        cte = "base64"
    elif rng.random() < 0.6:
        cte = "quoted-printable"
    else:
        cte = "8bit"
    if cte == "base64":
        payload = base64.encodebytes(data)
    elif cte == "quoted-printable":
        payload = quopri.encodestring(data)
    else:
        payload = data
    head = (f'Content-Type: text/{subtype}; charset="{charset}"\r\n'
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode()
    return head + payload.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _attachment(rng: random.Random) -> bytes:
    kind = rng.choice(["pdf", "png"])
    size = rng.randint(5000, 20000)
    blob = rng.randbytes(size)
    b64 = base64.encodebytes(blob).replace(b"\n", b"\r\n")
    if kind == "pdf":
        ctype, name = "application/pdf", rng.choice(["invoice-4821.pdf", "Rechnung_März.pdf", "contract.pdf"])
    else:
        ctype, name = "image/png", rng.choice(["screenshot.png", "error 500.png", "Bildschirmfoto.png"])
    try:
        name.encode("ascii")
        disp = f'attachment; filename="{name}"'
    except UnicodeEncodeError:
        from urllib.parse import quote

        disp = f"attachment; filename*=utf-8''{quote(name)}"
    return (f'Content-Type: {ctype}; name="{name}"\r\nContent-Disposition: {disp}\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + b64


def _headers(rng: random.Random, i: int, from_: str, subject: str, ctype: str, reply: bool) -> str:
    now = datetime(2025, 3, 1, tzinfo=timezone.utc) + timedelta(minutes=7 * i)
    off = rng.choice([0, 60, 120, -300, -420, 330, 540, 180])
    date = format_datetime(now.astimezone(timezone(timedelta(minutes=off))))
    mid = f"<{rng.getrandbits(64):016x}.{i}@{rng.choice(_DOMAINS)}>"
    hops = []
    for n in range(rng.randint(3, 6)):
        hops.append(f"Received: from mx{n}.example.net (mx{n}.example.net [192.0.2.{n + 10}])\r\n"
                    f"\tby mail.heard.example (Postfix) with ESMTPS id {rng.getrandbits(40):010X}\r\n"
                    f"\tfor <support@heard.example>; {date}")
    dkim = base64.b64encode(rng.randbytes(256)).decode()
    dkim_folded = "\r\n\t".join(dkim[k : k + 70] for k in range(0, len(dkim), 70))
    lines = [f"Return-Path: <bounce-{i}@{rng.choice(_DOMAINS)}>", *hops,
             "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=sel1;\r\n"
             "\th=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
             f"\tb={dkim_folded}",
             "Authentication-Results: mail.heard.example; dkim=pass header.d=example.com;\r\n"
             "\tspf=pass smtp.mailfrom=example.com; dmarc=pass",
             f"From: {from_}", "To: Support <support@heard.example>", f"Subject: {subject}",
             f"Date: {date}", f"Message-ID: {mid}", "MIME-Version: 1.0", f"Content-Type: {ctype}"]
    if reply:
        parent = f"<{rng.getrandbits(48):012x}@heard.example>"
        lines += [f"In-Reply-To: {parent}", f"References: <root{i % 97}@heard.example>\r\n {parent}"]
    lines.append(rng.choice(["X-Mailer: Microsoft Outlook 16.0", "User-Agent: Mozilla Thunderbird",
                             "X-Mailer: iPhone Mail (20D67)", "X-Originating-IP: [198.51.100.7]"]))
    if rng.random() < 0.1:
        lines.append("Auto-Submitted: auto-replied")
    if rng.random() < 0.1:
        lines.append("List-Unsubscribe: <mailto:unsubscribe@lists.example.com>")
    return "\r\n".join(lines) + "\r\n"


def _subject(rng: random.Random, topic: str, reply: bool) -> str:
    if rng.random() < 0.35:
        charset = rng.choice(list(_SUBJ_INTL))
        text = rng.choice(_SUBJ_INTL[charset])
        enc = Header(("Re: " if reply else "") + text, charset).encode()
        return enc.replace("\n", "\r\n")
    return ("Re: " if reply else "") + f"Problem with {topic} (ticket {rng.randint(100, 9999)})"


def generate(n: int = 2000, seed: int = 42) -> list[bytes]:
    """``n`` realistic support messages, about 12 KB each on average, CRLF line endings."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = rng.choice(_TOPICS)
        name, addr = _addr(rng)
        reply = rng.random() < 0.45
        text, charset = _text_body(rng, topic, name, reply)
        kind = rng.choices(["plain", "alternative", "html"], weights=[40, 48, 12])[0]
        boundary = f"----=_Part_{i}_{rng.getrandbits(32)}"
        alt_boundary = f"----=_Alt_{i}_{rng.getrandbits(32)}"
        if kind == "plain":
            part = _encode_part(text, charset, "plain", rng)
        elif kind == "html":
            part = _encode_part(_html_of(text), charset, "html", rng)
        else:
            plain = _encode_part(text, charset, "plain", rng)
            html = _encode_part(_html_of(text), charset, "html", rng)
            part = (f'Content-Type: multipart/alternative; boundary="{alt_boundary}"\r\n\r\n'
                    f"--{alt_boundary}\r\n").encode() + plain + f"\r\n--{alt_boundary}\r\n".encode() \
                + html + f"\r\n--{alt_boundary}--\r\n".encode()
        if rng.random() < 0.2:
            ctype = f'multipart/mixed; boundary="{boundary}"'
            extra = ""
            body = (f"This is a multi-part message in MIME format.\r\n\r\n--{boundary}\r\n".encode() + part
                    + f"\r\n--{boundary}\r\n".encode() + _attachment(rng) + f"\r\n--{boundary}--\r\n".encode())
        else:
            head, _, body = part.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            ctype = lines[0].split(":", 1)[1].strip()
            extra = "".join(line + "\r\n" for line in lines[1:])
        headers = _headers(rng, i, _fmt_addr(name, addr), _subject(rng, topic, reply), ctype, reply)
        out.append((headers + extra + "\r\n").encode() + body)
    return out


# ---------------------------------------------------------------- measurements


def _lean(raw: bytes) -> object:
    return parse_message(raw)


def _stdlib_default(raw: bytes) -> object:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    for name in ("message-id", "in-reply-to", "references", "subject", "from", "to", "date"):
        msg.get(name)
    body = msg.get_body(("plain", "html"))
    return body.get_content() if body is not None else None


def _stdlib_compat32(raw: bytes) -> object:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for name in ("message-id", "in-reply-to", "references", "subject", "from", "to", "date"):
        msg.get(name)
    texts = []
    for part in msg.walk():
        if part.get_content_maintype() == "text" and not part.get_filename():
            payload = part.get_payload(decode=True) or b""
            texts.append(payload.decode(part.get_content_charset() or "ascii", "replace"))
    return texts


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    t0 = time.perf_counter()
    corpus = generate(n)
    gen_s = time.perf_counter() - t0
    total = sum(map(len, corpus))
    mb = total / 1e6
    print(f"corpus: {n} messages, {mb:.1f} MB, {total / n / 1000:.1f} KB average "
          f"(generated in {gen_s:.1f} s, random.Random(42))")
    rows = [
        ("heard parse_message", _lean, 3),
        ("stdlib policy.default + get_body/get_content", _stdlib_default, 1),
        ("stdlib compat32 + walk/get_payload", _stdlib_compat32, 2),
    ]
    # The parsers take turns on chunks of 100 messages, so that load from other
    # processes hits all of them alike; rates use this process's CPU time (best of
    # `rounds` per chunk), with wall-clock rates alongside.
    cpu = [0.0] * len(rows)
    wall = [0.0] * len(rows)
    for start in range(0, n, 100):
        chunk = corpus[start : start + 100]
        for k, (_, fn, rounds) in enumerate(rows):
            best_cpu = best_wall = float("inf")
            for _ in range(rounds):
                c0, w0 = time.process_time(), time.perf_counter()
                for raw in chunk:
                    fn(raw)
                best_cpu = min(best_cpu, time.process_time() - c0)
                best_wall = min(best_wall, time.perf_counter() - w0)
            cpu[k] += best_cpu
            wall[k] += best_wall
    print(f"python {sys.version.split()[0]}, {n} messages per parser, CPU time of this process\n")
    print(f"{'parser':<46} {'msgs/s':>9} {'MB/s':>7} {'heard is':>9} {'wall msgs/s':>12}")
    lean = n / cpu[0]
    for k, (label, _, _) in enumerate(rows):
        rate = n / cpu[k]
        ratio = "-" if k == 0 else f"{lean / rate:.1f}x"
        print(f"{label:<46} {rate:>9,.0f} {mb / cpu[k]:>7.1f} {ratio:>9} {n / wall[k]:>12,.0f}")


if __name__ == "__main__":
    main()
