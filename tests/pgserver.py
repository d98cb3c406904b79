"""A throwaway PostgreSQL server for the tests: its own cluster in a temporary folder, on loopback.

``initdb`` and ``pg_ctl`` come from the system (Debian: ``apt-get install postgresql``; they live in
/usr/lib/postgresql/N/bin). PostgreSQL refuses to run as root: as root the cluster belongs to the
``postgres`` user the package creates. ``fsync=off``: the tests need a real server, not a durable one.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


def postgres_available() -> bool:
    if not (_binary("initdb") and _binary("pg_ctl")):
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """``start()``, then ``new_database()`` for each test: a URL heard takes as ``[storage] database``."""

    superuser = "heard"

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="heard-pg-"))
        self.data = self.directory / "data"
        self.port = _free_port()
        self._user = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            self._user = pw.pw_uid
            os.chown(self.directory, pw.pw_uid, pw.pw_gid)
        self._n = 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, user=self._user, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> "PostgresServer":
        res = self._run(_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.superuser,
                        "-E", "UTF8", "--locale=C.UTF-8")
        if res.returncode != 0:
            res = self._run(_binary("initdb"), "-D", str(self.data), "-A", "trust", "-U", self.superuser, "-E", "UTF8",
                            "--no-locale")
        if res.returncode != 0:
            raise RuntimeError(f"initdb failed: {res.stderr.strip()[-500:]}")
        return self.resume()

    def pause(self) -> None:
        """Stop the server (as an administrator would, for an upgrade) and keep its data: ``resume()`` starts it."""
        res = self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed: {res.stderr.strip()[-300:]}")

    def running(self) -> bool:
        return self._run(_binary("pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def resume(self) -> "PostgresServer":
        if self.running():  # already (a test that failed before it stopped the server, say)
            return self
        options = (f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        res = self._run(_binary("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"),
                        "-w", "-t", "60", "start")
        if res.returncode != 0:
            log = (self.directory / "log").read_text(errors="replace")[-1000:] if (self.directory / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {res.stderr.strip()[-300:]} {log}")
        return self

    def url(self, database: str) -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """An empty database of its own, as a URL."""
        import psycopg

        self._n += 1
        name = f"t{self._n}_{os.getpid()}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.superuser, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def query(self, url: str, sql: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(url) as conn:
            return conn.execute(sql, params).fetchall()

    def stop(self) -> None:
        self._run(_binary("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
