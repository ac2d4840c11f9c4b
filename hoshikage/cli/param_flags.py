"""Command-line flags derived from the library's parameter declarations (``sampling/params.py``):
each flag's names, type and help (with its range) come from the one declaration of its
parameter, which the request schema and the settings are derived from too."""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import Any

from ..sampling.declared import Param


def dest(p: Param) -> str:
    """The argparse destination of ``p``'s flags (argparse's own rule: the first long flag)."""
    long = next(f for f in p.flags if f.startswith("--"))
    return long[2:].replace("-", "_")


def add_flags(group: argparse._ActionsContainer, params: Iterable[Param],
              defaults: Mapping[str, Any] | None = None) -> None:
    """One option per declared parameter that has flags. ``defaults`` (by the library's names)
    are the options' defaults; without one an option defaults to None (not given). Enums are
    taken as text (a number or a name) and parsed by whoever reads them; a bool is ``--flag`` /
    ``--no-flag``."""
    defaults = defaults or {}
    for p in params:
        if not p.flags:
            continue
        default = defaults.get(p.name)
        shown = f"; default {default}" if default is not None else ""
        help = f"{p.help} ({p.range_text()}{shown})"
        if p.is_bool:  # --flag / --no-flag
            group.add_argument(*p.flags, dest=dest(p), action=argparse.BooleanOptionalAction, default=default,
                               help=help)
            continue
        group.add_argument(*p.flags, dest=dest(p), type=str if p.is_enum else p.kind, default=default, help=help)


def flag_values(args: argparse.Namespace, params: Iterable[Param]) -> dict[str, Any]:
    """The options' values under the library's names (None where not given)."""
    return {p.name: getattr(args, dest(p)) for p in params if p.flags}
