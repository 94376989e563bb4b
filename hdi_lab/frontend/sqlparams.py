"""Bind notebook variables into SQL as *parameters*, never by string interpolation.

``bind("SELECT * FROM trades WHERE size > :n AND side = {{side}}", {"n": 5, "side": "A"})``
returns ``("SELECT * FROM trades WHERE size > %(n)s AND side = %(side)s", {"n": 5, "side": "A"})``
for psycopg2, which sends the values as data. A scanner (not a regex over the whole text) skips
what must stay as written: ``::type`` casts, ``'string'`` / ``E'string'`` / ``$tag$dollar$tag$``
literals, ``"quoted"`` identifiers, ``--`` / ``/* */`` comments and the colons of array slices
(``arr[:n]``, ``arr[lo:hi]``: inside a subscript a colon is SQL; in an ``ARRAY[:a, :b]``
constructor ``:a`` is a parameter). Every literal ``%`` becomes ``%%`` (psycopg2 formats the
whole text, literals included). ``{{...}}`` takes a name only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hdi_lab.errors import ValidationError

__all__ = ["bind"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def bind(text: str, namespace: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``text`` with ``:name`` / ``{{name}}`` turned into ``%(name)s``, and the values they name.

    Raises :class:`ValidationError` naming a variable missing from ``namespace``, or a
    ``{{...}}`` holding anything but a name.
    """
    out: list[str] = []
    params: dict[str, Any] = {}
    brackets: list[bool] = []  # open [ ... ]: True for a subscript, False for ARRAY[...] and the like
    i, n = 0, len(text)

    def use(name: str, written: str) -> None:
        if name not in namespace:
            raise ValidationError(
                f"SQL parameter {written} refers to {name!r}, which is not defined: assign {name} = ... first"
            )
        params[name] = namespace[name]
        out.append(f"%({name})s")

    while i < n:
        c = text[i]
        end = _skip(text, i)
        if end > i:  # comment, literal or quoted identifier: kept as written
            out.append(text[i:end].replace("%", "%%"))
            i = end
        elif c == "%":
            out.append("%%")
            i += 1
        elif text.startswith("::", i):
            out.append("::")
            i += 2
        elif c == "[":
            brackets.append(_subscripts(text, i))
            out.append(c)
            i += 1
        elif c == "]":
            if brackets:
                brackets.pop()
            out.append(c)
            i += 1
        elif c == ":" and brackets and brackets[-1]:  # a slice: arr[:n], arr[lo :hi]
            out.append(c)
            i += 1
        elif c == ":" and not (i and _is_word(text[i - 1])) and (m := _NAME.match(text, i + 1)):
            use(m.group(0), ":" + m.group(0))
            i = m.end()
        elif text.startswith("{{", i) and (m := _TEMPLATE.match(text, i)):
            name = m.group(1).strip()
            if not _NAME.fullmatch(name):
                raise ValidationError(
                    f"{m.group(0)!r} is not a variable name: {{{{...}}}} takes a name only "
                    "(compute the value in Python first, e.g. lo = start - pd.Timedelta('1D'))"
                )
            use(name, m.group(0))
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out), params


def _subscripts(text: str, i: int) -> bool:
    """Whether the ``[`` at ``i`` subscripts what precedes it (``arr[``, ``f(x)[``, ``"col"[``, ``a[1][``)
    rather than opening an ``ARRAY[`` constructor or an array type (``int[]``: nothing inside)."""
    before = text[:i].rstrip()
    if not before or not (_is_word(before[-1]) or before[-1] in ')]"'):
        return False
    word = re.search(r"[A-Za-z_][A-Za-z0-9_$]*$", before)
    return not (word and word.group(0).lower() == "array")


def _is_word(c: str) -> bool:
    return c.isalnum() or c in "_$"


def _skip(text: str, i: int) -> int:
    """End of the comment, literal or quoted identifier starting at ``i`` (``i`` if none does)."""
    if text.startswith("--", i):
        j = text.find("\n", i)
        return len(text) if j < 0 else j
    if text.startswith("/*", i):  # PostgreSQL block comments nest
        depth, j = 0, i
        while j < len(text):
            if text.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif text.startswith("*/", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    return j
            else:
                j += 1
        return len(text)
    c = text[i]
    if c == "'":
        escapes = i > 0 and text[i - 1] in "eE" and not (i > 1 and _is_word(text[i - 2]))
        return _quoted_end(text, i, "'", escapes)
    if c == '"':
        return _quoted_end(text, i, '"', False)
    if c == "$" and not (i and _is_word(text[i - 1])) and (m := _DOLLAR_TAG.match(text, i)):
        j = text.find(m.group(0), m.end())
        return len(text) if j < 0 else j + len(m.group(0))
    return i


def _quoted_end(text: str, i: int, quote: str, backslash_escapes: bool) -> int:
    """End of the quoted run starting at ``i``: a doubled quote (or ``\\x`` in E'') does not end it."""
    j = i + 1
    while j < len(text):
        if backslash_escapes and text[j] == "\\":
            j += 2
        elif text[j] == quote:
            if text.startswith(quote * 2, j):
                j += 2
            else:
                return j + 1
        else:
            j += 1
    return len(text)
