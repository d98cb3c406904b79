"""Realistic support mail, generated deterministically, as raw RFC 822 bytes.

The product is *Ledgerly*, a made-up invoicing SaaS (invoices, recurring
billing, bank feeds, CSV export, a REST API). The mail is what its support
inbox really gets: threads with back-and-forth, angry and vague customers,
auto-replies, a bounce, a mailing list, premium customers (at
``bigcorp.example``), German, French, Spanish and Japanese mail in several
charsets and transfer encodings, HTML-only mail, attachments, and a couple of
hostile messages (Rich markup, ANSI/OSC escapes, a bidi-override filename).

- :func:`demo_backlog` / :func:`demo_sent`: the inbox (and our earlier
  replies, for a Sent folder) that ``heard demo`` seeds its IMAP server with.
- :func:`customer_reply`, :func:`new_customer_mail`: the demo's customers
  answering the agent, and new mail arriving while the demo runs.
- :func:`bench_mailbox`: a large mailbox of ~12 KB messages for benchmarks,
  ~10,000 messages in well under a few seconds.

Only ``example.com``/``example.org`` and ``.example`` domains appear. The same
arguments always give the same bytes (``random.Random(seed)``, no clock).
"""

from __future__ import annotations

import base64
import email.charset
import email.header
import email.utils
import quopri
import random
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

__all__ = [
    "PRODUCT",
    "PREMIUM_DOMAINS",
    "Customer",
    "CUSTOMERS",
    "demo_backlog",
    "demo_sent",
    "customer_reply",
    "new_customer_mail",
    "bench_mailbox",
]

PRODUCT = "Ledgerly"
PREMIUM_DOMAINS = ("bigcorp.example",)
AGENT_NAME = "Robin Castillo"


# --------------------------------------------------------------------------- people


@dataclass(frozen=True, slots=True)
class Customer:
    name: str
    address: str
    lang: str = "en"  # en, de, fr, es, ja
    tz: float = 0.0  # UTC offset in hours, for their Date headers
    persona: str = "calm"  # calm, angry, vague, terse
    client: str = "plain"  # plain, alt (text+html), html (HTML only), phone

    @property
    def first(self) -> str:
        if self.lang == "ja":
            return self.name.split()[0]  # family name first: 田中 健 -> 田中
        return self.name.split()[0]

    @property
    def premium(self) -> bool:
        return self.address.rsplit("@", 1)[-1] in PREMIUM_DOMAINS


CUSTOMERS: tuple[Customer, ...] = (
    Customer("Dana Whitfield", "dana@whitfield-design.example", tz=-5, client="alt"),
    Customer("Marcus O'Neill", "marcus.oneill@example.com", tz=0, persona="angry"),
    Customer("Priya Raman", "priya@raman-consulting.example", tz=5.5, client="alt"),
    Customer("Tom Becker", "tom@beckerplumbing.example", tz=-6, persona="terse", client="phone"),
    Customer("Sarah Lindqvist", "sarah.l@example.org", tz=1),
    Customer("Jamal Carter", "jamal@carter-photo.example", tz=-8, client="alt"),
    Customer("Emily Chen", "emily.chen@example.com", tz=-5),
    Customer("Olivia Grant", "olivia@grantandco.example", tz=0, client="html"),
    Customer("Kevin Murphy", "kevin@murphy-electric.example", tz=-5, persona="vague", client="phone"),
    Customer("Grace Okafor", "grace.okafor@example.org", tz=1, client="alt"),
    Customer("Liam Foster", "liam@fosterbikes.example", tz=10),
    Customer("Hannah Brooks", "hannah@brooks-yoga.example", tz=-7, persona="vague"),
    Customer("Noah Patel", "noah.patel@example.com", tz=-4, client="alt"),
    Customer("Zoe Martin", "zoe@zmartin-studio.example", tz=0, persona="angry", client="phone"),
    Customer("Chris Delaney", "chris@delaney-legal.example", tz=-5, client="html"),
    Customer("Aisha Rahman", "aisha@rahman-tutoring.example", tz=4),
    Customer("Ben Turner", "ben.turner@example.com", tz=0, persona="terse"),
    Customer("Megan Scott", "megan@scott-events.example", tz=-6, client="alt"),
    Customer("Ryan Walsh", "ryan@walsh-roofing.example", tz=-5, persona="angry"),
    Customer("Lars Nielsen", "lars@nielsen-it.example", tz=1),
    Customer("Ana Kovač", "ana.kovac@example.org", tz=1, client="alt"),
    Customer("Pedro Alves", "pedro@alves-cafe.example", tz=0, persona="vague", client="phone"),
    Customer("Wei Zhang", "wei.zhang@example.com", tz=8),
    Customer("Fatima Zahra El Amrani", "fatima@elamrani-import.example", tz=1, client="alt"),
    Customer("Oluwaseun Adeyemi", "seun@adeyemi-logistics.example", tz=1),
    Customer("Mia Rossi", "mia@rossi-gelato.example", tz=1, client="html"),
    Customer("Henrik Johansson", "henrik@example.org", tz=1, persona="terse"),
    # premium
    Customer("Victoria Hale", "victoria.hale@bigcorp.example", tz=-5, client="html"),
    Customer("Daniel Kim", "daniel.kim@bigcorp.example", tz=-8, client="alt"),
    Customer("Laura Mendes", "laura.mendes@bigcorp.example", tz=0, persona="angry", client="alt"),
    Customer("Sam Greene", "sam.greene@bigcorp.example", tz=-5),
    # German
    Customer("Jürgen Müller", "juergen.mueller@baeckerei-mueller.example", lang="de", tz=1),
    Customer("Anna Schäfer", "anna@schaefer-steuer.example", lang="de", tz=1, client="alt"),
    Customer("Klaus Weiß", "k.weiss@example.org", lang="de", tz=1, persona="angry"),
    Customer("Sabine Groß", "sabine@gross-gartenbau.example", lang="de", tz=1, persona="vague"),
    # French
    Customer("Amélie Dubois", "amelie@dubois-fleurs.example", lang="fr", tz=1, client="alt"),
    Customer("François Lefèvre", "f.lefevre@example.org", lang="fr", tz=1),
    Customer("Céline Moreau", "celine@moreau-architecture.example", lang="fr", tz=1, client="html"),
    # Spanish
    Customer("José García", "jose@garcia-taller.example", lang="es", tz=1),
    Customer("María Fernández", "maria.fernandez@example.com", lang="es", tz=-3, client="alt"),
    Customer("Iñigo Etxeberria", "inigo@etxeberria.example", lang="es", tz=1, persona="angry"),
    # Japanese
    Customer("田中 健", "tanaka@tanaka-shoji.example", lang="ja", tz=9),
    Customer("佐藤 花子", "sato.hanako@example.com", lang="ja", tz=9, client="alt"),
    # a few more English-speaking small businesses
    Customer("Rachel Nguyen", "rachel@nguyen-nails.example", tz=-8, client="phone"),
    Customer("Owen Price", "owen.price@example.org", tz=0),
    Customer("Isabel Cruz", "isabel@cruz-catering.example", tz=-6, client="alt"),
    Customer("George Adler", "george@adler-hvac.example", tz=-5, persona="angry"),
    Customer("Nora Fitzgerald", "nora@fitzgerald-books.example", tz=0),
)


# --------------------------------------------------------------------------- what they write

# (key, subject, body). Bodies are the customer's words, without greeting and
# signature; "{product}" is Ledgerly. Errors look like the real thing.
_EN_ISSUES: tuple[tuple[str, str, str], ...] = (
    ("login", "Can't log in after password reset",
     "I reset my password this morning using the link in your email, but now every time I try to log in "
     "I get \"Invalid email or password\". I've tried three times, copied the password from my password "
     "manager, same thing. Now it says my account is locked for 15 minutes.\n\n"
     "I need to send invoices today. Can you unlock it or tell me what I'm doing wrong?"),
    ("2fa", "2FA code never accepted",
     "Since I got a new phone, the codes from my authenticator app are always rejected "
     "(\"The code you entered is invalid or expired\"). The clock on the phone is set automatically. "
     "I have my recovery codes somewhere but not with me. How do I get back in?"),
    ("sso", "SSO login fails with AADSTS50011",
     "Our users can't sign in with Microsoft SSO since yesterday afternoon. They get:\n\n"
     "  AADSTS50011: The redirect URI 'https://app.ledgerly.example/auth/saml/callback' specified in the "
     "request does not match the redirect URIs configured for the application.\n\n"
     "We did not change anything on our side. Did the callback URL change?"),
    ("double-charge", "Charged twice for the annual plan",
     "My card was charged twice for the annual Pro plan on the same day, two identical charges of $348.00. "
     "The billing page only shows one invoice (INV-2024-0193). Please refund the duplicate charge."),
    ("vat", "VAT missing on your invoice to us",
     "The invoice you sent us for our subscription doesn't show our VAT number and charges VAT at the "
     "full rate, although we are a registered business in the EU (reverse charge). Our accountant can't "
     "book it like this. Could you reissue it with the reverse-charge note? VAT ID: DK12345678."),
    ("card-declined", "Payment failed: card_declined",
     "We got an email that our payment failed. In the billing settings it says "
     "\"card_declined: insufficient_funds\", but the card is fine, I just used it. "
     "Will our account be suspended? How can I retry the payment?"),
    ("downgrade", "How do I downgrade to the Starter plan?",
     "We're a smaller team now and don't need the Pro features anymore. I can't find a way to downgrade "
     "in the settings, only to cancel. Do I lose my invoice history if I switch?"),
    ("csv-umlauts", "CSV export breaks special characters",
     "When I export my customer list to CSV and open it in Excel, all names with accents come out as "
     "garbage, e.g. \"MÃ¼ller\" instead of \"Müller\" and \"CafÃ©\" instead of \"Café\". "
     "Is there a way to export with the right encoding?"),
    ("csv-timeout", "Export to CSV times out (504)",
     "Exporting all invoices for 2023 to CSV fails after about a minute with "
     "\"504 Gateway Time-out\". Exporting a single month works. We have about 11,000 invoices. "
     "Our auditor needs the full year by Friday."),
    ("csv-dates", "Dates in CSV export are in US format",
     "The invoice dates in the CSV export are written as 03/04/2024 which our accounting software reads "
     "as the 3rd of April instead of the 4th of March. Can I choose ISO dates (2024-03-04) somewhere?"),
    ("bank-sync", "Bank feed stuck since Tuesday",
     "Our bank feed hasn't synced since Tuesday. The status says \"Last synced 3 days ago\" and "
     "\"Sync in progress\" forever. Clicking \"Sync now\" does nothing. Payments are not matched to "
     "invoices, so reminders are going out to customers who already paid!"),
    ("stripe-dupes", "Stripe sync creates duplicate payments",
     "Every payment that comes in via Stripe now shows up twice on the invoice, so invoices show as "
     "overpaid. It started after I reconnected Stripe last week. Example: invoice INV-1042, two payments "
     "of EUR 120.00 both with reference ch_3OqT2aLkdIwHu7ix0b5Z1xyz."),
    ("qb-sync", "QuickBooks sync error SYNC-409",
     "The QuickBooks integration keeps failing with \"SYNC-409: Conflict - the customer record was "
     "modified in both systems\". It lists 27 customers. Which side wins? I don't want to lose the "
     "addresses we updated in Ledgerly."),
    ("api-429", "API returns 429 Too Many Requests",
     "Our nightly job that creates invoices via the API started failing with\n\n"
     "  HTTP/1.1 429 Too Many Requests\n  Retry-After: 60\n  {\"error\":\"rate_limited\",\"message\":\"Rate limit of 100 requests per minute exceeded\"}\n\n"
     "We only create about 400 invoices per night. Did the limit change? Is there a bulk endpoint?"),
    ("api-401", "401 invalid_token after rotating API key",
     "I rotated our API key in the settings and updated our integration, but every call now returns "
     "401 {\"error\":\"invalid_token\",\"error_description\":\"The access token is invalid or has been revoked\"}. "
     "The old key doesn't work either, obviously. Request id: req_8f3a2c91d4e7."),
    ("webhook", "Webhook signature verification fails",
     "Since Monday our endpoint rejects your webhooks because the Ledgerly-Signature header doesn't match "
     "the HMAC-SHA256 of the body with our signing secret. Same code worked for a year. "
     "Did the signing scheme change (timestamp prefix?)"),
    ("api-500", "500 error when creating an invoice with line item discount",
     "POST /v2/invoices returns 500 Internal Server Error when a line item has a discount_percent with "
     "decimals (12.5). With 12 it works. Response body: {\"error\":\"internal\",\"request_id\":\"req_41b0e6a7\"}."),
    ("pdf-logo", "Logo missing on PDF invoices",
     "I uploaded our logo (PNG, 400x120) in the branding settings and it shows in the preview, but the "
     "PDF that goes to the customer has an empty box where the logo should be. Tried re-uploading."),
    ("recurring", "Recurring invoices were not sent this month",
     "None of our 34 recurring invoices went out on the 1st. They are all in \"Scheduled\" state with a "
     "date in the past. Last month it worked. Please check, our cash flow depends on this."),
    ("numbering", "Invoice numbers started again from 1",
     "After I changed the invoice number prefix from INV- to 2024-, the numbering restarted at 2024-0001. "
     "We already had 2024-0001 from a manual series, so now we have duplicates, which is a problem for "
     "the tax office. Can you set the next number to 2024-0218?"),
    ("reminders-spam", "Payment reminders land in customers' spam",
     "Several customers told us our payment reminders end up in their spam folder. "
     "Do you sign the emails (SPF/DKIM) for our custom sender address billing@ourcompany? "
     "What DNS records do we need?"),
    ("team", "Adding a team member",
     "How do I invite our new bookkeeper so she can see invoices but not change the bank settings? "
     "Is there a read-only role?"),
    ("multi-currency", "Multi-currency invoices?",
     "We have clients in the UK and the US. Can one account send invoices in GBP and USD and report "
     "everything in EUR? I couldn't find it in the docs."),
    ("mobile", "Mobile app crashes when attaching a receipt",
     "The iPhone app (version 4.12.1, iOS 17.4) crashes every time I take a photo of a receipt to attach "
     "to an expense. The app just closes. Attaching from the photo library works."),
    ("slow", "Dashboard very slow",
     "The dashboard takes 20-30 seconds to load since last week, the invoice list too. "
     "Other websites are fast. We have around 9,000 invoices. Is something wrong on your side?"),
)

_ANGRY_OPENERS = (
    "This is the third time I'm writing about this and nobody has answered.",
    "I am extremely frustrated.",
    "Honestly, this is unacceptable for a service we pay for.",
    "I have been a customer for four years and I have never been this annoyed.",
)
_ANGRY_CLOSERS = (
    "If this isn't fixed today I'm cancelling and moving to another provider.",
    "I expect a real answer, not a canned response.",
    "Please escalate this to someone who can actually fix it.",
    "Fix this NOW.",
)
_VAGUE = (
    ("nothing works!", "nothing works!! please fix it asap"),
    ("HELP", "help!!! i can't do anything in the app, it's totally broken"),
    ("it's broken again", "It's broken again. Same as last time. Please do something."),
    ("Problem", "Hi, it doesn't work. Can you fix it?"),
    ("urgent!!!", "Nothing is working and I need it today. Urgent!!"),
)
_VAGUE_DE = ("Geht nicht", "bei mir geht gar nichts mehr. Bitte dringend helfen!")

_NUDGES = (
    "Any update on this?",
    "Just following up on my message below, I haven't heard back yet.",
    "Hello? It's been two days. Is anyone reading these emails?",
    "Quick follow-up: this is still happening today.",
)
_NUDGES_ANGRY = (
    "STILL no answer. This is ridiculous.",
    "I'm still waiting. Two days now without a single reply. Not even an acknowledgement.",
)

# Our earlier replies (agent Robin) and the customers' answers to them.
_SUPPORT_REPLIES = (
    "I'm sorry about the trouble. I had a look at your account and I can see what you describe. "
    "Could you tell me which browser you use, and send me a screenshot of the error? "
    "Then I can pass it on to our engineers with everything they need.",
    "Thank you for the details. I've reproduced it on our side and opened a bug report for it. "
    "As a workaround you can do the export month by month for now. I'll write to you again as soon "
    "as I know when the fix is released.",
    "I've just checked: the change went out yesterday and it should work again now. "
    "Could you try once more and let me know if it does?",
    "I've refunded the duplicate charge; it should show on your statement within 5-10 business days. "
    "I'm sorry for the mix-up.",
    "That's possible, yes: under Settings > Team you can invite someone with the \"Viewer\" role. "
    "Viewers can see invoices and reports but can't change any settings.",
)
_CUSTOMER_ANSWERS_OK = (
    "That worked, thank you so much!",
    "Great, it's working again. Thanks for the quick help.",
    "Perfect, thanks. You can close this.",
    "Yes, that solved it. Have a nice day!",
)
_CUSTOMER_ANSWERS_MORE = (
    "I tried that but it still doesn't work. I'm using Chrome 123 on Windows 11. "
    "The error is exactly the same as before.",
    "Thanks for getting back to me. I tried it again just now and got a different error this time: "
    "\"Something went wrong (code E-5021)\". Screenshot attached.",
    "OK, but when will it be fixed? We can't do the export month by month for 11,000 invoices.",
    "Sorry, I don't understand what you mean. Where exactly do I find that setting?",
    "It worked for a day and now it's back. Same problem.",
)

_DE = (
    ("Fehler beim CSV-Export – Umlaute kaputt",
     "beim Export unserer Rechnungen als CSV werden alle Umlaute falsch dargestellt, aus »Müller« wird "
     "»MÃ¼ller« und aus »Größe« wird »GrÃ¶ÃŸe«. Unser Steuerberater kann die Datei so nicht einlesen.\n\n"
     "Gibt es eine Möglichkeit, die Datei in ISO-8859-1 oder mit BOM zu exportieren?"),
    ("Rechnung doppelt abgebucht",
     "uns wurde der Jahresbeitrag zweimal vom Konto abgebucht (2 × 348,00 €). "
     "Bitte erstatten Sie den doppelten Betrag zurück. Die Rechnungsnummer ist INV-2024-0211."),
    ("Bankabgleich funktioniert nicht mehr",
     "seit Dienstag werden keine Zahlungen mehr von unserer Bank übernommen. Der Status zeigt "
     "»Synchronisierung läuft«, aber es passiert nichts. Dadurch gehen Mahnungen an Kunden, die "
     "längst bezahlt haben. Das ist äußerst ärgerlich!"),
)
_FR = (
    ("Problème de connexion après la mise à jour",
     "depuis la mise à jour d'hier soir, je n'arrive plus à me connecter. Le message « Adresse e-mail "
     "ou mot de passe incorrect » s'affiche, alors que j'utilise le même mot de passe depuis des mois. "
     "J'ai essayé de le réinitialiser mais je ne reçois pas l'e-mail.\n\nMerci de votre aide."),
    ("Facture sans numéro de TVA",
     "la facture de notre abonnement ne mentionne pas notre numéro de TVA intracommunautaire "
     "(FR 12 345678901). Notre comptable ne peut pas l'enregistrer. Pourriez-vous la rééditer ?"),
    ("Export des factures : les accents disparaissent",
     "lorsque j'exporte mes factures en CSV, les caractères accentués (é, è, à, ç) sont remplacés par "
     "des symboles bizarres dans Excel. Comment puis-je corriger cela ?"),
)
_ES = (
    ("No puedo descargar las facturas en PDF",
     "desde esta mañana, cuando intento descargar una factura en PDF, aparece el error "
     "«Error 500: no se pudo generar el documento». Necesito enviar las facturas a mis clientes hoy. "
     "¿Podéis revisarlo, por favor?"),
    ("Cobro duplicado en mi tarjeta",
     "me habéis cobrado dos veces la suscripción anual (2 × 348,00 €). Adjunto el extracto del banco. "
     "¿Podéis devolverme el importe duplicado?"),
    ("La sincronización con el banco no funciona",
     "la conexión con el banco lleva tres días sin sincronizar. Dice «Sincronizando…» pero nunca termina. "
     "¿Es un problema general?"),
)
_JA = (
    ("請求書のPDFがダウンロードできません",
     "いつもお世話になっております。\n\n今朝から請求書のPDFをダウンロードしようとすると、"
     "「エラー500: ドキュメントを生成できませんでした」と表示されます。\n"
     "本日中に取引先へ送付する必要があるため、至急ご確認いただけますでしょうか。\n\nよろしくお願いいたします。"),
    ("CSVエクスポートの文字化けについて",
     "お世話になっております。\n\n顧客一覧をCSVでエクスポートしてExcelで開くと、日本語の会社名がすべて文字化けします。"
     "Shift_JISで出力する方法はありますか。\n\nよろしくお願いいたします。"),
)

_GREETING = {"en": "Hi,", "de": "Hallo,", "fr": "Bonjour,", "es": "Hola:", "ja": ""}
_THANKS = {
    "en": "Thanks,",
    "de": "Viele Grüße",
    "fr": "Cordialement,",
    "es": "Un saludo,",
    "ja": "",
}
_SIGNOFF_PHONE = "Sent from my iPhone"
_OOO_TEXT = (
    "Thank you for your email. I am out of the office until Monday with limited access to email. "
    "For urgent matters please contact accounts@{domain}.\n\nBest regards,\n{name}"
)
_FILLER = (
    "For context, we are a small business with five people and we use Ledgerly for all of our invoicing, "
    "the recurring billing for our maintenance contracts, and the reminders. Most of the time it works "
    "well, which is why this is so surprising.",
    "I have attached what I could find. Let me know if you need anything else from me, e.g. access to "
    "the account or the exact times when it happened. I can also do a screen share if that helps.",
    "We tried it on two different computers (one Windows laptop with Chrome, one Mac with Safari) and "
    "from the office network and from home, with the same result, so I don't think it's our network.",
    "Our accountant needs the numbers for the quarterly VAT return by the end of next week, so it would "
    "be great if we could sort this out before then. Thank you for looking into it.",
    "I also checked your status page but it says all systems are operational. Maybe it only affects "
    "some accounts? Our account was created in 2019, in case it's something to do with old data.",
    "Steps: open Invoices, filter by last year, click Export, choose CSV, wait. After a while the "
    "spinner disappears and nothing is downloaded; sometimes there's a red banner at the top.",
)


# --------------------------------------------------------------------------- MIME helpers

_QP_UTF8 = email.charset.Charset("utf-8")
_QP_UTF8.header_encoding = email.charset.QP
_B_UTF8 = email.charset.Charset("utf-8")
_B_UTF8.header_encoding = email.charset.BASE64
_QP_LATIN1 = email.charset.Charset("iso-8859-1")
_QP_LATIN1.header_encoding = email.charset.QP


def _encode_header(value: str, charset: str = "utf-8", encoding: str = "q", name: str = "Subject") -> str:
    """RFC 2047 for non-ASCII values (folded); ASCII values as they are."""
    if value.isascii():
        return value
    if charset == "iso-2022-jp":
        raw = value.encode("iso-2022-jp")
        return f"=?ISO-2022-JP?B?{base64.b64encode(raw).decode()}?="
    if charset == "iso-8859-1":
        try:
            value.encode("iso-8859-1")
        except UnicodeEncodeError:
            charset = "utf-8"
    cs = {"utf-8": _QP_UTF8 if encoding == "q" else _B_UTF8, "iso-8859-1": _QP_LATIN1}[charset]
    return email.header.Header(value, cs, header_name=name).encode(linesep="\r\n")


def _addr(name: str, address: str, charset: str = "utf-8") -> str:
    if not name:
        return address
    if name.isascii():
        return email.utils.formataddr((name, address))
    return f"{_encode_header(name, charset, 'b', 'From')} <{address}>"


def _date(dt: datetime, tz_hours: float = 0.0) -> str:
    local = dt.astimezone(timezone(timedelta(hours=tz_hours)))
    return email.utils.format_datetime(local)


def _text_leaf(text: str, subtype: str = "plain", charset: str = "utf-8", cte: str | None = None):
    """(headers, body bytes) of a text part."""
    try:
        data = text.replace("\r\n", "\n").encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
        data = text.replace("\r\n", "\n").encode(charset)
    if cte is None:
        if data.isascii():
            cte = "7bit"
        elif charset == "iso-2022-jp":
            cte = "7bit"
        else:
            cte = "quoted-printable"
    if cte == "quoted-printable":
        body = quopri.encodestring(data).replace(b"\n", b"\r\n")
    elif cte == "base64":
        body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    else:
        body = data.replace(b"\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    headers = [
        ("Content-Type", f"text/{subtype}; charset={charset if charset != 'iso-2022-jp' else 'ISO-2022-JP'}"),
        ("Content-Transfer-Encoding", cte),
    ]
    return headers, body


def _attachment_leaf(filename: str, ctype: str, data: bytes):
    """(headers, body) of a base64 attachment; non-ASCII names per RFC 2231."""
    if filename.isascii() and '"' not in filename:
        disp = f'attachment; filename="{filename}"'
        ctype_h = f'{ctype}; name="{filename}"'
    else:
        from urllib.parse import quote

        q = quote(filename, safe="")
        disp = f"attachment; filename*=utf-8''{q}"
        ctype_h = f"{ctype}; name*=utf-8''{q}"
    body = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return [("Content-Type", ctype_h), ("Content-Disposition", disp), ("Content-Transfer-Encoding", "base64")], body


def _headers_bytes(headers) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode("utf-8")


def _multipart(subtype: str, parts, boundary: str, params: str = ""):
    out = [b"This is a multi-part message in MIME format.\r\n"]
    for h, b in parts:
        out.append(b"\r\n--" + boundary.encode() + b"\r\n" + _headers_bytes(h) + b"\r\n" + b)
    out.append(b"\r\n--" + boundary.encode() + b"--\r\n")
    headers = [("Content-Type", f'multipart/{subtype}; boundary="{boundary}"{params}')]
    return headers, b"".join(out)


def _assemble(top_headers, content) -> bytes:
    ch, body = content
    return _headers_bytes([*top_headers, ("MIME-Version", "1.0"), *ch]) + b"\r\n" + body


def _boundary(rng: random.Random) -> str:
    return f"----=_Part_{rng.getrandbits(32):08x}{rng.getrandbits(32):08x}"


def _html_of(text: str, style: str = "outlook") -> str:
    import html as _html

    paras = "".join(
        f"<p>{_html.escape(p).replace(chr(10), '<br>')}</p>\n" for p in text.split("\n\n") if p.strip()
    )
    if style == "outlook":
        return (
            '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>'
            '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            "<style><!-- p.MsoNormal {margin:0cm; font-size:11.0pt; font-family:\"Calibri\",sans-serif;} --></style>"
            '</head><body lang="EN-US" link="#0563C1"><div class="WordSection1">\n'
            f"{paras}"
            '<p class="MsoNormal"><img width="1" height="1" src="http://tracker.example.com/open.gif?id=8812"></p>'
            "</div></body></html>\n"
        )
    return f'<html><head></head><body style="font-family: -apple-system, Helvetica">\n{paras}</body></html>\n'


def _png(rng: random.Random, w: int = 16, h: int = 16) -> bytes:
    """A small valid PNG (a flat-colour screenshot stand-in)."""
    colour = bytes((rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    raw = b"".join(b"\x00" + colour * w for _ in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _pdf(text: str) -> bytes:
    """A minimal valid one-page PDF showing *text* (ASCII)."""
    safe = text.encode("ascii", "replace").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    stream = b"BT /F1 12 Tf 72 720 Td (" + safe + b") Tj ET"
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + o + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    for off in offsets:
        out += f"{off:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def _log_text(rng: random.Random, lines: int = 30) -> bytes:
    base = datetime(2024, 3, 4, 9, 12, 0)
    out = []
    for i in range(lines):
        t = base + timedelta(seconds=i * rng.randint(1, 9))
        level = rng.choice(("INFO", "INFO", "INFO", "WARN", "ERROR"))
        msg = rng.choice(
            (
                "GET /v2/invoices?page=%d 200 in %dms" % (rng.randint(1, 40), rng.randint(40, 900)),
                "POST /v2/invoices 429 rate_limited retry_after=60",
                "sync.bank: fetching transactions since 2024-03-01",
                "sync.bank: upstream timeout after 30000ms (ETIMEDOUT)",
                "export.csv: job 7f3c started rows=11204",
                "export.csv: job 7f3c failed: 504 Gateway Time-out",
                "webhook: signature mismatch expected=sha256=9c1e... got=sha256=41aa...",
            )
        )
        out.append(f"{t:%Y-%m-%dT%H:%M:%S}Z {level:5} {msg}")
    return ("\n".join(out) + "\n").encode()


def _quote(text: str, who: str, when: datetime) -> str:
    quoted = "\n".join("> " + line if line else ">" for line in text.strip("\n").split("\n"))
    return f"On {email.utils.format_datetime(when)}, {who} wrote:\n{quoted}\n"


# --------------------------------------------------------------------------- demo

_MSGID_DOMAINS = ("mail.example.com", "mx.example.org", "smtp.example.com", "outlook.example.com")


class _DemoBuilder:
    def __init__(self, now: datetime, support_address: str, seed: int) -> None:
        if now.tzinfo is None:
            now = now.replace(tzinfo=timezone.utc)
        self.now = now
        self.support = support_address
        self.support_domain = support_address.rsplit("@", 1)[-1]
        self.rng = random.Random(seed)
        self.inbox: list[tuple[datetime, int, bytes]] = []
        self.sent: list[tuple[datetime, int, bytes]] = []
        self._n = 0

    # ids and headers ---------------------------------------------------------
    def msgid(self, domain: str | None = None) -> str:
        rng = self.rng
        domain = domain or rng.choice(_MSGID_DOMAINS)
        return f"<{rng.getrandbits(40):010x}.{rng.getrandbits(24):06x}@{domain}>"

    def _add(self, box: list, when: datetime, raw: bytes) -> None:
        self._n += 1
        box.append((when, self._n, raw))

    # one customer message -----------------------------------------------------
    def customer_mail(
        self,
        c: Customer,
        when: datetime,
        subject: str,
        text: str,
        *,
        in_reply_to: str | None = None,
        references: list[str] = (),
        attachments: list[tuple[str, str, bytes]] = (),
        client: str | None = None,
        charset: str | None = None,
        extra_headers: list[tuple[str, str]] = (),
        msgid: str | None = None,
        raw_subject: bool = False,
        cte: str | None = None,
    ) -> tuple[str, bytes]:
        rng = self.rng
        client = client or c.client
        msgid = msgid or self.msgid(c.address.rsplit("@", 1)[-1] if rng.random() < 0.5 else None)
        charset = charset or {"de": "iso-8859-1", "ja": "utf-8"}.get(c.lang, "utf-8")
        if c.lang == "ja" and c.client == "plain":
            charset = "iso-2022-jp"  # Japanese mail clients still do this
        hcharset = "iso-8859-1" if charset == "iso-8859-1" else ("iso-2022-jp" if charset == "iso-2022-jp" else "utf-8")
        try:
            text.encode(charset)
        except UnicodeEncodeError:
            charset, hcharset = "utf-8", "utf-8"
        if raw_subject:
            subj_h = subject  # raw UTF-8 in the header (some clients do this)
        else:
            subj_h = _encode_header(subject, hcharset, "b" if c.lang in ("es", "ja") else "q")
        headers = [
            ("Return-Path", f"<{c.address}>"),
            ("From", _addr(c.name, c.address, "utf-8")),
            ("To", self.support),
            ("Subject", subj_h),
            ("Date", _date(when, c.tz)),
            ("Message-ID", msgid),
        ]
        if in_reply_to:
            headers.append(("In-Reply-To", in_reply_to))
        if references:
            headers.append(("References", "\r\n ".join(references)))
        if c.lang != "en":
            headers.append(("Content-Language", {"ja": "ja-JP", "de": "de-DE", "fr": "fr-FR", "es": "es-ES"}[c.lang]))
        if client == "phone":
            headers.append(("X-Mailer", "iPhone Mail (21E236)"))
        elif client == "html" or c.premium:
            headers.append(("X-Mailer", "Microsoft Outlook 16.0"))
        headers.extend(extra_headers)
        if cte is None and charset == "utf-8" and not text.isascii():
            cte = rng.choice(("quoted-printable", "8bit", "base64"))
        if client == "html":
            body = _text_leaf(_html_of(text, "outlook"), "html", charset if charset != "iso-2022-jp" else "utf-8", cte)
        elif client == "alt":
            body = _multipart(
                "alternative",
                [
                    _text_leaf(text, "plain", charset, cte),
                    _text_leaf(_html_of(text, "apple"), "html", charset, cte),
                ],
                _boundary(rng),
            )
        else:
            body = _text_leaf(text, "plain", charset, cte)
        if attachments:
            parts = [body]
            for fname, ctype, data in attachments:
                parts.append(_attachment_leaf(fname, ctype, data))
            body = _multipart("mixed", parts, _boundary(rng))
        return msgid, _assemble(headers, body)

    def compose_text(self, c: Customer, body: str, *, persona: str | None = None, quote: str = "",
                     attached: bool = False) -> str:
        """The customer's text; ``attached``: the mail carries a file (only then may it say "I have attached")."""
        rng = self.rng
        persona = persona or c.persona
        greeting = _GREETING[c.lang]
        parts = []
        if greeting:
            parts.append(greeting)
        if persona == "angry" and c.lang == "en":
            parts.append(rng.choice(_ANGRY_OPENERS))
        parts.append(body)
        if persona == "angry" and c.lang == "en":
            parts.append(rng.choice(_ANGRY_CLOSERS))
        elif persona == "calm" and c.lang == "en" and rng.random() < 0.35:
            filler = rng.choice(_FILLER)
            parts.append(filler if attached or not filler.startswith("I have attached") else _FILLER[0])
        sign = _THANKS[c.lang]
        signature = c.name if c.lang != "ja" else f"{c.name}\n{c.address.split('@')[1].split('.')[0]}"
        if persona == "terse":
            signature = c.first
        parts.append(f"{sign}\n{signature}" if sign else signature)
        if c.client == "phone":
            parts.append(_SIGNOFF_PHONE)
        text = "\n\n".join(parts) + "\n"
        if quote:
            text += "\n" + quote
        return text

    def support_reply(self, c: Customer, when: datetime, subject: str, text: str, in_reply_to: str, references: list[str]) -> tuple[str, bytes]:
        msgid = self.msgid(self.support_domain)
        greet = {"de": "Hallo", "fr": "Bonjour", "es": "Hola", "ja": ""}.get(c.lang, "Hi")
        name = c.first if c.lang != "ja" else c.name.split()[0] + "様"
        body = f"{greet} {name},\n\n{text}\n\nBest,\n{AGENT_NAME}\n{PRODUCT} Support\n" if greet else f"{name}\n\n{text}\n\n{AGENT_NAME}\n{PRODUCT} Support\n"
        headers = [
            ("From", _addr(f"{AGENT_NAME} ({PRODUCT} Support)", self.support)),
            ("To", _addr(c.name, c.address)),
            ("Subject", _encode_header(_re(subject))),
            ("Date", _date(when, 0)),
            ("Message-ID", msgid),
            ("In-Reply-To", in_reply_to),
            ("References", "\r\n ".join(references)),
        ]
        return msgid, _assemble(headers, _text_leaf(body))

    # threads ------------------------------------------------------------------
    def issue_for(self, c: Customer) -> tuple[str, str, str]:
        rng = self.rng
        if c.persona == "vague":
            if c.lang == "de":
                return ("vague", *_VAGUE_DE)
            subj, body = rng.choice(_VAGUE)
            return ("vague", subj, body)
        pool = {"de": _DE, "fr": _FR, "es": _ES, "ja": _JA}.get(c.lang)
        if pool:
            subj, body = rng.choice(pool)
            return ("intl", subj, body)
        key, subj, body = rng.choice(_EN_ISSUES)
        if c.persona == "angry" and rng.random() < 0.6:
            subj = subj.upper() + rng.choice(("!!!", "!!", " - URGENT"))
        return key, subj, body

    def attachments_for(self, key: str, c: Customer) -> list[tuple[str, str, bytes]]:
        rng = self.rng
        if key in ("login", "2fa", "pdf-logo", "sso", "mobile", "slow") and rng.random() < 0.6:
            return [(rng.choice(("screenshot.png", "Screenshot 2024-03-04 at 09.41.12.png", "IMG_2041.PNG")), "image/png", _png(rng))]
        if key in ("api-429", "csv-timeout", "bank-sync", "webhook") and rng.random() < 0.6:
            return [("ledgerly-sync.log", "text/plain", _log_text(rng, rng.randint(20, 60)))]
        if key in ("double-charge", "vat", "numbering") and rng.random() < 0.6:
            return [(f"invoice-INV-2024-{rng.randint(100, 999)}.pdf", "application/pdf", _pdf("Invoice INV-2024 Ledgerly Pro plan 348.00"))]
        if key == "csv-umlauts":
            csv = "Name;Stadt;Betrag\r\nMüller GmbH;Köln;120,00\r\nCafé Olé;Paris;80,50\r\n".encode("utf-8").decode("latin-1").encode("utf-8")
            return [("kunden-export.csv", "text/csv", csv)]
        return []

    def thread(self, c: Customer, start: datetime, shape: str) -> None:
        rng = self.rng
        key, subject, body = self.issue_for(c)
        atts = self.attachments_for(key, c) if rng.random() < 0.7 else []
        text = self.compose_text(c, body, attached=bool(atts))
        raw_subject = c.lang == "es" and rng.random() < 0.3
        first_id, raw = self.customer_mail(c, start, subject, text, attachments=atts, raw_subject=raw_subject)
        self._add(self.inbox, start, raw)
        refs = [first_id]
        last_customer_text = text
        t = start
        limit = self.now - timedelta(minutes=3)

        def later(lo_h: float, hi_h: float) -> datetime | None:
            nonlocal t
            nt = t + timedelta(hours=rng.uniform(lo_h, hi_h))
            if nt >= limit:
                return None
            t = nt
            return nt

        if shape == "single":
            return
        if shape == "nudge":
            when = later(6, 40)
            if when is None:
                return
            nudge = rng.choice(_NUDGES_ANGRY if c.persona == "angry" else _NUDGES)
            if c.lang == "de":
                nudge = "Gibt es hierzu schon etwas Neues? Ich warte noch auf eine Antwort."
            elif c.lang == "fr":
                nudge = "Avez-vous du nouveau ? Je n'ai toujours pas de réponse."
            elif c.lang == "es":
                nudge = "¿Alguna novedad? Sigo esperando una respuesta."
            elif c.lang == "ja":
                nudge = "先日お問い合わせした件について、その後いかがでしょうか。"
            q = _quote(last_customer_text, _addr(c.name, c.address), start)
            _, raw = self.customer_mail(c, when, _re(subject), self.compose_text(c, nudge, quote=q), in_reply_to=first_id, references=list(refs))
            self._add(self.inbox, when, raw)
            return
        rounds = {"answered": 1, "solved": 1, "long": rng.randint(2, 3)}[shape]
        parent = first_id
        for r in range(rounds):
            when = later(2, 30)
            if when is None:
                return
            reply_text = rng.choice(_SUPPORT_REPLIES)
            sid, sraw = self.support_reply(c, when, subject, reply_text, parent, refs)
            self._add(self.sent, when, sraw)
            refs = refs + [sid]
            replied_at = when
            when = later(0.5, 26)
            if when is None:
                return
            last = r == rounds - 1
            answer = rng.choice(_CUSTOMER_ANSWERS_OK if (shape == "solved" or (last and rng.random() < 0.4)) else _CUSTOMER_ANSWERS_MORE)
            if c.lang == "de":
                answer = "Danke für die schnelle Antwort. Leider besteht das Problem weiterhin."
            elif c.lang == "fr":
                answer = "Merci pour votre réponse, mais le problème persiste."
            elif c.lang == "es":
                answer = "Gracias por la respuesta. Ya funciona, ¡mil gracias!"
            elif c.lang == "ja":
                answer = "ご回答ありがとうございます。再度試しましたが、まだ同じエラーが表示されます。"
            q = _quote(reply_text, f"{AGENT_NAME} ({PRODUCT} Support) <{self.support}>", replied_at)
            extra_atts = []
            if "Screenshot attached" in answer:
                extra_atts = [("error-E-5021.png", "image/png", _png(rng))]
            # Some clients drop References and keep only In-Reply-To.
            r_refs = refs if rng.random() < 0.85 else []
            cid, craw = self.customer_mail(c, when, _re(subject), self.compose_text(c, answer, quote=q, attached=bool(extra_atts)), in_reply_to=sid, references=r_refs, attachments=extra_atts)
            self._add(self.inbox, when, craw)
            refs = refs + [cid]
            parent = cid
            last_customer_text = answer

    # the special ones ---------------------------------------------------------
    def out_of_office(self, c: Customer, when: datetime) -> None:
        # An auto-reply to one of our replies, from a customer's mail server.
        subject = "Re: Your invoice export"
        ssubj = "Your invoice export"
        _, sraw = self.support_reply(c, when - timedelta(minutes=2), ssubj, "I'll look into the export for you today and write again by tomorrow.", self.msgid(), [])
        m = re.search(rb"Message-ID: (<[^>]+>)", sraw)
        sid = m.group(1).decode()
        self._add(self.sent, when - timedelta(minutes=2), sraw)
        domain = c.address.rsplit("@", 1)[-1]
        text = _OOO_TEXT.format(domain=domain, name=c.name)
        _, raw = self.customer_mail(
            c,
            when,
            f"Automatic reply: {subject[4:]}",
            text + "\n",
            in_reply_to=sid,
            references=[sid],
            client="plain",
            extra_headers=[
                ("Auto-Submitted", "auto-replied"),
                ("X-Auto-Response-Suppress", "All"),
                ("X-Autoreply", "yes"),
                ("Precedence", "auto_reply"),
            ],
        )
        self._add(self.inbox, when, raw)

    def bounce(self, when: datetime) -> None:
        # We replied to a mistyped address; the receiving server bounced it.
        bad = "grace.okafr@example.org"
        fake = Customer("Grace Okafor", bad)
        _, sraw = self.support_reply(fake, when - timedelta(minutes=1), "Refund for the duplicate charge", "I've refunded the duplicate charge.", self.msgid(), [])
        self._add(self.sent, when - timedelta(minutes=1), sraw)
        orig_headers = sraw.split(b"\r\n\r\n", 1)[0] + b"\r\n"
        orig_id = re.search(rb"Message-ID: (<[^>]+>)", sraw).group(1).decode()
        rng = self.rng
        human = (
            "This is the mail system at host mx.example.org.\n\n"
            "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients. It's attached below.\n\n"
            f"<{bad}>: host mx.example.org[192.0.2.25] said: 550 5.1.1\n"
            f"    <{bad}>: Recipient address rejected: User unknown in virtual mailbox\n"
            "    table (in reply to RCPT TO command)\n"
        )
        status = (
            "Reporting-MTA: dns; mx.example.org\r\n"
            f"X-Postfix-Queue-ID: 4T{rng.getrandbits(32):08X}\r\n"
            f"Arrival-Date: {_date(when - timedelta(seconds=30))}\r\n"
            "\r\n"
            f"Final-Recipient: rfc822; {bad}\r\n"
            f"Original-Recipient: rfc822;{bad}\r\n"
            "Action: failed\r\n"
            "Status: 5.1.1\r\n"
            "Remote-MTA: dns; mx.example.org\r\n"
            f"Diagnostic-Code: smtp; 550 5.1.1 <{bad}>: Recipient address rejected: User unknown\r\n"
        ).encode()
        parts = [
            ([("Content-Description", "Notification"), *_text_leaf(human)[0]], _text_leaf(human)[1]),
            ([("Content-Description", "Delivery report"), ("Content-Type", "message/delivery-status")], status),
            ([("Content-Description", "Undelivered Message Headers"), ("Content-Type", "text/rfc822-headers")], orig_headers),
        ]
        body = _multipart("report", parts, _boundary(rng), params="; report-type=delivery-status")
        headers = [
            ("Return-Path", "<>"),
            ("From", "MAILER-DAEMON@mx.example.org (Mail Delivery System)"),
            ("To", self.support),
            ("Subject", "Undelivered Mail Returned to Sender"),
            ("Date", _date(when)),
            ("Message-ID", self.msgid("mx.example.org")),
            ("In-Reply-To", orig_id),
            ("References", orig_id),
            ("Auto-Submitted", "auto-replied"),
        ]
        self._add(self.inbox, when, _assemble(headers, body))

    def mailing_list(self, when: datetime) -> None:
        text = (
            "Payments Weekly - issue 112\n\n"
            "* The new EU instant-payments regulation: what invoicing tools need to change\n"
            "* Webinar: reconciling bank feeds at scale (Thursday)\n"
            "* Community question of the week: how do you handle partial refunds?\n\n"
            "You are receiving this because you subscribed to payments-weekly@lists.example.org.\n"
            "Unsubscribe: https://lists.example.org/unsubscribe/payments-weekly\n"
        )
        headers = [
            ("Return-Path", "<payments-weekly-bounces+support=ledgerly.example@lists.example.org>"),
            ("From", '"Payments Weekly" <payments-weekly@lists.example.org>'),
            ("To", "payments-weekly@lists.example.org"),
            ("Subject", "[Payments Weekly] Issue 112: instant payments, bank feeds, partial refunds"),
            ("Date", _date(when)),
            ("Message-ID", self.msgid("lists.example.org")),
            ("List-Id", "Payments Weekly <payments-weekly.lists.example.org>"),
            ("List-Unsubscribe", "<https://lists.example.org/unsubscribe/payments-weekly>, <mailto:payments-weekly-leave@lists.example.org>"),
            ("List-Post", "NO"),
            ("Precedence", "list"),
        ]
        self._add(self.inbox, when, _assemble(headers, _text_leaf(text)))

    def noreply_notice(self, when: datetime) -> None:
        text = (
            "Your scheduled report \"Monthly revenue\" is ready.\n\n"
            "This is an automated message, please do not reply.\n"
        )
        headers = [
            ("From", '"Status Monitor" <no-reply@status.example.com>'),
            ("To", self.support),
            ("Subject", "Scheduled report ready: Monthly revenue"),
            ("Date", _date(when)),
            ("Message-ID", self.msgid("status.example.com")),
            ("Auto-Submitted", "auto-generated"),
            ("Precedence", "bulk"),
        ]
        self._add(self.inbox, when, _assemble(headers, _text_leaf(text)))

    def hostile(self, when: datetime, which: int) -> None:
        rng = self.rng
        if which == 0:
            subject = "[b]URGENT[/b] refund [@click=app.quit]click here[/] [link=http://x.example]now[/link]"
            text = (
                "Hi [bold red]support[/bold red],\n\n"
                "Please process my refund: [@click=app.quit]confirm[/]\n"
                "[link=http://phish.example/login]Log in to Ledgerly[/link] to see the details.\n"
                "\x1b[31mRED ALERT\x1b[0m \x1b[2J\x1b[H"
                "\x1b]8;;http://phish.example/\x07totally safe link\x1b]8;;\x07\n"
                "Title change: \x1b]0;pwned\x07 and a bell \x07 and a DEL \x7f and C1 \x9b31m.\n\n"
                "[/]\n"
            )
            msgid, raw = self.customer_mail(
                Customer("[red]Admin[/red] \u202eevil", "refunds@phish.example"),
                when,
                subject,
                text,
                client="plain",
                cte="8bit",  # the escapes travel raw
            )
            self._add(self.inbox, when, raw)
        else:
            # A bidi override in an attachment name: shows as "invoiceexe.pdf" but is "invoice\u202efdp.exe".
            # The "[#0001]" in its subject is a guessed ticket tag: it starts a ticket of its own.
            text = (
                "Hello,\n\nplease find our overdue invoice attached, pay today to avoid fees.\n\n"
                "Accounts Receivable\n"
            )
            evil = Customer("Accounts Receivable", "ar@billing-notice.example")
            attach = [
                ("invoice\u202efdp.exe", "application/octet-stream", b"MZ\x90\x00" + bytes(rng.randrange(256) for _ in range(60))),
                ("../../.bashrc", "text/plain", b"echo pwned\n"),
            ]
            _, raw = self.customer_mail(evil, when, "Overdue invoice \u202e[#0001]", text, attachments=attach, client="plain")
            self._add(self.inbox, when, raw)

    # the whole backlog -------------------------------------------------------
    def build(self) -> None:
        rng = self.rng
        now = self.now
        span = timedelta(days=14)
        shapes = ("single", "single", "single", "nudge", "answered", "answered", "long", "solved")
        # Every customer writes at least once; some twice (a new topic later).
        for i, c in enumerate(CUSTOMERS):
            n_threads = 1 + (rng.random() < 0.35)
            for k in range(n_threads):
                age = timedelta(seconds=rng.uniform(600, span.total_seconds()))
                if i % 7 == 0 and k == 0:
                    age = timedelta(minutes=rng.uniform(10, 300))  # a few fresh ones
                shape = rng.choice(shapes)
                if c.persona == "vague":
                    shape = rng.choice(("single", "single", "answered"))
                if c.premium and k == 0:
                    shape = rng.choice(("answered", "long", "single"))
                self.thread(c, now - age, shape)
        self.out_of_office(CUSTOMERS[9], now - timedelta(days=3, hours=2))
        self.bounce(now - timedelta(days=2, hours=5))
        self.mailing_list(now - timedelta(days=4, hours=7))
        self.noreply_notice(now - timedelta(days=1, hours=3))
        self.hostile(now - timedelta(days=5, hours=1), 0)
        self.hostile(now - timedelta(hours=20), 1)
        # Top up to 150+ with more first mails (busy fortnight).
        i = 0
        while len(self.inbox) < 160:
            c = CUSTOMERS[(i * 17 + 5) % len(CUSTOMERS)]
            i += 1
            self.thread(c, now - timedelta(seconds=rng.uniform(600, span.total_seconds())), rng.choice(("single", "nudge", "answered")))


def _re(subject: str) -> str:
    return subject if re.match(r"(?i)^(re|aw|sv|antw|r|rif)\s*:", subject) else f"Re: {subject}"


def _sorted(box) -> list[bytes]:
    return [raw for _, _, raw in sorted(box, key=lambda x: (x[0], x[1]))]


def demo_backlog(now: datetime, support_address: str, seed: int = 7) -> list[bytes]:
    """The demo's support inbox: 150+ messages from 40+ senders over the last
    two weeks before *now*, oldest first. Our own earlier replies, which some
    of these answer, are :func:`demo_sent` (same arguments)."""
    b = _DemoBuilder(now, support_address, seed)
    b.build()
    return _sorted(b.inbox)


def demo_sent(now: datetime, support_address: str, seed: int = 7) -> list[bytes]:
    """Our earlier replies in the demo backlog (for a Sent folder), oldest first."""
    b = _DemoBuilder(now, support_address, seed)
    b.build()
    return _sorted(b.sent)


# --------------------------------------------------------------------------- live demo


_HDR_RE = re.compile(rb"^([A-Za-z0-9-]+):[ \t]*(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)


def _headers_of(raw: bytes) -> dict[str, str]:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    head = raw[: end if end >= 0 else len(raw)]
    out: dict[str, str] = {}
    for m in _HDR_RE.finditer(head):
        name = m.group(1).decode("ascii", "replace").lower()
        value = re.sub(r"\r?\n[ \t]+", " ", m.group(2).decode("utf-8", "replace")).strip()
        out.setdefault(name, value)
    return out


def _decode(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


def _customer_for(address: str) -> Customer:
    for c in CUSTOMERS:
        if c.address.lower() == address.lower():
            return c
    local = address.split("@", 1)[0]
    name = " ".join(p.capitalize() for p in re.split(r"[._-]+", local) if p) or address
    return Customer(name, address)


def customer_reply(to_message: bytes, seed: int, now: datetime | None = None) -> bytes:
    """The customer's answer to *to_message* (a reply the agent sent them):
    From the original To, to the original From, ``Re:`` subject,
    In-Reply-To/References threaded, the agent's text quoted."""
    rng = random.Random(seed)
    h = _headers_of(to_message)
    to_name, to_addr = email.utils.parseaddr(h.get("to", ""))
    _, support = email.utils.parseaddr(h.get("from", ""))
    support = support or "support@ledgerly.example"
    c = _customer_for(to_addr or "customer@example.com")
    if to_name and c not in CUSTOMERS:
        c = Customer(_decode(to_name), c.address)
    subject = _decode(h.get("subject", ""))
    parent = h.get("message-id", "").strip()
    refs = h.get("references", "").split()
    if parent:
        refs = [r for r in refs if r != parent] + [parent]
    when = now or (email.utils.parsedate_to_datetime(h["date"]) + timedelta(minutes=rng.randint(3, 90)) if "date" in h else datetime(2024, 1, 1, tzinfo=timezone.utc))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    # What did the agent write? (first text part, roughly, for the quote)
    try:
        msg = email.message_from_bytes(to_message)
        part = next((p for p in msg.walk() if p.get_content_type() == "text/plain"), None)
        agent_text = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8", "replace") if part else ""
    except Exception:
        agent_text = ""
    lowered = agent_text.lower()
    if c.lang == "en" or c.lang not in ("de", "fr", "es", "ja"):
        if any(w in lowered for w in ("could you", "can you", "please send", "which", "?")):
            answer = rng.choice(
                (
                    "Sure. I'm on Chrome 124 on a Mac (macOS 14.4). The exact error is \"Something went wrong (code E-5021)\". "
                    "It happens every time I click Export.",
                    "Here is what you asked for: it started on Monday around 10:00, and it happens for all of our users. "
                    "Screenshot attached.",
                    "I tried again just now, same result. Browser is Firefox 125, and I cleared the cache before.",
                )
            )
        elif any(w in lowered for w in ("fixed", "should work", "released", "refunded", "resolved")):
            answer = rng.choice(_CUSTOMER_ANSWERS_OK + ("Hmm, it still fails for me, sorry. Same error as before.",))
        else:
            answer = rng.choice(_CUSTOMER_ANSWERS_OK + _CUSTOMER_ANSWERS_MORE)
        if c.persona == "angry" and rng.random() < 0.5:
            answer += " " + rng.choice(_ANGRY_CLOSERS)
    else:
        answer = {
            "de": "Danke für Ihre Antwort! Ich habe es eben noch einmal versucht, jetzt funktioniert es.",
            "fr": "Merci beaucoup pour votre réponse, cela fonctionne maintenant.",
            "es": "Muchas gracias, ya funciona correctamente.",
            "ja": "ご対応いただきありがとうございます。問題が解決しました。",
        }[c.lang]
    b = _DemoBuilder(when, support, seed)
    b.rng = rng
    agent_from = h.get("from", support)
    quote = _quote(agent_text.strip() or "(no text)", _decode(agent_from), email.utils.parsedate_to_datetime(h["date"]) if "date" in h else when)
    atts_wanted = "Screenshot attached" in answer
    text = b.compose_text(c, answer, persona="calm" if c.persona == "angry" else c.persona, quote=quote,
                          attached=atts_wanted)
    atts = [("screenshot.png", "image/png", _png(rng))] if atts_wanted else []
    _, raw = b.customer_mail(c, when, _re(subject or "(no subject)"), text, in_reply_to=parent or None, references=refs, attachments=atts)
    return raw


def new_customer_mail(now: datetime, support_address: str, rng: random.Random) -> bytes:
    """A fresh first mail from a (known or new) customer, dated *now*."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    b = _DemoBuilder(now, support_address, 0)
    b.rng = rng
    if rng.random() < 0.75:
        c = rng.choice(CUSTOMERS)
    else:
        first = rng.choice(("Alex", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn", "Sasha"))
        last = rng.choice(("Reed", "Hughes", "Ward", "Bishop", "Lang", "Moss", "Hart", "Stone", "Park", "Vale"))
        c = Customer(f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(('example.com', 'example.org', 'shop.example'))}",
                     persona=rng.choice(("calm", "calm", "angry", "vague", "terse")), client=rng.choice(("plain", "alt", "phone")))
    key, subject, body = b.issue_for(c)
    atts = b.attachments_for(key, c) if rng.random() < 0.5 else []
    _, raw = b.customer_mail(c, now, subject, b.compose_text(c, body, attached=bool(atts)), attachments=atts)
    return raw


# --------------------------------------------------------------------------- benchmark mailbox


_DISCLAIMER = (
    "\r\n--\r\nThis e-mail and any attachments are confidential and may be privileged. If you are not the "
    "intended recipient, please notify the sender immediately and delete this e-mail and any attachments "
    "from your system. Any unauthorised use, disclosure, copying or distribution is prohibited. We accept "
    "no liability for any damage caused by any virus transmitted by this e-mail. Please consider the "
    "environment before printing this e-mail.\r\n"
)


class _BenchParts:
    """Pre-built pieces so that each message is mostly string joins."""

    def __init__(self, rng: random.Random) -> None:
        self.paras = [body.replace("\n", "\r\n") for _, _, body in _EN_ISSUES] + [p for p in _FILLER]
        self.subjects = []
        for _, s, _ in _EN_ISSUES:
            self.subjects.append((s, s))
        for pool, cs, enc in ((_DE, "iso-8859-1", "q"), (_FR, "utf-8", "q"), (_ES, "utf-8", "b"), (_JA, "utf-8", "b")):
            for s, body in pool:
                self.subjects.append((s, _encode_header(s, cs, enc)))
        self.intl_bodies = [
            (body, "iso-8859-1" if pool is _DE else "utf-8")
            for pool in (_DE, _FR, _ES, _JA)
            for _, body in pool
        ]
        # Pre-encoded intl bodies (QP / base64) so the hot loop never encodes.
        self.intl_encoded = []
        for text, cs in self.intl_bodies:
            h, b = _text_leaf("\n\n".join([text] * 4) + "\n", "plain", cs, "quoted-printable" if cs != "utf-8" else "base64")
            self.intl_encoded.append((_headers_bytes(h), b))
        self.from_hdr = [(c, _addr(c.name, c.address)) for c in CUSTOMERS]
        # attachments, base64 once
        blobs = []
        for size in (6_000, 14_000, 22_000, 30_000, 45_000):
            data = _log_text(rng, size // 60)
            blobs.append(("server.log", "text/plain", data))
        for n in (1, 2):
            pdf = _pdf("Invoice " + "X" * 40) + bytes(rng.randrange(256) for _ in range(9_000 * n))
            blobs.append((f"invoice-{n}.pdf", "application/pdf", pdf))
        png = _png(rng, 64, 64)
        blobs.append(("screenshot.png", "image/png", png + bytes(rng.randrange(256) for _ in range(16_000))))
        self.attachments = [_headers_bytes(_attachment_leaf(*b)[0]) + b"\r\n" + _attachment_leaf(*b)[1] for b in blobs]
        # What Outlook puts in front of every HTML mail (trimmed, but this size).
        self.html_head = (
            '<html xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office" '
            'xmlns:w="urn:schemas-microsoft-com:office:word" xmlns:m="http://schemas.microsoft.com/office/2004/12/omml" '
            'xmlns="http://www.w3.org/TR/REC-html40"><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            '<meta name="Generator" content="Microsoft Word 15 (filtered medium)"><style><!--\r\n'
            + "".join(
                f"@font-face {{font-family:\"{f}\"; panose-1:2 15 5 2 2 2 4 3 2 4;}}\r\n"
                for f in ("Cambria Math", "Calibri", "Aptos", "Segoe UI", "Consolas")
            )
            + "p.MsoNormal, li.MsoNormal, div.MsoNormal {margin:0cm; font-size:11.0pt; font-family:\"Calibri\",sans-serif;}\r\n"
            "a:link, span.MsoHyperlink {mso-style-priority:99; color:#0563C1; text-decoration:underline;}\r\n"
            "span.EmailStyle17 {mso-style-type:personal-compose; font-family:\"Calibri\",sans-serif; color:windowtext;}\r\n"
            ".MsoChpDefault {mso-style-type:export-only; font-family:\"Calibri\",sans-serif;}\r\n"
            "@page WordSection1 {size:612.0pt 792.0pt; margin:72.0pt 72.0pt 72.0pt 72.0pt;}\r\n"
            "div.WordSection1 {page:WordSection1;}\r\n--></style></head>"
            '<body lang="EN-US" link="#0563C1" vlink="#954F72" style="word-wrap:break-word"><div class="WordSection1">'
        )
        self.dkim_b = base64.b64encode(bytes(rng.randrange(256) for _ in range(256))).decode()

    def trace(self, rng: random.Random, cdom: str, sdom: str, date: str) -> str:
        """Received/DKIM/Authentication-Results lines, as real mail carries (~1.5 KB)."""
        a, b, c = rng.randrange(1, 254), rng.randrange(1, 254), rng.randrange(1, 254)
        qid = f"{rng.getrandbits(40):010X}"
        sig = self.dkim_b
        k = rng.randrange(0, 200)
        sig = sig[k:] + sig[:k]
        return (
            f"Received: from mx.{sdom} (mx.{sdom} [198.51.100.{a}])\r\n\tby imap.{sdom} (Postfix) with ESMTPS id {qid}\r\n\tfor <support@{sdom}>; {date}\r\n"
            f"Received: from mail.{cdom} (mail.{cdom} [203.0.113.{b}])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\t(No client certificate requested)\r\n\tby mx.{sdom} (Postfix) with ESMTPS id {qid[::-1]}\r\n\tfor <support@{sdom}>; {date}\r\n"
            f"Received: from [192.168.1.{c}] (unknown [192.0.2.{c}])\r\n\tby mail.{cdom} (Postfix) with ESMTPSA id {qid[2:]}{qid[:2]}\r\n\tfor <support@{sdom}>; {date}\r\n"
            f"Authentication-Results: mx.{sdom};\r\n\tdkim=pass (2048-bit key; unprotected) header.d={cdom} header.i=@{cdom} header.b=\"{sig[:8]}\";\r\n\tspf=pass (mx.{sdom}: domain of {cdom} designates 203.0.113.{b} as permitted sender) smtp.mailfrom={cdom};\r\n\tdmarc=pass (p=none dis=none) header.from={cdom}\r\n"
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={cdom}; s=mail2024;\r\n\tt={1700000000 + a * b * c};\r\n\th=from:to:subject:date:message-id:mime-version:content-type;\r\n\tbh={sig[:44]}=;\r\n\tb={sig[:76]}\r\n\t {sig[76:152]}\r\n\t {sig[152:228]}\r\n\t {sig[228:300]}"
        )


def bench_mailbox(n: int, support_address: str, seed: int = 1) -> Iterator[bytes]:
    """*n* support messages averaging ~12 KB: threads (In-Reply-To/References
    to earlier messages), plain, multipart/alternative, HTML-only, ~17 % with
    attachments, ~5 % auto-replies, ~15 % non-English. Oldest first; the dates
    end at 2024-06-01 whatever the clock says. ~20,000 messages/s."""
    rng = random.Random(seed)
    parts = _BenchParts(random.Random(seed ^ 0x5EED))
    support_domain = support_address.rsplit("@", 1)[-1]
    end = datetime(2024, 6, 1, tzinfo=timezone.utc).timestamp()
    start = end - 365 * 86400
    step = (end - start) / max(n, 1)
    threads: list[tuple[str, str, list[str], int]] = []  # (subject, encoded subject, refs, customer idx)
    paras = parts.paras
    n_cust = len(parts.from_hdr)
    for i in range(n):
        r = rng.random
        ts = start + i * step + r() * step
        date = email.utils.formatdate(ts, localtime=False)
        ci = rng.randrange(n_cust)
        kind = r()
        reply = threads and r() < 0.4
        if reply:
            subj, subj_h, refs, ci = threads[rng.randrange(len(threads))]
            support_id = f"<{rng.getrandbits(48):012x}@{support_domain}>"
            refs = refs + [support_id]
            subj_h = subj_h if subj_h.lower().startswith("re:") else "Re: " + subj_h
        else:
            subj, subj_h = parts.subjects[rng.randrange(len(parts.subjects))]
            refs = []
        cust, from_h = parts.from_hdr[ci]
        msgid = f"<{i:x}.{rng.getrandbits(40):010x}@{cust.address.rsplit('@', 1)[1]}>"
        cdom = cust.address.rsplit("@", 1)[1]
        head = [
            f"Return-Path: <{cust.address}>",
            parts.trace(rng, cdom, support_domain, date),
            f"From: {from_h}",
            f"To: {support_address}",
            f"Subject: {subj_h}",
            f"Date: {date}",
            f"Message-ID: {msgid}",
        ]
        if refs:
            head.append(f"In-Reply-To: {refs[-1]}")
            head.append("References: " + "\r\n ".join(refs[-12:]))
        head.append("MIME-Version: 1.0")
        # body text: 2-6 paragraphs plus quoted history on replies
        k = 4 + rng.randrange(7)
        body_paras = [paras[rng.randrange(len(paras))] for _ in range(k)]
        text = "Hi,\r\n\r\n" + "\r\n\r\n".join(body_paras) + f"\r\n\r\nThanks,\r\n{cust.name}\r\n"
        if r() < 0.3:
            text += _DISCLAIMER
        if reply:
            quoted = "\r\n".join(
                "> " + line
                for _ in range(2 + rng.randrange(4))
                for line in (paras[rng.randrange(len(paras))] + "\r\n").split("\r\n")
            )
            text += f"\r\nOn {date}, {PRODUCT} Support <{support_address}> wrote:\r\n" + quoted + "\r\n"
        if kind < 0.05:  # auto-reply
            head[4] = f"Subject: Automatic reply: {subj_h}"
            head.insert(4, "Auto-Submitted: auto-replied")
            head.append("X-Auto-Response-Suppress: All")
            body = (
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                f"I am out of the office until next week and will reply when I am back.\r\n\r\n{cust.name}\r\n"
            ).encode()
        elif kind < 0.20 and not reply:  # non-English
            h, b = parts.intl_encoded[rng.randrange(len(parts.intl_encoded))]
            body = h + b"\r\n" + b
        else:
            sub = r()
            text_b = text.encode("utf-8")
            if sub < 0.45:
                leaf = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text_b
            else:
                html = (
                    parts.html_head
                    + "".join(f"<p>{p}</p>" for p in text.replace("&", "&amp;").replace("<", "&lt;").split("\r\n\r\n"))
                    + "</body></html>\r\n"
                ).encode("utf-8")
                if sub < 0.85:
                    bnd = f"alt_{i:x}_{rng.getrandbits(32):08x}"
                    leaf = (
                        f'Content-Type: multipart/alternative; boundary="{bnd}"\r\n\r\n--{bnd}\r\n'
                        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                    ).encode() + text_b + (
                        f"\r\n--{bnd}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
                    ).encode() + html + f"\r\n--{bnd}--\r\n".encode()
                else:
                    leaf = b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + html
            if r() < 0.22:
                bnd = f"mix_{i:x}_{rng.getrandbits(32):08x}"
                att = parts.attachments[rng.randrange(len(parts.attachments))]
                body = (
                    f'Content-Type: multipart/mixed; boundary="{bnd}"\r\n\r\n--{bnd}\r\n'.encode()
                    + leaf
                    + f"\r\n--{bnd}\r\n".encode()
                    + att
                    + f"\r\n--{bnd}--\r\n".encode()
                )
            else:
                body = leaf
        yield ("\r\n".join(head) + "\r\n").encode("utf-8") + body
        if not reply or len(refs) < 8:
            threads.append((subj, subj_h, refs + [msgid], ci))
            if len(threads) > 400:
                threads.pop(0)
