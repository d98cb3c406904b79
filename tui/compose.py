"""The reply composer, its review step and the next-state dialog.

``r`` on a ticket pushes :class:`ComposeScreen` (``reply_screen(app, id)`` for
the app's seam). The flow, as in aerc/mutt:

1. write in the built-in editor (greeting, signature and the customer's last
   message quoted are already there), or ``ctrl+o`` / ``e`` for ``$EDITOR``;
   ``ctrl+t`` inserts a saved reply with its variables filled;
2. ``ctrl+s``: placeholders left ({order_number}, [[...]]) block here; else
   the review shows the tone checks: ``y`` send, ``e`` edit, ``q`` cancel;
3. ``y`` asks the ticket's next state (waiting on customer by default) and
   the reason; then the reply, the ticket change and the outbox row are
   written in one transaction, and the outbox is drained in a worker
   thread, so a slow or absent SMTP server never blocks the app.

Every text from mail is shown as data (``markup=False`` / ``Content``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Input, Label, OptionList, Static, TextArea
from textual.widgets.option_list import Option

from mail.compose import (
    ComposeError,
    ReplyContext,
    draft_reply,
    has_own_words,
    reply_context,
    reply_subject,
    tone_warnings,
    unfilled_placeholders,
)
from mail.config import Config
from mail.templates import render_saved_reply, template_values
from mail.tone import ToneWarning
from mail.untrusted import safe_line, safe_text
from storage.db import DatabaseUnreachable, Store
from storage.lifecycle import ALLOWED, STATUS_LABELS, LifecycleError, Status
from storage.tickets import events_of, ticket_row
from tui.widgets import KeyFooter

__all__ = ["ComposeScreen", "ReviewScreen", "NextStateDialog", "SavedReplyPicker", "reply_screen",
           "start_outbox_drain", "unsent_drafts", "OUTBOX_GROUP"]

Clock = Callable[[], datetime]
OUTBOX_GROUP = "outbox"

# Unsent drafts by ticket, for this session, with the saved replies inserted into them:
# cancelling a review never loses the text, nor what the repeat check needs to know.
_DRAFTS: dict[int, tuple[str, list[str]]] = {}


def reply_screen(app, ticket_id: int) -> "ComposeScreen":
    """The app's seam: ``r`` on a ticket."""
    return ComposeScreen(app.store, app.cfg, ticket_id, app.clock)


def unsent_drafts(app: App) -> list[int]:
    """The tickets with a reply written and not sent in this session: drafts kept by cancelling,
    and composers still open with words of the agent's own in them. Quitting loses them."""
    ids = set(_DRAFTS)
    for screen in app.screen_stack:
        if isinstance(screen, ComposeScreen) and screen.has_own_words():
            ids.add(screen.ticket_id)
    return sorted(ids)


def start_outbox_drain(app: App, store: Store, cfg: Config, *, quiet: bool = False) -> None:
    """Drain the outbox in an app-level thread worker; tells the agent what failed.

    Call it after queueing, on start-up and from a timer. Overlapping calls
    are harmless (``drain_outbox`` lets one run per process).
    """
    from mail.send import drain_outbox

    def drain() -> None:
        res = drain_outbox(store, cfg)
        if res.busy:
            return

        def report() -> None:
            for line in res.errors:
                app.notify(safe_line(line), severity="error", timeout=12, markup=False)
            if not quiet and res.sent:
                n = len(res.sent)
                app.notify(f"{n} message{'s' if n != 1 else ''} sent", markup=False)
            changed = getattr(app, "data_changed", None)
            if changed is not None and (res.attempted or res.reconciled):
                changed()

        app.call_from_thread(report)

    app.run_worker(drain, thread=True, group=OUTBOX_GROUP, exit_on_error=False, name="drain outbox")


# -- the composer ---------------------------------------------------------------------------
class ComposeScreen(Screen[int | None]):
    """Write a reply to one ticket's customer. Dismisses with the outbox id, or None."""

    DEFAULT_CSS = """
    ComposeScreen { layout: vertical; }
    ComposeScreen #compose-head { height: auto; padding: 0 1; background: $boost; }
    ComposeScreen #compose-text { height: 1fr; }
    ComposeScreen #compose-status { height: auto; padding: 0 1; color: $warning; }
    """

    BINDINGS = [
        Binding("ctrl+s", "review", "Review & send", priority=True, id="compose.review"),
        Binding("ctrl+o", "external_editor", "$EDITOR", priority=True, id="compose.editor"),
        Binding("ctrl+t", "saved_reply", "Saved reply", priority=True, id="compose.saved"),
        Binding("escape", "leave_text", "Done typing", id="compose.escape"),
        Binding("e", "external_editor", "$EDITOR", id="compose.editor_key"),
        Binding("i,enter", "edit", "Edit here", id="compose.edit"),
        Binding("y,s", "review", "Review", show=False, id="compose.review_key"),
        Binding("t", "saved_reply", "Saved reply", show=False, id="compose.saved_key"),
        Binding("q", "cancel", "Cancel", id="compose.cancel"),
    ]

    def __init__(self, store: Store, cfg: Config, ticket_id: int, clock: Clock) -> None:
        super().__init__()
        self.store = store
        self.cfg = cfg
        self.ticket_id = ticket_id
        self.clock = clock
        self.ctx: ReplyContext | None = None
        self.saved_replies: list[str] = []  # every saved reply inserted, in order, for the repeat check
        self._sending = False

    # layout
    vague = False  # the ticket's first mail was flagged vague and we have not answered yet

    # The text area gets the focus when the agent types (``i``, on opening), never by itself: a screen
    # closing over the composer (help, a saved reply picker) leaves single keys as commands if they were.
    AUTO_FOCUS = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="compose-head", markup=False)
        yield TextArea("", id="compose-text", soft_wrap=True, tab_behavior="focus")
        yield Static("", id="compose-status", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        try:
            with self.store.read() as s:
                self.ctx = reply_context(s.connection(), self.ticket_id)
                row = ticket_row(s.connection(), self.ticket_id) or {}
        except LifecycleError as exc:
            self.notify(str(exc), severity="error", markup=False)
            self.dismiss(None)
            return
        except DatabaseUnreachable as exc:  # nothing to write to, nor to answer from: back to the ticket
            unreachable = getattr(self.app, "database_unreachable", None)
            unreachable(exc) if unreachable else self.notify(str(exc), severity="error", markup=False)
            self.dismiss(None)
            return
        ctx = self.ctx
        to = f"{ctx.customer_name} <{ctx.customer_address}>" if ctx.customer_name else ctx.customer_address
        self.query_one("#compose-head", Static).update(Content.assemble(
            ("To: ", "bold"), safe_line(to), "\n",
            ("Subject: ", "bold"), safe_line(reply_subject(ctx.subject, self.ticket_id)), "\n",
            ("From: ", "bold"), safe_line(f"{self.cfg.agent_name} <{self.cfg.address}>"),
        ))
        area = self.query_one(TextArea)
        kept = _DRAFTS.get(self.ticket_id)
        if kept is None:
            draft = draft_reply(ctx, agent_name=self.cfg.agent_name, signature=self.cfg.signature)
        else:
            draft, self.saved_replies = kept[0], list(kept[1])
        area.text = draft
        area.move_cursor((2, 0))  # the empty line under the greeting
        area.focus()
        self.vague = bool(row.get("vague_reason")) and not ctx.our_texts
        self._hint()

    def _hint(self, text: str | None = None) -> None:
        default = "ctrl+s review and send · ctrl+o $EDITOR · ctrl+t saved reply · esc then q to cancel"
        if self.vague and text is None:
            default = ("this first mail is vague: ctrl+t offers the clarifying questions first · " + default)
        self.query_one("#compose-status", Static).update(text or default)

    @property
    def draft(self) -> str:
        return self.query_one(TextArea).text

    def has_own_words(self) -> bool:
        """Whether the draft says anything besides the greeting, the signature and the quote."""
        if self.ctx is None or not self.is_mounted:
            return False
        return has_own_words(self.draft, self.ctx, agent_name=self.cfg.agent_name, signature=self.cfg.signature)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # Single letters are commands only when the text area does not have the keys.
        if action in ("edit", "cancel") and isinstance(self.focused, TextArea):
            return False
        return True

    # actions
    def action_leave_text(self) -> None:
        if isinstance(self.focused, TextArea):
            self.set_focus(None)
            self._hint("e $EDITOR · i edit here · s review and send · t saved reply · q cancel")
        else:
            self.action_cancel()

    def action_edit(self) -> None:
        self.query_one(TextArea).focus()
        self._hint()

    def action_cancel(self) -> None:
        if self.has_own_words():
            _DRAFTS[self.ticket_id] = (self.draft, list(self.saved_replies))
            self.notify("reply not sent; the draft is kept until you quit", markup=False)
        else:  # nothing written: nothing to keep, the next r starts afresh
            _DRAFTS.pop(self.ticket_id, None)
            self.notify("reply not sent", markup=False)
        self.dismiss(None)

    def action_external_editor(self) -> None:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        fd, path = tempfile.mkstemp(prefix=f"heard-reply-{self.ticket_id}-", suffix=".txt")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(self.draft)
            try:
                with self.app.suspend():
                    subprocess.run([*shlex.split(editor), path], check=False)
            except Exception as exc:  # headless, or the editor could not start
                self.notify(f"cannot run $EDITOR ({editor}): {exc}", severity="error", markup=False)
                return
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.query_one(TextArea).text = text
        self.refresh()

    def action_saved_reply(self) -> None:
        from mail.templates import DEFAULT_SAVED_REPLIES
        from mail.vague import CLARIFYING_REPLY_NAME
        from storage.tickets import saved_replies

        with self.store.read() as s:
            rows = saved_replies(s.connection())
        # The built-in ones are always there; the team's own (same name) win.
        names = {r["name"] for r in rows}
        rows += [{"name": n, "body": b} for n, b in DEFAULT_SAVED_REPLIES.items() if n not in names]
        if self.vague:  # a vague first mail: the clarifying questions come first
            rows.sort(key=lambda r: r["name"] != CLARIFYING_REPLY_NAME)

        def chosen(name: str | None) -> None:
            if not name or self.ctx is None:
                return
            body = next(r["body"] for r in rows if r["name"] == name)
            values = template_values(self.ctx, agent_name=self.cfg.agent_name, support_address=self.cfg.address)
            area = self.query_one(TextArea)
            area.insert(render_saved_reply(body, values))
            area.focus()
            self.saved_replies.append(name)
            left = unfilled_placeholders(area.text)
            if left:
                self._hint(f"fill in before sending: {', '.join(left)}")

        self.app.push_screen(SavedReplyPicker(rows), chosen)

    def action_review(self) -> None:
        if self.ctx is None or self._sending:
            return
        draft = self.draft
        left = unfilled_placeholders(draft)
        if left:
            msg = f"fill in or delete before sending: {', '.join(left)}"
            self._hint(msg)
            self.notify(msg, severity="warning", markup=False)
            return
        if not has_own_words(draft, self.ctx, agent_name=self.cfg.agent_name, signature=self.cfg.signature):
            msg = "nothing written yet: your answer goes under the greeting, above the signature"
            self._hint(msg)
            self.notify(msg, severity="warning", markup=False)
            return
        warnings = tone_warnings(self.ctx, draft, now=self.clock(), saved_reply=self.saved_replies)

        def decided(answer: str | None) -> None:
            if answer == "send":
                self._ask_next_state(draft)
            elif answer == "cancel":
                self.action_cancel()
            else:
                self.action_edit()

        self.app.push_screen(ReviewScreen(self.ctx, self.cfg, draft, warnings), decided)

    def _ask_next_state(self, draft: str) -> None:
        assert self.ctx is not None

        def answered(answer: NextState | None) -> None:
            if answer is None:
                self.action_edit()
                return
            self._sending = True
            self._hint("queueing…")
            self._queue(draft, answer)

        self.app.push_screen(NextStateDialog(Status(self.ctx.status)), answered)

    @work(thread=True, exclusive=True, exit_on_error=False, group="compose")
    def _queue(self, draft: str, answer: "NextState") -> None:
        from mail.send import queue_reply

        try:
            oid = queue_reply(
                self.store, self.cfg, self.ticket_id, draft, agent=self.cfg.agent, now=self.clock(),
                next_status=answer.status, reason=answer.reason, saved_reply=self.saved_replies,
            )
        except LifecycleError as exc:
            self.app.call_from_thread(self._refused, *self._moved_meanwhile(str(exc)))
            return
        except ComposeError as exc:
            self.app.call_from_thread(self._refused, str(exc))
            return
        self.app.call_from_thread(self._queued, oid)

    def _moved_meanwhile(self, error: str) -> tuple[str, ReplyContext | None]:
        """In the worker: a refused next state may be another agent's doing (they solved the ticket
        while this reply was written). Say who and why, with the ticket as it is now, so the next
        try offers the states that ticket can take."""
        assert self.ctx is not None
        try:
            with self.store.read() as s:
                conn = s.connection()
                ctx = reply_context(conn, self.ticket_id)
                moves = [e for e in events_of(conn, self.ticket_id) if e["kind"] == "status"]
        except Exception:  # the refusal itself is still the answer
            return error, None
        if ctx.status == self.ctx.status or not moves:
            return error, ctx
        last = moves[-1]
        return (f"{safe_line(last['actor'])} made #{self.ticket_id} {STATUS_LABELS[Status(ctx.status)]} meanwhile "
                f"(\"{safe_line(last['reason'] or '')}\"): your reply was not sent; send it again and pick its "
                "next state"), ctx

    def _refused(self, error: str, ctx: ReplyContext | None = None) -> None:
        if ctx is not None:
            self.ctx = ctx
        self._sending = False
        self.notify(error, severity="error", markup=False)
        self.query_one(TextArea).focus()
        self._hint(error)  # stays under the draft after the toast has gone

    def _queued(self, outbox_id: int) -> None:
        _DRAFTS.pop(self.ticket_id, None)
        self.notify(f"reply queued (outbox #{outbox_id}); sending…", markup=False)
        start_outbox_drain(self.app, self.store, self.cfg)
        changed = getattr(self.app, "data_changed", None)
        if changed is not None:
            changed()
        self.dismiss(outbox_id)


# -- the review ------------------------------------------------------------------------------
class ReviewScreen(ModalScreen[str]):
    """The draft as it will go, with the tone checks. ``y`` send, ``e`` edit, ``q`` cancel."""

    DEFAULT_CSS = """
    ReviewScreen { align: center middle; }
    ReviewScreen #review { width: 90%; height: 90%; border: round $primary; padding: 0 1; background: $surface; }
    ReviewScreen #review-body { height: 1fr; border-top: solid $panel; }
    ReviewScreen #review-tone { height: auto; max-height: 40%; }
    ReviewScreen .tone-warning { color: $warning; margin-bottom: 1; }
    ReviewScreen #review-keys { height: auto; color: $text-muted; }
    """

    BINDINGS = [
        Binding("y", "answer('send')", "Send", id="review.send"),
        Binding("e,escape", "answer('edit')", "Edit", id="review.edit"),
        Binding("q", "answer('cancel')", "Cancel", id="review.cancel"),
    ]

    def __init__(self, ctx: ReplyContext, cfg: Config, draft: str, warnings: list[ToneWarning]) -> None:
        super().__init__()
        self.ctx = ctx
        self.cfg = cfg
        self.draft = draft
        self.warnings = warnings

    def compose(self) -> ComposeResult:
        ctx = self.ctx
        with Vertical(id="review"):
            yield Static(Content.assemble(
                ("To: ", "bold"), safe_line(f"{ctx.customer_name} <{ctx.customer_address}>"), "\n",
                ("Subject: ", "bold"), safe_line(reply_subject(ctx.subject, ctx.ticket_id)),
            ), id="review-head")
            with VerticalScroll(id="review-tone"):
                if self.warnings:
                    yield Label(f"Tone: {len(self.warnings)} thing{'s' if len(self.warnings) != 1 else ''} "
                                "customers may dislike (you can send anyway)", markup=False)
                    for w in self.warnings:
                        yield Static(
                            Content.assemble(("⚠ ", "bold"), (w.code, "bold"), ": “", safe_line(w.found), "” — ", w.why),
                            classes="tone-warning",
                        )
                else:
                    yield Label("Tone: nothing to flag", markup=False)
            with VerticalScroll(id="review-body"):
                yield Static(safe_text(self.draft), markup=False, id="review-text")
            yield Static(Content.from_markup("[b]y[/b] send  [b]e[/b] edit  [b]q[/b] cancel"), id="review-keys")

    def action_answer(self, answer: str) -> None:
        self.dismiss(answer)


# -- after sending: the next state and its reason --------------------------------------------------
@dataclass(frozen=True, slots=True)
class NextState:
    status: str | None  # None: keep the current state
    reason: str | None


class NextStateDialog(ModalScreen[NextState | None]):
    """Pick the ticket's next state (waiting on customer first) and say why."""

    DEFAULT_CSS = """
    NextStateDialog { align: center middle; }
    NextStateDialog #next-state { width: 70; height: auto; border: round $primary; padding: 0 1; background: $surface; }
    NextStateDialog OptionList { height: auto; max-height: 8; }
    NextStateDialog #next-error { color: $error; height: auto; }
    """

    BINDINGS = [Binding("escape", "cancel", "Back to the draft", id="next.cancel")]

    def __init__(self, current: Status) -> None:
        super().__init__()
        self.current = current
        order = [Status.PENDING, Status.SOLVED, Status.ON_HOLD, Status.OPEN, Status.CLOSED]
        self.choices: list[str | None] = [s.value for s in order if s in ALLOWED[current]]
        self.choices.append(None)  # keep as is

    def compose(self) -> ComposeResult:
        with Vertical(id="next-state"):
            yield Label("After sending, the ticket becomes:", markup=False)
            yield OptionList(
                *[Option(f"{n}  {STATUS_LABELS[Status(v)] if v else f'keep as {STATUS_LABELS[self.current]}'}", id=str(n))
                  for n, v in enumerate(self.choices, 1)],
                id="next-choices",
            )
            yield Label("Why? The reason goes on the ticket's record with your name.", markup=False)
            yield Input(placeholder="reason", id="next-reason")
            yield Static("", id="next-error", markup=False)
            yield Static(Content.from_markup("[b]↑↓[/b] state  [b]enter[/b] send  [b]esc[/b] back"))

    def on_mount(self) -> None:
        self.query_one(OptionList).highlighted = 0
        self.query_one(Input).focus()

    def on_key(self, event) -> None:
        # The reason box keeps focus; up/down still choose the state.
        if event.key in ("up", "down") and isinstance(self.focused, Input):
            options = self.query_one(OptionList)
            options.action_cursor_up() if event.key == "up" else options.action_cursor_down()
            event.stop()

    @property
    def chosen(self) -> str | None:
        idx = self.query_one(OptionList).highlighted or 0
        return self.choices[idx]

    @on(OptionList.OptionSelected)
    def _picked(self) -> None:
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def submit(self) -> None:
        reason = " ".join(self.query_one(Input).value.split())
        status = self.chosen
        if status is not None and not reason:
            self.query_one("#next-error", Static).update("a reason is required: say why, so the next person knows")
            return
        self.dismiss(NextState(status, reason or None))

    def action_cancel(self) -> None:
        self.dismiss(None)


# -- saved replies ------------------------------------------------------------------------------
class SavedReplyPicker(ModalScreen[str | None]):
    DEFAULT_CSS = """
    SavedReplyPicker { align: center middle; }
    SavedReplyPicker #saved { width: 80; height: auto; max-height: 80%; border: round $primary; background: $surface; }
    """

    BINDINGS = [Binding("escape,q", "cancel", "Cancel", id="saved.cancel")]

    def __init__(self, rows: list[dict]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="saved"):
            yield Label("Insert a saved reply", markup=False)
            yield OptionList(*[
                Option(Content.assemble((safe_line(r["name"]), "bold"), "  ",
                                        safe_line(next((ln for ln in r["body"].splitlines() if ln.strip()), ""))[:60]),
                       id=str(i))
                for i, r in enumerate(self.rows)
            ])

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.rows[int(event.option.id or 0)]["name"])

    def action_cancel(self) -> None:
        self.dismiss(None)
