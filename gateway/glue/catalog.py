"""The Glue Data Catalog subset Firehose needs: databases and tables in SQLite.

On-disk format (``<data dir>/glue.sqlite3``, WAL): ``databases(name, doc)`` and
``tables(database, name, doc)``, each ``doc`` the JSON of the ``Database`` / ``Table`` shape as
GetDatabase / GetTable return it. Names are stored lower-cased, as Glue does. Writes are single
small transactions under a lock (the catalog changes rarely); reads come from memory.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from gateway import sqlite
from gateway.errors import AwsError

DB_FILE = "glue.sqlite3"
SCHEMA = """
CREATE TABLE IF NOT EXISTS databases (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tables (database TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (database, name));
"""


def not_found(message: str) -> AwsError:
    return AwsError("EntityNotFoundException", message)


def already_exists(message: str) -> AwsError:
    return AwsError("AlreadyExistsException", message)


class Catalog:
    def __init__(self, data_path: Path, durability: str, account: str) -> None:
        data_path.mkdir(parents=True, exist_ok=True)
        self.account = account
        self._conn = sqlite.connect(data_path / DB_FILE, durability)
        self._conn.executescript(SCHEMA)
        self._lock = threading.Lock()
        self.databases: dict[str, dict[str, Any]] = {n: json.loads(d) for n, d in self._conn.execute("SELECT name, doc FROM databases")}
        self.tables: dict[tuple[str, str], dict[str, Any]] = {
            (db, n): json.loads(d) for db, n, d in self._conn.execute("SELECT database, name, doc FROM tables")
        }

    def close(self) -> None:
        self._conn.close()

    def _write(self, sql: str, *args: Any) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute(sql, args)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    # -- databases ---------------------------------------------------------------------------

    def database(self, name: str) -> dict[str, Any]:
        doc = self.databases.get(name.lower())
        if doc is None:
            raise not_found(f"Database {name} not found.")
        return doc

    def create_database(self, given: dict[str, Any]) -> None:
        name = given["Name"].lower()
        if name in self.databases:
            raise already_exists(f"Database already exists: {name}")
        doc = {**given, "Name": name, "CreateTime": time.time(), "CatalogId": self.account}
        self._write("INSERT INTO databases(name, doc) VALUES (?, ?)", name, json.dumps(doc))
        self.databases = {**self.databases, name: doc}

    def delete_database(self, name: str) -> None:
        name = self.database(name)["Name"]
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("DELETE FROM tables WHERE database=?", (name,))
            self._conn.execute("DELETE FROM databases WHERE name=?", (name,))
            self._conn.execute("COMMIT")
        self.tables = {k: v for k, v in self.tables.items() if k[0] != name}
        self.databases = {k: v for k, v in self.databases.items() if k != name}

    # -- tables ------------------------------------------------------------------------------

    def table(self, database: str, name: str) -> dict[str, Any]:
        self.database(database)
        doc = self.tables.get((database.lower(), name.lower()))
        if doc is None:
            raise not_found(f"Table {name} not found.")
        return doc

    def put_table(self, database: str, given: dict[str, Any], *, create: bool) -> None:
        database = self.database(database)["Name"]
        name = given["Name"].lower()
        old = self.tables.get((database, name))
        if create and old is not None:
            raise already_exists(f"Table already exists: {name}")
        if not create and old is None:
            raise not_found(f"Table {name} not found.")
        now = time.time()
        doc = {**given, "Name": name, "DatabaseName": database, "CatalogId": self.account, "UpdateTime": now,
               "CreateTime": old["CreateTime"] if old else now, "VersionId": str(int(old["VersionId"]) + 1) if old else "0"}
        doc.setdefault("IsRegisteredWithLakeFormation", False)
        self._write("INSERT OR REPLACE INTO tables(database, name, doc) VALUES (?, ?, ?)", database, name, json.dumps(doc))
        self.tables = {**self.tables, (database, name): doc}

    def delete_table(self, database: str, name: str) -> None:
        doc = self.table(database, name)
        self._write("DELETE FROM tables WHERE database=? AND name=?", doc["DatabaseName"], doc["Name"])
        self.tables = {k: v for k, v in self.tables.items() if k != (doc["DatabaseName"], doc["Name"])}

    def tables_of(self, database: str) -> list[dict[str, Any]]:
        name = self.database(database)["Name"]
        return [doc for (db, _), doc in sorted(self.tables.items()) if db == name]
