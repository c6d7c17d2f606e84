"""Go's regular expressions (RE2), read by Python's `re`, and Go's replacement templates."""

from __future__ import annotations

import functools
import re
from typing import Final

from aistack_flows.local._expr._errors import _Error


@functools.lru_cache(maxsize=256)
def _go_regex(pattern: str) -> re.Pattern[str]:
    r"""A Go (RE2) regular expression, compiled by Python's re.

    The common syntax is the same; Go's `\z` (end of text) is Python's `\Z`, and Go's
    `(?<name>...)` is Python's `(?P<name>...)`.
    """
    translated: list[str] = []
    at = 0
    while at < len(pattern):
        if pattern.startswith("\\z", at):
            translated.append("\\Z")
            at += 2
        elif pattern[at] == "\\":
            translated.append(pattern[at : at + 2])
            at += 2
        elif pattern.startswith("(?<", at) and pattern[at + 3 : at + 4].isalpha():
            translated.append("(?P<")
            at += 3
        else:
            translated.append(pattern[at])
            at += 1
    try:
        return re.compile("".join(translated))
    except re.error as error:
        raise _Error(
            f"the regular expression {pattern!r} is invalid ({error})", "fix the pattern"
        ) from None


_EXPAND_REFERENCE: Final = re.compile(r"\{(\w+)\}|(\w+)")


def _go_expand(template: str, match: re.Match[str]) -> str:
    """A replacement as Go's Regexp.Expand writes it: `$1`, `${1}`, `${name}`, `$$` for `$`.

    A reference to a group that did not take part, or does not exist, gives nothing; a `$` not
    followed by a name stays as it is.
    """
    parts: list[str] = []
    rest = template
    while True:
        before, dollar, rest = rest.partition("$")
        parts.append(before)
        if not dollar:
            return "".join(parts)
        if rest.startswith("$"):
            parts.append("$")
            rest = rest[1:]
            continue
        reference = _EXPAND_REFERENCE.match(rest)
        if reference is None:
            parts.append("$")
            continue
        name = reference.group(1) or reference.group(2)
        rest = rest[reference.end() :]
        group: str | int | None
        if name.isascii() and name.isdigit() and (name == "0" or not name.startswith("0")):
            group = int(name) if int(name) <= match.re.groups else None
        else:
            group = name if name in match.re.groupindex else None
        parts.append("" if group is None else match.group(group) or "")
