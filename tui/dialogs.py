"""Modal dialogs: the reason for a change, a yes/no question, the key list, a customer's tickets."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from mail.untrusted import safe_line
from tui.widgets import STATUS_SHORT, customer_label, inert, short_time

REASON_HINT = "a reason is required: say why, so the next person knows"


@dataclass(frozen=True, slots=True)
class ReasonAnswer:
    reason: str
    value: str | None = None  # what was asked for besides the reason (who to assign to)


class ReasonDialog(ModalScreen[ReasonAnswer | None]):
    """Shows the change ("open → solved") and will not close without a reason."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="reason.cancel"),
        *[
            Binding(f"alt+{n}", f"pick({n})", f"Reason {n}", show=False, id=f"reason.pick{n}")
            for n in range(1, 10)
        ],
    ]

    def __init__(self, subject: Content | str, change: str, recent: Iterable[str] = (), *,
                 ask_for: str | None = None, suggestions: Iterable[str] = ()) -> None:
        super().__init__()
        self.subject = subject
        self.change = change
        self.recent = [r for r in recent if r.strip()][:9]
        self.ask_for = ask_for
        self.suggestions = list(suggestions)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog"):
            yield Static(self.subject, id="reason-subject", markup=False)
            yield Static(self.change, id="reason-change", markup=False)
            if self.ask_for:
                yield Label(self.ask_for, classes="dialog-label", markup=False)
                yield Input(placeholder="name", id="reason-value", select_on_focus=False)
            yield Label("Why? The reason goes on the ticket's record with your name.", classes="dialog-label")
            yield Input(placeholder="reason", id="reason-input", select_on_focus=False)
            yield Static("", id="reason-error")
            if self.recent:
                yield Label("Recent reasons  ↓ to choose · alt+1…9", classes="dialog-label")
                yield OptionList(
                    *[Option(Content.assemble((f"{n} ", "$text-muted"), inert(r)), id=str(n))
                      for n, r in enumerate(self.recent, 1)],
                    id="reason-recent",
                )
            yield Static(Content.from_markup("[b]enter[/b] save  [b]esc[/b] cancel"), classes="dialog-keys")

    def on_mount(self) -> None:
        first = "#reason-value" if self.ask_for else "#reason-input"
        self.query_one(first, Input).focus()

    def _error(self, text: str) -> None:
        self.query_one("#reason-error", Static).update(Content(text))
        self.query_one("#dialog").add_class("-error")

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_pick(self, n: int) -> None:
        if 1 <= n <= len(self.recent):
            box = self.query_one("#reason-input", Input)
            box.value = self.recent[n - 1]
            box.cursor_position = len(box.value)
            box.focus()

    @on(Input.Submitted, "#reason-value")
    def _value_done(self) -> None:
        self.query_one("#reason-input", Input).focus()

    @on(Input.Submitted, "#reason-input")
    def submit(self) -> None:
        value = None
        if self.ask_for:
            value = " ".join(self.query_one("#reason-value", Input).value.split())
            if not value:
                self._error(f"{self.ask_for.rstrip(':?')} is required")
                self.query_one("#reason-value", Input).focus()
                return
        reason = " ".join(self.query_one("#reason-input", Input).value.split())
        if not reason:
            self._error(REASON_HINT)
            return
        self.dismiss(ReasonAnswer(reason, value))

    def on_key(self, event) -> None:
        # Down from the reason box goes into the list of recent reasons.
        if event.key == "down" and self.recent and isinstance(self.focused, Input) and self.focused.id == "reason-input":
            options = self.query_one("#reason-recent", OptionList)
            options.focus()
            options.highlighted = 0
            event.stop()
        elif event.key == "up" and isinstance(self.focused, OptionList) and self.focused.highlighted in (0, None):
            self.query_one("#reason-input", Input).focus()
            event.stop()

    @on(OptionList.OptionSelected, "#reason-recent")
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.action_pick(int(event.option.id or 0))


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; escape means no."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question = question
        self.detail = detail

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog confirm"):
            yield Static(self.question, id="confirm-question", markup=False)
            if self.detail:
                yield Static(self.detail, classes="dialog-label", markup=False)
            yield Static(Content.from_markup("[b]y[/b] yes  [b]n[/b] no"), classes="dialog-keys")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class HelpScreen(ModalScreen[None]):
    """Every binding, with the keys the user actually has (after their keymap)."""

    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close"),
        Binding("j", "scroll(1)", "Down", show=False, id="help.down"),
        Binding("k", "scroll(-1)", "Up", show=False, id="help.up"),
        Binding("g", "scroll_home", "Top", show=False, id="help.top"),
        Binding("G", "scroll_end", "Bottom", show=False, id="help.bottom"),
    ]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]], legend: list[tuple[str, str]]) -> None:
        super().__init__()
        self.sections = sections
        self.legend = legend

    def compose(self) -> ComposeResult:
        with Vertical(id="help", classes="dialog"):
            yield Static(Content.from_markup("[b]Keys[/b]  [dim]remap any of them under \\[keys] in the config, by id (heard keys lists them)[/dim]"),
                         id="help-title")
            with VerticalScroll(id="help-body"):
                with Horizontal(id="help-columns"):
                    for column in (self.sections[:2], self.sections[2:]):
                        with Vertical(classes="help-column"):
                            for title, rows in column:
                                yield Static(Content.styled(title, "bold $text-accent"), classes="help-section")
                                yield from _key_rows(rows)
                if self.legend:
                    # Across the dialog, under both columns: each mark's sentence on one line where it fits,
                    # and a longer one wraps beside its mark, not under it.
                    yield Static(Content.styled("Marks in the queue", "bold $text-accent"), classes="help-section")
                    yield from _key_rows(self.legend, legend=True)
            yield Static(Content.from_markup("[b]j[/b]/[b]k[/b] [b]↓[/b]/[b]↑[/b] scroll  [b]esc[/b] close"),
                         classes="dialog-keys")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scroll(self, lines: int) -> None:
        self.query_one("#help-body", VerticalScroll).scroll_relative(y=lines, animate=False)

    def action_scroll_home(self) -> None:
        self.query_one("#help-body", VerticalScroll).scroll_home(animate=False)

    def action_scroll_end(self) -> None:
        self.query_one("#help-body", VerticalScroll).scroll_end(animate=False)


def _key_rows(rows: list[tuple[str, str]], *, legend: bool = False) -> ComposeResult:
    """Keys (or marks) and what they do, two columns: a description that wraps stays in its column."""
    with Grid(classes="help-keys -legend" if legend else "help-keys"):  # inside HelpScreen.compose
        for key, what in rows:
            yield Static(Content.styled(key, "bold $text-warning"), classes="help-key")
            yield Static(Content(what), classes="help-what")


class CustomerTicketsScreen(ModalScreen[int | None]):
    """The customer's other tickets; enter opens one."""

    BINDINGS = [Binding("escape,c", "close", "Back", id="customer.close")]

    def __init__(self, customer: str, rows: list[dict], *, now: datetime, tz: tzinfo | None) -> None:
        super().__init__()
        self.customer = customer
        self.rows = rows
        self.now = now
        self.tz = tz

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="dialog wide"):
            yield Static(Content.assemble(("Other tickets from ", "bold"), inert(self.customer, "bold $text-accent")))
            if not self.rows:
                yield Static(Content.styled("None: this is their first ticket.", "$text-muted"))
            else:
                yield OptionList(*[Option(self._line(r), id=str(r["id"])) for r in self.rows], id="customer-tickets")
            yield Static(Content.from_markup("[b]enter[/b] open  [b]esc[/b] back"), classes="dialog-keys")

    def _line(self, r: dict) -> Content:
        from storage.lifecycle import Status

        return Content.assemble(
            (f"#{r['id']:<6}", "$text-muted"),
            (f"{STATUS_SHORT.get(Status(r['status']), r['status']):<8} ", ""),
            (f"{short_time(r['created_at'], self.now, self.tz):<12} ", "$text-muted"),
            inert(safe_line(r.get("subject") or "") or "(no subject)"),
        )

    @on(OptionList.OptionSelected)
    def _open(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_close(self) -> None:
        self.dismiss(None)


__all__ = [
    "ConfirmDialog",
    "CustomerTicketsScreen",
    "HelpScreen",
    "REASON_HINT",
    "ReasonAnswer",
    "ReasonDialog",
    "customer_label",
]
