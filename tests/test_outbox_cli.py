"""`heard reply` and `heard outbox` against a loopback SMTP server: output, effects, one-line errors."""

from __future__ import annotations

import email
import email.policy
import io
import json

import pytest

from factories import add_ticket
from storage.db import Store
from storage.records import utcnow
from storage.tickets import ticket_detail
from test_send import make_config, smtp  # noqa: F401  (the fixture, over conftest's smtp_server)
from tui.cli import main


@pytest.fixture
def env(tmp_path, smtp):  # noqa: F811
    cfg = make_config(tmp_path, smtp_port=smtp.port)
    store = Store(cfg.database)
    tid = add_ticket(store, "Export fails", "ann@cust.example", "It fails.", from_name="Ann Lee")
    yield cfg, store, tid
    store.close()


def run(capsys, cfg, *args, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["--config", str(cfg.path), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def body_file(tmp_path, text):
    p = tmp_path / "body.txt"
    p.write_text(text, encoding="utf-8")
    return str(p)


def detail(store, tid):
    with store.read() as s:
        return ticket_detail(s.connection(), tid)


def test_reply_sends_prints_tone_checks_and_waits_on_the_customer(tmp_path, capsys, env, smtp):  # noqa: F811
    cfg, store, tid = env
    code, out, err = run(capsys, cfg, "reply", str(tid), "--body-file",
                         body_file(tmp_path, "Hi Ann,\n\nThank you, but the export is fixed now."))
    assert code == 0, err
    assert f"queued reply to #{tid} as outbox #1" in out and "1 sent" in out
    assert 'tone: thanks-but: "Thank you, but"' in err and "seed 000" in err
    assert 'End the thanks with a full stop' in err
    data = smtp.wait_for(1)[0].data.decode()
    assert "Zo=C3=AB Martin" in data and "> It fails." in data  # signature and quote added
    t = detail(store, tid)
    assert t["status"] == "pending"


def test_reply_reads_stdin_and_takes_status_and_reason(tmp_path, capsys, env, smtp, monkeypatch):  # noqa: F811
    cfg, store, tid = env
    code, out, err = run(capsys, cfg, "reply", str(tid), "--body-file", "-", "--status", "solved",
                         "--reason", "the fix is deployed", "--as-is", stdin="Fixed, Ann.\n", monkeypatch=monkeypatch)
    assert code == 0, err
    t = detail(store, tid)
    assert t["status"] == "solved"
    assert any(e["new"] == "solved" and e["reason"] == "the fix is deployed" for e in t["events"])
    assert smtp.wait_for(1)[0].data.endswith(b"\r\n\r\nFixed, Ann.\r\n")


@pytest.mark.parametrize(
    "args, text, needle",
    [
        (["--status", "solved"], "Fixed.", "--status needs --reason"),
        ([], "Your order {order_number} shipped.", "{order_number}"),
        ([], "Ok.", "no ticket #999"),
        (["--body-file", "/nonexistent/body.txt"], None, "no file"),
        (["--saved", "nope"], "Ok.", "no saved reply 'nope'"),
        (["--status", "bogus", "--reason", "x"], "Ok.", "unknown status 'bogus'"),
        # An empty file (a script's failed step): the signature and quote alone never go out.
        ([], "", "only the greeting, the signature and the quote"),
        ([], "Hi Ann,\n\n", "only the greeting, the signature and the quote"),
        ([], "Hi Ann,\n\nZoë Martin\nExample Support\n", "only the greeting, the signature and the quote"),
    ],
)
def test_reply_errors_are_one_line(tmp_path, capsys, env, args, text, needle):
    cfg, store, tid = env
    target = "999" if "no ticket" in needle else str(tid)
    base = ["reply", target]
    if "--body-file" not in args:
        base += ["--body-file", body_file(tmp_path, text)]
    code, out, err = run(capsys, cfg, *base, *args)
    assert code == 1
    assert err.startswith("heard: ") and needle in err and err.count("\n") == 1
    with store.read() as s:
        assert s.connection().exec_driver_sql("SELECT count(*) FROM outbox").scalar() == 0


def test_outbox_lists_failures_and_retry_and_cancel(tmp_path, capsys, env, smtp):  # noqa: F811
    cfg, store, tid = env
    smtp.fail_next("550 5.1.1 no such user")
    code, out, err = run(capsys, cfg, "reply", str(tid), "--body-file", body_file(tmp_path, "Hello Ann."))
    assert code == 1 and "550 5.1.1" in err
    code, out, err = run(capsys, cfg, "outbox")
    assert code == 0 and "failed" in out and "550 5.1.1 no such user" in out and "heard outbox retry 1" in out
    code, out, _ = run(capsys, cfg, "outbox", "--json")
    assert json.loads(out)[0]["state"] == "failed"

    code, out, err = run(capsys, cfg, "outbox", "retry", "1")
    assert code == 0 and "queued again" in out and "1 sent" in out
    code, out, _ = run(capsys, cfg, "outbox")
    assert "nothing queued" in out

    code, out, err = run(capsys, cfg, "outbox", "cancel", "1")
    assert code == 1 and err.startswith("heard: outbox #1 was already sent") and err.count("\n") == 1
    code, out, err = run(capsys, cfg, "outbox", "retry", "7")
    assert code == 1 and "no outbox message 7" in err


def test_cancel_a_queued_reply_and_send_drains(tmp_path, capsys, env, smtp):  # noqa: F811
    cfg, store, tid = env
    for _ in range(2):
        run(capsys, cfg, "reply", str(tid), "--body-file", body_file(tmp_path, "Hello Ann."), "--no-send")
    code, out, _ = run(capsys, cfg, "outbox", "cancel", "1", "--reason", "sent twice by mistake")
    assert code == 0 and "cancelled" in out
    code, out, _ = run(capsys, cfg, "outbox", "send")
    assert code == 0 and "1 sent" in out and len(smtp.messages) == 1
    assert any(e["reason"] == "sent twice by mistake" for e in detail(store, tid)["events"])


def test_server_down_queues_and_says_what_to_do(tmp_path, capsys, env, smtp):  # noqa: F811
    cfg, store, tid = env
    smtp.stop()
    code, out, err = run(capsys, cfg, "reply", str(tid), "--body-file", body_file(tmp_path, "Hello Ann."))
    assert code == 0 and "queued reply" in out and "0 sent" in out
    assert err.startswith("heard: ") and "[smtp]" in err and err.count("\n") == 1
    code, out, _ = run(capsys, cfg, "outbox")
    assert "queued" in out and "refused the connection" in out


def test_saved_replies_cli(tmp_path, capsys, env, smtp):  # noqa: F811
    cfg, store, tid = env
    code, out, _ = run(capsys, cfg, "saved-replies", "--defaults")
    assert code == 0 and "'clarify'" in out
    code, out, _ = run(capsys, cfg, "saved-replies", "--add", "thanks", "--body-file",
                       body_file(tmp_path, "Thanks {customer_first_name}! Ticket {ticket_tag}."))
    code, out, err = run(capsys, cfg, "reply", str(tid), "--body-file", body_file(tmp_path, ""), "--saved", "thanks")
    assert code == 0, err
    assert f"Thanks Ann! Ticket [#{tid}]." in smtp.wait_for(1)[0].data.decode()
    assert any(e["kind"] == "saved_reply" and e["new"] == "thanks" for e in detail(store, tid)["events"])


def test_an_empty_saved_reply_is_refused_and_the_old_text_kept(tmp_path, capsys, env, monkeypatch):  # noqa: F811
    cfg, store, tid = env
    run(capsys, cfg, "saved-replies", "--add", "thanks", "--body-file", body_file(tmp_path, "Thanks a lot!"))
    # --body-file forgotten in a script: stdin was empty, and the reply used to be overwritten with nothing
    code, out, err = run(capsys, cfg, "saved-replies", "--add", "thanks", stdin="", monkeypatch=monkeypatch)
    assert code == 1 and out == ""
    assert err == "heard: saved reply 'thanks' would be empty: give --body-file a file with its text\n"
    code, out, err = run(capsys, cfg, "saved-replies", "--add", "thanks", "--body-file", body_file(tmp_path, " \n\n"))
    assert code == 1
    code, out, _ = run(capsys, cfg, "saved-replies")
    assert out.splitlines()[0].split() == ["thanks", "Thanks", "a", "lot!"]


def test_release_and_assign_refusals_say_what_is_wrong(capsys, env):  # noqa: F811
    cfg, store, tid = env
    code, out, err = run(capsys, cfg, "release", str(tid), "--reason", "done for today")
    assert code == 1 and err == "heard: nobody holds the ticket: there is nothing to release\n"
    code, out, err = run(capsys, cfg, "assign", str(tid), "", "--reason", "Bo knows billing")
    assert code == 1 and err == "heard: say who gets the ticket: an agent's name (releasing it is `heard release`)\n"
    assert detail(store, tid)["holder"] is None
    assert run(capsys, cfg, "assign", str(tid), "Bo", "--reason", "Bo knows billing")[0] == 0
    code, out, err = run(capsys, cfg, "assign", str(tid), "Bo", "--reason", "again")
    assert code == 1 and err == "heard: Bo already holds the ticket\n"
    # Releasing a colleague's ticket is allowed, with a reason; it said only "released #1".
    code, out, err = run(capsys, cfg, "release", str(tid), "--reason", "Bo went home")
    assert (code, out) == (0, f"released #{tid} (held by Bo)\n") and detail(store, tid)["holder"] is None


def test_taking_the_ticket_you_hold_again_says_you_hold_it(capsys, env):  # noqa: F811
    # It said "you hold #1: solve, park or release it before taking another" and exited 1.
    cfg, store, tid = env
    assert run(capsys, cfg, "take", str(tid))[1] == f"you hold #{tid}\n"
    events = len(detail(store, tid)["events"])
    code, out, err = run(capsys, cfg, "take", str(tid))
    assert (code, out, err) == (0, f"you hold #{tid}\n", "")
    assert len(detail(store, tid)["events"]) == events  # nothing new on the record
    other = add_ticket(store, "Second", "bo@cust.example", "Also broken.")
    code, out, err = run(capsys, cfg, "take", str(other))
    assert code == 1 and err == f"heard: you hold #{tid}: solve, park or release it before taking another\n"


def test_taking_a_solved_ticket_says_to_reopen_it(capsys, env):  # noqa: F811
    # It set the holder on the solved ticket, a hold nobody could see (only open work counts as held).
    cfg, store, tid = env
    assert run(capsys, cfg, "status", str(tid), "solved", "--reason", "fixed")[0] == 0
    code, out, err = run(capsys, cfg, "take", str(tid))
    assert (code, out) == (1, "")
    assert err == f"heard: #{tid} is solved: reopen it first (o in the app, or heard status {tid} open --reason ...)\n"
    assert detail(store, tid)["holder"] is None


def test_take_next_with_nothing_free_says_what_holds_the_open_tickets(capsys, env):  # noqa: F811
    # It said "the queue is empty" with tickets on screen, held by other agents or automated mail.
    from storage.tickets import take_ticket

    cfg, store, tid = env
    take_ticket(store, tid, agent="Bo", now=utcnow())
    add_ticket(store, "Out of office", "robot@cust.example", "Away.", automated_reason="Auto-Submitted: auto-replied")
    code, out, err = run(capsys, cfg, "take")
    assert (code, err) == (0, "")
    assert out == ("nothing to take: the open tickets are 1 held by an agent and 1 automated mail "
                   "(auto-replies, bounces, lists: solve them from the queue)\n")
    empty = Store(str(cfg.path.parent / "empty.db"))
    try:
        from storage.tickets import nothing_to_take

        assert nothing_to_take(empty) == "nothing to take: no ticket is open"
    finally:
        empty.close()


def test_a_reply_to_a_customer_whose_subject_and_name_carry_escape_sequences_goes_out_clean(
        tmp_path, capsys, env, smtp):  # noqa: F811
    # Control characters in the customer's own subject or name used to make every reply (and acknowledgement)
    # to them unsendable: "the Subject header contains a line break or control character ... remove it".
    cfg, store, _ = env
    tid = add_ticket(store, "Invoice \x1b[2J77\x07 \u202ewrong", "eve@cust.example", "Charged twice.",
                     from_name="\x1b[31mEve\x1b[0m Stone")
    code, out, err = run(capsys, cfg, "reply", str(tid), "--body-file", body_file(tmp_path, "Refunded."))
    assert code == 0, err
    msg = email.message_from_bytes(smtp.wait_for(1)[0].data, policy=email.policy.default)
    assert msg["Subject"] == f"Re: Invoice 77 wrong [#{tid}]"
    assert msg["To"] == "Eve Stone <eve@cust.example>"


def test_tickets_for_scripts_mark_a_cut_address_or_subject_with_an_ellipsis(capsys, env):  # noqa: F811
    # The fixed columns cut "celine@moreau-architecture.example" to "celine@moreau-architecture.examp":
    # a wrong address that looked whole.
    cfg, store, _ = env
    tid = add_ticket(store, "The export stops at row 1000 and then the whole page hangs for minutes",
                     "celine@moreau-architecture.example", "It hangs.")
    code, out, _ = run(capsys, cfg, "tickets")
    line = next(li for li in out.splitlines() if li.startswith(f"#{tid} "))
    assert "celine@moreau-architecture.exam… " in line and "architecture.examp " not in line
    assert "The export stops at row 1000 and then the whole page hangs …" in line


def test_a_wrong_status_for_the_list_names_all_too(capsys, env):  # noqa: F811
    cfg, _, _ = env
    code, out, err = run(capsys, cfg, "tickets", "--status", "done")
    assert (code, out) == (1, "")
    assert err == "heard: unknown status 'done': use one of new, open, pending, on_hold, solved, closed, or all\n"
    assert run(capsys, cfg, "tickets", "--status", "all")[0] == 0


def test_a_send_killed_halfway_is_listed_unknown_and_can_be_cancelled(tmp_path, capsys, env, smtp):  # noqa: F811
    # `kill -9` of `heard outbox send` while the server had the message left the row in `sending`:
    # `heard outbox` listed it so until some later drain, and cancel and retry both said "is being
    # sent right now: wait for the result" about a process that was gone.
    import os
    import signal
    import subprocess
    import sys

    cfg, store, tid = env
    run(capsys, cfg, "reply", str(tid), "--body-file", body_file(tmp_path, "Hello Ann."), "--no-send")
    child = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg.path), "outbox", "send"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    delivered = []

    def kill_on_data(mail_from, rcpts, data):  # the server has the message; the sender dies before it hears so
        delivered.append(data)
        os.kill(child.pid, signal.SIGKILL)

    smtp.deliver = kill_on_data
    try:
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
    code, out, err = run(capsys, cfg, "outbox")
    assert code == 0 and out.split()[3] == "unknown" and "heard outbox retry 1" in out
    code, out, err = run(capsys, cfg, "outbox", "cancel", "1", "--reason", "it did go out: Ann confirmed by phone")
    assert code == 0 and "cancelled" in out, err
    events = [(e["kind"], e["old"], e["new"]) for e in detail(store, tid)["events"]]
    assert ("outbox", "sending", "unknown") in events and ("outbox", "unknown", "cancelled") in events
    assert len(delivered) == 1


@pytest.mark.parametrize("stage, state", [("MAIL", "queued"), ("DATA", "unknown")])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_in_the_middle_of_a_send_settles_the_message(tmp_path, capsys, env, smtp, stage, state, sig):  # noqa: F811
    # A send interrupted while the server was silent was left in `sending`, so the next run called it
    # unknown ("may or may not have gone out") even when the server had not yet been given the message;
    # SIGTERM did the same without a word.
    import signal
    import subprocess
    import sys
    import time

    cfg, store, tid = env
    run(capsys, cfg, "reply", str(tid), "--body-file", body_file(tmp_path, "Hello Ann."), "--no-send")
    smtp.hang(stage)
    child = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg.path), "outbox", "send"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while smtp.hanging < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert smtp.hanging == 1
        child.send_signal(getattr(signal, sig))
        _, err = child.communicate(timeout=10)  # at once, not after the server's 60 s
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130
    assert err == ("heard: interrupted: what was not sent stays in the outbox (`heard outbox` lists it, and says "
                   "whether the message in flight may have gone out)\n")
    code, out, _ = run(capsys, cfg, "outbox")
    assert out.split()[3] == state
    smtp.release_hangs()
    if state == "queued":  # the server never had it: the next send sends it, once
        assert "heard was interrupted before the message went out: it goes with the next send" in out
        code, out, err = run(capsys, cfg, "outbox", "send")
        assert code == 0 and out.strip() == "1 sent", err
        assert len(smtp.messages) == 1
    else:  # it may have gone out: never again without the agent
        assert "127.0.0.1: heard was interrupted after the message was handed over" in out
        assert "heard outbox retry 1" in out
        code, out, err = run(capsys, cfg, "outbox", "send")
        assert out.strip() == "0 sent", err
        assert smtp.messages == []
