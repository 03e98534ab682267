"""The store's file: its schema version, so upgrades know what they open."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.store import SCHEMA_VERSION, Store, StoreError


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_a_new_store_records_its_schema_version(tmp_path: Path) -> None:
    Store(tmp_path / "bridge.db").close()
    assert user_version(tmp_path / "bridge.db") == SCHEMA_VERSION == 1


def test_a_store_from_before_versioning_opens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    store = Store(path)
    store.read().execute("INSERT INTO index_meta VALUES ('p', 'x', 'x')")
    store.read().execute("PRAGMA user_version=0")
    store.close()
    reopened = Store(path)
    assert reopened.read().execute("SELECT project FROM index_meta").fetchone()[0] == "p"
    reopened.close()
    assert user_version(path) == 1


def test_a_store_written_by_a_newer_release_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "bridge.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=7")
    conn.close()
    with pytest.raises(StoreError, match=r"bridge\.db has schema version 7, newer than"):
        Store(path)
    assert user_version(path) == 7
