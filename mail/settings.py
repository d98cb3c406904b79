"""The acknowledgement settings: ``[ack]``, ``[hours]``, ``[tiers]`` and ``[pending]`` as one typed value.

Light on purpose (no database layer): ``heard sync`` validates them before it connects, while
SQLAlchemy is still loading, and :mod:`mail.ack` (which needs the store) builds on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mail.config import Config, ConfigError, config_duration as _duration, local_timezone, tier_specs
from storage.deadlines import WEEKDAYS, BusinessHours, TierSpec, risk_window

__all__ = [
    "AckSettings",
    "DEFAULT_TEMPLATE",
    "TEMPLATE_PLACEHOLDERS",
    "ack_settings",
    "at_risk_margin",
    "at_risk_window",
    "business_hours",
    "check_template",
]


# First person, the agent's name, one sincere apology, the customer's first name, their
# subject in their words, the deadline, and an easy way to add details. No "we".
DEFAULT_TEMPLATE = """\
{greeting}

I'm sorry you have had to wait for an answer about "{subject}". I have read your message, and I will personally get back to you by {deadline}.

If you think of anything to add in the meantime (details, a screenshot, an error message), just reply to this email: it comes straight to me.

{signature}
"""

TEMPLATE_PLACEHOLDERS = {
    "greeting": '"Hi Ann," (or "Hello," when the first name is unknown)',
    "customer_first_name": "the customer's first name (may be empty)",
    "subject": "the subject of their request, in their words",
    "deadline": "the promised deadline, in the customer's time zone when known",
    "agent_name": "your name",
    "agent_first_name": "your first name",
    "signature": "[agent] signature, or your name",
    "ticket_id": "the ticket number",
}

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def check_template(template: str, *, key: str = "[ack] template") -> str:
    """``template`` if it can be used; ConfigError naming ``key`` otherwise."""
    names = set(_PLACEHOLDER.findall(template or ""))
    unknown = sorted(names - set(TEMPLATE_PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"{key} uses {{{unknown[0]}}}: the placeholders are "
                          + ", ".join("{" + n + "}" for n in TEMPLATE_PLACEHOLDERS))
    if "deadline" not in names:
        raise ConfigError(f"{key} must contain {{deadline}}: the promise is the point of the message")
    return template


# -- settings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class AckSettings:
    hours: BusinessHours
    tiers: dict[str, TierSpec] = field(default_factory=dict)
    auto: bool = False
    window: timedelta = timedelta(hours=24)
    at_risk_margin: timedelta = timedelta(hours=2)
    minimum: timedelta = timedelta(hours=2)
    max_age: timedelta = timedelta(days=14)
    handling_time: timedelta = timedelta(minutes=30)
    agents: int = 1
    template: str = DEFAULT_TEMPLATE
    min_history: int = 20
    close_after_days: int = 5
    checkin_after_days: int = 3

    def risk_window(self, now: datetime) -> timedelta:
        """``at_risk_margin`` (business time) as calendar time from ``now``: what the work order, the
        header and the ledger compare deadlines with."""
        return risk_window(now, self.at_risk_margin, self.hours)


_ACK_KEYS = {"auto", "window", "at_risk_margin", "minimum", "max_age", "handling_time", "agents", "template",
             "min_history"}
_HOURS_KEYS = {"days", "hours", "timezone", "holidays", "country"}
_PENDING_KEYS = {"close_after_days", "checkin_after_days"}


def _unknown_keys(section: str, table: Any, known: set[str]) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table of keys (see README, Configuration)")
    extra = sorted(set(table) - known)
    if extra:
        raise ConfigError(f"[{section}] {extra[0]} is not a known key: use one of {', '.join(sorted(known))}")
    return table


def _int(table: dict, section: str, key: str, default: int, *, low: int = 1) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"[{section}] {key} = {value!r}: must be a whole number, at least {low}")
    return value


def business_hours(table: dict, *, now: datetime | None = None) -> BusinessHours:
    """``[hours]`` as BusinessHours; each bad value is one line naming its key."""
    t = _unknown_keys("hours", table, _HOURS_KEYS)
    days = t.get("days", ["mon", "tue", "wed", "thu", "fri"])
    if not isinstance(days, list) or not days or any(not isinstance(d, str) or d.strip().lower()[:3] not in WEEKDAYS
                                                     for d in days):
        raise ConfigError(f'[hours] days = {days!r}: a list of weekdays, e.g. ["mon", "tue", "wed", "thu", "fri"]')
    hours = t.get("hours", "09:00-17:00")
    if not isinstance(hours, str) or not re.fullmatch(r"\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*", hours):
        raise ConfigError(f'[hours] hours = {hours!r}: write opening and closing time, e.g. "09:00-17:00"')
    tz = t.get("timezone") or local_timezone()
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f'[hours] timezone = {tz!r}: use an IANA zone name, e.g. "Europe/Berlin"') from None
    holidays = t.get("holidays", [])
    if not isinstance(holidays, list):
        raise ConfigError(f'[hours] holidays = {holidays!r}: a list of dates, e.g. ["2026-12-25"]')
    for h in holidays:
        try:
            date.fromisoformat(str(h))
        except ValueError:
            raise ConfigError(f'[hours] holidays: {h!r} is not a date like "2026-12-25"') from None
    country = t.get("country")
    if country is not None and not isinstance(country, str):
        raise ConfigError(f'[hours] country = {country!r}: a country code in quotes, e.g. "DE" or "US-CA"')
    try:
        bh = BusinessHours.from_config(days=days, hours=hours, timezone=str(tz), holidays=holidays, now=now)
    except ValueError as exc:
        raise ConfigError(f"[hours] hours = {hours!r}: {exc}") from None
    if country:
        try:
            with_country = BusinessHours.from_config(days=days, hours=hours, timezone=str(tz), holidays=holidays,
                                                     country=country, now=now)
        except Exception:
            raise ConfigError(f'[hours] country = {country!r}: not a known country code; use e.g. "DE", "FR" or '
                              '"US-CA"') from None
        bh = with_country
    return bh


def ack_settings(cfg: Config, *, now: datetime | None = None) -> AckSettings:
    """Every setting this module uses, validated; ConfigError (one line naming the key) otherwise."""
    hours = business_hours(cfg.hours or {}, now=now)
    day = hours.day_length
    wall_day = timedelta(days=1)
    a = _unknown_keys("ack", cfg.ack or {}, _ACK_KEYS)
    auto = a.get("auto", False)
    if not isinstance(auto, bool):
        raise ConfigError(f"[ack] auto = {auto!r}: write true or false")
    template = a.get("template", DEFAULT_TEMPLATE)
    if not isinstance(template, str) or not template.strip():
        raise ConfigError("[ack] template must be text with {deadline} in it (see README, Acknowledgements)")
    check_template(template)
    tiers = tier_specs(cfg.tiers or {}, day=day)
    p = _unknown_keys("pending", cfg.pending or {}, _PENDING_KEYS)
    close_after = _int(p, "pending", "close_after_days", 5)
    checkin_after = _int(p, "pending", "checkin_after_days", max(1, close_after - 2))
    if checkin_after >= close_after:
        raise ConfigError(f"[pending] checkin_after_days = {checkin_after}: must be less than close_after_days "
                          f"({close_after}), so the customer has time to answer the check-in")
    return AckSettings(
        hours=hours,
        tiers=tiers,
        auto=auto,
        window=_duration(a, "ack", "window", timedelta(hours=24), day=wall_day),
        at_risk_margin=at_risk_margin(cfg),
        minimum=_duration(a, "ack", "minimum", timedelta(hours=2), day=day),
        max_age=_duration(a, "ack", "max_age", timedelta(days=14), day=wall_day),
        handling_time=_duration(a, "ack", "handling_time", timedelta(minutes=30), day=day),
        agents=_int(a, "ack", "agents", 1),
        template=template,
        min_history=_int(a, "ack", "min_history", 20),
        close_after_days=close_after,
        checkin_after_days=checkin_after,
    )


def at_risk_margin(cfg: Config) -> timedelta:
    """``[ack] at_risk_margin`` alone (business time; see :func:`at_risk_window`)."""
    a = cfg.ack if isinstance(cfg.ack, dict) else {}
    return _duration(a, "ack", "at_risk_margin", timedelta(hours=2), day=timedelta(days=1))


def at_risk_window(cfg: Config, *, now: datetime) -> timedelta:
    """``[ack] at_risk_margin`` as calendar time from ``now`` in ``[hours]`` (the work order needs only
    this; reading every setting costs more)."""
    return risk_window(now, at_risk_margin(cfg), business_hours(cfg.hours or {}, now=now))
