"""``hoshikage serve | add | rm | list``: the server and its model registry.

``add``, ``rm`` and ``list`` edit ``$HOSHIKAGE_HOME/model_map.json`` directly (atomically,
under a file lock), so they work whether or not a server runs; a running server sees the
change on its next request.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..sampling.params import DIFFUSION_PARAMS
from .param_flags import add_flags, flag_values


def register(sub: argparse._SubParsersAction) -> None:
    home_help = "registry folder (default: HOSHIKAGE_HOME, else ~/.config/hoshikage)"

    p = sub.add_parser("serve", help="run the OpenAI-compatible server",
                       description="Run the OpenAI-compatible server. Settings come from the environment "
                                   "and .env files (see .env.example); these flags override them.")
    p.add_argument("--host", help="address to listen on (HOST, default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (PORT, default 3030)")
    p.add_argument("--home", type=Path, help=home_help)
    p.add_argument("--with-defaults", action="store_true",
                   help="first register SmolLM2 and a tiny diffusion test model if missing")
    p.set_defaults(handler=run_serve)

    p = sub.add_parser("add", help="register a GGUF model under a name")
    p.add_argument("path", type=Path, help="the .gguf file")
    p.add_argument("name", help="the name clients use as 'model'")
    p.add_argument("stop", nargs="*", help="stop strings for this model (merged with DEFAULT_STOP)")
    p.add_argument("--description", help="free text shown by list and GET /v1/models")
    p.add_argument("--test-model", action="store_true", help="label the model as a test model")
    p.add_argument("--max-tokens", type=int, help="default answer length for this model")
    add_flags(p.add_argument_group("diffusion defaults for this model (requests may override)"), DIFFUSION_PARAMS)
    p.add_argument("--home", type=Path, help=home_help)
    p.set_defaults(handler=run_add)

    p = sub.add_parser("rm", help="unregister a model")
    p.add_argument("name")
    p.add_argument("--home", type=Path, help=home_help)
    p.set_defaults(handler=run_rm)

    p = sub.add_parser("list", help="list the registered and discovered models")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--home", type=Path, help=home_help)
    p.set_defaults(handler=run_list)


def _settings(args: argparse.Namespace, **extra: Any):
    from ..server.settings import load_settings

    overrides = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "home", None) is not None:
        overrides["hoshikage_home"] = args.home
    return load_settings(**overrides)


def _registry(args: argparse.Namespace):
    from ..server.registry import Registry

    return Registry(_settings(args).hoshikage_home)


def run_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..server.registry import Registry
    from ..server.serve import serve

    try:
        settings = _settings(args, host=args.host, port=args.port)
    except ValidationError as exc:
        print(f"hoshikage serve: bad setting: {exc}", file=sys.stderr)
        return 2
    if args.with_defaults:
        from ..server.defaults import ensure_default_models

        ensure_default_models(Registry(settings.hoshikage_home))
    print_examples(settings, Registry(settings.hoshikage_home))
    serve(settings)
    return 0


def print_examples(settings: Any, registry: Any) -> None:
    """Before serving: one ready-to-paste curl line per registered model (or how to add one)."""
    from .examples import curl_lines

    entries = registry.entries()
    if not entries:
        print(f"no models registered in {registry.path}: add one with `hoshikage add PATH NAME`", flush=True)
        return
    print("Try it, once the server says it is listening:", flush=True)
    for line in curl_lines(settings.host, settings.port, entries, bool(settings.api_key)):
        print("  " + line, flush=True)


def run_add(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..errors import ModelLoadError
    from ..gguf_check import check_gguf_file
    from ..server.registry import ModelEntry, entry_problem
    from ..server.schemas import DiffusionDefaults
    from ..server.text_rules import shown

    try:
        path = check_gguf_file(args.path).resolve()
        diffusion = DiffusionDefaults(**flag_values(args, DIFFUSION_PARAMS)).model_dump(exclude_none=True)
    except ModelLoadError as exc:
        print(f"hoshikage add: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        print(f"hoshikage add: {exc}", file=sys.stderr)
        return 2
    if args.max_tokens is not None and args.max_tokens < 1:
        print("hoshikage add: --max-tokens must be >= 1", file=sys.stderr)
        return 2
    entry = ModelEntry(name=args.name, path=path, stop=tuple(args.stop), description=args.description,
                       test_model=args.test_model, diffusion=diffusion, max_tokens=args.max_tokens)
    problem = entry_problem(entry)  # the name rule; no undecodable bytes (lone surrogates) anywhere
    if problem is not None:
        print(f"hoshikage add: {shown(problem)}", file=sys.stderr)
        return 2
    registry = _registry(args)
    replaced = registry.add(entry)
    print(f"{'replaced' if replaced else 'added'} {args.name} -> {shown(str(path))} (registry: {registry.path})")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    from ..server.text_rules import shown

    registry = _registry(args)
    if not registry.remove(args.name):
        entry = registry.get(args.name)
        where = (f"; it is discovered from {registry.models_dir} - move the file away instead"
                 if entry is not None else "")
        print(f"hoshikage rm: no model named {args.name!r} in {registry.path}{where}", file=sys.stderr)
        return 1
    print(f"removed {shown(args.name)}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ..server.text_rules import shown

    registry = _registry(args)
    entries = registry.entries()
    if args.json:
        print(json.dumps({name: {**e.to_json(), "source": e.source, "kind": e.kind_hint()}
                          for name, e in entries.items()}, ensure_ascii=False, indent=2))
        return 0
    if not entries:
        print(f"no models in {registry.path} or {registry.models_dir}")
        return 0
    width = max(len(shown(n)) for n in entries)
    for name, e in sorted(entries.items()):  # shown(): no terminal escapes from a name, path or description
        kind = e.kind_hint() or "unreadable"
        labels = [kind] + (["TEST MODEL"] if e.test_model else []) + \
                 (["from models/"] if e.source == "models_dir" else [])
        stop = f"  stop={list(e.stop)}" if e.stop else ""
        print(f"{shown(name):<{width}}  {shown(str(e.path))}  [{', '.join(labels)}]{stop}")
        if e.description:
            print(f"{'':<{width}}  {shown(e.description)}")
    return 0
