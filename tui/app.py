"""The heard app: the queue, one ticket at a time, a reason for every change.

Seams for other screens:

- ``r`` on a ticket calls :meth:`HeardApp.open_reply`, which pushes
  ``tui.compose.reply_screen(app, ticket_id)`` (a ``Screen``) when that module
  exists and ``[smtp]`` is configured;
- ``a`` on the queue calls :meth:`HeardApp.open_ack_review`, which pushes
  ``tui.ack.ack_screen(app)``.

Either screen calls ``app.data_changed()`` after it writes (the app also calls
it when the screen is dismissed), so the queue and header catch up. Both can
use ``app.store``, ``app.cfg``, ``app.agent``, ``app.clock`` and
``app.toast(...)``.
"""

from __future__ import annotations

import importlib
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone, tzinfo
from functools import partial
from pathlib import Path

from sqlalchemy.engine import Connection
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.worker import Worker, WorkerState

from mail.config import Config, ConfigError
from mail.untrusted import safe_line, safe_text
from storage import tickets
from storage.outbox import outbox_rows
from storage.db import DatabaseUnreachable, Store
from storage.lifecycle import ALLOWED, PRIORITY_RANK, LifecycleError, Priority, Status
from tui.dialogs import ConfirmDialog, CustomerTicketsScreen, HelpScreen, ReasonAnswer, ReasonDialog
from tui.queue_view import QueueTable
from tui.screens import CHANGE_BINDINGS, VIEWS, QueueScreen, TicketScreen
from tui.widgets import StatusHeader, SyncState, inert, status_label

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SyncStatusChanged(Message):
    """From the sync thread: a mode (idle, polling, offline), an error, what arrived."""

    def __init__(self, mode: str, error: str | None, new_messages: int, new_tickets: int,
                 problem: str | None = None, database: bool = False) -> None:
        super().__init__()
        self.mode = mode
        self.database = database  # the problem is the database's, not the mail server's
        self.error = error  # as shown, with the retry
        self.problem = problem if problem is not None else error  # the same across retries
        self.new_messages = new_messages
        self.new_tickets = new_tickets


class TicketJumpProvider(Provider):
    """`#123` or `123` in the command palette opens that ticket."""

    async def search(self, query: str) -> Hits:
        match = re.fullmatch(r"\s*#?(\d{1,12})\s*", query)
        if not match:
            return
        app: HeardApp = self.app  # type: ignore[assignment]
        tid = int(match.group(1))
        row = app.fetch_rows([tid]).get(tid)
        if row is None:
            return
        display = Content.assemble((f"Open ticket #{tid}  ", "bold"), inert(row.get("subject") or "(no subject)"))
        yield Hit(1.0, display, partial(app.open_ticket, tid), text=f"#{tid}",
                  help=f"{status_label(row['status'])} · {safe_line(row.get('customer') or '')}")

    async def discover(self) -> Hits:
        yield DiscoveryHit("Open ticket…  type its number, e.g. #123", lambda: None, text="#")


class HeardApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "heard"
    COMMANDS = App.COMMANDS | {TicketJumpProvider}
    BINDINGS = [
        Binding("n", "take_next", "Take next", id="app.take_next"),
        Binding("question_mark", "help", "Keys", id="app.help"),
    ]

    def __init__(self, cfg: Config, *, store: Store | None = None, clock: Clock = utc_now,
                 start_sync: bool = True, tz: tzinfo | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.store = store if store is not None else Store(cfg.database)
        self.clock = clock
        self.tz = tz
        self.agent = cfg.agent
        self.start_sync = start_sync
        # Other agents' apps, heard sync --watch and scripts change the same database: look every
        # CHANGES_EVERY seconds whether anything changed, and read the screen again when it did.
        self.follow_changes = start_sync
        self._seen_version: tuple | None = None
        self.sync = SyncState(mode="connecting" if start_sync else "off")
        self.counts: dict = {}
        self.holding: int | None = None
        self._stop_sync = threading.Event()
        self._last_sync_error: str | None = None
        self._first_ids: Future | None = None
        from mail.ack import ack_settings

        # Validated up front: a bad [ack]/[hours]/[tiers] value stops the app with one line.
        self.ack_settings = ack_settings(cfg, now=clock())
        # Every time on screen is on the desk's clock, the zone deadlines are written in.
        self.tz = tz if tz is not None else self.ack_settings.hours.tz
        self._outbox_wake = threading.Event()
        self._db_problem: str | None = None  # the database stopped answering: what it said
        self._db_retry = None  # the timer that tries it again
        if cfg.keys:
            self.set_keymap(check_keymap(cfg.keys))

    @property
    def at_risk_margin(self) -> timedelta:
        """``[ack] at_risk_margin`` (business time) as calendar time from now: at 16:00 on a Friday, a
        promise due Monday 10:00 is at risk."""
        return self.ack_settings.risk_window(self.clock())

    # -- reads (fast, indexed: done in place) ------------------------------------------
    @contextmanager
    def db(self) -> Iterable[Connection]:
        with self.store.read() as session:
            yield session.connection()

    def queue_ids(self, view: str, query: str = "") -> list[int]:
        with self.db() as conn:
            matching = None
            if query:
                matching = self.store.search.ticket_select(query)
                if matching is None:
                    return []
            return tickets.queue_ids(conn, view=view, agent=self.agent, matching=matching, now=self.clock(),
                                     at_risk_margin=self.at_risk_margin)

    def search_ids(self, query: str) -> set[int]:
        """Every ticket a search finds, in any view (to filter a work order already sorted)."""
        with self.db() as conn:
            return self.store.search.ticket_ids(conn, query)

    def fetch_rows(self, ids: list[int]) -> dict[int, dict]:
        with self.db() as conn:
            return tickets.rows_by_id(conn, ids)

    def ticket_detail(self, ticket_id: int) -> dict:
        with self.db() as conn:
            detail = tickets.ticket_detail(conn, ticket_id)
            row = tickets.ticket_row(conn, ticket_id) or {}
            detail["send_problems"] = outbox_rows(conn, ticket_id=ticket_id, states=("failed", "unknown"))
        detail["customer_name"] = row.get("customer_name") or ""
        detail["tier"] = row.get("tier")
        return detail

    # -- start and stop ----------------------------------------------------------------
    def on_load(self) -> None:
        # The first queue query (a sort of every open ticket) runs while the screens are built.
        self._first_ids = Future()
        threading.Thread(target=self._preload, name="heard-first-queue", daemon=True).start()

    def _preload(self) -> None:
        try:
            self._first_ids.set_result(self.queue_ids("open"))
        except BaseException as exc:  # handed to the screen's worker, which reports it
            self._first_ids.set_exception(exc)

    def initial_queue_ids(self, view: str, query: str) -> list[int]:
        """The queue for (view, query): the preloaded first one if that is what is asked."""
        first, self._first_ids = self._first_ids, None
        if first is not None and (view, query) == ("open", ""):
            return first.result()
        return self.queue_ids(view, query)

    def on_mount(self) -> None:
        self.install_screen(TicketScreen(), name="ticket")
        self.push_screen(QueueScreen())
        self.load_header()
        if self.follow_changes:
            self.set_interval(CHANGES_EVERY, self.look_for_changes)
        if self.start_sync:
            self.run_sync()
            if self.cfg.smtp is not None:
                self.run_outbox()

    def on_unmount(self) -> None:
        from mail.imap import abort_connections

        self._stop_sync.set()
        self._outbox_wake.set()
        # A mail server that stopped answering must not hold the quit: the workers' reads fail now, and
        # what they were doing settles as after a dropped connection (a send cut after its data is unknown).
        abort_connections()

    @work(thread=True, exclusive=True, group="outbox", exit_on_error=False)
    def run_outbox(self) -> None:
        """Sends what is due, retries 4xx with backoff; the app never waits on SMTP."""
        from mail.send import drain_outbox

        while not self._stop_sync.is_set():
            try:
                result = drain_outbox(self.store, self.cfg)
            except Exception as exc:  # a down server is reported, then retried on the next round
                self.call_from_thread(self.toast, f"sending: {exc}", severity="error", timeout=8)
            else:
                if result.attempted or result.reconciled:
                    self.call_from_thread(self.data_changed)
                for line in result.errors:
                    self.call_from_thread(self.toast, line, severity="error", timeout=10)
            self._outbox_wake.wait(15)
            self._outbox_wake.clear()

    def wake_outbox(self) -> None:
        """Something was queued: send it now rather than at the next round."""
        self._outbox_wake.set()

    @work(thread=True, exclusive=True, group="sync", exit_on_error=False)
    def run_sync(self) -> None:
        from mail.sync import watch

        def report(status) -> None:
            summary = status.summary
            # The new mail shows first; housekeeping (check-ins, auto-close, [ack] auto) follows it.
            self.post_message(SyncStatusChanged(
                status.mode, status.message,
                summary.new_messages if summary else 0, summary.tickets_created if summary else 0,
                problem=status.error, database=status.database,
            ))
            if summary is not None and self.cfg.smtp is not None:
                self._after_sync()

        watch(self.store, self.cfg, stop=self._stop_sync, on_status=report)

    def _after_sync(self) -> None:
        """In the sync worker: check-ins, auto-close and (with [ack] auto) new acknowledgements."""
        from mail.ack import housekeeping

        try:
            hk = housekeeping(self.store, self.cfg, self.clock(), settings=self.ack_settings)
        except Exception as exc:  # never let housekeeping stop the live sync
            self.call_from_thread(self.toast, f"housekeeping: {exc}", severity="error", timeout=8)
            return
        if hk.outbox_ids:
            self.wake_outbox()
        if hk.outbox_ids or hk.closed or hk.settled:
            self.call_from_thread(self.data_changed)

    def on_sync_status_changed(self, event: SyncStatusChanged) -> None:
        self.sync.mode = event.mode
        self.sync.error = event.error
        if event.mode != "offline":
            self.sync.last_sync = self.clock()
        # One toast per problem: the retries of the same error only update the header. A database that
        # stopped answering is the app's problem as much as the sync's: said once, by database_unreachable.
        if event.problem and event.problem != self._last_sync_error:
            if event.database:
                self.database_unreachable(DatabaseUnreachable(event.problem))
            else:
                self.toast(f"sync: {event.error}", severity="error", timeout=8)
        self._last_sync_error = event.problem
        if event.new_messages or (self._db_problem and event.mode != "offline"):
            self.data_changed()
            if event.new_tickets:
                self.toast(f"{event.new_tickets} new ticket{'s' if event.new_tickets != 1 else ''}")
        else:
            self.refresh_header()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # One place turns a failed worker into a toast; nothing crashes the app.
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            err = event.worker.error
            if isinstance(err, DatabaseUnreachable) and event.worker.group != "write":
                self.database_unreachable(err)  # a read: said once, retried
                return
            self.toast(f"{event.worker.name or 'background task'} failed: {err}", severity="error", timeout=10)
            if event.worker.group == "sync":
                self.sync.mode = "offline"
                self.sync.error = str(err)
                self.refresh_header()

    async def run_action(self, action, default_namespace=None, namespaces=None) -> bool:
        """Every key and palette action: a database that stopped answering is one toast, not a crash."""
        try:
            return await super().run_action(action, default_namespace, namespaces)
        except DatabaseUnreachable as exc:
            self.database_unreachable(exc)
            return True

    def on_queue_table_database_problem(self, event: QueueTable.DatabaseProblem) -> None:
        self.database_unreachable(event.error)

    def database_unreachable(self, exc: BaseException) -> None:
        """The database stopped answering (a PostgreSQL server stopped or restarting): say so once, in one
        line, and try again every few seconds; once it answers, everything on screen is read again."""
        line = str(exc)
        if line != self._db_problem:
            self.toast(f"{line} (heard tries again)", severity="error", timeout=10)
        self._db_problem = line
        if self._db_retry is None:
            self._db_retry = self.set_timer(DB_RETRY_SECONDS, self._retry_database)

    @work(thread=True, exclusive=True, group="changes", exit_on_error=False)
    def look_for_changes(self) -> None:
        with self.db() as conn:
            version = tickets.data_version(conn)
        self.call_from_thread(self._version_seen, version)

    def _version_seen(self, version: tuple) -> None:
        # Compared with what the screen was read at (load_header, after every change it knows of).
        previous, self._seen_version = self._seen_version, version
        if previous is not None and version != previous and self._db_problem is None:
            self.data_changed()

    def _retry_database(self) -> None:
        self._db_retry = None
        self.load_header()  # a read: when it works, _header_loaded reloads the rest

    # -- shared helpers ----------------------------------------------------------------
    def toast(self, message: str, *, severity: str = "information", timeout: float | None = None) -> None:
        """A notification; never markup, never a control character (messages may quote mail or a server's answer)."""
        self.notify(safe_text(message), severity=severity, timeout=timeout, markup=False)  # type: ignore[arg-type]

    def data_changed(self) -> None:
        """Tickets changed (new mail, an action, another screen's write): refresh what shows them."""
        self.load_header()
        for screen in self.screen_stack:
            handler = getattr(screen, "data_changed", None)
            if handler is not None:
                try:
                    handler()
                except DatabaseUnreachable as exc:
                    self.database_unreachable(exc)

    @work(thread=True, exclusive=True, group="header", exit_on_error=False)
    def load_header(self) -> None:
        with self.db() as conn:
            counts = tickets.header_counts(conn, now=self.clock(), at_risk_margin=self.at_risk_margin)
            holding = tickets.held_by(conn, self.agent)
            version = tickets.data_version(conn)
        self.call_from_thread(self._header_loaded, counts, holding, version)

    def _header_loaded(self, counts: dict, holding: int | None, version: tuple | None = None) -> None:
        self.counts, self.holding = counts, holding
        self._seen_version = version
        self.refresh_header()
        if self._db_problem is not None:  # it answers again: read what is on screen again
            self._db_problem = None
            self.toast("the database answers again")
            self.data_changed()

    def refresh_header(self, screen: Screen | None = None) -> None:
        screens = [screen] if screen is not None else self.screen_stack
        for s in screens:
            for header in s.query(StatusHeader):
                header.show(agent=self.agent, holding=self.holding, counts=self.counts, sync=self.sync,
                            now=self.clock(), tz=self.tz)

    # -- navigation --------------------------------------------------------------------
    def open_ticket(self, ticket_id: int) -> None:
        # Also reached from messages (enter, a click), not only from actions: a database that stopped
        # answering is said here too.
        try:
            with self.db() as conn:
                exists = tickets.ticket_row(conn, ticket_id) is not None
            if not exists:
                self.toast(f"no ticket #{ticket_id}", severity="warning")
                return
            screen = self.get_screen("ticket")
            detail = self.ticket_detail(ticket_id)
        except DatabaseUnreachable as exc:
            self.database_unreachable(exc)
            return
        # One ticket screen at a time: opening another replaces what it shows.
        while isinstance(self.screen, (TicketScreen, CustomerTicketsScreen)):
            self.pop_screen()
        screen.show_ticket(ticket_id, detail)
        self.push_screen(screen)

    def show_customer_tickets(self, address: str, exclude: int) -> None:
        with self.db() as conn:
            rows = tickets.customer_tickets(conn, address, exclude=exclude)

        def chosen(tid: int | None) -> None:
            if tid:
                self.open_ticket(tid)

        self.push_screen(CustomerTicketsScreen(address, rows, now=self.clock(), tz=self.tz), chosen)

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.binding_sections(), QUEUE_LEGEND))

    def binding_sections(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """Every binding by screen, with the user's keymap applied."""

        def rows(bindings: Iterable[Binding]) -> list[tuple[str, str]]:
            out, seen = [], set()
            for b in bindings:
                if b.id in seen or (b.id or "").startswith("reason.pick"):
                    continue
                seen.add(b.id)
                keys = self._keymap.get(b.id, b.key) if b.id else b.key
                shown = " ".join(self.get_key_display(Binding(k.strip(), "")) for k in keys.split(","))
                out.append((shown, b.description or b.action))
            return out

        queue_moves = [b for b in QueueTable.BINDINGS if isinstance(b, Binding)]
        return [
            ("Everywhere", rows(self.BINDINGS) + [(self.get_key_display(Binding("ctrl+p", "")),
                                                   "Command palette: #123 opens a ticket, or run any action")]),
            ("Queue", rows(queue_moves) + rows(b for b in QueueScreen.BINDINGS if not (b.id or "").startswith("change."))),
            ("Changes (in the queue: to marked tickets)", rows(CHANGE_BINDINGS)),
            ("Ticket", rows(b for b in TicketScreen.BINDINGS if not (b.id or "").startswith("change."))),
            ("Reason dialog", rows(ReasonDialog.BINDINGS) + [("alt+1…9", "Pick a recent reason"),
                                                             ("↓ enter", "Choose from recent reasons")]),
        ]

    # -- take next, take ---------------------------------------------------------------
    def can_take_next(self, screen: Screen | None = None) -> bool:
        """Take next opens a ticket: from the queue and a ticket, not from over a reply being
        written, the acknowledgement review or the reader, which it would leave half done."""
        return isinstance(screen or self.screen, (QueueScreen, TicketScreen))

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The footer of the screen under a dialog asks too: it shows what that screen offers, unchanged
        # while the dialog is open (the dialog lists its own keys). Pressed over a dialog, take next
        # still does nothing (action_take_next asks about the dialog itself).
        if action == "take_next" and not self.can_take_next(self._under_dialogs()):
            return False
        return True

    def _under_dialogs(self) -> Screen:
        """The screen being worked in: the current one, or the one under the dialogs open over it."""
        for screen in reversed(self.screen_stack):
            if not isinstance(screen, ModalScreen):
                return screen
        return self.screen

    def action_take_next(self) -> None:
        if self.can_take_next():
            self.take(None)

    @work(thread=True, group="write", exit_on_error=False)
    def take(self, ticket_id: int | None) -> None:
        try:
            tid = tickets.take_ticket(self.store, ticket_id, agent=self.agent, now=self.clock(),
                                      at_risk_margin=self.at_risk_margin)
        except LifecycleError as exc:
            self.call_from_thread(self.toast, str(exc), severity="warning", timeout=6)
            return
        if tid is None:
            self.call_from_thread(self.toast, tickets.nothing_to_take(self.store))
            return
        self.call_from_thread(self._taken, tid)

    def _taken(self, tid: int) -> None:
        self.data_changed()
        if not (isinstance(self.screen, TicketScreen) and self.screen.ticket_id == tid):
            self.open_ticket(tid)
        self.toast(f"#{tid} is yours: nobody else will take it")

    # -- changes with a reason ---------------------------------------------------------
    def request_change(self, kind: str, ids: list[int], target: str | None,
                       after: Callable[[], None] | None = None) -> None:
        """Ask for the reason, then apply ``kind`` (status, priority, release, assign) to ``ids``."""
        rows = self.fetch_rows(ids)
        rows_in_order = [rows[i] for i in ids if i in rows]
        if not rows_in_order:
            return
        problem = _refusal(kind, target, rows_in_order)
        if problem and len(rows_in_order) == 1:
            self.toast(problem, severity="warning")
            return
        with self.db() as conn:
            recent = tickets.recent_reasons(conn, limit=9)
        first = rows_in_order[0]
        if len(rows_in_order) == 1:
            subject = Content.assemble((f"#{first['id']}  ", "bold $text-accent"),
                                       inert(first.get("subject") or "(no subject)", "bold"))
        else:
            subject = Content.styled(f"{len(rows_in_order)} marked tickets", "bold $text-accent")
        change = _describe(kind, target, rows_in_order, self.agent)
        if problem:
            change += f"\n({problem})"
        ask_for = "Assign to" if kind == "assign" else None

        def answered(answer: ReasonAnswer | None) -> None:
            if answer is not None:
                self.apply_change(kind, [r["id"] for r in rows_in_order], target, answer, after)

        self.push_screen(ReasonDialog(subject, change, recent, ask_for=ask_for), answered)

    @work(thread=True, group="write", exit_on_error=False)
    def apply_change(self, kind: str, ids: list[int], target: str | None, answer: ReasonAnswer,
                     after: Callable[[], None] | None = None) -> None:
        done, refused = [], []
        for tid in ids:
            now = self.clock()
            try:
                if kind == "status":
                    tickets.set_status(self.store, tid, target, reason=answer.reason, actor=self.agent, now=now)
                elif kind == "priority":
                    with self.db() as conn:
                        row = tickets.require_ticket(conn, tid)
                    tickets.set_priority(self.store, tid, _step_priority(row["priority"], target), reason=answer.reason,
                                         actor=self.agent, now=now)
                elif kind == "release":
                    tickets.set_holder(self.store, tid, None, reason=answer.reason, actor=self.agent, now=now)
                elif kind == "assign":
                    tickets.set_holder(self.store, tid, answer.value, reason=answer.reason, actor=self.agent, now=now)
                done.append(tid)
            except LifecycleError as exc:
                refused.append(f"#{tid}: {exc}")
        self.call_from_thread(self._changed, kind, target, done, refused, after)

    def _changed(self, kind: str, target: str | None, done: list[int], refused: list[str],
                 after: Callable[[], None] | None) -> None:
        self.data_changed()
        if after is not None:
            after()
        if done:
            what = {"status": f"now {status_label(target)}" if target else "changed", "priority": "priority changed",
                    "release": "released", "assign": "reassigned"}[kind]
            which = f"#{done[0]}" if len(done) == 1 else f"{len(done)} tickets"
            self.toast(f"{which} {what}; the reason is on the record")
        if refused:
            more = f" (and {len(refused) - 3} more)" if len(refused) > 3 else ""
            self.toast("refused: " + "; ".join(refused[:3]) + more, severity="warning", timeout=8)

    # -- seams for other screens -------------------------------------------------------
    def _open_hooked(self, module: str, name: str, *args, missing: str, needs_smtp: bool = False) -> None:
        """Push the screen a feature module builds; ``missing`` says why not when it cannot."""
        factory = None if needs_smtp and self.cfg.smtp is None else _hook(module, name)
        if factory is None:
            self.toast(missing, severity="warning")
            return
        self.push_screen(factory(self, *args), lambda _result: self.data_changed())

    def open_reply(self, ticket_id: int) -> None:
        self._open_hooked("tui.compose", "reply_screen", ticket_id, missing="replies need [smtp] in the config",
                          needs_smtp=True)

    def action_ack_review(self) -> None:
        self.open_ack_review()

    def open_ack_review(self) -> None:
        self._open_hooked("tui.ack", "ack_screen", missing="the acknowledgement review is not available in this build")

    def open_update(self, ticket_id: int) -> None:
        """One short "I need until ..., because ..." mail for a promise at risk (``u`` on a ticket)."""
        self._open_hooked("tui.ack", "update_screen", ticket_id, missing="updates to customers need [smtp] in the config",
                          needs_smtp=True)

    # -- quitting ----------------------------------------------------------------------
    async def action_quit(self) -> None:
        if isinstance(self.screen, ConfirmDialog) and getattr(self.screen, "quitting", False):
            return  # ctrl+q on the question itself: y or n answers it
        with self.db() as conn:
            sending = tickets.outbox_in_flight(conn)
        compose = sys.modules.get("tui.compose")  # replies are written only once it is loaded
        drafts = compose.unsent_drafts(self) if compose is not None else []
        if not sending and not drafts:
            self._stop_sync.set()
            self.exit(0)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop_sync.set()
                self.exit(0)

        if drafts:  # written here and nowhere else: quitting loses them
            which = ", ".join(f"#{tid}" for tid in drafts)
            question = (f"Your unsent repl{'ies' if len(drafts) != 1 else 'y'} to {which} will be lost. "
                        "Quit anyway?")
            detail = "n goes back: open the ticket and press r to send or finish it."
            if sending:
                detail += (f" {sending} message{'s' if sending != 1 else ''} waiting in the outbox "
                           "go out the next time heard runs.")
        else:
            question = f"{sending} message{'s are' if sending != 1 else ' is'} still waiting to be sent. Quit anyway?"
            detail = "They stay in the outbox and go out the next time heard runs."
        dialog = ConfirmDialog(question, detail)
        dialog.quitting = True
        self.push_screen(dialog, answered)

    # -- the command palette -----------------------------------------------------------
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        if self.can_take_next(screen):
            yield SystemCommand("Take next", "Claim the most urgent ticket nobody holds and open it",
                                self.action_take_next)
        yield SystemCommand("Keys", "Every key binding", self.action_help)
        if isinstance(screen, QueueScreen):
            for n, (view, label) in enumerate(VIEWS, 1):
                yield SystemCommand(f"Filter: {label}", f"Show {label} tickets (key {n})", partial(screen.action_view, view))
            yield SystemCommand("Search", "Full-text search over subjects, bodies and customers", screen.action_search)
            yield SystemCommand("Acknowledge waiting customers", "Review the batch acknowledgement", self.open_ack_review)
        if isinstance(screen, (QueueScreen, TicketScreen)):
            for b in CHANGE_BINDINGS:
                kind, target = _parse_change(b.action)
                yield SystemCommand(f"{b.description}", _CHANGE_HELP[b.id], partial(screen.action_change, kind, target))
        if isinstance(screen, TicketScreen):
            yield SystemCommand("Reply", "Write a reply to the customer", screen.action_reply)
            yield SystemCommand("Customer's tickets", "Their other tickets", screen.action_customer)
            yield SystemCommand("Timeline", "Show or hide every change and its reason", screen.action_toggle_timeline)
            yield SystemCommand("Quoted history", "Show or fold quoted text", screen.action_toggle_quotes)
        yield SystemCommand("Theme", "Change the colours", self.action_change_theme)
        yield SystemCommand("Quit", "Quit heard", self.action_quit)


DB_RETRY_SECONDS = 5  # a database that stopped answering is tried again this often
CHANGES_EVERY = 3.0  # seconds between looks for what other agents and processes changed

QUEUE_LEGEND = [
    ("●", "marked with space: the next change applies to every marked ticket"),
    ("!", "flagged: a message could not be fully parsed"),
    ("?", "vague: the customer gave little to go on"),
    ("auto:", "automated mail (auto-replies, bounces): never acknowledged"),
    ("by Tue 14:00", "promised deadline; yellow when at risk, red when broken"),
]

_CHANGE_HELP = {
    "change.solve": "Mark solved (asks why)",
    "change.pending": "Park as waiting on the customer (asks why)",
    "change.hold": "Put on hold (asks why)",
    "change.reopen": "Reopen (asks why)",
    "change.release": "Release: nobody holds it any more (asks why)",
    "change.priority_up": "Raise the priority one step (asks why)",
    "change.priority_down": "Lower the priority one step (asks why)",
    "change.assign": "Give it to another agent (asks who and why)",
}


def _parse_change(action: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"change\('(\w+)', (?:'(\w+)'|None)\)", action)
    assert match, action
    return match.group(1), match.group(2)


def _step_priority(current: str, direction: str | None) -> str:
    order = sorted(Priority, key=lambda p: PRIORITY_RANK[p])  # urgent first
    i = order.index(Priority(current))
    i = max(0, i - 1) if direction == "up" else min(len(order) - 1, i + 1)
    return order[i].value


def _refusal(kind: str, target: str | None, rows: list[dict]) -> str | None:
    """Why the change cannot apply (to any of the rows), before asking for a reason."""
    bad = []
    for r in rows:
        if kind == "status":
            cur, tgt = Status(r["status"]), Status(target)
            if cur == tgt:
                bad.append(f"#{r['id']} is already {status_label(cur)}")
            elif tgt not in ALLOWED[cur]:
                bad.append(f"a {status_label(cur)} ticket cannot become {status_label(tgt)}; reopen it first")
        elif kind == "release" and not r.get("holder"):
            bad.append(f"nobody holds #{r['id']}")
        elif kind == "priority" and _step_priority(r["priority"], target) == r["priority"]:
            bad.append(f"#{r['id']} is already {r['priority']} priority")
    if not bad:
        return None
    if len(rows) == 1:
        return bad[0]
    return f"{len(bad)} of {len(rows)} cannot change and will be skipped"


def _describe(kind: str, target: str | None, rows: list[dict], agent: str) -> str:
    if len(rows) == 1:
        r = rows[0]
        if kind == "status":
            return f"{status_label(r['status'])} → {status_label(target)}"
        if kind == "priority":
            return f"priority {r['priority']} → {_step_priority(r['priority'], target)}"
        if kind == "release":
            return f"held by {safe_line(r['holder'] or 'nobody')} → nobody"
        return f"held by {safe_line(r.get('holder') or 'nobody')} → someone else"
    if kind == "status":
        return f"→ {status_label(target)}"
    if kind == "priority":
        return f"priority one step {'up' if target == 'up' else 'down'}"
    if kind == "release":
        return "release: → nobody"
    return "assign to someone else"


_BINDING_MODULES = ("tui.app", "tui.screens", "tui.queue_view", "tui.dialogs", "tui.compose", "tui.ack", "tui.reader")


def all_bindings() -> dict[str, Binding]:
    """Every binding of the app that has an id (the names [keys] remaps), by id."""
    from textual.dom import DOMNode

    for module in _BINDING_MODULES:
        importlib.import_module(module)
    found: dict[str, Binding] = {}
    todo: list[type] = [DOMNode]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__ in _BINDING_MODULES:
            for b in cls.__dict__.get("BINDINGS", ()):
                if isinstance(b, Binding) and b.id:
                    found.setdefault(b.id, b)
    return found


def binding_ids() -> set[str]:
    """The id of every binding in the app, the names [keys] remaps."""
    return set(all_bindings())


def check_keymap(keys: object) -> dict[str, str]:
    """[keys] as Textual's keymap; an id that names no binding (a typo remaps nothing) or a key that is not
    text is one line naming it."""
    import difflib

    if not isinstance(keys, dict):
        raise ConfigError('[keys] must be a table of binding ids and keys, e.g. "app.take_next" = "N"')
    known = binding_ids()
    for bid, key in keys.items():
        if bid not in known:
            name = bid.rsplit(".", 1)[-1]
            close = [k for k in sorted(known) if k.rsplit(".", 1)[-1] == name] or difflib.get_close_matches(
                bid, sorted(known), n=1)
            prefixes = ", ".join(sorted({k.split(".")[0] + "." for k in known}))
            hint = (f"did you mean {' or '.join(close)}?" if close
                    else f"binding ids start with {prefixes} (see README, The app)")
            raise ConfigError(f"[keys] {bid!r} is not a binding id: {hint}")
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f'[keys] {bid!r} = {key!r}: write the key in quotes, e.g. "N" or "ctrl+n"')
    return dict(keys)


def _hook(module: str, name: str):
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, name, None)


# SIGTERM (`kill`, a service manager), and SIGHUP when the terminal window closes: quit as `q` does.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def run_until_stopped(app: App) -> int:
    """Run the app; SIGTERM or SIGHUP quit it the way `q` does (the terminal is given back as it was, the
    workers' mail connections are cut and what they were sending settles), instead of ending the process
    on the spot with the terminal left in the app's modes.

    An exception raised by a signal handler inside Textual's event loop would be drawn as a traceback over
    the screen, so the handler asks the app to exit from another thread instead."""

    def ask_to_quit() -> None:
        for _ in range(100):  # the app may still be starting
            try:
                app.call_from_thread(app.exit)
                return
            except RuntimeError:
                time.sleep(0.1)

    def on_signal(signum, frame) -> None:
        threading.Thread(target=ask_to_quit, name="heard-quit", daemon=True).start()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    try:
        return int(app.run() or 0)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def run_app(cfg: Config) -> int:
    return run_until_stopped(HeardApp(cfg))


__all__ = ["HeardApp", "run_app", "SyncStatusChanged", "TicketJumpProvider", "utc_now", "Path"]
