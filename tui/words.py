"""Words for tickets and their events, shared by the app and the command line (no Textual here)."""

from __future__ import annotations

import argparse
import re

from mail.untrusted import safe_line
from storage.lifecycle import STATUS_LABELS, Status

STATUS_SHORT = {
    Status.NEW: "new",
    Status.OPEN: "open",
    Status.PENDING: "waiting",
    Status.ON_HOLD: "on hold",
    Status.SOLVED: "solved",
    Status.CLOSED: "closed",
}


def status_label(status: str) -> str:
    """The status as the app says it in words ("waiting on customer"); STATUS_SHORT is for the queue's column."""
    return STATUS_LABELS.get(Status(status), status)


def event_change(e: dict) -> str:
    """What an event changed, as a person says it: "open → solved", "taken by Ana", "reply queued (outbox #3)"."""
    kind, old, new = e["kind"], e.get("old"), e.get("new")
    if kind == "status":
        return f"{_label(old)} → {_label(new)}"
    if kind == "holder":
        if new and not old:
            return f"taken by {safe_line(new)}"
        if old and not new:
            return f"released by {safe_line(old)}"
        return f"{safe_line(old or 'nobody')} → {safe_line(new or 'nobody')}"
    if kind == "priority":
        return f"priority {old} → {new}"
    # Mail that went out: what it was (the reason line says the rest, deadlines included).
    sent = {"reply": "reply", "ack": "acknowledgement", "checkin": "check-in"}.get(kind)
    if sent:
        where = f" ({safe_line(new)})" if new and str(new).startswith("outbox #") else ""
        return f"{sent} queued{where}"
    if kind == "promise":
        return f"promise {safe_line(old or '—')} → {safe_line(new or '—')}"
    if kind == "saved_reply":
        return f"saved reply {safe_line(new or '')}"
    if kind == "ack_held":
        return "no automatic acknowledgement"
    if kind == "outbox":
        return f"outbox: {safe_line(old or '—')} → {safe_line(new or '—')}"
    if old or new:
        return f"{kind}: {safe_line(old or '')} → {safe_line(new or '')}"
    return kind


def _label(status: str | None) -> str:
    try:
        return status_label(status) if status else "—"
    except ValueError:
        return safe_line(status or "")


def cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal cells, with an ellipsis when anything was left out."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(text) <= width:
        return text
    return set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)


def fit(text: str, width: int, right: bool = False) -> str:
    """``text`` cut (see :func:`cut`) or padded to exactly ``width`` cells."""
    from rich.cells import cell_len

    text = cut(text, width)
    pad = " " * (width - cell_len(text))
    return pad + text if right else text + pad


QUERY_SHOWN = 40  # cells of a search echoed back: a pasted log must not push the advice off the line


def cut_query(query: str) -> str:
    """A search as the app and the command line echo it: one safe line, cut to QUERY_SHOWN cells."""
    return cut(safe_line(query), QUERY_SHOWN)


def shown_query(query: str) -> str:
    """``cut_query``, quoted, for a sentence."""
    return repr(cut_query(query))


_TICKET_NUMBER = re.compile(r"\s*#?(\d{1,12})\s*")


def ticket_number(value: str) -> int:
    """A ticket number on the command line, as heard writes it (``#12``) or bare (``12``)."""
    found = _TICKET_NUMBER.fullmatch(value)
    if not found:
        raise argparse.ArgumentTypeError(f"{value!r} is not a ticket number: write 12 or '#12'")
    return int(found.group(1))


# A message longer than this shows its beginning on the ticket screen, where v reads it whole
# (tui.reader): laying out a long text at once costs about a second per 5,000 lines. `heard show`
# prints the same beginning (a 4 MB pasted log scrolled everything else off the terminal), and
# `heard show --full` the whole text.
SHOWN_LINES = 300
SHOWN_CHARS = 20_000


def shown_part(text: str) -> tuple[str, int]:
    """The part of a message body the ticket screen lays out, and how many lines it leaves for ``v``
    (or ``heard show --full``)."""
    if len(text) <= SHOWN_CHARS and text.count("\n") < SHOWN_LINES:
        return text, 0
    end, lines = 0, 0
    while lines < SHOWN_LINES:
        nxt = text.find("\n", end, SHOWN_CHARS)
        if nxt == -1:
            break
        end, lines = nxt + 1, lines + 1
    if end == 0:  # one line longer than the limit
        end = SHOWN_CHARS
    rest = text.count("\n", end) + (0 if text.endswith("\n") else 1)
    return text[:end].rstrip("\n"), max(rest, 1)
