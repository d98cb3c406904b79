"""Initial-sync benchmark: heard vs mbsync vs a bare fetch loop, one Dovecot, one run.

    .venv/bin/python bench/sync_bench.py [--messages 10000] [--runs 3]

Generates a realistic support mailbox (about 12 KB a message: threads, HTML,
attachments, auto-replies), serves it from a private Dovecot on loopback, and
prints a table: `heard sync` of the whole mailbox (msgs/s, MB/s, peak RSS), a
sync with nothing new (ms), mbsync into a maildir and a bare Python loop that
only fetches the bytes (with imapclient, and with heard's own FETCH reader,
which is what fetching alone costs heard), with ratios against heard. heard and
mbsync each sync ``--runs`` times into an empty store and the median counts. Last,
both sync a folder of big attachments (100 mails, 10 of them 25 MB) once, for
their peak memory against the largest mail. Needs dovecot and isync (Debian:
dovecot-imapd, isync).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mail.backlog import bench_mailbox  # noqa: E402
from mail.config import load_config  # noqa: E402
from mail.localservers import DovecotServer  # noqa: E402
from mail.sync import fetch_raw, sync_once  # noqa: E402
from storage.db import Store  # noqa: E402

SUPPORT = "support@heard.example"


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _tree_rss_kb(pid: int) -> int:
    """Memory of a process and its children (heard parses in a child process).

    Proportional set size, so pages a forked child still shares with its
    parent are not counted twice.
    """
    total = _pss_kb(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            for child in f.read().split():
                total += _pss_kb(int(child))
    except OSError:
        pass
    return total


def run_child(cmd: list[str], *, sample: bool = True, **kw) -> tuple[float, int, subprocess.CompletedProcess | None]:
    """Wall seconds and peak memory (KB) of one child process.

    The peak is sampled from /proc while it runs: the proportional set size
    of the child and its children (wait4's ru_maxrss would include the memory
    this process had when it forked, and miss grandchildren). Reading
    smaps_rollup every 10 ms costs CPU the measured program would otherwise
    have (about 8% of a sync's time on 2 cores), so ``sample=False`` only
    waits, for the timed runs.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(cmd, stdout=out_f, stderr=err_f, **kw)
        peak = 0
        if sample:
            while proc.poll() is None:
                peak = max(peak, _tree_rss_kb(proc.pid))
                time.sleep(0.01)
        else:
            proc.wait()
        elapsed = time.perf_counter() - start
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read(), err_f.read()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return elapsed, peak, subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def timed_runs(cmd: list[str], runs: int, reset, **kw) -> tuple[list[float], int, subprocess.CompletedProcess | None]:
    """``runs`` timed runs of ``cmd`` and one more that samples its memory, each after ``reset()``.

    Returns the seconds of the timed runs, the peak memory (KB) and the last run's result.
    """
    times: list[float] = []
    for i in range(runs + 1):
        reset()
        secs, rss, res = run_child(cmd, sample=i == runs, **kw)
        if i < runs:
            times.append(secs)
    return times, rss, res


def _fetch_all(server: DovecotServer, batch: int, fetch) -> float:
    """Seconds to fetch the whole INBOX, ``batch`` UIDs at a time; ``fetch(client, uids)`` returns the bytes."""
    client = server.connect()
    start = time.perf_counter()
    client.select_folder("INBOX", readonly=True)
    uids = client.search(["ALL"])
    total = 0
    for i in range(0, len(uids), batch):
        total += sum(map(len, fetch(client, uids[i : i + batch])))
    elapsed = time.perf_counter() - start
    client.logout()
    return elapsed


def bare_fetch(server: DovecotServer, batch: int = 500) -> float:
    """A bare loop with imapclient."""
    return _fetch_all(server, batch, lambda c, uids: [d[b"BODY[]"] for d in c.fetch(uids, [b"BODY.PEEK[]"]).values()])


def lean_fetch(server: DovecotServer, batch: int = 250) -> float:
    """The same, through heard's own FETCH reader (mail.sync.fetch_raw): what fetching alone costs heard."""
    return _fetch_all(server, batch, lambda c, uids: [raw for raw, _ in fetch_raw(c, uids).values()])


def mbsync(server: DovecotServer, work: Path, runs: int, folder: str = "INBOX") -> tuple[list[float], int]:
    """Seconds of each of ``runs`` syncs of ``folder`` into an empty maildir, and the peak memory of one more."""
    maildir = work / f"mbsync-maildir-{folder}"
    maildir.mkdir()
    rc = work / f"mbsyncrc-{folder}"
    rc.write_text(
        f"""IMAPAccount bench
Host {server.host}
Port {server.port}
User {server.username}
Pass {server.password}
SSLType None
AuthMechs LOGIN

IMAPStore bench-remote
Account bench

MaildirStore bench-local
Path {maildir}/
Inbox {maildir}/INBOX

Channel bench
Far :bench-remote:
Near :bench-local:
Patterns {folder}
Create Near
SyncState *
"""
    )
    def empty() -> None:
        shutil.rmtree(maildir)
        maildir.mkdir()

    times, rss, _ = timed_runs(["mbsync", "-q", "-c", str(rc), "-a"], runs, empty)
    return times, rss


def big_mail(n: int, megabytes: int) -> bytes:
    """A customer's mail with one attachment of about ``megabytes`` MB as sent (base64)."""
    import base64

    payload = base64.encodebytes(os.urandom(megabytes * 3 * 1024 * 1024 // 4))
    return (f"From: Customer {n} <c{n}@cust.example>\nTo: {SUPPORT}\nSubject: Logs {n}\n"
            f"Date: Fri, 04 Dec 2026 10:{n % 60:02d}:00 +0000\nMessage-ID: <logs{n}@cust.example>\nMIME-Version: 1.0\n"
            "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nLogs attached.\n"
            "--b\nContent-Type: application/octet-stream; name=logs.bin\nContent-Transfer-Encoding: base64\n\n"
            ).encode() + payload + b"\n--b--\n"


def big_attachments(server: DovecotServer, work: Path) -> tuple[int, int, int, int]:
    """Peak memory (KB) of heard and of mbsync syncing 100 mails, 10 of them 25 MB, 90 of 1 MB;
    also the mailbox's size and its largest mail (bytes)."""
    mails = [big_mail(n, 25 if n % 10 == 0 else 1) for n in range(100)]
    server.deliver_maildir(server.username, mails, folder="Big")
    size, largest = sum(map(len, mails)), max(map(len, mails))
    del mails
    cfg = work / "config-big.toml"
    cfg.write_text((work / "config.toml").read_text().replace(
        'security = "none"', 'security = "none"\nfolder = "Big"').replace("heard.db", "heard-big.db"))
    _, heard_kb, _ = run_child([sys.executable, "-m", "tui.cli", "--config", str(cfg), "sync"],
                               cwd=Path(__file__).resolve().parent.parent)
    _, mb_kb = mbsync(server, work, 0, folder="Big")
    return heard_kb, mb_kb, size, largest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=3, help="timed runs of heard and of mbsync (the median is shown)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="heard-bench-"))
    try:
        with DovecotServer(work / "dovecot") as server:
            t = time.perf_counter()
            msgs = list(bench_mailbox(args.messages, SUPPORT))
            size = sum(len(m) for m in msgs)
            server.deliver_maildir(server.username, msgs)
            del msgs
            print(f"mailbox: {args.messages} messages, {size / 1e6:.1f} MB "
                  f"({size / args.messages / 1024:.1f} KB average), generated and delivered in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            # Dovecot indexes the folder on first access, and the kernel writes the new mailbox
            # out in the background for a while: let neither count against whoever runs first.
            bare_fetch(server)
            os.sync()

            cfg_path = work / "config.toml"
            cfg_path.write_text(
                f'[account]\naddress = "{SUPPORT}"\n[imap]\nhost = "{server.host}"\nport = {server.port}\n'
                f'security = "none"\nusername = "{server.username}"\n'
                f"password_command = \"printf '%s' '{server.password}'\"\n"
                f'[storage]\ndatabase = "{work / "heard.db"}"\n'
            )
            def empty_store() -> None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{work / 'heard.db'}{suffix}").unlink(missing_ok=True)

            heard_runs, heard_rss, res = timed_runs(
                [sys.executable, "-m", "tui.cli", "--config", str(cfg_path), "sync"], args.runs, empty_store,
                cwd=Path(__file__).resolve().parent.parent,
            )
            summary = res.stdout.decode().strip()
            heard_s = statistics.median(heard_runs)

            cfg = load_config(cfg_path)
            store = Store(cfg.database)
            idle = []
            for _ in range(7):
                t = time.perf_counter()
                s = sync_once(store, cfg)
                idle.append((time.perf_counter() - t) * 1000)
                assert s.new_messages == 0
            client = server.connect()
            warm = []
            for _ in range(7):
                t = time.perf_counter()
                sync_once(store, cfg, client=client)
                warm.append((time.perf_counter() - t) * 1000)
            client.logout()

            bare_s = bare_fetch(server)
            lean_s = lean_fetch(server)
            mb_runs, mb_rss = mbsync(server, work, args.runs)
            mb_s = statistics.median(mb_runs)
            big = big_attachments(server, work)

        n = args.messages
        mb = size / 1e6
        rows = [
            ("heard sync (parse, thread, store, index)", heard_s, heard_rss),
            ("mbsync into a maildir", mb_s, mb_rss),
            ("bare Python fetch loop (bytes only)", bare_s, None),
            ("  the same through heard's FETCH reader", lean_s, None),
        ]
        print(f"\nheard: {summary}")
        print(f"runs (seconds): heard {' '.join(f'{x:.2f}' for x in heard_runs)}; "
              f"mbsync {' '.join(f'{x:.2f}' for x in mb_runs)}\n")
        print(f"{'initial sync of ' + str(n) + ' messages':<44}{'seconds':>9}{'msgs/s':>10}{'MB/s':>8}"
              f"{'peak mem':>11}{'heard is':>12}")
        for name, secs, rss in rows:
            ratio = "" if name.startswith("heard") else f"{secs / heard_s:.2f}x"
            rss_s = f"{rss / 1024:.0f} MB" if rss else "-"
            print(f"{name:<44}{secs:>9.2f}{n / secs:>10.0f}{mb / secs:>8.1f}{rss_s:>11}{ratio:>12}")
        print()
        print(f"{'sync with nothing new':<44}{'median ms':>12}{'max ms':>9}")
        print(f"{'  new connection (connect, login, EXAMINE)':<44}{statistics.median(idle):>12.1f}{max(idle):>9.1f}")
        print(f"{'  open connection (EXAMINE only)':<44}{statistics.median(warm):>12.1f}{max(warm):>9.1f}")
        heard_kb, mb_kb, big_size, largest = big
        print(f"\n{'big attachments: 100 mails, ' + f'{big_size / 1e6:.0f} MB' + ' (10 of 25 MB)':<44}{'peak mem':>12}"
              f"{'x largest mail':>16}")
        for name, kb in (("heard sync", heard_kb), ("mbsync into a maildir", mb_kb)):
            print(f"{'  ' + name:<44}{kb / 1024:>9.0f} MB{kb * 1024 / largest:>16.1f}")
        print("\ntargets: >= 3000 msgs/s (> 3x mbsync), nothing-new < 50 ms, peak memory < 150 MB\n(seconds: median of the timed runs; peak mem: proportional set size of the process and its\n children, sampled every 10 ms in one more run, since sampling takes CPU from the program)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
