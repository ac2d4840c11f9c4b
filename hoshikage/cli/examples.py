"""Ready-to-paste ``curl`` lines for the models a server is about to serve (printed by ``serve``)."""
from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from typing import Any

from ..trained import TRAINED_MODELS  # a trained model's example is a task prompt it answers

EXAMPLE_PROMPT = "Say hello in one sentence."
EXAMPLE_MAX_TOKENS = 64


def base_url(host: str, port: int) -> str:
    """The URL a client on this machine uses: a wildcard bind is reached through loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def curl_lines(host: str, port: int, entries: Mapping[str, Any], api_key_set: bool) -> list[str]:
    """One ``curl`` command per model name (sorted), asking /v1/chat/completions for a short answer.

    ``entries`` maps names to registry entries (their ``max_tokens``, when set and smaller, is
    used). With an API key the header reads it from ``$API_KEY``: the key itself is never printed.
    """
    url = base_url(host, port) + "/v1/chat/completions"
    auth = ' -H "Authorization: Bearer $API_KEY"' if api_key_set else ""
    lines = []
    for name in sorted(entries):
        limit = getattr(entries[name], "max_tokens", None) or EXAMPLE_MAX_TOKENS
        prompt = TRAINED_MODELS[name].example_prompt if name in TRAINED_MODELS else EXAMPLE_PROMPT
        body = {"model": name, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": min(limit, EXAMPLE_MAX_TOKENS)}
        lines.append(f"curl -s {url} -H 'Content-Type: application/json'{auth} "
                     f"-d {shlex.quote(json.dumps(body, ensure_ascii=True))}")
    return lines
