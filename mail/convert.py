"""Raw mail → ``NewMessage``: parsing and the per-message rules, in a process of its own.

The sync fetches and stores on threads of the main process and parses here:
parsing is pure Python and holds the GIL. This module and everything it
imports leave out SQLAlchemy, so `heard sync` can fork the parsing process
and start fetching before the store has finished loading
(:class:`storage.records.OpeningStore`), and the child stays small.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone

from mail.autoreply import automated_reason
from mail.config import Config, tier_specs
from mail.parse import ParsedMessage, parse_message
from mail.vague import vague_reason
from storage.deadlines import tier_for
from storage.records import CHECK_MAIL_RULE, NewMessage, utcnow


FUTURE_SKEW = timedelta(days=1)  # a Date header further ahead than this is a wrong clock, not a time zone
PAST_SKEW = timedelta(days=365)  # a Date header this long before the arrival (INTERNALDATE) is a wrong clock too


class MessageConverter:
    """ParsedMessage → NewMessage: the per-message rules that need the config."""

    def __init__(self, cfg: Config):
        self.parts = (list(cfg.own_addresses), cfg.own_domain, dict(cfg.tiers or {}))
        self._setup(*self.parts)

    @classmethod
    def from_parts(cls, own_addresses: list[str], own_domain: str, tiers: dict) -> MessageConverter:
        self = cls.__new__(cls)
        self.parts = (own_addresses, own_domain, tiers)
        self._setup(*self.parts)
        return self

    def _setup(self, own_addresses: list[str], own_domain: str, tiers: dict) -> None:
        self.own_addresses = set(own_addresses)
        self.own_domains = {own_domain}
        self.tiers = tier_specs(tiers) if tiers else {}  # one line naming a key it cannot read

    def convert_fetched(self, batch: list[tuple[int, bytes, bytes | None]]) -> list[tuple[NewMessage, list, list]]:
        """Parse and convert (uid, raw, INTERNALDATE) triples; ``uid`` is set on each message."""
        out = []
        latest = utcnow() + FUTURE_SKEW
        for uid, raw, idate in batch:
            pm = parse_message(raw)
            if pm.date is not None and pm.date > latest:
                # A sender's clock years ahead (or a spammer's trick) would date the ticket in the future:
                # it would sort as the newest forever and never count as waiting. The arrival time stands in.
                pm.defects.append(f"Date header in the future ({pm.date:%Y-%m-%d %H:%M} UTC): the arrival time is used")
                pm.date = None
            arrived = _internal_date(idate)
            if pm.date is not None and arrived is not None and pm.date < arrived - PAST_SKEW:
                # A clock reset to 1970 (a flat battery) dated the ticket decades back: first in the queue
                # by age, and never acknowledged ("over max_age old"). The arrival time stands in.
                pm.defects.append(f"Date header {pm.date:%Y-%m-%d} is over a year before the mail arrived: "
                                  f"the arrival time is used")
                pm.date = None
            m = self.convert(raw, pm, internal_date=arrived if pm.date is None else None)
            m.uid = uid
            out.append((m, list(pm.in_reply_to), list(pm.references)))
        return out

    def convert(self, raw: bytes, pm: ParsedMessage, *, internal_date: datetime | None) -> NewMessage:
        outgoing = pm.from_addr in self.own_addresses
        auto = None
        if outgoing and "x-heard-doctor" in pm.headers:  # `heard doctor`'s round-trip check, not a conversation
            outgoing, auto = False, CHECK_MAIL_RULE
        elif not outgoing:
            auto = automated_reason(
                pm.headers,
                envelope_sender=None,
                from_addr=pm.from_addr,
                message_id=pm.message_id,
                content_type=pm.content_type,
                own_addresses=self.own_addresses,
                own_domains=self.own_domains,
                lowered=True,  # the parser's headers: lower-case names, str values
            )
        date = pm.date or internal_date or utcnow()
        tier = tier_for(pm.from_addr, self.tiers) if self.tiers and pm.from_addr else None
        return NewMessage(
            raw=raw,
            content_hash=hashlib.sha256(raw).hexdigest(),
            message_id=pm.message_id,
            refs=list(pm.in_reply_to) + [r for r in pm.references if r not in pm.in_reply_to],
            subject=pm.subject,
            from_addr=pm.from_addr,
            from_name=pm.from_name,
            date=date,
            date_offset_minutes=pm.date_offset_minutes,
            direction="out" if outgoing else "in",
            automated_reason=auto,
            text=pm.text,
            html_only=pm.html_only,
            attachments_json=json.dumps(
                [{"name": a.name, "content_type": a.content_type, "size": a.size} for a in pm.attachments]
            ),
            defects="; ".join(pm.defects),
            tier=tier.name if tier else None,
            # Used only when the mail starts a ticket (a first mail can be vague); worked out
            # here, in the parsing process, to keep it off the storing thread.
            vague_reason=None if outgoing or auto else vague_reason(pm.subject, pm.text),
            auto_submitted=outgoing and pm.headers.get("auto-submitted", "no").lower() not in ("", "no"),
            reports=[] if outgoing else pm.reported_ids,
            undelivered=pm.report_failed,
        )


_worker_converter: MessageConverter | None = None


BACKGROUND_NICE = 5  # the parsing process's niceness, over the sync's


def _worker_init(parts: tuple) -> None:
    global _worker_converter
    _worker_converter = MessageConverter.from_parts(*parts)
    try:
        # Parsing keeps ahead of storing, which is the sync's critical path once the store is open,
        # and of the app's screen when the app syncs: on a busy machine the parser waits, they don't.
        os.nice(BACKGROUND_NICE)
    except (AttributeError, OSError):
        pass
    parent = os.getppid()

    def follow_parent() -> None:
        # A parent killed with -9 cannot stop us: leave with it, never linger.
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)

    threading.Thread(target=follow_parent, name="heard-parse-watchdog", daemon=True).start()


def _worker_convert(batch: list[tuple[int, bytes, bytes | None]]) -> list[tuple[NewMessage, list, list]]:
    items = _worker_converter.convert_fetched(batch)
    for m, _, _ in items:
        m.raw = b""  # the parent still has the bytes: don't send them back
    return items


def _internal_date(value: bytes | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value.decode(), "%d-%b-%Y %H:%M:%S %z").astimezone(timezone.utc)
    except ValueError:
        return None


PARALLEL_MIN = 1500  # messages: below this a parsing process costs more to start than it saves


def _parse_pool(converter: MessageConverter):
    """One process that parses while this one fetches and stores: parsing holds the GIL."""
    import concurrent.futures
    import multiprocessing

    # fork is quick and safe before the pipeline's threads exist; inside a process
    # that already runs threads (the app), spawn a clean interpreter instead.
    method = "fork" if threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "fork":
        # Objects alive now (the imported modules, above all) are left out of the cyclic garbage
        # collector's passes in both processes until the pool is closed (close_parse_pool): the
        # child does not copy the pages the collector would touch, and neither process walks them
        # again and again while the batches go through (about a tenth of a second per 10,000 mails).
        gc.freeze()
    try:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context(method),
            initializer=_worker_init, initargs=(converter.parts,),
        )
        pool.submit(int).result()  # start it now, before any thread of ours
    except Exception:  # no usable process support here: parse in-process
        gc.unfreeze()
        return None
    _widen_pipes(pool)
    return pool


def close_parse_pool(pool) -> None:
    """Stop the parsing process (dropping what it has not started) and give the collector back its objects."""
    pool.shutdown(cancel_futures=True)
    gc.unfreeze()


PIPE_BYTES = 1024 * 1024  # Linux's limit for unprivileged processes (/proc/sys/fs/pipe-max-size)


def _widen_pipes(pool) -> None:
    """Let the pool's pipes hold 1 MB instead of 64 KB: a batch's raw bytes (several MB) then
    cross in a few large reads and writes instead of one wake-up per 64 KB on each side,
    which cost the parsing process (the busiest one) about a tenth of its time."""
    try:
        import fcntl

        ends = [pool._call_queue._writer, pool._result_queue._writer]  # CPython's ProcessPoolExecutor
        for end in ends:
            fcntl.fcntl(end.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except Exception:  # another platform or Python, or a lower limit: the default pipes work too
        pass
