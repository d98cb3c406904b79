"""The whole text of a ticket's mail, however long, drawn a line at a time.

The conversation on the ticket screen shows each message as one laid-out
block, which costs about a second per 5,000 lines: a customer who pastes a
log of 50,000 lines would freeze the screen. It shows the first lines of such
a message and ``v`` opens this reader, a ``ScrollView`` whose ``render_line``
cuts only the rows on screen out of the text (the way ``tui.queue_view``
draws the queue). Lines wrap at the width of the screen, between words where
there is a space to break at.
"""

from __future__ import annotations

import bisect
from itertools import accumulate

from rich.cells import cell_len, chop_cells
from rich.segment import Segment
from rich.style import Style
from textual.app import ComposeResult
from textual.binding import Binding
from textual.cache import LRUCache
from textual.content import Content
from textual.geometry import Size
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Static

from mail.untrusted import safe_line, safe_text

__all__ = ["LongText", "ReaderScreen", "wrap_line"]


def wrap_line(line: str, width: int) -> list[str]:
    """``line`` cut into rows of at most ``width`` cells, between words where it can be."""
    n = len(line)
    if n <= width and (line.isascii() or cell_len(line) <= width):
        return [line]
    if not line.isascii():  # wide characters: cut by cells
        return chop_cells(line, width) or [""]
    rows, i = [], 0
    while n - i > width:
        j = line.rfind(" ", i + 1, i + width + 1)  # the last space that still fits
        if j == -1:
            rows.append(line[i : i + width])  # a word longer than the row
            i += width
        else:
            rows.append(line[i:j])
            i = j + 1
    rows.append(line[i:])
    return rows


class LongText(ScrollView, can_focus=True):
    """Plain text (already safe: no control characters) wrapped to the widget's width, drawn lazily.

    ``headings`` are the indexes of lines drawn bold (a message's sender line).
    """

    BINDINGS = [
        Binding("j,down", "scroll_by(1)", "Down", show=False, id="reader.down"),
        Binding("k,up", "scroll_by(-1)", "Up", show=False, id="reader.up"),
        Binding("space,pagedown", "page(1)", "Page down", show=False, id="reader.page_down"),
        Binding("b,pageup", "page(-1)", "Page up", show=False, id="reader.page_up"),
        Binding("g,home", "top", "Top", show=False, id="reader.top"),
        Binding("G,end", "bottom", "Bottom", show=False, id="reader.bottom"),
    ]

    def __init__(self, lines: list[str], headings: frozenset[int] = frozenset(), **kw) -> None:
        super().__init__(**kw)
        self.lines = lines or [""]
        self.headings = headings
        self._width = 0
        self._starts: list[int] = [0]  # the first row of each line at the current width
        self._rows = 0
        self._chunks: LRUCache[tuple[int, int], list[str]] = LRUCache(512)

    def _wrap(self, width: int) -> None:
        if width == self._width:
            return
        self._width = width
        self._chunks.clear()
        # Every line's row count, for the scroll bar; the rows themselves are cut as they are drawn.
        counts = [len(wrap_line(line, width)) for line in self.lines]
        self._starts = [0, *accumulate(counts)]
        self._rows = self._starts[-1]
        self.virtual_size = Size(width, self._rows)

    def on_resize(self) -> None:
        self._wrap(max(1, self.scrollable_content_region.width))
        self.refresh()

    def row_of_line(self, index: int) -> int:
        """The first row of line ``index`` at the current width."""
        self._wrap(max(1, self.scrollable_content_region.width))
        return self._starts[max(0, min(index, len(self.lines) - 1))]

    def render_line(self, y: int) -> Strip:
        width = max(1, self.scrollable_content_region.width)
        self._wrap(width)
        row = self.scroll_offset.y + y
        style = self.rich_style
        if row >= self._rows:
            return Strip.blank(width, style)
        index = bisect.bisect_right(self._starts, row) - 1
        chunks = self._chunks.get((index, width))
        if chunks is None:
            chunks = wrap_line(self.lines[index], width)
            self._chunks[(index, width)] = chunks
        k = row - self._starts[index]
        text = chunks[k] if k < len(chunks) else ""
        if index in self.headings:
            style = style + Style(bold=True)
        return Strip([Segment(text, style)]).adjust_cell_length(width, self.rich_style)

    def action_scroll_by(self, rows: int) -> None:
        self.scroll_relative(y=rows, animate=False)

    def action_page(self, pages: int) -> None:
        self.scroll_relative(y=pages * max(1, self.scrollable_content_region.height - 1), animate=False)

    def action_top(self) -> None:
        self.scroll_home(animate=False)

    def action_bottom(self) -> None:
        self.scroll_end(animate=False)


class ReaderScreen(Screen):
    """Every message of a ticket, whole: its quotes too, however long."""

    BINDINGS = [Binding("escape,q,v", "close", "Back to the ticket", id="reader.close")]
    DEFAULT_CSS = """
    ReaderScreen #reader-title { height: 1; background: $panel; padding: 0 1; }
    ReaderScreen LongText { height: 1fr; padding: 0 1; }
    ReaderScreen #reader-keys { height: 1; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, title: str, messages: list[tuple[str, str]], start: int = 0) -> None:
        """``messages``: (heading, text) pairs, shown one after another; ``start``: the one to open at."""
        super().__init__()
        self.title_text = title
        lines: list[str] = []
        headings: set[int] = set()
        self.message_lines: list[int] = []
        for heading, text in messages:
            if lines:
                lines.append("")
            self.message_lines.append(len(lines))
            headings.add(len(lines))
            lines.append(safe_line(heading))
            lines.append("")
            lines.extend(safe_text(text).expandtabs(4).split("\n"))
        self.lines, self.headings, self.start = lines, frozenset(headings), start

    def compose(self) -> ComposeResult:
        yield Static(Content.styled(safe_line(self.title_text), "bold"), id="reader-title")
        yield LongText(self.lines, self.headings, id="reader-text")
        keys = [("j k", "line"), ("space b", "page"), ("g G", "top, end"), ("esc", "back to the ticket")]
        yield Static(Content("   ").join(Content.assemble((k, "bold"), " ", what) for k, what in keys), id="reader-keys")

    def on_mount(self) -> None:
        text = self.query_one(LongText)
        text.focus()
        if self.start and self.start < len(self.message_lines):
            self.call_after_refresh(lambda: text.scroll_to(y=text.row_of_line(self.message_lines[self.start]),
                                                           animate=False))

    def action_close(self) -> None:
        self.dismiss(None)
