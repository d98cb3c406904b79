"""The queue as a line-rendered window over the database.

At 100,000 tickets a table widget holding every row takes seconds to paint.
Here the queue is the ordered list of ticket ids (one indexed sort, a few MB)
and ``render_line`` draws only the rows on screen, fetching them by id in
pages kept in a small LRU cache (the Textualize/toolong ``log_lines`` idea).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.cache import LRUCache
from textual.events import Click
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from mail.untrusted import safe_line
from storage.lifecycle import Status
from storage.records import DatabaseUnreachable
from tui.widgets import STATUS_SHORT, ack_state, customer_label, short_age
from tui.words import fit

PAGE = 100
PAGES_KEPT = 32


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    right: bool = False


def layout(width: int) -> list[Column]:
    """Column widths for a terminal width; the subject takes what is left."""
    customer = 22 if width >= 110 else 16
    fixed = [
        Column("flags", "", 3),
        Column("id", "#", 6, right=True),
        Column("customer", "customer", customer),
        Column("subject", "subject", 0),
        Column("age", "age", 4, right=True),
        Column("status", "status", 8),
        Column("priority", "priority", 8),
        Column("holder", "held by", 10),
        Column("ack", "acknowledged", 13),
    ]
    if width < 100:
        # A narrow terminal (80 columns): the subject keeps a readable width; whoever holds a
        # ticket is on its screen, and a priority other than normal fits in four cells.
        fixed = [c for c in fixed if c.key != "holder"]
        fixed = [Column("customer", "customer", 14) if c.key == "customer" else
                 Column("priority", "pri", 4) if c.key == "priority" else c for c in fixed]
    used = sum(c.width + 1 for c in fixed if c.key != "subject")
    subject = max(12, width - used - 1)
    return [Column(c.key, c.title, subject) if c.key == "subject" else c for c in fixed]


class QueueColumns(Widget):
    """The column titles above the queue, laid out like its rows."""

    DEFAULT_CSS = "QueueColumns { height: 1; }"

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        style = self.rich_style
        segs = []
        for col in layout(width):
            segs.append(Segment(fit(col.title, col.width, col.right) + " ", style))
        return Strip(segs).adjust_cell_length(width, style)


RowSource = Callable[[list[int]], dict[int, dict]]


class QueueTable(ScrollView, can_focus=True):
    """The queue: a cursor over ``ids``, rows fetched lazily by ``fetch``."""

    COMPONENT_CLASSES = {
        "queue--cursor",
        "queue--marked",
        "queue--muted",
        "queue--id",
        "queue--customer",
        "queue--flag",
        "queue--status-new",
        "queue--status-open",
        "queue--status-other",
        "queue--priority-urgent",
        "queue--priority-high",
        "queue--priority-low",
        "queue--holder-me",
        "queue--holder",
        "queue--ack-none",
        "queue--ack-ok",
        "queue--ack-risk",
        "queue--ack-broken",
    }

    BINDINGS = [
        Binding("j,down", "cursor(1)", "Down", show=False, id="queue.down"),
        Binding("k,up", "cursor(-1)", "Up", show=False, id="queue.up"),
        Binding("pagedown,ctrl+f", "page(1)", "Page down", show=False, id="queue.page_down"),
        Binding("pageup,ctrl+b", "page(-1)", "Page up", show=False, id="queue.page_up"),
        Binding("g,home", "top", "Top", show=False, id="queue.top"),
        Binding("G,end", "bottom", "Bottom", show=False, id="queue.bottom"),
        Binding("space", "toggle_mark", "Mark", id="queue.mark"),
        Binding("enter", "open", "Open", id="queue.open"),
    ]

    # No repaint on change: the watcher refreshes just the two lines involved.
    cursor: reactive[int] = reactive(0, always_update=True, init=False, repaint=False)

    class Opened(Message):
        def __init__(self, ticket_id: int) -> None:
            super().__init__()
            self.ticket_id = ticket_id

    class DatabaseProblem(Message):
        """Rows could not be read: the database stopped answering."""

        def __init__(self, error: DatabaseUnreachable) -> None:
            super().__init__()
            self.error = error

    class Moved(Message):
        def __init__(self, index: int, ticket_id: int | None) -> None:
            super().__init__()
            self.index = index
            self.ticket_id = ticket_id

    def __init__(self, fetch: RowSource, *, agent: str, clock: Callable[[], datetime], tz: tzinfo | None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._fetch = fetch
        self.agent = agent
        self.clock = clock
        self.tz = tz
        self.ids: list[int] = []
        self.empty_text = ""  # what an empty view says, on its second line
        self.marked: set[int] = set()
        self._pages: OrderedDict[int, dict[int, dict]] = OrderedDict()
        self._styles: dict[str, Style] = {}
        self._now: datetime | None = None
        self._thumb: tuple[int, int] | None = None
        self._strips: LRUCache[tuple, Strip] = LRUCache(1024)

    # -- data --------------------------------------------------------------------------
    def set_ids(self, ids: list[int], *, keep: int | None = None, empty_text: str | None = None) -> None:
        """A new order (a filter, a search, new mail): the cursor stays on its ticket if it can."""
        current = keep if keep is not None else self.current_id
        self.ids = ids
        if empty_text is not None:
            self.empty_text = empty_text
        self._pages.clear()
        self._strips.clear()
        self.marked &= set(ids)
        self.virtual_size = Size(self.size.width, len(ids))
        index = 0
        if current is not None:
            try:
                index = ids.index(current)
            except ValueError:
                index = min(self.cursor, max(0, len(ids) - 1))
        self.cursor = index
        self.refresh()

    def invalidate(self) -> None:
        """Rows changed in place (a status, a holder): drop the cached pages."""
        self._pages.clear()
        self._strips.clear()
        self.refresh()

    @property
    def current_id(self) -> int | None:
        return self.ids[self.cursor] if 0 <= self.cursor < len(self.ids) else None

    def row(self, index: int) -> dict | None:
        if not 0 <= index < len(self.ids):
            return None
        page_no = index // PAGE
        page = self._pages.get(page_no)
        if page is None:
            try:
                page = self._fetch(self.ids[page_no * PAGE : (page_no + 1) * PAGE])
            except DatabaseUnreachable as exc:  # drawn blank, and read again once the database answers
                self.post_message(self.DatabaseProblem(exc))
                return None
            self._pages[page_no] = page
            while len(self._pages) > PAGES_KEPT:
                self._pages.popitem(last=False)
        else:
            self._pages.move_to_end(page_no)
        return page.get(self.ids[index])

    def targets(self) -> list[int]:
        """What a change applies to: the marked tickets, or the one under the cursor."""
        if self.marked:
            return [i for i in self.ids if i in self.marked]
        return [self.current_id] if self.current_id is not None else []

    # -- cursor ------------------------------------------------------------------------
    def watch_cursor(self, old: int, new: int) -> None:
        if self.ids:
            clamped = max(0, min(new, len(self.ids) - 1))
            if clamped != new:
                self.cursor = clamped
                return
        self.refresh_line(old - int(self.scroll_y))
        self.refresh_line(new - int(self.scroll_y))
        self.scroll_to_region(Region(0, new, 1, 1), animate=False, force=True, immediate=True)
        self.post_message(self.Moved(new, self.current_id))

    def action_cursor(self, delta: int) -> None:
        self.cursor = max(0, min(self.cursor + delta, len(self.ids) - 1))

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 1))

    def action_top(self) -> None:
        self.cursor = 0

    def action_bottom(self) -> None:
        self.cursor = max(0, len(self.ids) - 1)

    def action_toggle_mark(self) -> None:
        tid = self.current_id
        if tid is None:
            return
        self.marked ^= {tid}
        self.action_cursor(1) if self.cursor < len(self.ids) - 1 else self.refresh()

    def action_open(self) -> None:
        if self.current_id is not None:
            self.post_message(self.Opened(self.current_id))

    def on_click(self, event: Click) -> None:
        if event.x >= self.size.width - 1 and self._thumb_rows() is not None:
            # A click on the scroll bar jumps there, as on any scroll bar.
            self.cursor = min(len(self.ids) - 1, int(event.y / max(1, self.size.height - 1) * (len(self.ids) - 1)))
            return
        index = event.y + int(self.scroll_y)
        if 0 <= index < len(self.ids):
            if index == self.cursor and event.chain >= 2:
                self.action_open()
            self.cursor = index

    # -- drawing -----------------------------------------------------------------------
    def notify_style_update(self) -> None:
        self._styles.clear()
        self._strips.clear()
        super().notify_style_update()

    def _style(self, name: str) -> Style:
        style = self._styles.get(name)
        if style is None:
            style = self._styles[name] = self.get_component_rich_style(name, partial=True)
        return style

    def render_lines(self, crop: Region) -> list[Strip]:
        self._now = self.clock()  # one clock reading per paint
        self._thumb = self._thumb_rows()
        return super().render_lines(crop)

    # The scroll bar is drawn here, in the last column, not by a ScrollBar widget:
    # Textual re-renders a whole ScrollBar through Rich on every change of the
    # list, which cost more than everything else in a search at 100,000 tickets.
    def _thumb_rows(self) -> tuple[int, int] | None:
        total, height = len(self.ids), self.size.height
        if height <= 0 or total <= height:
            return None
        size = max(1, round(height * height / total))
        top = round((height - size) * min(1.0, self.scroll_y / max(1, total - height)))
        return top, top + size

    def _bar(self, y: int) -> Strip:
        thumb = self._thumb
        on = thumb is not None and thumb[0] <= y < thumb[1]
        key = ("bar", on, thumb is not None)
        strip = self._strips.get(key)
        if strip is None:
            styles = self.styles
            color = styles.scrollbar_color if on else styles.scrollbar_background
            style = self.rich_style + Style(bgcolor=color.rich_color) if thumb is not None else self.rich_style
            strip = self._strips[key] = Strip([Segment(" ", style)], 1)
        return strip

    def render_line(self, y: int) -> Strip:
        index = y + int(self.scroll_y)
        width = max(1, self.size.width - 1)
        row = self.row(index)
        if row is None:
            if not self.ids and index == 1 and self.empty_text:
                line = Strip([Segment("   " + self.empty_text, self.rich_style + self._style("queue--muted"))])
                return Strip.join([line.adjust_cell_length(width, self.rich_style), self._bar(y)])
            return Strip.join([Strip.blank(width, self.rich_style), self._bar(y)])
        marked = row["id"] in self.marked
        key = (index, row["id"], index == self.cursor, marked, width, self.has_focus)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._render_row(index, row, width, marked)
        return Strip.join([strip, self._bar(y)])

    def _render_row(self, index: int, row: dict, width: int, marked: bool) -> Strip:
        base = self.rich_style
        now = self._now or self.clock()
        line_style = base
        if row.get("automated_reason"):
            line_style += self._style("queue--muted")
        if marked:
            line_style += self._style("queue--marked")
        if index == self.cursor:
            line_style += self._style("queue--cursor")
        segs: list[Segment] = []
        for col in layout(width):
            text, style_name = self._cell(col.key, row, now)
            style = line_style + self._style(style_name) if style_name else line_style
            if index == self.cursor and style_name:
                style += self._style("queue--cursor")
            segs.append(Segment(fit(text, col.width, col.right), style))
            segs.append(Segment(" ", line_style))
        return Strip(segs).adjust_cell_length(width, line_style)

    def _cell(self, key: str, row: dict, now: datetime) -> tuple[str, str]:
        if key == "flags":
            mark = "●" if row["id"] in self.marked else " "
            flag = "!" if row.get("flagged") else "?" if row.get("vague_reason") else " "
            return f"{mark}{flag}", "queue--flag"
        if key == "id":
            return str(row["id"]), "queue--id"
        if key == "customer":
            return customer_label(row), "queue--customer"
        if key == "subject":
            subject = safe_line(row.get("subject") or "") or "(no subject)"
            return (f"auto: {subject}" if row.get("automated_reason") else subject), ""
        if key == "age":
            return short_age(row.get("created_at"), now), ""
        if key == "status":
            status = row["status"]
            name = "queue--status-new" if status == "new" else "queue--status-open" if status == "open" else "queue--status-other"
            return STATUS_SHORT.get(Status(status), status), name
        if key == "priority":
            p = row["priority"]
            return ("" if p == "normal" else p), f"queue--priority-{p}" if p != "normal" else ""
        if key == "holder":
            holder = row.get("holder")
            if not holder:
                return "", ""
            return ("me" if holder == self.agent else safe_line(holder)), (
                "queue--holder-me" if holder == self.agent else "queue--holder"
            )
        if key == "ack":
            ack = ack_state(row, now, self.tz, self.app.at_risk_margin)
            return ack.text, {"none": "queue--ack-none", "ok": "queue--ack-ok", "risk": "queue--ack-risk",
                              "broken": "queue--ack-broken"}.get(ack.tone, "")
        return "", ""

    def on_focus(self) -> None:
        self._styles.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._styles.clear()
        self.refresh()

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.ids))
