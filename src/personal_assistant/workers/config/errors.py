"""The settings' one error: pydantic's ValidationError as one line naming each bad variable.

A bad value stops start-up with :class:`ConfigError`, whose message names the variable (not
the field, nor pydantic's location), gives the reason and shows the value with any password
masked. A nested model read from flat variables (the alert channels' ``ALERT_*``) is described by
a :class:`FlatVariables`, so its errors name those variables and never echo its secrets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from pydantic import ValidationError

from personal_assistant.workers.config.masking import mask_url


class ConfigError(ValueError):
    """The environment holds a value the workers cannot start with; the message names it."""


class FlatVariables(NamedTuple):
    """How a nested settings model is read from flat variables: each field from ``prefix`` +
    its name in upper case; the fields in ``unshown`` (secrets, and URLs whose path may be a
    credential) never have their value echoed in an error."""

    prefix: str
    unshown: frozenset[str]


def describe(error: Mapping[str, Any], groups: Mapping[str, FlatVariables]) -> str:
    """Turn one pydantic error into 'VARIABLE: reason (got 'value')'.

    ``groups`` maps a field holding a nested model to its flat variables. An error of no single
    field (a model validator's) is its reason alone: those reasons name their variables
    themselves.
    """
    loc = [str(part) for part in error.get("loc", ())]
    reason = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    prefix, unshown = "", frozenset[str]()
    group = groups.get(loc[0]) if loc else None
    if group is not None:
        loc, prefix, unshown = loc[1:], group.prefix, group.unshown
    if not loc:
        return reason
    got = error.get("input")
    hidden = loc[0] in unshown or isinstance(got, dict)
    shown = "" if hidden else f" (got {mask_url(str(got))!r})"
    return f"{prefix}{loc[0].upper()}: {reason}{shown}"


def config_error(
    exc: ValidationError,
    *,
    groups: Mapping[str, FlatVariables],
    within: tuple[str, ...] = (),
) -> ConfigError:
    """One ConfigError for all of ``exc``: one line per error, each naming its variable.

    ``within`` is the location of the model that failed inside the settings (the field of a
    nested model validated on its own); ``groups`` as for :func:`describe`.
    """
    lines = [describe({**err, "loc": (*within, *err["loc"])}, groups) for err in exc.errors()]
    return ConfigError("invalid configuration: " + "; ".join(lines))
