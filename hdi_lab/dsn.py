"""PostgreSQL connection strings: masking their secrets and checking their form, without libpq.

Every DSN libpq accepts is covered: ``postgresql://`` and ``postgres://`` URIs (credentials before
the LAST ``@`` of the authority, so an unencoded ``@`` in a password stays hidden; percent-encoded
passwords; ``?password=`` / ``&password=`` query parameters) and ``key=value`` strings (quoted
values with backslash escapes). This module is the one place that knows these forms: settings,
reprs, ``hdi config show``, ``%hdi_config`` and every error message about a connection go
through :func:`mask` or :func:`scrub`. It imports nothing heavy (``%load_ext`` stays fast).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["MASK", "SECRET_KEYS", "check", "mask", "scrub", "secrets"]

#: connection options whose values are secrets
SECRET_KEYS = frozenset({"password", "sslpassword"})
MASK = "****"
_URI = re.compile(r"^(postgres(?:ql)?://)(.*)$", re.DOTALL)
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})|%00")
#: ``password = value`` in a key=value DSN: a quoted value (with backslash escapes, maybe unterminated)
#: or an unquoted one up to the next blank
_KV_SECRET = re.compile(
    r"(\b(?:" + "|".join(sorted(SECRET_KEYS)) + r")\s*=\s*)('(?:[^'\\]|\\.)*(?:'|\\?$)|(?:[^\s\\]|\\.|\\$)*)", re.DOTALL
)


def _split_uri(rest: str) -> tuple[str, str, str]:
    """(credentials, host/path, query) of a URI after its scheme; credentials end at the last ``@``."""
    q = rest.find("?")
    head = rest if q < 0 else rest[:q]
    at = head.rfind("@")
    if at < 0 and q >= 0 and "@" in rest:  # a '?' inside the password
        at = rest.rfind("@")
        q = rest.find("?", at)
    creds = rest[:at] if at >= 0 else ""
    tail = rest[at + 1 :] if at >= 0 else rest
    q = tail.find("?")
    return creds, (tail if q < 0 else tail[:q]), ("" if q < 0 else tail[q + 1 :])


def _is_secret_param(part: str) -> bool:
    return unquote(part.split("=", 1)[0]).strip().lower() in SECRET_KEYS


def mask(dsn: object) -> str:
    """The DSN with every password shown as ``****`` (also for a malformed DSN)."""
    text = str(dsn)
    m = _URI.match(text)
    if not m:
        return _KV_SECRET.sub(lambda k: k.group(1) + MASK, text)
    creds, where, query = _split_uri(m.group(2))
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":" + MASK
    params = (
        "&".join(p.split("=", 1)[0] + "=" + MASK if _is_secret_param(p) else p for p in query.split("&"))
        if query
        else ""
    )
    return m.group(1) + (creds + "@" if creds else "") + where + ("?" + params if params else "")


def secrets(dsn: object) -> list[str]:
    """Every secret fragment of the DSN as written and decoded (for :func:`scrub`), longest first."""
    text = str(dsn)
    found: list[str] = []
    m = _URI.match(text)
    if m:
        creds, _, query = _split_uri(m.group(2))
        if ":" in creds:
            password = creds.split(":", 1)[1]
            found.append(password)
            if "@" in password:  # libpq ends the credentials at the FIRST '@': it quotes the rest as a host name
                found += [part for part in password.split("@") if len(part) >= 4]
        found += [p.split("=", 1)[1] for p in query.split("&") if "=" in p and _is_secret_param(p)]
    else:
        for k in _KV_SECRET.finditer(text):
            value = k.group(2)
            found.append(value)
            inner = value[1:-1] if value.startswith("'") and value.endswith("'") and len(value) > 1 else value
            found.append(re.sub(r"\\(.)", r"\1", inner))
    found += [unquote(f) for f in found]
    return sorted({f for f in found if f}, key=len, reverse=True)


def scrub(text: str, *dsns: object) -> str:
    """``text`` (an error message, a log line) with each DSN masked and every secret in them removed."""
    for dsn in dsns:
        if not dsn:
            continue
        text = text.replace(str(dsn), mask(dsn))
        for secret in secrets(dsn):
            text = text.replace(secret, MASK)
    return text


def check(dsn: str) -> str | None:
    """What is wrong with the DSN's form (as libpq would refuse it), or None. Names no secret."""
    m = _URI.match(dsn)
    if m:
        creds, where, query = _split_uri(m.group(2))
        for part, label in ((creds, "user or password"), (where, "host or database"), (query, "query parameters")):
            if _BAD_ESCAPE.search(part):
                return (
                    f"its {label} holds a bad percent escape ('%' must be followed by two hex digits: "
                    "write a literal '%' as %25)"
                )
        return None
    if "://" in dsn:
        return "a URL must start with postgresql:// or postgres://"
    i, n = 0, len(dsn)
    while i < n:
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n:
            break
        start = i
        while i < n and dsn[i] != "=" and not dsn[i].isspace():
            i += 1
        key = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i >= n or dsn[i] != "=":
            # the word itself is not shown: it may be part of an unquoted password holding a blank
            return (
                "it is neither a postgresql:// URL nor key=value pairs "
                f"(no '=' after the word at character {start + 1})"
            )
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        if i < n and dsn[i] == "'":
            i += 1
            while i < n and dsn[i] != "'":
                i += 2 if dsn[i] == "\\" else 1
            if i >= n:
                return f"the quoted value of {key[:30]!r} is not terminated (close it with ')"
            i += 1
        else:
            while i < n and not dsn[i].isspace():
                i += 2 if dsn[i] == "\\" else 1
    return None
