"""Small widgets and the formatting rules the screens share.

Everything that came out of a mail (subjects, names, bodies, filenames,
server errors) goes through :func:`inert` / :func:`inert_block` before it
reaches a widget: control characters stripped by ``mail.untrusted`` and the
result wrapped in a :class:`~textual.content.Content`, which is never parsed
as markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.content import Content
from textual.events import Resize
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterKey

from mail.untrusted import safe_line, safe_text
from storage.lifecycle import Status
from tui.words import STATUS_SHORT, status_label  # noqa: F401  (the app imports them from here)

AT_RISK_MARGIN = timedelta(hours=2)


def inert(value: object, style: str = "") -> Content:
    """One line of untrusted text as literal content."""
    return Content.styled(safe_line(str(value or "")), style)


def inert_block(value: object, style: str = "") -> Content:
    """Untrusted multi-line text as literal content."""
    return Content.styled(safe_text(str(value or "")).expandtabs(4), style)


def as_utc(value: datetime | str | None) -> datetime | None:
    """A stored timestamp (naive UTC from SQLite, or an ISO string) as an aware datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def short_age(created: datetime | str | None, now: datetime) -> str:
    """How long a customer has waited, in the largest unit that fits: 45m, 3h, 2d, 5w."""
    start = as_utc(created)
    if start is None:
        return ""
    minutes = max(0, int((now - start).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes}m"
    if minutes < 48 * 60:
        return f"{minutes // 60}h"
    days = minutes // (24 * 60)
    return f"{days}d" if days < 14 else f"{days // 7}w"


def short_time(value: datetime | str | None, now: datetime, tz: tzinfo | None) -> str:
    """A nearby moment as 'Tue 14:00', a far one as '12 Mar', another year as '12 Mar 2023'."""
    when = as_utc(value)
    if when is None:
        return ""
    local, today = when.astimezone(tz), now.astimezone(tz)
    if abs((local.date() - today.date()).days) < 6:
        return local.strftime("%a %H:%M")
    if local.year == today.year:
        return local.strftime("%d %b")
    return local.strftime("%d %b %Y")


def long_time(value: datetime | str | None, tz: tzinfo | None) -> str:
    when = as_utc(value)
    return when.astimezone(tz).strftime("%a %d %b %Y %H:%M") if when else ""


@dataclass(frozen=True, slots=True)
class AckState:
    """What the customer has been told: the text for the queue's ack column and its tone."""

    text: str
    tone: str  # none | ok | risk | broken | muted


def ack_state(row: dict, now: datetime, tz: tzinfo | None, at_risk_margin: timedelta = AT_RISK_MARGIN) -> AckState:
    if row.get("automated_reason"):
        return AckState("—", "muted")
    deadline = as_utc(row.get("promise_deadline"))
    if deadline is not None and row.get("status") not in (Status.SOLVED, Status.CLOSED):
        when = short_time(deadline, now, tz)
        if deadline <= now:
            return AckState(f"broke {when}", "broken")
        if deadline <= now + at_risk_margin:
            return AckState(f"by {when}", "risk")
        return AckState(f"by {when}", "ok")
    if row.get("last_reply_at"):
        return AckState("replied", "muted")
    if row.get("acknowledged_at"):
        return AckState("acked", "ok")
    if row.get("status") in (Status.SOLVED, Status.CLOSED):
        return AckState("—", "muted")
    return AckState("not yet", "none")


def customer_label(row: dict) -> str:
    return safe_line(row.get("customer_name") or "") or safe_line(row.get("customer") or "")


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "KB", "MB"):
        if size < 1024 or unit == "MB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}" if size < 10 else f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.0f} GB"  # pragma: no cover


# -- quoted history ------------------------------------------------------------------------
_ATTRIBUTION = re.compile(r"^\s*(On\b.*\bwrote:|Le\b.*\ba écrit\s*:|Am\b.*\bschrieb\b.*:|El\b.*\bescribió:)\s*$", re.I)
_ATTRIBUTION_START = re.compile(r"^\s*(On|Le|Am|El)\s.+", re.I)
_ATTRIBUTION_END = re.compile(r".*\b(wrote|a écrit|schrieb|escribió)\s*:\s*$", re.I)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(Original Message|Forwarded message|Message d'origine)\s*-{2,}\s*$", re.I)


@dataclass(frozen=True, slots=True)
class Block:
    quoted: bool
    lines: tuple[str, ...]


def split_quotes(text: str) -> list[Block]:
    """A body as alternating blocks of new text and quoted history.

    Quoted history is a run of lines starting with ``>`` (with the "On ...
    wrote:" attribution before it, also when a mailer wrapped it over two
    lines), or everything after an Outlook "Original Message" separator.
    """
    lines = text.split("\n")
    blocks: list[Block] = []
    current: list[str] = []
    quoted = False

    def push(is_quoted: bool) -> None:
        nonlocal current, quoted
        if is_quoted != quoted:
            if current:
                blocks.append(Block(quoted, tuple(current)))
            current, quoted = [], is_quoted

    i = 0
    while i < len(lines):
        line = lines[i]
        if _ORIGINAL.match(line):
            push(True)
            current.extend(lines[i:])
            break
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        nxt2 = lines[i + 2] if i + 2 < len(lines) else ""
        if _ATTRIBUTION.match(line) and (nxt.lstrip().startswith(">") or not nxt.strip() and nxt2.lstrip().startswith(">")):
            push(True)
            current.append(line)
        elif (_ATTRIBUTION_START.match(line) and _ATTRIBUTION_END.match(nxt) and nxt2.lstrip().startswith(">")):
            push(True)
            current.extend([line, nxt])
            i += 1
        elif line.lstrip().startswith(">"):
            push(True)
            current.append(line)
        elif quoted and not line.strip() and nxt.lstrip().startswith(">"):
            current.append(line)  # a blank line inside a quote stays in it
        else:
            push(False)
            current.append(line)
        i += 1
    if current:
        blocks.append(Block(quoted, tuple(current)))
    # Blank lines at the end of new text (before a quote) are noise.
    out = []
    for b in blocks:
        if not b.quoted:
            lines = list(b.lines)
            while lines and not lines[-1].strip():
                lines.pop()
            if not lines:
                continue
            b = Block(False, tuple(lines))
        out.append(b)
    return out


# -- the header bar ------------------------------------------------------------------------
@dataclass(slots=True)
class SyncState:
    mode: str = "off"  # off | connecting | idle | polling | offline
    error: str | None = None
    last_sync: datetime | None = None


SYNC_LABELS = {
    "off": ("sync off", "$text-muted"),
    "connecting": ("connecting…", "$text-muted"),
    "idle": ("● live (IDLE)", "$success"),
    "polling": ("● polling", "$warning"),
    "offline": ("○ offline", "$error"),
}


class StatusHeader(Static):
    """The counts that matter and the sync state, on one line at the top of every screen."""

    DEFAULT_CSS = """
    StatusHeader { dock: top; height: 1; }
    """

    _last: dict | None = None

    def show(self, *, agent: str, holding: int | None, counts: dict, sync: SyncState, now: datetime,
             tz: tzinfo | None) -> None:
        self._last = dict(agent=agent, holding=holding, counts=counts, sync=sync, now=now, tz=tz)
        width = self.size.width or (self.app.size.width if self.is_attached else 0) or 10**6
        # The full line, then shorter ones until it fits: an 80-column terminal still sees the
        # counts that need attention and the sync state.
        for compact in (0, 1, 2):
            content = self._line(compact=compact, **self._last)
            if content.cell_length <= width:
                break
        self.update(content, layout=False)  # one line whatever it says

    def on_resize(self) -> None:
        if self._last is not None:
            self.show(**self._last)

    @staticmethod
    def _line(*, compact: int, agent: str, holding: int | None, counts: dict, sync: SyncState, now: datetime,
              tz: tzinfo | None) -> Content:
        parts: list = [(" heard ", "bold $text-accent"), ("│ ", "$text-muted")]
        if compact < 2:
            parts += [inert(agent, "bold")]
        if holding:
            parts += [("  holding " if compact < 2 else "holding ", "$text-muted"), (f"#{holding}", "bold $text-warning")]
        parts.append(("  │ " if (compact < 2 or holding) else "", "$text-muted"))
        gap = "   " if not compact else "  "

        def count(label: str, short: str, key: str, alert: str = "") -> None:
            n = counts.get(key, 0)
            if compact and not n and key != "open":
                return
            style = alert if (n and alert) else ("bold" if n else "$text-muted")
            parts.extend([(f"{n:,}", style), (f" {short if compact else label}{gap}", "$text-muted")])

        count("open", "open", "open")
        count("unacknowledged", "unack", "unacknowledged", "bold $text-warning")
        count("waiting", "waiting", "waiting")
        count("at risk", "at risk", "at_risk", "bold $text-warning")
        count("broken", "broken", "broken", "bold $text-error")
        count("failed sends", "failed", "failed_sends", "bold $text-error")
        label, style = SYNC_LABELS.get(sync.mode, (sync.mode, ""))
        parts += [("│ ", "$text-muted"), (label, style)]
        if sync.last_sync and sync.mode != "offline":
            parts.append((f" · {short_time(sync.last_sync, now, tz)}", "$text-muted"))
        if sync.error:
            parts += [("  ", ""), inert(sync.error, "$text-error")]
        return Content.assemble(*parts)


# When the footer is too short for every key it leaves whole keys out (never half a word): first
# these, which the screen shows another way or every user knows (the filter bar lists 1-6), then
# from the end of the line. Help, which lists every key, and take next stay.
FOOTER_SPARE = ("queue.mark", "queue.next_view", "queue.quit", "compose.escape")
FOOTER_KEEP = ("app.help", "app.take_next")


def _footer_key_width(key: FooterKey, compact: bool) -> int:
    desc = cell_len(key.description)
    if key.has_class("-command-palette"):  # always compact, after a one-cell border, padded on the right
        return 1 + cell_len(key.key_display) + (1 + desc if desc else 0) + (0 if compact else 1)
    if compact:
        return cell_len(key.key_display) + (1 + desc if desc else 0) + 1
    return cell_len(key.key_display) + 2 + (desc + 1 if desc else 0)


class KeyFooter(Footer):
    """The footer, rebuilt only when the keys it shows change, and only with keys that fit.

    Textual's footer recomposes (one widget per key, each restyled) on every
    focus or binding change; opening a ticket fires several, which cost more
    than drawing the ticket itself. It also draws every key and lets the line
    cut the last ones, mid-word, under the command palette's key: at 80
    columns help (?) was out of sight.
    """

    _shown: tuple | None = None
    _width = 0

    def compose(self) -> ComposeResult:
        widgets = list(super().compose())
        keys = [w for w in widgets if isinstance(w, FooterKey) and not w.has_class("-command-palette")]
        if len(keys) + sum(isinstance(w, FooterKey) and w.has_class("-command-palette") for w in widgets) \
                != len(widgets):  # binding groups: laid out by Textual as they are
            yield from widgets
            return
        self._width = width = self.app.size.width
        room = width - sum(_footer_key_width(w, self.compact) for w in widgets if w not in keys)
        ids = {(b.key, b.action): b.id for _node, b, _enabled, _tip in self.screen.active_bindings.values()}
        key_id = {w: ids.get((w.key, w.action)) for w in keys}
        used = sum(_footer_key_width(w, self.compact) for w in keys)
        spare = sorted((w for w in keys if key_id[w] in FOOTER_SPARE), key=lambda w: FOOTER_SPARE.index(key_id[w]))
        spare += [w for w in reversed(keys) if key_id[w] not in FOOTER_SPARE and key_id[w] not in FOOTER_KEEP]
        left_out: set[FooterKey] = set()
        for w in spare:
            if used <= room:
                break
            left_out.add(w)
            used -= _footer_key_width(w, self.compact)
        yield from (w for w in widgets if w not in left_out)

    def on_resize(self, event: Resize) -> None:
        if self._width and self.app.size.width != self._width:
            self._width = self.app.size.width
            self._shown = None
            self.call_after_refresh(self.recompose)

    def bindings_changed(self, screen: Screen) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            shown = self._keys_shown(screen)
            if shown == self._shown:
                return
            self._shown = shown
        super().bindings_changed(screen)

    def _keys_shown(self, screen: Screen) -> tuple:
        return tuple(
            (binding.key, binding.action, binding.description, enabled, tooltip)
            for _node, binding, enabled, tooltip in screen.active_bindings.values()
            if binding.show
        ) + (self.show_command_palette, self.compact)
