"""Shared fixtures: real mail servers on loopback, and a fresh database path.

- ``pymap_server``: a :class:`mail.localservers.PymapServer` (IDLE, no
  CONDSTORE), support user ``support@example.com``; ``add_user`` for more.
- ``dovecot_server``: a private :class:`mail.localservers.DovecotServer`
  (IDLE, CONDSTORE, QRESYNC), user ``support``. Missing Dovecot is a *skip*
  on a developer machine but a *failure* when ``CI=true`` or
  ``HEARD_REQUIRE_DOVECOT=1``: CI must never silently skip that tier.
- ``dovecot_session_server``: one Dovecot for the whole session (stopping a
  Dovecot takes ~1 s); give each test its own user (``add_user``).
- ``smtp_server``: a :class:`mail.localservers.SmtpServer` that records
  every message and can be scripted to fail.
- ``tmp_db``: the path (str) of a not-yet-existing SQLite file in tmp_path.
- ``database``: a new store's ``[storage] database`` value, once a SQLite
  file and once a PostgreSQL database: tests that take it run on both.
- ``postgres_server``: one throwaway PostgreSQL cluster for the session
  (:mod:`pgserver`); ``postgres_url``: a new empty database on it, as a URL;
  ``own_postgres_server``: a cluster of the test's own, to stop and start again.
  Like Dovecot, missing PostgreSQL is a skip on a developer machine and a
  failure when ``CI=true`` or ``HEARD_REQUIRE_POSTGRES=1``.

Every server is stopped in the fixture's teardown, also when the test fails.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from mail.localservers import DovecotServer, OAuth2TokenServer, PymapServer, SmtpServer, dovecot_available


def _dovecot_required() -> bool:
    return os.environ.get("HEARD_REQUIRE_DOVECOT") == "1" or os.environ.get("CI", "").lower() == "true"


def _need_dovecot() -> None:
    if dovecot_available():
        return
    msg = "Dovecot is not installed (apt-get install dovecot-imapd)"
    if _dovecot_required():
        pytest.fail(msg + "; CI / HEARD_REQUIRE_DOVECOT=1 requires it", pytrace=False)
    pytest.skip(msg)


@pytest.fixture
def pymap_server(tmp_path: Path):
    server = PymapServer(tmp_path / "pymap")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dovecot_server(tmp_path: Path):
    _need_dovecot()
    server = DovecotServer(tmp_path / "dovecot")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


OAUTH2_TOKEN = "ya29.a0-heard-test-token"


@pytest.fixture
def oauth2_dovecot(tmp_path: Path):
    """A Dovecot that also takes XOAUTH2 logins, each token checked with an introspection endpoint on loopback
    (``server.oauth2.asked``: the tokens it was asked about). ``OAUTH2_TOKEN`` is valid for its user."""
    _need_dovecot()
    with OAuth2TokenServer() as tokens:
        server = DovecotServer(tmp_path / "dovecot", oauth2=tokens)
        tokens.tokens[OAUTH2_TOKEN] = server.username
        server.start()
        try:
            yield server
        finally:
            server.cleanup()


@pytest.fixture(scope="session")
def dovecot_session_server():
    _need_dovecot()
    directory = tempfile.mkdtemp(prefix="heard-dovecot-session-")
    server = DovecotServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
        import shutil

        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def smtp_server():
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _need_postgres() -> None:
    from pgserver import postgres_available

    if postgres_available():
        return
    msg = "PostgreSQL is not installed (apt-get install postgresql)"
    if os.environ.get("HEARD_REQUIRE_POSTGRES") == "1" or os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + "; CI / HEARD_REQUIRE_POSTGRES=1 requires it", pytrace=False)
    pytest.skip(msg)


def _postgres_cluster():
    _need_postgres()
    from pgserver import PostgresServer

    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    yield from _postgres_cluster()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    return postgres_server.new_database()


@pytest.fixture
def own_postgres_server():
    """A PostgreSQL cluster of the test's own, which it may stop (``pause()``) and start again (``resume()``)."""
    yield from _postgres_cluster()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request, tmp_path: Path) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "heard.db")


@pytest.fixture
def tmp_db(tmp_path: Path) -> str:
    return str(tmp_path / "heard.sqlite3")
