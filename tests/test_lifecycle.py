"""The ticket lifecycle: which moves are allowed, and that none happens without a reason."""

from datetime import datetime, timezone

import pytest

from storage.lifecycle import (
    Change,
    ReasonRequired,
    Status,
    TransitionNotAllowed,
    change_holder,
    change_priority,
    customer_reply_reopens,
    parse_status,
    transition,
)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "current,target",
    [
        ("new", "open"), ("new", "solved"), ("open", "pending"), ("open", "on_hold"), ("open", "solved"),
        ("pending", "open"), ("pending", "closed"), ("on_hold", "open"), ("solved", "open"), ("solved", "closed"),
        ("closed", "open"),
    ],
)
def test_allowed_moves_record_who_when_and_why(current, target):
    ch = transition(current, target, reason="customer confirmed the fix", actor="Ana", now=NOW)
    assert ch == Change("status", current, target, "customer confirmed the fix", "Ana", NOW)


@pytest.mark.parametrize("current,target", [("closed", "solved"), ("closed", "pending"), ("solved", "pending"), ("solved", "on_hold")])
def test_moves_that_skip_reopening_are_refused(current, target):
    with pytest.raises(TransitionNotAllowed, match="cannot become"):
        transition(current, target, reason="because", actor="Ana", now=NOW)


@pytest.mark.parametrize("reason", [None, "", "   ", "\n\t"])
def test_every_kind_of_change_refuses_an_empty_reason(reason):
    with pytest.raises(ReasonRequired, match="needs a reason"):
        transition("open", "solved", reason=reason, actor="Ana", now=NOW)
    with pytest.raises(ReasonRequired):
        change_priority("normal", "high", reason=reason, actor="Ana", now=NOW)
    with pytest.raises(ReasonRequired):
        change_holder("Ana", None, reason=reason, actor="Ana", now=NOW)


def test_reason_whitespace_is_tidied_not_lost():
    ch = transition("open", "solved", reason="  fixed   in\n 2.3 ", actor="Ana", now=NOW)
    assert ch.reason == "fixed in 2.3"


def test_same_state_is_not_a_change():
    with pytest.raises(TransitionNotAllowed, match="already"):
        transition("open", "open", reason="x", actor="Ana", now=NOW)


@pytest.mark.parametrize("status,reopens", [("pending", True), ("solved", True), ("closed", True), ("open", False), ("new", False), ("on_hold", False)])
def test_customer_reply_reopens_parked_and_finished_tickets(status, reopens):
    assert customer_reply_reopens(status) is reopens


@pytest.mark.parametrize("text,status", [("waiting", Status.PENDING), ("on hold", Status.ON_HOLD), ("Solved", Status.SOLVED)])
def test_status_names_people_type(text, status):
    assert parse_status(text) == status


def test_unknown_status_names_the_choices():
    with pytest.raises(ValueError, match="use one of new, open"):
        parse_status("done-ish")
