"""Replies sent from another client (webmail, a phone) show up in their tickets, against real IMAP servers."""

from __future__ import annotations

import json
import sqlite3

from test_sync import SUPPORT, heard, imap, mail, write_config  # noqa: F401 (imap: the server fixture)


def ours(n: int, to_mid: str, text: str, *, subject="Re: Invoice PDF is blank", extra: str = "") -> bytes:
    return (
        f"From: Ana <{SUPPORT}>\r\nTo: ann@cust.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <webmail-{n}@heard.example>\r\nIn-Reply-To: <{to_mid}>\r\nReferences: <{to_mid}>\r\n"
        f"Date: Mon, 23 Nov 2026 10:0{n}:00 +0100\r\n{extra}"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    ).encode()


def with_sent_folder(cfg):
    cfg.write_text(cfg.read_text().replace('folder = "INBOX"', 'folder = "INBOX"\nsent_folder = "Sent"'))
    return cfg


def test_a_reply_sent_from_webmail_shows_in_its_ticket_once(imap, tmp_path, capsys):
    imap.append([
        mail(1, "Invoice PDF is blank"),
        mail(3, "Login fails", sender="bob@cust.example"),
        # Our reply to Bob, Bcc'd to the support inbox: heard has it from the inbox already.
        ours(2, "m3@cust.example", "Try resetting your password.", subject="Re: Login fails"),
    ])
    imap.append([
        ours(1, "m1@cust.example", "Could you send a screenshot of the blank page?"),
        # The Sent folder's own copy of the Bcc'd reply: other bytes, same Message-ID.
        ours(2, "m3@cust.example", "Try resetting your password.", subject="Re: Login fails",
             extra="X-Mailer: Webmail 2.1\r\n"),
        # Personal mail from the support address: not a ticket, never read.
        (f"From: Ana <{SUPPORT}>\r\nTo: colleague@heard.example\r\nSubject: Lunch on Friday?\r\n"
         f"Message-ID: <lunch@heard.example>\r\n\r\nPizza?\r\n").encode(),
    ], folder="Sent")
    cfg = with_sent_folder(write_config(tmp_path, imap))

    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    code, out, _ = heard(cfg, "tickets", "--json", capsys=capsys)
    assert sorted(t["subject"] for t in json.loads(out)) == ["Invoice PDF is blank", "Login fails"]

    code, out, _ = heard(cfg, "show", "1", "--json", capsys=capsys)
    t = json.loads(out)
    assert t["message_count"] == 2
    reply = t["messages"][1]
    assert reply["direction"] == "out" and reply["automated"] is False
    assert reply["text"].startswith("Could you send a screenshot")
    assert reply["thread_reason"] == "In-Reply-To <m1@cust.example> (our reply, from the Sent folder)"
    # Someone answered it: no longer new, and the timeline says why.
    assert t["status"] == "open"
    assert [(e["actor"], e["old"], e["new"], e["reason"]) for e in t["events"] if e["kind"] == "status"] == [
        ("heard sync", "new", "open", "answered outside heard (Ana, 2026-11-23 09:01 UTC)")]
    code, out, _ = heard(cfg, "show", "2", "--json", capsys=capsys)
    t = json.loads(out)
    assert t["message_count"] == 2  # Bob's mail and the Bcc'd reply, not its Sent copy too
    assert t["status"] == "open"  # the Bcc'd copy in the inbox counts as an answer as well

    # The next sync brings nothing in twice; nor does one that lost its place in the Sent folder.
    heard(cfg, "sync", capsys=capsys)
    con = sqlite3.connect(tmp_path / "heard.db")
    with con:
        con.execute("DELETE FROM sync_state WHERE folder = 'sent-replies:Sent'")
    heard(cfg, "sync", capsys=capsys)
    code, out, _ = heard(cfg, "show", "1", "--json", capsys=capsys)
    assert json.loads(out)["message_count"] == 2

    # The customer answers our webmail reply: it joins by its Message-ID directly.
    imap.append([mail(4, "RE: Invoice PDF is blank", irt="webmail-1@heard.example",
                      date="Mon, 23 Nov 2026 11:00:00 +0100")])
    heard(cfg, "sync", capsys=capsys)
    code, out, _ = heard(cfg, "show", "1", "--json", capsys=capsys)
    t = json.loads(out)
    assert [m["direction"] for m in t["messages"]] == ["in", "out", "in"]
    assert t["messages"][2]["thread_reason"] == "In-Reply-To <webmail-1@heard.example>"


def test_a_customer_answered_from_webmail_gets_no_acknowledgement(imap, tmp_path, capsys):
    imap.append([mail(1, "Invoice PDF is blank"), mail(3, "Login fails", sender="bob@cust.example")])
    imap.append([ours(1, "m1@cust.example", "Could you send a screenshot?"),
                 # An automatic acknowledgement sent by some other tool: nobody answered Bob yet.
                 ours(2, "m3@cust.example", "We received your request.", subject="Re: Login fails",
                      extra="Auto-Submitted: auto-replied\r\n")], folder="Sent")
    cfg = with_sent_folder(write_config(tmp_path, imap))
    heard(cfg, "sync", capsys=capsys)
    code, out, err = heard(cfg, "ack", "--dry-run", capsys=capsys)
    assert code == 0, err
    assert "bob@cust.example" in out
    assert "ann@cust.example" not in out  # she had her answer: no "sorry for the wait"
    code, out, _ = heard(cfg, "tickets", "--json", "--view", "all", capsys=capsys)
    assert {t["customer"]: t["status"] for t in json.loads(out)} == {"ann@cust.example": "open",
                                                                       "bob@cust.example": "new"}


def test_a_reply_sent_before_the_first_sync_is_brought_in_with_the_mailbox(imap, tmp_path, capsys):
    """One first sync: the Sent folder's headers are read before the inbox, its replies after it."""
    imap.append([mail(1, "Invoice PDF is blank"),
                 mail(2, "Re: Invoice PDF is blank", irt="webmail-1@heard.example", date="Mon, 23 Nov 2026 11:00:00 +0100")])
    imap.append([ours(1, "m1@cust.example", "Could you send a screenshot?")], folder="Sent")
    cfg = with_sent_folder(write_config(tmp_path, imap))
    code, out, err = heard(cfg, "sync", capsys=capsys)
    assert code == 0, err
    code, out, _ = heard(cfg, "show", "1", "--json", capsys=capsys)
    t = json.loads(out)
    assert [m["direction"] for m in t["messages"]] == ["in", "out", "in"]
    assert t["message_count"] == 3
    # The customer's answer came in before our reply was stored: it joined through the Sent headers.
    assert t["messages"][2]["thread_reason"] == "In-Reply-To <webmail-1@heard.example>, our sent reply to <m1@cust.example>"
    assert t["last_reply_at"] == t["messages"][1]["date"]  # our reply from the Sent folder counts as one
    code, out, _ = heard(cfg, "tickets", "--json", capsys=capsys)
    assert len(json.loads(out)) == 1
