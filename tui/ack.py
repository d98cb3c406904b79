"""The acknowledgement review (``a`` on the queue) and the at-risk update dialog.

The review lists every waiting customer who had no acknowledgement and no
reply yet, with the deadline each would be promised, and apart from them the
tickets that get no automatic mail with the rule that stopped each one. The
agent can leave tickets out, change a deadline, edit the message (one text
for the batch, placeholders filled per customer), then send all: one outbox
row per ticket, then the outbox is drained while a progress bar follows it.

Entry points for the app: :func:`ack_screen` (pushed by ``HeardApp.open_ack_review``)
and :func:`update_screen` (for an at-risk ticket; bind it on the ticket screen).
Everything from a mail is shown through ``rich.text.Text`` / ``inert``: never markup.
"""

from __future__ import annotations

from datetime import datetime

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Input, Label, ProgressBar, Static, TextArea

from mail.ack import (
    AckError,
    AckPlan,
    AckSettings,
    ack_settings,
    ack_tone_warnings,
    check_template,
    deadline_words,
    human_delay,
    parse_when,
    plan_acknowledgements,
    render_ack,
    send_acknowledgements,
    send_update,
)
from mail.compose import ComposeError
from mail.config import ConfigError
from storage.db import DatabaseUnreachable
from mail.untrusted import safe_line
from storage.deadlines import format_deadline_short
from tui.dialogs import ConfirmDialog
from tui.widgets import KeyFooter, inert, inert_block

SETTLED = ("sent", "failed", "unknown", "cancelled")


def _cell(value: object, style: str = "") -> Text:
    return Text(safe_line(str(value or "")), style=style, no_wrap=True, overflow="ellipsis")


DEADLINE_HINT = ('New deadline: "thu 14:00", "tomorrow 10:00", "2026-11-26 14:00", '
                 'or business time from now, "4h" or "1d"')


class DeadlineDialog(ModalScreen[datetime | None]):
    """Change one ticket's deadline: "thu 14:00", "2026-11-26 14:00", "4h" (business time)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="ack.deadline.cancel")]
    DEFAULT_CSS = """
    DeadlineDialog { align: center middle; }
    DeadlineDialog > Vertical { width: 70; height: auto; padding: 1 2; border: round $accent; background: $surface; }
    DeadlineDialog #deadline-error { color: $text-error; height: auto; }
    """

    def __init__(self, title: Content, current: str, settings: AckSettings, now: datetime) -> None:
        super().__init__()
        self.title_content = title
        self.current = current
        self.settings = settings
        self.now = now

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_content)
            yield Label(f"Now promised: {self.current}", markup=False)
            # Static, not Label: it wraps in the dialog's width instead of losing its end.
            yield Static(DEADLINE_HINT, markup=False)
            yield Input(placeholder="thu 14:00", id="deadline-input")
            yield Static("", id="deadline-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        try:
            when = parse_when(event.value, now=self.now, hours=self.settings.hours)
        except AckError as exc:
            self.query_one("#deadline-error", Static).update(inert(str(exc)))
            return
        if when <= self.now:
            self.query_one("#deadline-error", Static).update(inert("that is already past: pick a later time"))
            return
        self.dismiss(when)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TemplateDialog(ModalScreen[str | None]):
    """Edit the batch's message; placeholders such as {deadline} are filled per customer."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Use this text", id="ack.template.save"),
        Binding("escape", "cancel", "Cancel", id="ack.template.cancel"),
    ]
    DEFAULT_CSS = """
    TemplateDialog { align: center middle; }
    TemplateDialog > Vertical { width: 90%; height: 80%; padding: 1 2; border: round $accent; background: $surface; }
    TemplateDialog TextArea { height: 1fr; }
    TemplateDialog #template-error { color: $text-error; height: auto; }
    """

    def __init__(self, template: str) -> None:
        super().__init__()
        self.template = template

    def compose(self) -> ComposeResult:
        from mail.ack import TEMPLATE_PLACEHOLDERS

        with Vertical():
            yield Label("The message for every customer in this batch (ctrl+s to use it, escape to cancel)",
                        markup=False)
            yield Label("Placeholders: " + ", ".join("{" + k + "}" for k in TEMPLATE_PLACEHOLDERS), markup=False)
            yield TextArea(self.template, id="template-text")
            yield Static("", id="template-error")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    def action_save(self) -> None:
        text = self.query_one(TextArea).text
        try:
            check_template(text, key="the message")
        except ConfigError as exc:
            self.query_one("#template-error", Static).update(inert(str(exc)))
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class AckReviewScreen(Screen[None]):
    """Review and send the batch acknowledgement."""

    BINDINGS = [
        Binding("space,x", "toggle", "Leave out / include", id="ack.toggle"),
        Binding("d", "deadline", "Change deadline", id="ack.deadline"),
        Binding("e", "edit", "Edit message", id="ack.edit"),
        Binding("y", "send", "Send all", id="ack.send"),
        Binding("j", "cursor(1)", "Down", show=False, id="ack.down"),
        Binding("k", "cursor(-1)", "Up", show=False, id="ack.up"),
        Binding("q,escape", "close", "Back", id="ack.close"),
    ]
    DEFAULT_CSS = """
    AckReviewScreen { layout: vertical; }
    AckReviewScreen #ack-title { height: auto; padding: 0 1; background: $panel; text-style: bold; }
    AckReviewScreen #ack-eligible { height: 1fr; min-height: 5; }
    AckReviewScreen #ack-skipped-title { height: auto; padding: 0 1; color: $text-muted; }
    AckReviewScreen #ack-skipped { height: auto; max-height: 8; }
    AckReviewScreen #ack-preview-box { height: 1fr; min-height: 6; border-top: solid $panel-lighten-2; padding: 0 1; }
    AckReviewScreen #ack-tone { height: auto; color: $text-warning; padding: 0 1; }
    AckReviewScreen #ack-progress { height: auto; padding: 0 1; display: none; }
    AckReviewScreen #ack-progress.-visible { display: block; }
    AckReviewScreen #ack-status { height: auto; padding: 0 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.plan: AckPlan | None = None
        self.settings: AckSettings | None = None
        self.template: str | None = None
        self.sending = False
        self.sent_done = False
        self._batch: list[int] = []
        self._drained_once = False  # the batch's own drain has run: what is still queued waits on the server

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("Acknowledge waiting customers", id="ack-title", markup=False)
        table = DataTable(id="ack-eligible", cursor_type="row", zebra_stripes=True)
        # The promise before the subject: a long subject is cut (with an ellipsis), never the deadline.
        table.add_columns("", "#", "Customer", "Promise (as the customer reads it)", "Subject")
        yield table
        yield Static("", id="ack-skipped-title", markup=False)
        skipped = DataTable(id="ack-skipped", cursor_type="none", show_header=False)
        skipped.add_columns("#", "Customer", "Rule")
        yield skipped
        with VerticalScroll(id="ack-preview-box"):
            yield Static("", id="ack-preview")
        yield Static("", id="ack-tone")
        yield ProgressBar(id="ack-progress", show_eta=False)
        yield Static("", id="ack-status")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#ack-eligible", DataTable).loading = True
        self.load_plan()

    # -- data --------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="ack-plan", exit_on_error=False)
    def load_plan(self) -> None:
        app = self.app
        now = app.clock()
        try:
            settings = ack_settings(app.cfg, now=now)
            plan = plan_acknowledgements(app.store, app.cfg, now=now, settings=settings)
        except ConfigError as exc:
            app.call_from_thread(self._failed, str(exc))
            return
        app.call_from_thread(self._loaded, plan, settings)

    def _failed(self, line: str) -> None:
        self.query_one("#ack-eligible", DataTable).loading = False
        self.query_one("#ack-status", Static).update(inert(line, "bold $text-error"))

    def _loaded(self, plan: AckPlan, settings: AckSettings) -> None:
        self.plan, self.settings = plan, settings
        table = self.query_one("#ack-eligible", DataTable)
        table.loading = False
        table.clear()
        for c in plan.candidates:
            table.add_row(*self._row(c), key=str(c.ticket_id))
        self.call_after_refresh(self._fit_subjects)  # once the table has measured its rows
        skipped = self.query_one("#ack-skipped", DataTable)
        skipped.clear()
        limit = 30 if self.app.size.width >= 100 else 24  # 80 columns: "one mail per customer: #17 in this batch"
        for s in plan.skipped:
            # The rule is what the agent reads: a long address gives way to it on a narrow screen.
            address = s.customer if len(s.customer or "") <= limit else s.customer[:limit - 1] + "…"
            skipped.add_row(_cell(f"#{s.ticket_id}", "dim"), _cell(address, "dim"), _cell(s.rule, "dim"),
                            key=str(s.ticket_id))
        self.query_one("#ack-skipped-title", Static).update(inert(
            f"Not acknowledged ({len(plan.skipped)}), with the rule that stopped each:" if plan.skipped
            else "Nothing skipped."))
        h = plan.handling
        learned = f"learned from {h.samples} solved tickets" if h.samples else "[ack] handling_time"
        self.query_one("#ack-title", Static).update(inert(
            f"Acknowledge waiting customers: {len(plan.candidates)} to acknowledge · a ticket takes about "
            f"{human_delay(h.median)} ({learned}) · {settings.agents} agent{'s' if settings.agents != 1 else ''}",
            "bold"))
        self._status()
        self._preview()
        table.focus()

    def _fit_subjects(self) -> None:
        """The subject, last, takes the width the other columns leave, cut with an ellipsis: the
        screen's edge cut it mid-word (the table scrolled sideways for the rest of it)."""
        table = self.query_one("#ack-eligible", DataTable)
        if table._updated_cells:  # the table measures updated cells when idle: fit the subject after that
            self.call_after_refresh(self._fit_subjects)
            return
        *before, subject = table.columns.values()
        others = sum(c.get_render_width(table) for c in before)
        room = table.scrollable_content_region.width - others - 2 * table.cell_padding
        if room < 6 or subject.content_width <= room:
            width, auto = subject.content_width, True  # it fits, or a screen too narrow: scroll for it
        else:
            width, auto = room, False
        if (subject.width, subject.auto_width) != (width, auto):
            subject.width, subject.auto_width = width, auto
            table._require_update_dimensions = True
            table._clear_caches()  # rows drawn at the old width are cached: "(edited)" on one left it uncut
            table.refresh()

    def on_resize(self) -> None:
        if self.plan is not None:
            self.call_after_refresh(self._fit_subjects)

    def _row(self, c) -> tuple:
        mark = Text("✓", style="bold green") if c.include else Text("–", style="dim")
        style = "" if c.include else "dim strike"
        promise = deadline_words(c.deadline, c.offset_minutes, self.settings, c.offset_seen_at)
        if c.deadline_edited:
            promise += " (edited)"
        if c.tier:
            promise += f" [{c.tier}]"
        return (mark, _cell(f"#{c.ticket_id}", style), _cell(c.customer_name or c.customer, style),
                _cell(promise, style), _cell(c.subject, style))

    def _current(self):
        if not self.plan or not self.plan.candidates:
            return None
        table = self.query_one("#ack-eligible", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((c for c in self.plan.candidates if str(c.ticket_id) == key), None)

    def _refresh_row(self, c) -> None:
        table = self.query_one("#ack-eligible", DataTable)
        for col, value in zip(table.columns, self._row(c)):
            # A promise now reading "... (edited)" is wider: its column grows, and the subject gives way.
            table.update_cell(str(c.ticket_id), col, value, update_width=True)
        self.call_after_refresh(self._fit_subjects)

    def _status(self, extra: str = "") -> None:
        if not self.plan:
            return
        n = len(self.plan.included)
        left = len(self.plan.candidates) - n
        line = f"{n} to send" + (f", {left} left out" if left else "")
        line += "  ·  space leave out  d deadline  e edit message  y send all  q back"
        self.query_one("#ack-status", Static).update(inert(extra or line))

    @on(DataTable.RowHighlighted, "#ack-eligible")
    def _highlighted(self, _event) -> None:
        self._preview()

    def _preview(self) -> None:
        c = self._current()
        preview = self.query_one("#ack-preview", Static)
        tone = self.query_one("#ack-tone", Static)
        if c is None:
            preview.update(inert("Every waiting customer has been acknowledged or answered."
                                 if self.plan else ""))
            tone.update("")
            return
        body = render_ack(c, self.app.cfg, self.settings, self.template)
        head = Content.assemble(("To: ", "bold"), inert(f"{c.customer_name} <{c.customer}>".strip()), "\n\n")
        preview.update(Content.assemble(head, inert_block(body)))
        warnings = ack_tone_warnings(body, now=self.plan.now)
        tone.update(inert("; ".join(f"tone: {w.code}: \"{w.found}\"" for w in warnings)) if warnings else "")

    # -- actions -----------------------------------------------------------------------
    def action_cursor(self, step: int) -> None:
        table = self.query_one("#ack-eligible", DataTable)
        table.move_cursor(row=max(0, table.cursor_row + step))

    def action_toggle(self) -> None:
        c = self._current()
        if c is None or self.sending or self.sent_done:
            return
        c.include = not c.include
        self._refresh_row(c)
        self._status()

    def action_deadline(self) -> None:
        c = self._current()
        if c is None or self.sending or self.sent_done:
            return
        title = Content.assemble((f"#{c.ticket_id}  ", "bold"), inert(c.subject, "bold"))

        def chosen(when: datetime | None) -> None:
            if when is not None:
                c.deadline = when.astimezone(self.settings.hours.tz)
                c.deadline_edited = True
                self._refresh_row(c)
                self._preview()

        self.app.push_screen(DeadlineDialog(title, deadline_words(c.deadline, c.offset_minutes, self.settings, c.offset_seen_at),
                                            self.settings, self.app.clock()), chosen)

    def action_edit(self) -> None:
        if not self.plan or self.sending or self.sent_done:
            return

        def edited(text: str | None) -> None:
            if text is not None:
                self.template = text
                self._preview()

        self.app.push_screen(TemplateDialog(self.template or self.settings.template), edited)

    def action_send(self) -> None:
        if not self.plan or self.sending or self.sent_done:
            return
        if not self.plan.included:
            self.app.toast("nothing to send: every ticket is left out", severity="warning")
            return
        self.sending = True
        self._status("queueing…")
        self.send_batch([c for c in self.plan.candidates], self.template)

    @work(thread=True, exclusive=True, group="ack-send", exit_on_error=False)
    def send_batch(self, candidates: list, template: str | None) -> None:
        app = self.app
        try:
            res = send_acknowledgements(app.store, app.cfg, candidates, now=app.clock(), agent=app.agent,
                                        settings=self.settings, template=template)
        except (AckError, ComposeError, ConfigError) as exc:
            app.call_from_thread(self._send_failed, str(exc))
            return
        app.call_from_thread(self._queued, res)
        if app.cfg.smtp is None or not res.queued:
            return
        from mail.send import drain_outbox

        drained = drain_outbox(app.store, app.cfg)
        app.call_from_thread(self._drained, drained)

    def _send_failed(self, line: str) -> None:
        self.sending = False
        self._status(line)
        self.app.toast(line, severity="error", timeout=8)

    def _queued(self, res) -> None:
        self._batch = res.outbox_ids
        self.sent_done = True
        if hasattr(self.app, "data_changed"):
            self.app.data_changed()
        for s in res.skipped:
            self.app.toast(f"#{s.ticket_id} not sent: {s.rule}", severity="warning")
        if not res.queued:
            self.sending = False
            self._status("nothing was queued")
            return
        bar = self.query_one("#ack-progress", ProgressBar)
        bar.add_class("-visible")
        bar.update(total=len(self._batch), progress=0)
        if self.app.cfg.smtp is None:
            self.sending = False
            self._status(f"{len(res.queued)} queued: add [smtp] to the config to send them")
            return
        self._status(f"sending {len(res.queued)}…")
        self._poll = self.set_interval(0.2, self._follow_outbox)

    def _follow_outbox(self) -> None:
        if not self._batch:
            return
        try:
            with self.app.store.read() as s:
                from sqlalchemy import select

                from storage.models import Outbox

                O = Outbox.__table__
                rows = s.connection().execute(select(O.c.state, O.c.last_error).where(O.c.id.in_(self._batch))).all()
            states = [r[0] for r in rows]
        except DatabaseUnreachable as exc:  # the bar waits; the next tick asks again
            unreachable = getattr(self.app, "database_unreachable", None)
            if unreachable is not None:
                unreachable(exc)
            return
        done = sum(1 for st in states if st in SETTLED)
        self.query_one("#ack-progress", ProgressBar).update(progress=done)
        waiting = [err for st, err in rows if st == "queued"]
        if done < len(self._batch) and self._drained_once and waiting and "sending" not in states:
            # The server is down or deferring: say so, rather than "sending…" for as long as it takes.
            sent = states.count("sent")
            why = next((e for e in waiting if e), "")
            self.sending = False
            self._status(f"{sent} sent, {len(waiting)} waiting" + (f": {why}" if why else "")
                         + "  ·  heard keeps trying in the background (`heard outbox`)  ·  q back")
            return
        if done >= len(self._batch):
            self._poll.stop()
            sent = states.count("sent")
            problems = len(states) - sent
            self.sending = False
            self._status(f"{sent} acknowledgement{'s' if sent != 1 else ''} sent"
                         + (f", {problems} not sent: see `heard outbox`" if problems else "") + "  ·  q back")
            if hasattr(self.app, "data_changed"):
                self.app.data_changed()

    def _drained(self, result) -> None:
        self._drained_once = True
        for line in result.errors:
            self.app.toast(line, severity="error", timeout=10)
        self._follow_outbox()

    def action_close(self) -> None:
        if self.sending and self.app.cfg.smtp is not None:
            self.app.toast("still sending: the rest goes out in the background", severity="information")
        self.dismiss(None)

    def data_changed(self) -> None:
        """The app's refresh hook: a new plan unless this batch is under way or done."""
        if not self.sending and not self.sent_done:
            self.load_plan()


def ack_screen(app) -> AckReviewScreen:
    """The factory ``HeardApp.open_ack_review`` pushes."""
    return AckReviewScreen()


# -- the update dialog for an at-risk promise ---------------------------------------------------
class UpdateDialog(ModalScreen[bool]):
    """One short update: "I need until <new deadline>, because <reason>"."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="ack.update.cancel")]
    DEFAULT_CSS = """
    UpdateDialog { align: center middle; }
    UpdateDialog > Vertical { width: 80; height: auto; padding: 1 2; border: round $warning; background: $surface; }
    UpdateDialog #update-error { color: $text-error; height: auto; }
    """

    def __init__(self, ticket_id: int) -> None:
        super().__init__()
        self.ticket_id = ticket_id
        self.settings: AckSettings | None = None
        self.promise: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("", id="update-title")
            yield Static(DEADLINE_HINT, markup=False)
            yield Input(placeholder="thu 14:00", id="update-when")
            yield Static("Why you need more time (goes to the customer: \"I need until …, because …\")", markup=False)
            yield Input(placeholder="the fix ships on Thursday", id="update-reason")
            yield Static("", id="update-error")

    def on_mount(self) -> None:
        from storage import ledger

        app = self.app
        now = app.clock()
        try:
            self.settings = ack_settings(app.cfg, now=now)
        except ConfigError as exc:
            self._error(str(exc))
            return
        try:
            with app.store.read() as s:
                self.promise = ledger.promise_in_force(s.connection(), self.ticket_id, now=now,
                                                       at_risk_margin=self.settings.risk_window(now))
        except DatabaseUnreachable as exc:  # no promise to read, nor any to write: say so, stay put
            self.settings = None
            self._error(str(exc))
            return
        if self.promise is None:
            title = f"#{self.ticket_id} has no promise yet: acknowledge it first (a in the queue)"
        else:
            state = {"at_risk": "at risk", "broken": "broken", "open": "not at risk yet",
                     "kept": "kept"}.get(self.promise["state"], self.promise["state"])
            title = (f"#{self.ticket_id}: promised by "
                     f"{format_deadline_short(self.promise['deadline'], self.settings.hours.tz)} ({state})")
        self.query_one("#update-title", Static).update(inert(title, "bold"))
        self.query_one("#update-when", Input).focus()

    def _error(self, line: str) -> None:
        self.query_one("#update-error", Static).update(inert(line))

    @on(Input.Submitted, "#update-when")
    def _next(self) -> None:
        self.query_one("#update-reason", Input).focus()

    @on(Input.Submitted, "#update-reason")
    def _submit(self) -> None:
        self.submit(force=False)

    def submit(self, *, force: bool) -> None:
        if self.settings is None:
            return
        now = self.app.clock()
        try:
            when = parse_when(self.query_one("#update-when", Input).value, now=now, hours=self.settings.hours)
        except AckError as exc:
            self._error(str(exc))
            return
        reason = self.query_one("#update-reason", Input).value
        self.send(when, reason, force)

    @work(thread=True, exclusive=True, group="ack-update", exit_on_error=False)
    def send(self, when: datetime, reason: str, force: bool) -> None:
        app = self.app
        try:
            res = send_update(app.store, app.cfg, self.ticket_id, deadline=when, reason=reason, now=app.clock(),
                              agent=app.agent, force=force, settings=self.settings)
        except (AckError, ComposeError) as exc:
            app.call_from_thread(self._refused, str(exc), force)
            return
        app.call_from_thread(self._sent, res)
        if app.cfg.smtp is not None:
            from mail.send import drain_outbox

            drain_outbox(app.store, app.cfg)

    def _refused(self, line: str, forced: bool) -> None:
        if not forced and ("--force" in line):
            # The reason ends at the first ": " (a time such as 12:00 in it has no space after its colon).
            question = line.split(": ", 1)[0] + ": send it anyway?"

            def answered(yes: bool | None) -> None:
                if yes:
                    self.submit(force=True)

            self.app.push_screen(ConfirmDialog(question, safe_line(line)), answered)
            return
        self._error(line)

    def _sent(self, res) -> None:
        tz = self.settings.hours.tz
        if hasattr(self.app, "toast"):
            self.app.toast(f"#{self.ticket_id}: update queued; promised by {format_deadline_short(res.deadline, tz)}")
        if hasattr(self.app, "data_changed"):
            self.app.data_changed()
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)


def update_screen(app, ticket_id: int) -> UpdateDialog:
    """For the ticket screen's "update the customer" key (an at-risk promise)."""
    return UpdateDialog(ticket_id)
