"""The store's tables. Rows stay inside storage/: callers get plain dicts or dataclasses."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel


class Customer(SQLModel, table=True):
    __tablename__ = "customers"
    id: int | None = Field(default=None, primary_key=True)
    address: str = Field(index=True, unique=True)  # lower-case
    name: str = ""
    first_seen_at: datetime
    # Last automatic mail (ack, update, check-in) we sent them: the loop-safety window.
    last_automatic_at: datetime | None = None
    tier: str | None = None  # from [tiers] in the config; None is the standard tier


class Ticket(SQLModel, table=True):
    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_status_updated", "status", "updated_at"),)
    id: int | None = Field(default=None, primary_key=True)
    subject: str = ""
    status: str = Field(default="new", index=True)
    priority: str = "normal"
    customer_id: int = Field(foreign_key="customers.id", index=True)
    created_at: datetime
    updated_at: datetime
    message_count: int = 0
    holder: str | None = Field(default=None, index=True)
    held_since: datetime | None = None
    last_customer_at: datetime | None = None  # last human message from the customer
    last_reply_at: datetime | None = None  # last human reply from us
    acknowledged_at: datetime | None = None
    promise_deadline: datetime | None = None  # the promise in force, if any
    pending_since: datetime | None = None
    automated_reason: str | None = None  # the first message was automated: why
    vague_reason: str | None = None
    flagged: bool = False  # a message could not be fully parsed


class Message(SQLModel, table=True):
    __tablename__ = "messages"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    message_id: str | None = Field(default=None, index=True)
    content_hash: str = Field(index=True, unique=True)
    direction: str = "in"  # in | out
    from_addr: str = ""
    from_name: str = ""
    subject: str = ""
    date: datetime
    date_offset_minutes: int | None = None
    automated_reason: str | None = None
    thread_reason: str = ""
    text: str = ""
    html_only: bool = False
    attachments: str = "[]"  # JSON list of {name, content_type, size}
    defects: str = ""  # "; "-joined parser defects; non-empty means flagged
    references: str = ""  # space-joined In-Reply-To + References ids
    created_at: datetime


class RawMessage(SQLModel, table=True):
    """The exact RFC 822 bytes, apart so scans of ``messages`` stay small."""

    __tablename__ = "raw_messages"
    message_pk: int = Field(primary_key=True, foreign_key="messages.id")
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class MessageLocation(SQLModel, table=True):
    """Where a message lives on the server: (folder, UIDVALIDITY, UID)."""

    __tablename__ = "message_locations"
    __table_args__ = (UniqueConstraint("folder", "uidvalidity", "uid"),)
    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(foreign_key="messages.id", index=True)
    folder: str
    # IMAP's UIDVALIDITY, UIDs and MODSEQs are unsigned 32- and 63-bit numbers: past a 32-bit signed INTEGER
    # (SQLite's integers are 64-bit anyway; PostgreSQL's INTEGER is not).
    uidvalidity: int = Field(sa_type=BigInteger)
    uid: int = Field(sa_type=BigInteger)


class SyncState(SQLModel, table=True):
    __tablename__ = "sync_state"
    folder: str = Field(primary_key=True)
    uidvalidity: int = Field(default=0, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)  # every UID <= this is committed
    uidnext: int = Field(default=0, sa_type=BigInteger)
    highestmodseq: int | None = Field(default=None, sa_type=BigInteger)
    synced_at: datetime | None = None
    last_error: str | None = None


class Event(SQLModel, table=True):
    """Append-only: nothing ever updates or deletes a row here."""

    __tablename__ = "events"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    at: datetime
    actor: str
    kind: str
    old: str | None = None
    new: str | None = None
    reason: str


class Outbox(SQLModel, table=True):
    __tablename__ = "outbox"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    kind: str = "reply"  # reply | ack | update | checkin | close
    message_id: str = Field(index=True, unique=True)
    mail_from: str
    recipients: str  # space-joined envelope recipients
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: str = Field(default="queued", index=True)  # queued|sending|sent|failed|unknown|cancelled
    attempts: int = 0
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    refused: str = ""  # recipients the server refused one by one
    agent: str = ""
    created_at: datetime
    sent_at: datetime | None = None
    sent_copy: bool = False  # appended to the Sent folder


class Promise(SQLModel, table=True):
    __tablename__ = "promises"
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="tickets.id", index=True)
    agent: str
    made_at: datetime
    deadline: datetime
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")
    superseded_by: int | None = None  # a later update's promise
    update_reason: str | None = None  # for an update: why more time is needed


class SavedReply(SQLModel, table=True):
    __tablename__ = "saved_replies"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True)
    body: str


class SentHeader(SQLModel, table=True):
    """Threading headers of our Sent folder: replies sent from other clients still thread."""

    __tablename__ = "sent_headers"
    message_id: str = Field(primary_key=True)
    parents: str = ""  # space-joined In-Reply-To + References ids


class SchemaMigration(SQLModel, table=True):
    __tablename__ = "schema_migrations"
    name: str = Field(primary_key=True)
    applied_at: datetime
