"""A parameter declared once: its name, type, default, range and help, and the names it has in
the request, the settings and the command line.

The tables themselves are in ``sampling/params.py`` (``SHARED_PARAMS``, ``DIFFUSION_PARAMS``).
The library validates with ``Param.check``; the server derives its request fields, settings and
registry defaults from the same objects (``server/param_fields.py``), the CLI its flags
(``cli/param_flags.py``). Pure Python: nothing here imports the server, pydantic or cffi.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..errors import ParameterError


@dataclass(frozen=True)
class Param:
    """One parameter.

    name:            the library's field (SamplingParams / DiffusionParams).
    kind:            int, float, bool, or an IntEnum (given as a number or a member's name), or str
                     with ``choices`` (one of them, exactly).
    default:         the library's default (None: chosen at run time, e.g. a random seed).
    help:            one line, shown by the request schema, the settings and the CLI.
    lo, hi:          the range (None: unbounded); ``lo_open`` / ``hi_open`` exclude the bound.
                     Floats must also be finite.
    request:         the request field's name (None: not a request field).
    setting:         the settings field (its variable upper-cased; None: no setting).
    setting_default: the setting's default when it differs from the library's.
    flags:           command-line flags (``hoshikage add`` / ``hoshikage generate``).
    only_with:       a schedule: the library checks the value only when that schedule uses it.
    aliases:         more names of an enum's members (("BLOCK", Schedule.BLOCK_BASED), ...).
    choices:         a str parameter's values (("prefix",), ...).
    autoregressive_only: ignored for a diffusion model.
    """

    name: str
    kind: type
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    request: str | None = None
    setting: str | None = None
    setting_default: Any = None
    flags: tuple[str, ...] = ()
    only_with: Any = None
    autoregressive_only: bool = False
    aliases: tuple[tuple[str, Any], ...] = ()
    choices: tuple[str, ...] = ()

    @property
    def is_enum(self) -> bool:
        return issubclass(self.kind, IntEnum)

    @property
    def is_bool(self) -> bool:
        return self.kind is bool

    @property
    def server_default(self) -> Any:
        """The setting's default (the library's unless the setting has its own)."""
        return self.default if self.setting_default is None else self.setting_default

    def bounds(self) -> dict[str, float]:
        """The range as ge/gt/le/lt keywords (pydantic's and annotated-types' names)."""
        out: dict[str, float] = {}
        if self.lo is not None:
            out["gt" if self.lo_open else "ge"] = self.lo
        if self.hi is not None:
            out["lt" if self.hi_open else "le"] = self.hi
        return out

    def range_text(self) -> str:
        """The range in words: 'in (0, 1)', '>= 1', 'one of 0 ORIGIN, ...'."""
        if self.is_enum:
            return "one of " + ", ".join(f"{m.value} {m.name}" for m in self.kind)
        if self.is_bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        return f"{'<' if self.hi_open else '<='} {_num(self.hi)}" if self.hi is not None else "any value"

    def check(self, value: Any) -> Any:
        """``value`` if it is valid, else ParameterError naming the library's field (the server
        reports the request field); None passes where the default is None."""
        if value is None and self.default is None:
            return value
        if self.is_enum:
            return self._check_member(value)
        if self.choices:
            if not isinstance(value, str) or value not in self.choices:
                self._fail(value, self.range_text())
            return value
        if self.is_bool:
            if type(value).__name__ not in ("bool", "bool_"):  # Python's or numpy's, never 0 / 1
                self._fail(value, "true or false")
            return value
        integer = self.kind is int
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
            self._fail(value, "an integer" if integer else "a number")
        if not integer and not math.isfinite(value):
            self._fail(value, "finite")
        if not self.contains(value):
            self._fail(value, self.range_text())
        return value

    def contains(self, value: float) -> bool:
        """Whether a number lies in the range (bounds only; no type check)."""
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return not (self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi))

    def member(self, value: Any, field: str | None = None) -> int:
        """An enum parameter's value from its number (or digits) or its case-insensitive name or
        alias; ParameterError naming ``field`` (default: the parameter) otherwise."""
        field = field or self.name
        if isinstance(value, bool):
            raise ParameterError(f"{field} must be a number or a name, got {value!r}", self.name)
        if isinstance(value, (int, float)) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            if isinstance(value, float) and not value.is_integer():  # 1.5, inf, nan
                raise ParameterError(f"{field} must be a whole number, got {value!r}", self.name)
            number = int(value)
            if number in {m.value for m in self.kind}:
                return number
        elif isinstance(value, str):
            key = value.strip().upper().replace("-", "_")
            names = {m.name: m.value for m in self.kind} | {k: int(v) for k, v in self.aliases}
            if key in names:
                return names[key]
        raise ParameterError(f"{field}: unknown value {value!r} ({self.range_text()})", self.name)

    def _check_member(self, value: Any) -> Any:
        if not isinstance(value, bool) and isinstance(value, numbers.Integral):
            try:
                return self.kind(int(value))
            except ValueError:
                pass
        self._fail(value, f"one of {[m.name for m in self.kind]}")

    def _fail(self, value: Any, what: str) -> None:
        raise ParameterError(f"{self.name} must be {what}, got {value!r}", self.name)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def by_name(params: tuple[Param, ...]) -> dict[str, Param]:
    """The table as a dict keyed by the library's names."""
    return {p.name: p for p in params}
