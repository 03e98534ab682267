"""The store's check: ``storage.path`` can be opened and written by the user running check.

Nothing is created: the file, or the folder it will be created in, is looked at. SQLite in WAL
mode also writes ``-wal``, ``-shm`` and the bridge's ``.lock`` file beside the store, so its
folder must be writable too, not only the file. Run ``check`` as the service's user to learn
what the service will meet.
"""

from __future__ import annotations

import os
from pathlib import Path

from bridge.check.report import CheckResult, Status
from bridge.config import Config

SECTION = "storage"


def check_storage(config: Config) -> list[CheckResult]:
    path = config.storage.path
    hint = (f"fix storage.path in {config.path}, or the owner of the folder: the service's user"
            " must be able to write the store and its folder")
    problem = _problem(path)
    if problem:
        return [CheckResult(SECTION, "storage.path", Status.FAIL, problem, hint,
                            {"path": str(path)})]
    if path.exists():
        summary = f"store {path} can be read and written"
    else:
        summary = f"store {path} does not exist yet; the bridge creates it at its first start"
    return [CheckResult(SECTION, "storage.path", Status.OK, summary, details={"path": str(path)})]


def _problem(path: Path) -> str | None:
    """Why the bridge could not open or create ``path`` as this user, or None."""
    if path.is_dir():
        return f"storage.path {path} is a folder; it must name the store's file"
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        return f"cannot read and write {path} as this user"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot create the folder for {path}: {folder} is a file"
    if not os.access(folder, os.W_OK | os.X_OK):
        what = "write in" if folder == path.parent else "create folders in"
        return f"cannot {what} {folder} as this user (the store needs {path.parent} writable)"
    return None
