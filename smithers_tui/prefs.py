"""Preferences the app keeps for the user across restarts: the theme, the last filter and sort of
each list, the columns shown, the timeline's axis.

They live in the user's config, `$XDG_CONFIG_HOME/smithers/app.json` (`~/.config/smithers/app.json`
by default; `SMITHERS_APP_PREFS` names another file). A file that cannot be read or parsed is
ignored (the defaults apply) and replaced at the next change; a write goes to a temporary file
renamed over the old one, so a crash never leaves half a file.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("smithers.app")


def prefs_path() -> Path:
    if os.environ.get("SMITHERS_APP_PREFS"):
        return Path(os.environ["SMITHERS_APP_PREFS"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "smithers" / "app.json"


class Prefs:
    """A small JSON object of preferences: `get(key, default)`, `set(key, value)` saves at once."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or prefs_path()
        self.values: dict[str, Any] = {}
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                self.values = data
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:  # unreadable or not JSON: defaults, replaced at the next change
            log.warning("preferences %s ignored: %s", self.path, e)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        if self.values.get(key) == value:
            return
        self.values[key] = value
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.values, indent=2, sort_keys=True))
            tmp.replace(self.path)
        except OSError as e:  # a read-only home must not break the app: the preference lasts this session
            log.warning("preferences not saved to %s: %s", self.path, e)
