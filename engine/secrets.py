"""Secrets: which values are secret, the environment a tool process gets, and redaction.

Two defences, both needed (a key that never reaches a process cannot leak from it; a key that
reaches one anyway — an agent CLI needs its own — must not be stored or printed):

- `tool_env()` builds a child environment from an allowlist (PATH, HOME, LANG, TERM, ... and what
  the configuration passes through), never from "everything minus a denylist";
- `redact()` / `redact_data()` replace every known secret value with `[redacted:NAME]` in text
  and JSON-like data: provider keys and any variable whose name says it is secret, passwords
  inside URLs (`DATABASE_URL=postgres://u:PASSWORD@h/db`), and values registered by the
  configuration (`register()`, e.g. an agent's `api_key_env` or `[sandbox] secrets`).
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Iterable, Mapping

# names that hold secrets: *_API_KEY, *_TOKEN, *_SECRET, *_PASSWORD, *_PAT, *_CREDENTIALS, ...
SECRET_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|SECRET|SECRETS|PASSWORD|PASSWD|PASS|PAT|CREDENTIALS?|"
                         r"PRIVATE_KEY|ACCESS_KEY|SESSION_KEY)($|_)", re.I)
# variables a tool process gets by default: what a shell and common tools need, nothing else
ALLOWED_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TZ", "USER", "LOGNAME", "SHELL", "TMPDIR",
               "COLORTERM", "NO_COLOR", "PWD")
ALLOWED_PREFIXES = ("LC_",)
MIN_LEN = 8  # shorter values would redact ordinary words
_URL_SECRET = re.compile(r"[a-z][a-z0-9+.-]*://[^\s/@:]*:([^\s/@]+)@", re.I)

_lock = threading.Lock()
_registered: dict[str, str] = {}  # value -> name, from the configuration
_cache: tuple[Any, re.Pattern[str] | None, dict[str, str]] | None = None


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(name))


def register(value: str | None, name: str = "secret") -> None:
    """Make a value known as secret (from the configuration): it will be redacted everywhere."""
    global _cache
    if value and len(value) >= MIN_LEN:
        with _lock:
            if _registered.get(value) != name:
                _registered[value] = name
                _cache = None


def register_env(names: Iterable[str]) -> None:
    """The values of these environment variables are secret (`[sandbox] secrets`, `api_key_env`)."""
    for n in names:
        register(os.environ.get(n), n)


def known_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """value -> name of every secret known now: secret-named variables, URL passwords, registered values."""
    env = os.environ if environ is None else environ
    found: dict[str, str] = {}
    for k, v in env.items():
        if not v:
            continue
        if is_secret_name(k) and len(v) >= MIN_LEN:
            found.setdefault(v, k)
        for m in _URL_SECRET.finditer(v):
            if len(m.group(1)) >= 4:  # a password in a URL is unambiguous; short ones too
                found.setdefault(m.group(1), k)
    with _lock:
        for v, n in _registered.items():
            found.setdefault(v, n)
    return found


def _matcher() -> tuple[re.Pattern[str] | None, dict[str, str]]:
    """One alternation of every secret (longest first), rebuilt only when the environment changed."""
    global _cache
    env_key = (id(os.environ), hash(frozenset(os.environ.items())), len(_registered))
    cache = _cache
    if cache is not None and cache[0] == env_key:
        return cache[1], cache[2]
    secrets = known_secrets()
    rx = re.compile("|".join(re.escape(v) for v in sorted(secrets, key=len, reverse=True))) if secrets else None
    _cache = (env_key, rx, secrets)
    return rx, secrets


def redact(text: str) -> str:
    """`text` with every known secret value replaced by `[redacted:NAME]`."""
    if not text or not isinstance(text, str):
        return text
    rx, secrets = _matcher()
    if rx is None:
        return text
    return rx.sub(lambda m: f"[redacted:{secrets[m.group(0)]}]", text)


def redact_data(data: Any) -> Any:
    """Redact every string inside JSON-like data (dicts, lists, strings); other values unchanged."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {k: redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v) for v in data]
    return data


def tool_env(passthrough: Iterable[str] = (), extra: Mapping[str, str] | None = None,
             environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a tool or agent process: the allowlist, the configured pass-through
    names (which may name secrets on purpose), then `extra` (set by the engine or the agent's
    configuration)."""
    env = os.environ if environ is None else environ
    wanted = set(ALLOWED_ENV) | set(passthrough)
    out = {k: v for k, v in env.items() if k in wanted or k.startswith(ALLOWED_PREFIXES)}
    out.update(extra or {})
    return out
