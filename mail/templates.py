"""Saved replies: text with variables, filled from the ticket and the agent.

Known variables are filled; anything else in braces ("{order_number}") or
double brackets ("[[say what you changed]]") is left for the agent, and
``mail.compose.require_no_placeholders`` blocks sending until it is gone.
"""

from __future__ import annotations

import re

from mail.compose import ReplyContext, first_name
from mail.vague import CLARIFYING_REPLY, CLARIFYING_REPLY_NAME

__all__ = ["VARIABLES", "template_values", "render_saved_reply", "DEFAULT_SAVED_REPLIES"]

VARIABLES = {
    "customer_first_name": "the customer's first name (empty when unknown)",
    "customer_name": "the customer's display name, or address",
    "customer_email": "the customer's address",
    "agent_name": "your name",
    "agent_first_name": "your first name",
    "ticket_id": "the ticket number",
    "ticket_tag": "the subject tag, [#N]",
    "subject": "the customer's subject",
    "support_address": "the support address",
}

_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def template_values(ctx: ReplyContext, *, agent_name: str, support_address: str) -> dict[str, str]:
    return {
        "customer_first_name": ctx.customer_first_name,
        "customer_name": ctx.customer_name or ctx.customer_address,
        "customer_email": ctx.customer_address,
        "agent_name": agent_name,
        "agent_first_name": first_name(agent_name) or agent_name,
        "ticket_id": str(ctx.ticket_id),
        "ticket_tag": f"[#{ctx.ticket_id}]",
        "subject": ctx.subject,
        "support_address": support_address,
    }


def render_saved_reply(body: str, values: dict[str, str]) -> str:
    """Fill the known variables; unknown ones stay, as placeholders to fill by hand."""
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), body or "")


# Offered by `heard saved-replies --defaults` and the demo; every one is meant to be edited.
DEFAULT_SAVED_REPLIES: dict[str, str] = {
    "clarify": (
        "I want to get this fixed for you, and I need a little more to go on:\n"
        "\n"
        "- what were you doing when it went wrong?\n"
        "- what did you expect to happen, and what happened instead?\n"
        "- any error message, exactly as shown (a screenshot is fine)?\n"
        "\n"
        "With that I can look into it straight away."
    ),
    "order-status": (
        "I have looked up order {order_number}: [[what you found and when it will arrive]].\n"
        "\n"
        "I will keep an eye on it until it reaches you."
    ),
    "fixed": (
        "Good news: [[what was fixed]] is fixed now. Could you try again and tell me whether it "
        "works for you? I will keep ticket {ticket_tag} open until you confirm."
    ),
    # For tickets the sync flagged as vague (tickets.vague_reason): the polite questions that get details.
    CLARIFYING_REPLY_NAME: CLARIFYING_REPLY,
}
