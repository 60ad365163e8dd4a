"""A second connection to a database this process already has open (the app's reader).

`Store.open` touches the file only through SQLite, so it is safe while other connections of this
process are open; this is the same, for a database that must already exist."""
from __future__ import annotations

import os

from .sqlite import Store


async def open_shared(path: str | os.PathLike[str]) -> Store:
    return await Store.open(path, create=False)
