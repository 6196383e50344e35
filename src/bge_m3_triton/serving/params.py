"""Typed, validated access to a request's parameters (Triton passes them as a JSON object)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any


class InvalidRequest(ValueError):
    """The request cannot be served as sent; the message is safe to show the client."""


class RequestParams:
    """A request's parameters; every getter validates, and `check_known` rejects unknown names."""

    def __init__(self, raw: str | dict[str, Any] | None) -> None:
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw else {}
            except json.JSONDecodeError:
                raise InvalidRequest("request parameters are not valid JSON") from None
        self.values: dict[str, Any] = dict(raw or {})

    def check_known(self, known: Iterable[str]) -> None:
        """Reject parameters this model does not understand (a typo must not pass silently)."""
        unknown = sorted(set(self.values) - set(known))
        if unknown:
            raise InvalidRequest(f"unknown request parameter(s): {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known))}")

    def get_str(self, name: str, default: str, choices: Iterable[str]) -> str:
        """A string parameter that must be one of `choices`."""
        value = self.values.get(name, default)
        allowed = tuple(choices)
        if not isinstance(value, str) or value not in allowed:
            raise InvalidRequest(f"parameter {name!r} must be one of {', '.join(allowed)}, got {value!r}")
        return value

    def get_int(self, name: str, default: int, low: int, high: int) -> int:
        """An integer parameter in `[low, high]`."""
        value = self.values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"parameter {name!r} must be an integer, got {value!r}")
        if not low <= value <= high:
            raise InvalidRequest(f"parameter {name!r} must be between {low} and {high}, got {value}")
        return value

    def get_float(self, name: str, default: float, low: float = 0.0) -> float:
        """A finite number parameter no smaller than `low` (ints are accepted)."""
        value = self.values.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidRequest(f"parameter {name!r} must be a number, got {value!r}")
        if not math.isfinite(value) or value < low:
            raise InvalidRequest(f"parameter {name!r} must be a finite number >= {low}, got {value}")
        return float(value)

    def get_bool(self, name: str, default: bool) -> bool:
        """A boolean parameter."""
        value = self.values.get(name, default)
        if not isinstance(value, bool):
            raise InvalidRequest(f"parameter {name!r} must be true or false, got {value!r}")
        return value
