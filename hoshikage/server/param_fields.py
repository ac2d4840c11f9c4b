"""The server's view of the library's parameter declarations (``sampling/params.py``).

Request fields (``diffusion_steps``, ``temperature``, ...), settings (``DIFFUSION_STEPS``, ...)
and a registry entry's ``diffusion`` defaults are all derived here from the one declaration of
each parameter, so their names, defaults, ranges and help cannot drift apart; and the merge
settings < registry entry < request reads the same names.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from ..sampling.declared import Param
from ..sampling.params import DIFFUSION_PARAMS, SHARED_PARAMS

# library name -> request field ("eps" -> "diffusion_eps"), for errors the library reports
REQUEST_NAMES = {p.name: p.request for p in (*SHARED_PARAMS, *DIFFUSION_PARAMS) if p.request}


def _type(p: Param, field: str, optional: bool) -> Any:
    """The pydantic type of ``p`` under the name ``field``: enums take a number or a name, a
    str parameter one of its choices (None where its default is None)."""
    if p.choices:
        kind = Literal[p.choices]
        return kind | None if optional or p.default is None else kind
    if not p.is_enum:
        return p.kind | None if optional else p.kind

    def member(value: Any) -> Any:
        return None if value is None else p.member(value, field)

    return Annotated[int | None if optional else int, BeforeValidator(member)]


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, int) else value  # an IntEnum member as its number


def request_fields(params: tuple[Param, ...]) -> dict[str, Any]:
    """create_model() fields for a request body: optional, None = the server's default."""
    return {p.request: (_type(p, p.request, True), Field(None, description=p.help, **p.bounds()))
            for p in params if p.request}


def settings_fields(params: tuple[Param, ...]) -> dict[str, Any]:
    """create_model() fields for Settings, with the server's defaults."""
    return {p.setting: (_type(p, p.setting, False),
                        Field(_plain(p.server_default), description=p.help, **p.bounds()))
            for p in params if p.setting}


def defaults_fields(params: tuple[Param, ...]) -> dict[str, Any]:
    """create_model() fields for a registry entry's per-model defaults (the library's names)."""
    return {p.name: (_type(p, p.name, True), Field(None, description=p.help, **p.bounds())) for p in params}


def merged(params: tuple[Param, ...], settings: Any, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """The library's keyword arguments: the settings' values, then each layer's (library names;
    None and unknown names skipped), later layers winning."""
    out = {p.name: getattr(settings, p.setting) for p in params if p.setting}
    names = {p.name for p in params}
    for layer in layers:
        out.update({k: v for k, v in layer.items() if v is not None and k in names})
    return out


def request_values(req: Any, params: tuple[Param, ...]) -> dict[str, Any]:
    """The fields a request set, under the library's names."""
    values = {p.name: getattr(req, p.request) for p in params if p.request}
    return {k: v for k, v in values.items() if v is not None}
