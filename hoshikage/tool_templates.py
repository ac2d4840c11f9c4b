"""A ChatML chat template with tool use, for ChatML models whose own template has none.

Many small instruction models (SmolLM2 among them) speak ChatML (``<|im_start|>role ...
<|im_end|>``) but ship a template that ignores the ``tools`` variable, so llama.cpp finds no
tool-call format and would answer with prose. For such a model Hoshikage renders tool requests
with this template instead: the tool signatures go into the system turn, and a call is a JSON
object ``{"name": ..., "arguments": {...}}`` between ``<tool_call>`` tags, the widespread
Hermes-style ChatML convention. llama.cpp's chat handling analyses it like any other template,
so the call is grammar-constrained and parsed by llama.cpp, not by code of ours.

The model's own system prompt (its template's default when the conversation has none) is kept.
"""
from __future__ import annotations

import json

CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")

# {default_system} is filled in per model (see chatml_tool_template).
_TEMPLATE = """\
{%- set ns = namespace(system=DEFAULT_SYSTEM) -%}
{%- if messages and messages[0]['role'] == 'system' -%}{%- set ns.system = messages[0]['content'] -%}{%- endif -%}
{%- if tools -%}
{{- '<|im_start|>system\\n' -}}
{%- if ns.system -%}{{- ns.system + '\\n\\n' -}}{%- endif -%}
{{- 'You can call functions to help with the request. Their signatures, as JSON Schema, are listed between <tools> and </tools>:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nTo call a function, answer with one JSON object per call, holding the function name and its arguments, between <tool_call> and </tool_call>:\\n<tool_call>\\n{"name": "function-name", "arguments": {"argument-name": "value"}}\\n</tool_call><|im_end|>\\n' -}}
{%- elif ns.system -%}
{{- '<|im_start|>system\\n' + ns.system + '<|im_end|>\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message['role'] == 'system' and loop.first -%}
{%- elif message['role'] == 'assistant' -%}
{{- '<|im_start|>assistant' -}}
{%- if message['content'] -%}{{- '\\n' + message['content'] -}}{%- endif -%}
{%- for call in message['tool_calls'] or [] -%}
{%- set fn = call['function'] if call['function'] is defined else call -%}
{{- '\\n<tool_call>\\n{"name": "' + fn['name'] + '", "arguments": ' -}}
{%- if fn['arguments'] is string -%}{{- fn['arguments'] -}}{%- else -%}{{- fn['arguments'] | tojson -}}{%- endif -%}
{{- '}\\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>\\n' -}}
{%- elif message['role'] == 'tool' -%}
{{- '<|im_start|>user\\n<tool_response>\\n' + message['content'] + '\\n</tool_response><|im_end|>\\n' -}}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}
"""


def is_chatml(template: str | None) -> bool:
    return bool(template) and all(marker in template for marker in CHATML_MARKERS)


def chatml_tool_template(default_system: str = "") -> str:
    """The template, with ``default_system`` as the system turn of conversations that have none."""
    return _TEMPLATE.replace("DEFAULT_SYSTEM", json.dumps(default_system))
