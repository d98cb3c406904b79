"""The two working screens: the queue, and one ticket with its whole conversation."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Static

from mail.untrusted import safe_line
from storage.lifecycle import Status
from tui.queue_view import QueueColumns, QueueTable
from tui.words import cut, cut_query, event_change, shown_part, shown_query
from tui.widgets import (
    STATUS_SHORT,
    KeyFooter,
    StatusHeader,
    ack_state,
    customer_label,
    human_size,
    inert,
    inert_block,
    long_time,
    short_time,
    split_quotes,
    status_label,
)

if TYPE_CHECKING:
    from tui.app import HeardApp

# How long a view's sorted work order may be reused to show a search (the order
# depends on the clock: promises turn at-risk as time passes).
_BASE_FRESH = 30.0

VIEWS = [
    ("open", "open"),
    ("mine", "mine"),
    ("waiting", "waiting on customer"),
    ("unacknowledged", "unacknowledged"),
    ("solved", "solved"),
    ("all", "all"),
]

# What an empty view says, so that it does not look like a list that failed to load.
_EMPTY_VIEWS = {
    "open": "No open tickets: nothing needs work right now.",
    "mine": "You hold no ticket: n takes the most urgent one.",
    "waiting": "No ticket is waiting on a customer.",
    "unacknowledged": "No customer is waiting for an acknowledgement.",
    "solved": "No solved tickets yet.",
    "all": "No tickets yet: heard sync fetches the support mail.",
}


def _empty_view_text(view: str, query: str) -> str:
    if query:
        label = dict(VIEWS).get(view, view)
        wider = "" if view == "all" else ", 6 looks in all"
        return f"Nothing in {label} matches {shown_query(query)}: escape clears the search{wider}."
    return _EMPTY_VIEWS.get(view, "No tickets.")


# The changes, shared by the queue (applied to marked tickets) and the ticket screen.
# Same ids on both screens: remapping "change.solve" remaps it everywhere.
_CHANGES = [
    ("s", "change('status', 'solved')", "Solve", "change.solve"),
    ("p", "change('status', 'pending')", "Waiting", "change.pending"),
    ("h", "change('status', 'on_hold')", "Hold", "change.hold"),
    ("o", "change('status', 'open')", "Reopen", "change.reopen"),
    ("x,R", "change('release', None)", "Release", "change.release"),
    ("plus", "change('priority', 'up')", "Priority +", "change.priority_up"),
    ("minus", "change('priority', 'down')", "Priority -", "change.priority_down"),
    ("A", "change('assign', None)", "Assign", "change.assign"),
]


def change_bindings(shown: set[str]) -> list[Binding]:
    """The change keys; ``shown`` are the ids the screen's footer lists."""
    return [Binding(key, action, label, show=bid in shown, id=bid) for key, action, label, bid in _CHANGES]


CHANGE_BINDINGS = change_bindings(set())


class QueueScreen(Screen):
    """Every ticket that needs work, in the order take-next would choose."""

    BINDINGS = [
        *[Binding(str(n), f"view('{v}')", f"Filter: {label}", show=False, id=f"queue.view_{v}")
          for n, (v, label) in enumerate(VIEWS, 1)],
        Binding("f", "next_view", "Next filter", id="queue.next_view"),
        Binding("slash", "search", "Search", id="queue.search"),
        Binding("escape", "clear", "Clear search / marks", show=False, id="queue.clear"),
        *change_bindings({"change.solve"}),
        Binding("a", "app.ack_review", "Acknowledge", id="queue.ack"),
        Binding("q", "app.quit", "Quit", id="queue.quit"),
    ]

    view: reactive[str] = reactive("open", init=False)
    _loaded_query: str | None = None
    # The unfiltered work order of a view, as last loaded: (view, data generation, ids,
    # monotonic time). The generation counts data_changed calls: an order sorted
    # before a change is never reused after it.
    _base: tuple[str, int, list[int], float] | None = None
    _generation = 0
    _base_lock = threading.Lock()
    search_text: reactive[str] = reactive("", init=False)

    @property
    def heard(self) -> HeardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        app = self.heard
        yield StatusHeader(id="status")
        yield Static(id="filters")
        with Vertical(id="queue-box"):
            yield QueueColumns(id="columns")
            yield QueueTable(app.fetch_rows, agent=app.agent, clock=app.clock, tz=app.tz, id="queue")
        yield Input(placeholder="search subjects, bodies and customers", id="search")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.table.loading = True
        self.table.focus()
        self.heard.refresh_header(self)
        self.reload()

    @property
    def table(self) -> QueueTable:
        return self.query_one(QueueTable)

    # -- data --------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-run the query behind the queue (a filter, a search, new mail, a change)."""
        self._load(self.view, self.search_text)

    @work(thread=True, exclusive=True, group="queue", exit_on_error=False)
    def _load(self, view: str, query: str) -> None:
        app = self.heard
        if query:
            # A search keeps the view's matches in its work order, sorted once and reused
            # while the search is typed.
            found = app.search_ids(query)
            ids = [i for i in self._work_order(view) if i in found]
        else:
            gen = self._generation
            ids = app.initial_queue_ids(view, query)
            self._base = (view, gen, ids, time.monotonic())
        self.app.call_from_thread(self._show, view, query, ids)

    def _work_order(self, view: str) -> list[int]:
        """The view's whole work order (in a worker thread): the last one loaded while it is fresh."""
        with self._base_lock:
            base, gen = self._base, self._generation
            if base is not None and base[:2] == (view, gen) and time.monotonic() - base[3] < _BASE_FRESH:
                return base[2]
            ids = self.heard.queue_ids(view)
            self._base = (view, gen, ids, time.monotonic())
            return ids

    @work(thread=True, exclusive=True, group="queue-order", exit_on_error=False)
    def _prepare_search(self, view: str) -> None:
        self._work_order(view)

    def _show(self, view: str, query: str, ids: list[int]) -> None:
        if (view, query) != (self.view, self.search_text):
            return  # a newer filter or search is on its way
        table = self.table
        table.set_ids(ids, empty_text=_empty_view_text(view, query))
        table.loading = False
        self._loaded_query = query
        self._show_filters(len(ids))

    def _show_filters(self, count: int | None = None) -> None:
        if count is None:
            count = len(self.table.ids)
        parts: list = [" "]
        for n, (v, label) in enumerate(VIEWS, 1):
            if v == self.view:
                parts += [(f" {n} {label} ", "bold reverse $text-accent"), " "]
            else:
                parts += [(f" {n} ", "$text-muted"), (f"{label} ", "$text-muted"), " "]
        parts.append(("   ", ""))
        parts.append((f"{count:,} ticket{'s' if count != 1 else ''}", "bold"))
        if self.search_text:
            parts += [("  matching ", "$text-muted"), inert(cut_query(self.search_text), "bold $text-warning")]
        marked = len(self.table.marked)
        if marked:
            parts += [("  ·  ", "$text-muted"), (f"{marked} marked", "bold $text-warning")]
        self.query_one("#filters", Static).update(Content.assemble(*parts), layout=False)  # always one line

    def data_changed(self) -> None:
        self._generation += 1
        self.table.invalidate()
        self.reload()

    # -- actions -----------------------------------------------------------------------
    def action_view(self, view: str) -> None:
        self.view = view

    def action_next_view(self) -> None:
        names = [v for v, _ in VIEWS]
        self.view = names[(names.index(self.view) + 1) % len(names)]

    def watch_view(self) -> None:
        self.table.marked.clear()
        self._show_filters()
        self.reload()

    def watch_search_text(self) -> None:
        self._show_filters()
        self.reload()

    def action_search(self) -> None:
        self._prepare_search(self.view)  # the sort a search filters, ready by the first word
        box = self.query_one("#search", Input)
        box.add_class("-visible")
        box.focus()

    @on(Input.Changed, "#search")
    def _search_typed(self, event: Input.Changed) -> None:
        self.search_text = event.value.strip()

    @on(Input.Submitted, "#search")
    def _search_done(self) -> None:
        box = self.query_one("#search", Input)
        if not box.value.strip():
            box.remove_class("-visible")
        self.table.focus()

    def action_clear(self) -> None:
        box = self.query_one("#search", Input)
        if self.focused is box or self.search_text:
            box.value = ""
            box.remove_class("-visible")
            self.search_text = ""
            self.table.focus()
        elif self.table.marked:
            self.table.marked.clear()
            self.table.refresh()
            self._show_filters()

    def action_change(self, kind: str, target: str | None) -> None:
        ids = self.table.targets()
        if not ids:
            self.heard.toast("nothing to change: the queue is empty", severity="warning")
            return
        self.heard.request_change(kind, ids, target, after=self._after_change)

    def _after_change(self) -> None:
        self.table.marked.clear()
        self._show_filters()

    def on_queue_table_opened(self, event: QueueTable.Opened) -> None:
        self.heard.open_ticket(event.ticket_id)

    def on_queue_table_moved(self) -> None:
        if self.table.marked:
            self._show_filters()


SUBJECT_ROWS = 2  # rows the ticket screen's header gives the subject at most
TIMELINE_MIN_WIDTH = 110  # narrower than this, the timeline pane is hidden unless `t` asked for it


class TicketScreen(Screen):
    """One ticket: the whole conversation oldest first, and every event with its reason."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back", id="ticket.back"),
        Binding("j", "scroll(1)", "Down", show=False, id="ticket.down"),
        Binding("k", "scroll(-1)", "Up", show=False, id="ticket.up"),
        Binding("g", "top", "Top", show=False, id="ticket.top"),
        Binding("G", "bottom", "Bottom", show=False, id="ticket.bottom"),
        Binding("r", "reply", "Reply", id="ticket.reply"),
        Binding("u", "update", "Update promise", show=False, id="ticket.update"),
        Binding("T", "take", "Take this ticket", show=False, id="ticket.take"),
        *change_bindings({"change.solve", "change.pending", "change.release"}),
        Binding("z", "toggle_quotes", "Quotes", id="ticket.quotes"),
        Binding("t", "toggle_timeline", "Timeline", id="ticket.timeline"),
        Binding("c", "customer", "Their tickets", id="ticket.customer"),
        Binding("v", "read_whole", "Read the whole mail", show=False, id="ticket.read"),
    ]

    show_quotes: reactive[bool] = reactive(False, init=False)

    def __init__(self) -> None:
        super().__init__()
        self.ticket_id: int | None = None
        self.detail: dict = {}
        self._composed = False
        self._cut: list[int] = []  # the messages too long to show here whole (v reads them)
        self._timeline_choice: bool | None = None  # `t`'s choice; None: the pane follows the width

    @property
    def heard(self) -> HeardApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield Static(id="ticket-summary")
        with Horizontal(id="ticket-body"):
            yield VerticalScroll(id="conversation")
            with VerticalScroll(id="timeline"):
                yield Static(id="timeline-events")
        yield KeyFooter()

    def on_mount(self) -> None:
        # One instance serves every ticket (installed on the app): opening a ticket redraws it.
        self._composed = True
        self._fit_timeline()
        if self.ticket_id is not None:
            self.show_ticket(self.ticket_id, self.detail or None)  # read by whoever opened it

    def on_resize(self) -> None:
        self._fit_timeline()

    def on_screen_resume(self) -> None:
        self._fit_timeline()  # the terminal may have changed size while another screen was on top

    def _fit_timeline(self) -> None:
        """The timeline beside the conversation when the terminal has room for both, or as `t` chose."""
        show = self._timeline_choice
        if show is None:
            show = self.app.size.width >= TIMELINE_MIN_WIDTH
        panel = self.query_one("#timeline")
        if panel.display != show:
            panel.display = show

    def show_ticket(self, ticket_id: int, detail: dict | None = None) -> None:
        self.ticket_id = ticket_id
        self.detail = detail if detail is not None else self.heard.ticket_detail(ticket_id)
        if not self._composed:
            return
        self.heard.refresh_header(self)
        self.set_reactive(TicketScreen.show_quotes, False)
        self._redraw()
        conversation = self.query_one("#conversation", VerticalScroll)
        conversation.scroll_home(animate=False, immediate=True)
        conversation.focus()
        self.refresh_bindings()

    def data_changed(self) -> None:
        if self.ticket_id is None or not self._composed:
            return
        self.detail = self.heard.ticket_detail(self.ticket_id)
        self._redraw()
        self.refresh_bindings()

    # -- drawing -----------------------------------------------------------------------
    def _redraw(self) -> None:
        d = self.detail
        app = self.heard
        now = app.clock()
        self.query_one("#ticket-summary", Static).update(self._summary(d, now))
        box = self.query_one("#conversation", VerticalScroll)
        self._cut = []
        bodies = [(self._message(m, i), m["direction"] == "out") for i, m in enumerate(d.get("messages", []), 1)]
        if not bodies:
            bodies = [(Content.styled("No messages stored for this ticket.", "$text-muted"), False)]
        # Reuse the message widgets already mounted: updating is much cheaper than mounting.
        existing = list(box.query_children(".message"))
        for widget in existing[len(bodies):]:
            widget.remove()
        for n, (content, out) in enumerate(bodies):
            if n < len(existing):
                existing[n].update(content)
                existing[n].set_class(out, "-out")
            else:
                box.mount(Static(content, classes="message -out" if out else "message"))
        self.query_one("#timeline-events", Static).update(self._timeline(d.get("events", [])))

    def _summary(self, d: dict, now) -> Content:
        app = self.heard
        status = d["status"]
        # A subject of 100,000 characters (or an RFC 2047 word that decodes to one) filled the screen
        # with the header and left no room for the mail: it gets SUBJECT_ROWS rows, `v` shows it whole.
        room = max(20, (self.app.size.width - 2) * SUBJECT_ROWS - len(str(d["id"])) - 16)
        subject = cut(safe_line(d.get("subject") or ""), room) or "(no subject)"
        parts: list = [(f" #{d['id']} ", "bold reverse $text-accent"), " ", inert(subject, "bold"), "\n "]
        name = self.detail.get("customer_name") or ""
        if name and "@" not in d["customer"]:  # known by name only: the key repeats the name
            parts += [inert(name, "bold"), (" (no address)", "$text-muted")]
        else:
            parts += [inert(name, "bold") if name else "", (" <" if name else ""), inert(d["customer"]),
                      (">" if name else "")]
        parts += [("  ·  ", "$text-muted"), (status_label(status), "bold $text-accent" if status in ("new", "open") else "bold")]
        if d["priority"] != "normal":
            style = {"urgent": "bold $text-error", "high": "bold $text-warning"}.get(d["priority"], "$text-muted")
            parts += [("  ·  ", "$text-muted"), (f"{d['priority']} priority", style)]
        holder = d.get("holder")
        parts += [("  ·  ", "$text-muted"),
                  ("held by you", "bold $text-success") if holder == app.agent else
                  (Content.assemble("held by ", inert(holder)) if holder else ("nobody holds it", "$text-muted"))]
        ack = ack_state(d, now, app.tz, app.at_risk_margin)  # a ticket we replied to needs no acknowledgement
        ack_text = {"none": ("not acknowledged", "$text-warning"), "muted": ("", ""),
                    "broken": (f"promise {ack.text}", "bold $text-error"),
                    "risk": (f"promised {ack.text}", "bold $text-warning"),
                    "ok": (f"promised {ack.text}" if ack.text.startswith("by") else "acknowledged", "$text-success")}[ack.tone]
        if ack_text[0]:
            parts += [("  ·  ", "$text-muted"), ack_text]
        if ack.tone in ("risk", "broken"):
            parts += [("  (u: tell them the new deadline)", "$text-muted")]
        flags = []
        if d.get("automated_reason"):
            flags.append(Content.assemble(("automated: ", "bold"), inert(d["automated_reason"])))
        if d.get("vague_reason"):
            flags.append(Content.assemble(("vague: ", "bold"), inert(d["vague_reason"])))
        if d.get("flagged"):
            flags.append(Content.styled("flagged: a message could not be fully parsed", "bold"))
        for row in d.get("send_problems", []):
            what = "not sent" if row["state"] == "failed" else "may not have been sent"
            flags.append(Content.assemble((f"outbox #{row['id']} {what}: ", "bold $text-error"),
                                          inert(row.get("last_error") or row["state"]),
                                          (f" (heard outbox retry {row['id']})", "$text-muted")))
        if flags:
            parts += ["\n ", Content.styled("", "$text-warning").join(
                [Content.assemble(("⚑ ", "$text-warning"), f, "   ") for f in flags])]
        return Content.assemble(*parts)

    def _message(self, m: dict, n: int) -> Content:
        app = self.heard
        name = safe_line(m.get("from_name") or "")
        out = m["direction"] == "out"
        head: list = [(f"{n}. ", "$text-muted")]
        head += [inert(name or m["from"] or "(unknown sender)", "bold $text-success" if out else "bold $text-accent")]
        if name and m["from"]:
            head += [(" <", "$text-muted"), inert(m["from"], "$text-muted"), (">", "$text-muted")]
        elif name:
            head += [(" (no address)", "$text-muted")]
        head += [("  ", ""), (long_time(m.get("date"), app.tz), "")]
        if out:
            head.append(("  sent by us", "$text-success"))
        lines: list = [Content.assemble(*head)]
        notes: list = []
        if m.get("thread_reason"):
            notes.append(Content.assemble(("joined: ", "$text-muted"), inert(m["thread_reason"], "$text-muted")))
        if m.get("automated"):
            notes.append(Content.assemble(("⚙ automated: ", "bold $text-warning"), inert(m.get("automated_reason") or "")))
        if m.get("defects"):
            notes.append(Content.assemble(("⚑ flagged: ", "bold $text-error"), inert("; ".join(m["defects"]))))
        if m.get("html_only"):
            notes.append(Content.styled("HTML only: shown as text, nothing fetched", "$text-muted"))
        if notes:
            lines.append(Content("   ").join(notes))
        lines.append(Content(""))
        text, rest = shown_part(m.get("text") or "")
        body = safe_text_body(text)
        if not body.strip():
            lines.append(Content.styled("(no text)", "$text-muted italic"))
        for block in split_quotes(body):
            if block.quoted and not self.show_quotes:
                count = len(block.lines)
                lines.append(Content.styled(
                    f"▸ {count} quoted line{'s' if count != 1 else ''} folded · z shows them", "$text-muted italic"))
            else:
                style = "$text-muted" if block.quoted else ""
                lines.append(inert_block("\n".join(block.lines), style))
        if rest:
            self._cut.append(n - 1)
            lines.append(Content.styled(f"▸ {rest:,} more line{'s' if rest != 1 else ''} of this message not shown "
                                        "here · v reads it whole", "bold $text-warning"))
        attachments = m.get("attachments") or []
        if attachments:
            lines.append(Content(""))
            for a in attachments:
                lines.append(Content.assemble(
                    ("attached  ", "$text-muted"), inert(a.get("name") or "(unnamed)", "bold"), ("  ", ""),
                    inert(a.get("content_type") or "", "$text-muted"), (f"  {human_size(a.get('size'))}", "$text-muted"),
                ))
        return Content("\n").join(lines)

    def _timeline(self, events: list[dict]) -> Content:
        app = self.heard
        now = app.clock()
        if not events:
            return Content.assemble(("Timeline\n", "bold $text-accent"), ("No changes yet.", "$text-muted"))
        lines: list = [Content.styled("Timeline", "bold $text-accent")]
        for e in events:
            change = event_change(e)
            lines.append(Content.assemble(
                (short_time(e["at"], now, app.tz), "$text-muted"), "  ", inert(e["actor"], "bold"),
            ))
            lines.append(Content.assemble("  ", (change, "$text-accent")))
            lines.append(Content.assemble("  ", inert(e["reason"], "italic")))
            lines.append(Content(""))
        return Content("\n").join(lines)

    def watch_show_quotes(self) -> None:
        self._redraw()

    # -- actions -----------------------------------------------------------------------
    def action_scroll(self, delta: int) -> None:
        box = self.query_one("#conversation", VerticalScroll)
        box.scroll_relative(y=delta * 3, animate=False)

    def action_top(self) -> None:
        self.query_one("#conversation", VerticalScroll).scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.query_one("#conversation", VerticalScroll).scroll_end(animate=False)

    def action_toggle_quotes(self) -> None:
        self.show_quotes = not self.show_quotes

    def action_toggle_timeline(self) -> None:
        panel = self.query_one("#timeline")
        self._timeline_choice = not panel.display
        panel.display = self._timeline_choice

    def action_customer(self) -> None:
        self.heard.show_customer_tickets(self.detail["customer"], self.ticket_id)

    def action_read_whole(self) -> None:
        """The ticket's mail, every message whole, in a reader that draws only what is on screen:
        at the first message too long for this screen, else at the latest one."""
        from tui.reader import ReaderScreen

        messages = self.detail.get("messages", [])
        if not messages:
            return
        tz = self.heard.tz
        pages = [(f"{n}. {m.get('from_name') or m['from']} <{m['from']}>  {long_time(m.get('date'), tz)}"
                  + ("  sent by us" if m["direction"] == "out" else ""), m.get("text") or "")
                 for n, m in enumerate(messages, 1)]
        start = self._cut[0] if self._cut else len(messages) - 1
        subject = self.detail.get("subject") or "(no subject)"
        title = f"#{self.ticket_id} {subject}"
        if len(subject) > 200:  # the title row cuts it: the whole subject comes first
            pages.insert(0, ("Subject", subject))
            start += 1
        self.app.push_screen(ReaderScreen(title, pages, start=start))

    def action_reply(self) -> None:
        self.heard.open_reply(self.ticket_id)

    def action_update(self) -> None:
        self.heard.open_update(self.ticket_id)

    def action_take(self) -> None:
        self.heard.take(self.ticket_id)

    def action_change(self, kind: str, target: str | None) -> None:
        self.heard.request_change(kind, [self.ticket_id], target)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # Keys that cannot apply to this ticket show as disabled in the footer.
        if not self.detail:
            return True
        if action == "take":
            return None if self.detail.get("holder") == self.heard.agent else True
        if action == "change" and parameters:
            kind, target = parameters[0], parameters[1] if len(parameters) > 1 else None
            status = Status(self.detail["status"])
            if kind == "status":
                from storage.lifecycle import ALLOWED

                return True if Status(target) in ALLOWED[status] else None
            if kind == "release":
                return True if self.detail.get("holder") else None
        return True


def safe_text_body(text: str) -> str:
    from mail.untrusted import safe_text

    return safe_text(text).rstrip()


__all__ = ["QueueScreen", "TicketScreen", "VIEWS", "CHANGE_BINDINGS", "STATUS_SHORT", "customer_label", "short_time"]
