"""Sending 1,000 queued replies through one SMTP connection, against a bare smtplib loop.

Both sides talk to the same loopback aiosmtpd server (in its own process, as a
real server would be: in-process it would compete for the GIL) in the same run
and send the same bytes. heard's side is ``drain_outbox``: per message a claim
committed before MAIL FROM, MAIL/RCPT/DATA, and the outcome committed after.
The bare loop is ``smtplib.SMTP.sendmail`` on one connection and nothing else.
Target: heard at least 0.8 of the bare loop.

    .venv/bin/python bench/send_bench.py [--messages 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import smtplib
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mail.config import parse_config  # noqa: E402
from mail.send import drain_outbox, queue_message  # noqa: E402
from storage.db import Store  # noqa: E402
from storage.ingest import Ingest, NewMessage  # noqa: E402

BODY = (
    "Hi {name},\n\n"
    "Thank you for the details. I looked at the export and found the cause: the date column\n"
    "had a value the CSV writer could not handle. I have fixed it on our side, and the export\n"
    "works again; could you try once more and tell me whether it works for you?\n\n"
    "Zoë Martin\nExample Support\n\n"
    "On Mon, 23 Nov 2026 at 08:00 UTC, {name} wrote:\n"
    + "> The export to CSV fails with error 500 since yesterday, every time I try.\n" * 12
)


def seed(store: Store, n: int, now: datetime) -> list[int]:
    with store.write_conn() as conn:
        ing = Ingest(conn, store.search, now)
        ids = []
        for i in range(n):
            raw = (f"Message-ID: <c{i}@cust.example>\r\nFrom: Customer {i} <c{i}@cust.example>\r\n"
                   f"Subject: Export fails ({i})\r\n\r\nIt fails.\r\n").encode()
            m = NewMessage(raw=raw, content_hash=hashlib.sha256(raw).hexdigest(), message_id=f"c{i}@cust.example",
                           refs=[], subject=f"Export fails ({i})", from_addr=f"c{i}@cust.example",
                           from_name=f"Customer {i}", date=now - timedelta(hours=1), text="It fails.")
            ids.append(ing.add(m, None, "new ticket"))
        ing.flush()
    return ids


def config(port: int, db: str):
    return parse_config({
        "account": {"address": "support@example.com"},
        "imap": {"host": "127.0.0.1", "port": 1, "security": "none", "password_command": "echo x"},
        "smtp": {"host": "127.0.0.1", "port": port, "security": "none", "username": "", "password_command": "echo x"},
        "storage": {"database": db},
        "agent": {"name": "Zoë Martin"},
    }, Path("bench.toml"))


SERVER = """
import sys
sys.path.insert(0, %r)
from mail.localservers import SmtpServer
with SmtpServer() as smtp:
    print(smtp.port, flush=True)
    for line in sys.stdin:
        if line.strip() == "count":
            print(len(smtp.messages), flush=True)
        elif line.strip() == "reset":
            smtp.reset()
            print("ok", flush=True)
"""


class RemoteSmtp:
    """aiosmtpd from mail.localservers, in a child process."""

    host = "127.0.0.1"

    def __enter__(self):
        root = str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER % root], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        return self

    def ask(self, what: str) -> str:
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    @property
    def count(self) -> int:
        return int(self.ask("count"))

    def reset(self) -> None:
        self.ask("reset")

    def __exit__(self, *exc):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def heard_round(smtp: RemoteSmtp, n: int, workdir: Path, rnd: int) -> tuple[float, float, list[tuple[str, list[str], bytes]]]:
    db = str(workdir / f"send-{rnd}.db")
    cfg = config(smtp.port, db)
    store = Store(db)
    now = datetime.now(timezone.utc)
    ids = seed(store, n, now)
    t0 = time.perf_counter()
    raws = []
    for tid in ids:
        q = queue_message(store, cfg, tid, BODY.format(name=f"Customer {tid}"), kind="reply", agent="zoe", now=now)
        raws.append(("support@example.com", [f"c{tid - 1}@cust.example"], q.raw))
    queue_s = time.perf_counter() - t0
    before = smtp.count
    t0 = time.perf_counter()
    res = drain_outbox(store, cfg)
    drain_s = time.perf_counter() - t0
    assert len(res.sent) == n and not res.errors, res.line()
    assert smtp.count - before == n
    store.close()
    return queue_s, drain_s, raws


def prepared(smtp: RemoteSmtp, n: int, workdir: Path, rnd: int) -> list[tuple[str, list[str], bytes]]:
    """The bytes heard would send, for a bare round that runs first."""
    return heard_round(smtp, n, workdir, 100 + rnd)[2]


def bare_round(smtp: RemoteSmtp, raws: list[tuple[str, list[str], bytes]]) -> float:
    before = smtp.count
    t0 = time.perf_counter()
    client = smtplib.SMTP(smtp.host, smtp.port, local_hostname="localhost")
    for mail_from, rcpts, raw in raws:
        client.sendmail(mail_from, rcpts, raw)
    client.quit()
    elapsed = time.perf_counter() - t0
    assert smtp.count - before == len(raws)
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    n = args.messages
    rows = []
    with tempfile.TemporaryDirectory(prefix="heard-send-bench-") as tmp, RemoteSmtp() as smtp:
        for rnd in range(args.rounds):
            if rnd % 2:  # alternate who goes first, so drift on a busy machine hits both sides
                queue_s, drain_s, raws = heard_round(smtp, n, Path(tmp), rnd)
                bare_s = bare_round(smtp, raws)
            else:
                raws = prepared(smtp, n, Path(tmp), rnd) if rnd == 0 else raws
                bare_s = bare_round(smtp, raws)
                queue_s, drain_s, raws = heard_round(smtp, n, Path(tmp), rnd)
            rows.append((rnd + 1, n / queue_s, n / drain_s, n / bare_s, bare_s / drain_s))
            smtp.reset()
        size = sum(len(r[2]) for r in raws) / n
    print(f"send benchmark: {n} replies (~{size / 1024:.1f} KB each), one SMTP connection, loopback aiosmtpd")
    print()
    print(f"{'round':>5}  {'queue msg/s':>11}  {'heard drain msg/s':>17}  {'bare smtplib msg/s':>18}  {'ratio':>5}")
    for rnd, q, d, b, r in rows:
        print(f"{rnd:>5}  {q:>11.0f}  {d:>17.0f}  {b:>18.0f}  {r:>5.2f}")
    best = max(rows, key=lambda r: r[4])
    med = sorted(rows, key=lambda r: r[4])[len(rows) // 2]
    print()
    print(f"median ratio {med[4]:.2f} (best {best[4]:.2f}); target >= 0.80: {'met' if med[4] >= 0.8 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
