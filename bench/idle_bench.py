"""New mail, live: how long from a message's arrival on the server to heard having it.

    .venv/bin/python bench/idle_bench.py [--mails 20] [--backlog 1000]

A private Dovecot on loopback holds a backlog (synced first). Then one mail at a
time is APPENDed, at irregular intervals, and timed until:

* ``heard sync --watch`` (a separate process, IMAP IDLE) has it in its store
  (the database polled every 2 ms);
* the app (Textual, headless, its live sync on) shows its row in the queue;
* baseline, in the same run: a bare imapclient loop in IDLE sees the server's
  ``EXISTS`` (what the network and the server take, before any fetching).
  Dovecot holds back IDLE notifications for 500 ms to batch changes
  (``NOTIFY_DELAY_MSECS`` in its mailbox-watch.c): that is most of the floor.

Prints median, 90th percentile and worst per row, with the ratio to the
baseline. Target (brief): new mail visible in the app within 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mail.backlog import bench_mailbox  # noqa: E402
from mail.localservers import DovecotServer  # noqa: E402

SUPPORT = "support@heard.example"


def one_mail(n: int) -> bytes:
    now = format_datetime(datetime.now(timezone.utc))
    return (f"From: Live Customer <live{n}@cust.example>\r\nTo: {SUPPORT}\r\nSubject: Live mail {n}\r\n"
            f"Message-ID: <live{n}.{time.time_ns()}@cust.example>\r\nDate: {now}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nThe export stops at row 1000 again.\r\n").encode()


def _count(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM messages").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def _wait(pred, timeout: float = 30.0, step: float = 0.002) -> float | None:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if pred():
            return time.perf_counter() - start
        time.sleep(step)
    return None


def bare_idle(server: DovecotServer, mails: int, rng: random.Random, base: int) -> list[float]:
    """From APPEND to the EXISTS seen by a client sitting in IDLE."""
    client = server.connect()
    client.select_folder("INBOX", readonly=True)
    out = []
    for i in range(mails):
        client.idle()
        seen = threading.Event()

        def watch():
            while not seen.is_set():
                for r in client.idle_check(timeout=0.2):
                    if len(r) > 1 and r[1] == b"EXISTS":
                        seen.set()
        t = threading.Thread(target=watch)
        t.start()
        time.sleep(0.05)
        start = time.perf_counter()
        server.append(one_mail(base + i))
        seen.wait(30)
        out.append(time.perf_counter() - start)
        t.join()
        client.idle_done()
        time.sleep(rng.uniform(0.2, 0.6))
    client.logout()
    return out


def watcher(cfg: Path, db: Path, server: DovecotServer, mails: int, rng: random.Random, base: int) -> list[float]:
    """From APPEND to the message in the store of `heard sync --watch`."""
    proc = subprocess.Popen([sys.executable, "-m", "tui.cli", "--config", str(cfg), "sync", "--watch"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = []
    try:
        client = server.connect()
        have = client.select_folder("INBOX", readonly=True)[b"EXISTS"]  # the earlier rows' mail included
        client.logout()
        if _wait(lambda: _count(db) >= have) is None:
            raise SystemExit("heard sync --watch did not catch up with the mailbox within 30 s")
        time.sleep(1.0)  # in IDLE
        for i in range(mails):
            start = time.perf_counter()
            server.append(one_mail(base + i))
            want = have + 1
            took = _wait(lambda: _count(db) >= want)
            if took is None:
                raise SystemExit("heard sync --watch did not store the new mail within 30 s")
            out.append(time.perf_counter() - start)
            have = want
            time.sleep(rng.uniform(0.3, 1.2))
    finally:
        proc.terminate()
        proc.wait(10)
    return out


def app(cfg_path: Path, server: DovecotServer, mails: int, rng: random.Random, base: int) -> list[float]:
    """From APPEND to the row in the app's queue (Textual headless, its live sync on)."""
    from mail.config import load_config
    from storage.db import Store
    from tui.app import HeardApp
    from tui.queue_view import QueueTable

    cfg = load_config(cfg_path)
    store = Store(cfg.database)
    out: list[float] = []

    async def run() -> None:
        app = HeardApp(cfg, store=store, start_sync=True, tz=timezone.utc)
        async with app.run_test(size=(120, 36)) as pilot:
            deadline = time.perf_counter() + 30
            while app.sync.mode != "idle" and time.perf_counter() < deadline:
                await pilot.pause(0.05)
            table = app.screen.query_one(QueueTable)
            await pilot.pause(0.5)
            for i in range(mails):
                before = len(table.ids)
                start = time.perf_counter()
                await asyncio.to_thread(server.append, one_mail(base + i))
                while time.perf_counter() - start < 30:
                    if len(table.ids) > before:
                        break
                    await pilot.pause(0.002)
                else:
                    raise SystemExit("the app did not show the new mail within 30 s")
                out.append(time.perf_counter() - start)
                await pilot.pause(rng.uniform(0.3, 1.2))

    asyncio.run(run())
    store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mails", type=int, default=20)
    ap.add_argument("--backlog", type=int, default=1000)
    args = ap.parse_args()
    rng = random.Random(5)
    work = Path(tempfile.mkdtemp(prefix="heard-idle-bench-"))
    try:
        with DovecotServer(work / "dovecot") as server:
            server.deliver_maildir(server.username, list(bench_mailbox(args.backlog, SUPPORT)))
            db = work / "heard.db"
            cfg = work / "config.toml"
            cfg.write_text(
                f'[account]\naddress = "{SUPPORT}"\n[imap]\nhost = "{server.host}"\nport = {server.port}\n'
                f'security = "none"\nusername = "{server.username}"\n'
                f"password_command = \"printf '%s' '{server.password}'\"\n"
                f'[storage]\ndatabase = "{db}"\n[agent]\nname = "Ana"\n')
            subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(cfg), "sync"], cwd=ROOT, check=True,
                           capture_output=True)
            rows = [
                ("bare IDLE loop: EXISTS seen", bare_idle(server, args.mails, rng, 10_000)),
                ("heard sync --watch: in the store", watcher(cfg, db, server, args.mails, rng, 20_000)),
                ("the app: row in the queue", app(cfg, server, args.mails, rng, 30_000)),
            ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(rows[0][1])
    print(f"\nnew mail, from APPEND on the server ({args.mails} mails, {args.backlog:,} already synced)\n")
    print(f"{'':38}{'median ms':>11}{'p90 ms':>9}{'max ms':>9}{'vs baseline':>13}")
    for name, times in rows:
        ms = sorted(t * 1000 for t in times)
        p90 = ms[min(len(ms) - 1, int(0.9 * len(ms)))]
        ratio = "" if name.startswith("bare") else f"{statistics.median(times) / base:.1f}x"
        print(f"{name:38}{statistics.median(ms):>11.1f}{p90:>9.1f}{ms[-1]:>9.1f}{ratio:>13}")
    print("\ntarget: new mail visible in the app within 1 s (1000 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
