"""The small subset of CEL that KubeRay's CRD validation rules use, evaluated without `eval`.

Supported: `self == oldSelf` (transition rule: skipped on create, as the real server does),
`self in ['a', 'b']`, `has(self.x)`, `!`, `&&`, `||` and parentheses. A rule outside this subset is
treated as holding, so an unsupported rule never rejects a valid object.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(r"\s*(has\(self\.\w+\)|self\s*==\s*oldSelf|self\s+in\s+\[[^\]]*\]|&&|\|\||!|\(|\))")


class _Unsupported(Exception):
    pass


def _tokens(rule: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(rule):
        if rule[pos:].strip() == "":
            break
        m = _TOKEN.match(rule, pos)
        if not m:
            raise _Unsupported(rule)
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _atom(token: str, value: Any, old: Any, has_old: bool) -> bool:
    if token.startswith("has(self."):
        return isinstance(value, dict) and token[len("has(self."):-1] in value
    if "oldSelf" in token:
        return not has_old or value == old
    choices = re.findall(r"'([^']*)'|\"([^\"]*)\"", token[token.index("[") + 1:-1])
    return value in {a or b for a, b in choices}


def holds(rule: str, value: Any, old: Any = None, has_old: bool = False) -> bool:
    """Whether `rule` holds for `value` (with `old`, the value before an update, when `has_old`)."""
    try:
        tokens = _tokens(rule)
        result, rest = _or(tokens, value, old, has_old)
    except (_Unsupported, IndexError):
        return True
    return result if not rest else True


def _or(tokens: list[str], *env: Any) -> tuple[bool, list[str]]:
    left, tokens = _and(tokens, *env)
    while tokens and tokens[0] == "||":
        right, tokens = _and(tokens[1:], *env)
        left = left or right
    return left, tokens


def _and(tokens: list[str], *env: Any) -> tuple[bool, list[str]]:
    left, tokens = _unary(tokens, *env)
    while tokens and tokens[0] == "&&":
        right, tokens = _unary(tokens[1:], *env)
        left = left and right
    return left, tokens


def _unary(tokens: list[str], *env: Any) -> tuple[bool, list[str]]:
    if tokens[0] == "!":
        value, rest = _unary(tokens[1:], *env)
        return not value, rest
    if tokens[0] == "(":
        value, rest = _or(tokens[1:], *env)
        if not rest or rest[0] != ")":
            raise _Unsupported("unbalanced parentheses")
        return value, rest[1:]
    if tokens[0] in ("&&", "||", ")"):
        raise _Unsupported(tokens[0])
    return _atom(tokens[0], *env), tokens[1:]
