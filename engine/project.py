"""A project's files: `.smithers/` under the working directory holds the database, the config
and project workflows. Read cheaply: commands need these before anything heavy is imported."""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .errors import BadInput


def smithers_dir(project: Path | str | None = None) -> Path:
    return Path(project or Path.cwd()) / ".smithers"


def default_db(project: Path | str | None = None) -> str:
    """SMITHERS_DB (a path or a URL), else `.smithers/smithers.db` of the project."""
    env = os.environ.get("SMITHERS_DB")
    return env if env else str(smithers_dir(project) / "smithers.db")


def durability(project: Path | str | None = None) -> str:
    """`[engine] durability` of `.smithers/config.toml` ("full", the default, or "normal");
    SMITHERS_ENGINE__DURABILITY wins."""
    env = os.environ.get("SMITHERS_ENGINE__DURABILITY")
    if env:
        return env.strip().lower()
    path = smithers_dir(project) / "config.toml"
    if path.is_file():
        try:
            value = tomllib.loads(path.read_text()).get("engine", {}).get("durability")
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as e:
            raise BadInput(f"{path}: cannot read it ({e}): fix the file") from None
        if value:
            return str(value).strip().lower()
    return "full"
