"""Argo's placeholders, `{{name}}` and `{{=EXPR}}`, found in text and replaced by their values."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from aistack_flows.local._expr._errors import ExpressionError, _did_you_mean, _Error, _known, _show
from aistack_flows.local._expr._evaluate import evaluate
from aistack_flows.local._expr._values import _go_format, _go_json


def _scan(text: str, where: str) -> Iterator[tuple[int, int, str]]:
    """Each `{{...}}` in text: where it starts, where it ends, and the tag between the braces.

    Like Argo's template engine, a tag ends at the first `}}`; a `{{` that is never closed is an
    error (Argo refuses such a workflow too).
    """
    done = 0
    while (start := text.find("{{", done)) >= 0:
        end = text.find("}}", start + 2)
        if end < 0:
            raise ExpressionError(
                where,
                text,
                f"'{{{{' at column {start + 1} is never closed",
                "close the placeholder with '}}'",
            )
        yield start, end + 2, text[start + 2 : end]
        done = end + 2


def placeholders(text: str, *, where: str) -> list[str]:
    """The placeholders in text, in order: variable names, and expressions with a leading "=".

    `"{{ inputs.parameters.x }}-{{=int(y)}}"` gives `["inputs.parameters.x", "=int(y)"]`, so a
    caller can check the names against what a template declares before running anything.

    Raises:
        ExpressionError: a `{{` is never closed.
    """
    return [
        "=" + tag[1:].strip() if tag.startswith("=") else tag.strip()
        for _, _, tag in _scan(text, where)
    ]


def substitute(text: str, scope: Mapping[str, Any], *, where: str) -> str:
    """Text with its Argo placeholders replaced by their values from scope.

    `{{a.b.c}}` (spaces allowed inside the braces) looks its variable up in the nested scope,
    e.g. `{"inputs": {"parameters": {"x": "1"}}, "workflow": {"uid": ...}, "item": ...}`; a key
    that itself holds dots (a label such as `aistack.io/queue`) is found too. A string is written
    as it is and anything else as Go's `json.Marshal` writes it, as Argo writes `{{item}}`:
    compact JSON with sorted keys, `true`, `1.5`, and a whole float without its ".0".

    `{{=EXPR}}` evaluates EXPR (see `evaluate`) and writes the result as Go's `%v` does, as
    Argo does: `1024`, `1e+06`, `[a b]`, `map[k:v]`; a nil result is an error.

    Raises:
        ExpressionError: a variable is missing (the message lists the names next to it), an
            expression fails, or a `{{` is never closed.
    """
    parts: list[str] = []
    done = 0
    for start, end, tag in _scan(text, where):
        parts.append(text[done:start])
        parts.append(_replacement(tag, scope, where))
        done = end
    parts.append(text[done:])
    return "".join(parts)


def _replacement(tag: str, scope: Mapping[str, Any], where: str) -> str:
    if tag.startswith("="):
        expression = tag[1:]
        value = evaluate(expression, scope, where=where)
        if value is None:
            raise ExpressionError(
                where,
                expression,
                "the expression evaluated to nil",
                "Argo refuses a nil result; give a fallback with ??, e.g. x ?? 'default'",
            )
        try:
            return _go_format(value)
        except _Error as failure:
            raise ExpressionError(where, expression, failure.problem, failure.hint) from None
    try:
        value = _lookup(scope, tag.strip())
        return value if isinstance(value, str) else _go_json(value)
    except _Error as failure:
        raise ExpressionError(where, f"{{{{{tag}}}}}", failure.problem, failure.hint) from None


def _lookup(scope: Mapping[str, Any], name: str) -> Any:
    """The value of a placeholder's variable, e.g. `inputs.parameters.aistack-gang-rank`.

    Argo keeps variables in a flat map of dotted names; here they are nested, so at each level
    the longest key that the rest of the name starts with is taken (`workflow.labels.a.b/c`
    finds the label `a.b/c`); a digit segment indexes a list.
    """
    if not name:
        raise _Error("an empty placeholder", "write a variable name between '{{' and '}}'")
    segments = name.split(".")
    node: Any = scope
    path = ""
    at = 0
    while at < len(segments):
        segment = segments[at]
        place = path or "the scope"
        if isinstance(node, Mapping):
            rest = ".".join(segments[at:])
            keys = [
                k for k in node if isinstance(k, str) and (k == rest or rest.startswith(k + "."))
            ]
            if not keys:
                raise _Error(
                    f"unknown variable {name!r}: {place} has no {segment!r} ({_known(node)})",
                    _did_you_mean(segment, node, "check the name against the ones listed"),
                )
            key = max(keys, key=len)
            node = node[key]
            at += key.count(".") + 1
            path = f"{path}.{key}" if path else key
        elif isinstance(node, list | tuple) and segment.isascii() and segment.isdigit():
            if int(segment) >= len(node):
                raise _Error(
                    f"unknown variable {name!r}: {place} has {len(node)} items, no item {segment}",
                    "index from 0",
                )
            node = node[int(segment)]
            at += 1
            path = f"{path}.{segment}"
        else:
            raise _Error(
                f"unknown variable {name!r}: {place} is {_show(node)}, which has no {segment!r}",
                f"refer to {place} itself",
            )
    return node
