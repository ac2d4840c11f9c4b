"""The jinja2 renderer of chat templates, bounded in time and size (messages: chat_messages.py).

The jinja environment follows Hugging Face's (and llama.cpp's jinja path): sandboxed,
``trim_blocks`` and ``lstrip_blocks`` on, with ``raise_exception`` and ``strftime_now``. It is
the default engine of ``Model.apply_chat_template``; llama.cpp's built-in templates are only the
fallback, for a template that does not render here (or when asked for by name).

A chat template comes from the model file, so it is untrusted code. Besides jinja2's sandbox
(no attribute escapes, no mutation of lists and dicts), every render has a budget
(:class:`Budget`): a deadline, a number of steps (each loop iteration, call, filter and
guarded operator is one; a pure loop with no output is counted too), and a number of
characters any one value or the whole output may have. Operators that multiply size
(``*``, ``**``, ``+``, ``%``, ``~``, ``join``, ``replace``, widths in formats) are checked
*before* they allocate. Breaking the budget raises :class:`TemplateBoundError`; a cancelled
render raises :class:`RenderStopped`.
"""
from __future__ import annotations

import contextvars
import datetime
import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .chat_messages import ROLES, ChatMessage, normalize_messages  # noqa: F401 - re-exported


# -- the bounds ------------------------------------------------------------------------------

RENDER_TIMEOUT_S = 10.0  # default deadline of one render
MAX_STEPS = 1_000_000  # loop iterations + calls + filters + guarded operators, per render
MAX_RANGE = 100_000  # items of one range() (jinja2's sandbox uses the same cap)
BASE_CHARS = 1 << 20  # characters any value or the output may have, plus 4 x the messages' text
_CHECK_EVERY = 256  # steps between two looks at the clock and at the cancel flag
_INT_BITS = 1 << 16  # largest integer an operator may produce, in bits


class TemplateBoundError(ValueError):
    """The chat template ran past its deadline, its step budget or its size bound."""


class RenderStopped(TemplateBoundError):
    """The render was cancelled (``should_stop`` returned true)."""


@dataclass
class Budget:
    """What one render may spend; ``step()`` charges it and raises when it is spent."""

    deadline: float
    max_chars: int
    max_steps: int = MAX_STEPS
    should_stop: Callable[[], bool] | None = None
    steps: int = 0

    def step(self, n: int = 1) -> None:
        before, self.steps = self.steps, self.steps + n
        if self.steps > self.max_steps:
            raise TemplateBoundError(f"the chat template took more than {self.max_steps} steps "
                                     "(loop iterations, calls, filters)")
        if before // _CHECK_EVERY != self.steps // _CHECK_EVERY:
            self.check_time()

    def check_time(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise RenderStopped("rendering the chat template was cancelled")
        if time.monotonic() > self.deadline:
            raise TemplateBoundError("the chat template took too long to render (past its deadline)")

    def size(self, n: int, what: str) -> None:
        if n > self.max_chars:
            raise TemplateBoundError(f"the chat template would build {what} of more than {self.max_chars} "
                                     "characters")


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("hoshikage_template_budget", default=None)


def _current() -> Budget:
    b = _budget.get()
    if b is None:  # compiled templates are only run through render_jinja_chat_template
        raise TemplateBoundError("a chat template was run without a budget")
    return b


def _size_of(value: Any, b: Budget, limit: int) -> int:
    """About how many characters ``str(value)`` has, stopping once past ``limit``."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (list, tuple, dict, set, frozenset)):
        items = value.items() if isinstance(value, dict) else value
        total = 2
        for item in items:
            total += 2 + _size_of(item, b, limit - total)
            if total > limit:
                break
        return total
    if isinstance(value, int) and not isinstance(value, bool):
        return value.bit_length() // 3 + 1
    return 0


def _check_value(value: Any, what: str = "a value") -> Any:
    b = _current()
    b.size(_size_of(value, b, b.max_chars), what)
    return value


def _check_args(args: Iterable[Any]) -> None:
    """Widths and counts (any int argument) above the size bound would allocate that much."""
    b = _current()
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > b.max_chars:
            raise TemplateBoundError(f"the chat template passes {a} as an argument, more than the "
                                     f"{b.max_chars}-character bound allows")


_PERCENT_WIDTH = re.compile(r"%[#0\- +]*(\d+)?(?:\.(\d+))?")
_FORMAT_FIELD = re.compile(r"\{[^{}]*:([^{}]*)\}")


def _check_format(fmt: str, percent: bool) -> None:
    """Refuse widths and precisions in a format string that exceed the size bound."""
    b = _current()
    specs = _PERCENT_WIDTH.findall(fmt) if percent else [(m,) for m in _FORMAT_FIELD.findall(fmt)]
    for groups in specs:
        for text in groups:
            for digits in re.findall(r"\d+", text):
                if len(digits) > 9 or int(digits) > b.max_chars:
                    raise TemplateBoundError(f"the chat template formats with a width of {digits}, more than "
                                             f"the {b.max_chars}-character bound allows")


def _seq_len(x: Any) -> int | None:
    return len(x) if isinstance(x, (str, list, tuple)) else None


def _check_binop(op: str, left: Any, right: Any) -> None:
    """Estimate what ``left op right`` allocates, before it does."""
    b = _current()
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (left, right))
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if _seq_len(seq) is not None and isinstance(n, int):
                b.size(_seq_len(seq) * max(n, 0), "a repeated string or list")
        if ints and left.bit_length() + right.bit_length() > _INT_BITS:
            raise TemplateBoundError("the chat template multiplies integers that are too large")
    elif op == "**" and ints and right > 0 and left not in (0, 1, -1):
        if right * left.bit_length() > _INT_BITS:
            raise TemplateBoundError(f"the chat template raises an integer to the power {right}: too large")
    elif op == "+" and _seq_len(left) is not None and _seq_len(right) is not None:
        b.size(_seq_len(left) + _seq_len(right), "a concatenation")
    elif op == "%" and isinstance(left, str):
        _check_format(left, percent=True)
        _check_args(right if isinstance(right, tuple) else (right,))


def _join_size(sep: str, items: Any, b: Budget) -> int:
    seq = items if isinstance(items, (list, tuple)) else None
    if seq is None:
        return 0
    b.step(len(seq))
    return sum(_size_of(x, b, b.max_chars) for x in seq) + len(sep) * max(len(seq) - 1, 0)


def _replace_size(s: str, old: str, new: str) -> int:
    count = len(s) + 1 if old == "" else s.count(old)
    return len(s) + count * max(len(new) - len(old), 0)


def _precheck_call(obj: Any, args: tuple, kwargs: dict) -> None:
    """What a str method would build: join, replace, format (wrapped by the sandbox)."""
    b = _current()
    _check_args(args)
    _check_args(kwargs.values())
    target = getattr(obj, "__wrapped__", obj)
    owner, name = getattr(target, "__self__", None), getattr(target, "__name__", "")
    if not isinstance(owner, str):
        return
    if name == "join" and args:
        b.size(_join_size(owner, args[0], b), "a joined string")
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        b.size(_replace_size(owner, args[0], args[1]), "a replaced string")
    elif name in ("format", "format_map"):
        _check_format(owner, percent=False)
        b.size(len(owner) + sum(_size_of(a, b, b.max_chars) for a in (*args, *kwargs.values())), "a formatted string")


# Filters whose output grows with str() of their whole input.
_STRINGIFYING = frozenset({"string", "tojson", "pprint", "join", "format", "center", "indent", "wordwrap",
                           "e", "escape", "forceescape", "urlize", "urlencode", "xmlattr", "list"})


def _guard_filter(name: str, fn: Callable) -> Callable:
    """A filter that charges a step, checks what it would build, and checks what it built."""

    @functools.wraps(fn)  # keeps jinja_pass_arg, so jinja still passes the environment/context
    def guarded(*args: Any, **kwargs: Any) -> Any:
        b = _current()
        b.step()
        lead = sum(1 for a in args[:1] if _is_jinja_internal(a))
        values = list(args[lead:])
        _check_args(values[1:])
        _check_args(kwargs.values())
        if name == "join" and values and not isinstance(values[0], (list, tuple, str)):
            values[0] = list(_loop(values[0]))  # a generator (map, select): see what it holds first
            args = (*args[:lead], *values)
        if values and name in _STRINGIFYING:
            b.size(_size_of(values[0], b, b.max_chars), f"the input of the {name} filter")
        if name == "join" and values:
            sep = values[1] if len(values) > 1 else kwargs.get("d", "")
            b.size(_join_size(str(sep), values[0], b), "a joined string")
        if name == "replace" and len(values) >= 3 and all(isinstance(v, str) for v in values[:3]):
            b.size(_replace_size(values[0], values[1], values[2]), "a replaced string")
        if name == "format" and values and isinstance(values[0], str):
            _check_format(values[0], percent=True)
        return _check_value(fn(*args, **kwargs), f"the result of the {name} filter")

    return guarded


def _is_jinja_internal(value: Any) -> bool:
    from jinja2.environment import Environment
    from jinja2.nodes import EvalContext
    from jinja2.runtime import Context

    return isinstance(value, (Environment, EvalContext, Context))


def _raise_exception(message: str) -> None:
    raise ValueError(f"chat template error: {message}")


def _strftime_now(fmt: str) -> str:
    if not isinstance(fmt, str) or len(fmt) > 256 or re.search(r"%[-_0^#]*\d", fmt):
        raise ValueError("strftime_now: the format must be a short string without widths")
    return datetime.datetime.now().strftime(fmt)


def _range(*args: int) -> Iterator[int]:
    """range() capped at MAX_RANGE items, charged one step per item as it is used."""
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise TemplateBoundError(f"the chat template asks for range() of {len(r)} items (at most {MAX_RANGE})")
    return _loop(r)


def _loop(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through this: one step per item."""
    b = _current()
    for item in iterable:
        b.step()
        yield item


@lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    return _environment().from_string(template)


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Guards(Extension):
        """Holds the guard functions; template code reaches them as extension attributes,
        which a template cannot name or rebind."""

        identifier = "hoshikage.guards"

        def __init__(self, environment: Any) -> None:
            super().__init__(environment)
            self.loop = _loop
            self.concat = _concat

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox with every loop, call, filter and size-growing operator charged to the budget."""

        intercepted_binops = frozenset({"*", "**", "+", "%"})

        def _parse(self, source: str, name: str | None, filename: str | None) -> Any:
            tree = super()._parse(source, name, filename)
            guards = self.extensions[Guards.identifier]
            for node in tree.find_all(nodes.For):
                node.iter = guards.call_method("loop", [node.iter], lineno=node.lineno)
            for node in list(tree.find_all(nodes.Concat)):
                node.nodes = [guards.call_method("concat", list(node.nodes), lineno=node.lineno)]
            return tree

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _current().step()
            _check_binop(operator, left, right)
            return _check_value(super().call_binop(context, operator, left, right))

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
            _current().step()
            _precheck_call(__obj, args, kwargs)
            return _check_value(super().call(__context, __obj, *args, **kwargs), "a call's result")

    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Guards],
                             finalize=lambda value: _check_value(value, "an output value"))
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["range"] = _range
    env.filters = {name: _guard_filter(name, fn) for name, fn in env.filters.items()}
    return env


def _concat(*items: Any) -> str:
    """``a ~ b``: the total size is checked before the string is built."""
    b = _current()
    b.step()
    b.size(sum(_size_of(x, b, b.max_chars) for x in items), "a concatenation")
    return "".join(str(x) for x in items)


def render_jinja_chat_template(template: str, messages: Sequence[ChatMessage], *,
                               add_generation_prompt: bool, bos_token: str = "", eos_token: str = "",
                               deadline: float | None = None, should_stop: Callable[[], bool] | None = None,
                               max_chars: int | None = None) -> str:
    """Render a Hugging Face style jinja chat template within a budget.

    deadline: ``time.monotonic()`` value to finish by (default: RENDER_TIMEOUT_S from now);
    should_stop: polled with the clock, true cancels; max_chars: the bound on any value and on
    the output (default: BASE_CHARS + 4 x the messages' text). Raises TemplateBoundError
    (RenderStopped when cancelled) past a bound, ValueError when the template does not render.
    """
    text_chars = sum(len(m.content) + len(m.role) for m in messages)
    budget = Budget(deadline=time.monotonic() + RENDER_TIMEOUT_S if deadline is None else deadline,
                    max_chars=BASE_CHARS + 4 * text_chars if max_chars is None else max_chars,
                    should_stop=should_stop)
    token = _budget.set(budget)
    try:
        compiled = _compile(template)
        parts, total = [], 0
        for chunk in compiled.generate(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token,
                enable_thinking=True):  # llama.cpp's default (common_chat_templates_inputs)
            total += len(chunk)
            budget.size(total, "an output")
            budget.step()
            parts.append(chunk)
        budget.check_time()
        return "".join(parts)
    except ValueError:
        raise
    except RecursionError as exc:
        raise TemplateBoundError("the chat template recurses too deeply") from exc
    except MemoryError as exc:
        raise TemplateBoundError("the chat template ran out of memory") from exc
    except Exception as exc:  # jinja2's syntax, undefined-variable and sandbox errors
        raise ValueError(f"the chat template does not render: {exc}") from exc
    finally:
        _budget.reset(token)
