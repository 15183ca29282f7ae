"""The incident database's schema, versioned through SQLite's ``PRAGMA user_version``.

Migration ``n`` (1-based) brings a database from version ``n - 1`` to ``n``; a database is
migrated inside one ``BEGIN IMMEDIATE`` transaction, so two processes opening a fresh file
at once cannot both apply a step. Append steps; never edit a released one.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (  # 1: incidents, looked up by (model, threat, client) among the recent ones
        """CREATE TABLE incidents (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            threat TEXT NOT NULL,
            client TEXT NOT NULL,
            severity TEXT NOT NULL,
            severity_rank INTEGER NOT NULL,
            status TEXT NOT NULL DEFAULT 'open'
                CHECK (status IN ('open', 'acknowledged', 'resolved')),
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            count INTEGER NOT NULL,
            evidence TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX incidents_group ON incidents (model, threat, client, last_seen)",
        "CREATE INDEX incidents_recent ON incidents (last_seen)",
    ),
    (  # 2: what happened to each alert: sent, retried, failed, written to the outbox
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            incident_id INTEGER REFERENCES incidents (id),
            group_key TEXT NOT NULL,
            channel TEXT NOT NULL,
            status TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            error TEXT
        )""",
        "CREATE INDEX deliveries_time ON deliveries (time)",
    ),
    (  # 3: retention: unresolved incidents counted and old resolved ones found by index;
        # what retention removed, tallied per table (reports say what is no longer there)
        "CREATE INDEX incidents_status ON incidents (status, last_seen)",
        """CREATE TABLE pruned (
            kind TEXT PRIMARY KEY,
            rows INTEGER NOT NULL,
            findings INTEGER NOT NULL,
            latest REAL NOT NULL
        )""",
    ),
    (  # 4: per journal of a process (see .journal), the highest sequence number written:
        # an occurrence retried or replayed is written once
        """CREATE TABLE journals (
            name TEXT PRIMARY KEY,
            seq INTEGER NOT NULL
        )""",
    ),
)

VERSION = len(MIGRATIONS)


def version_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection, target: int = VERSION) -> int:
    """Bring the database behind ``conn`` (autocommit mode) to schema ``target``; returns
    the version found before. Raises ``RuntimeError`` for a database newer than this code."""
    found = version_of(conn)
    if found > VERSION:
        raise RuntimeError(f"the incident database has schema version {found}; this aimsec "
                           f"knows versions up to {VERSION}: upgrade aimsec")
    if found >= target:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        current = version_of(conn)  # another process may have migrated meanwhile
        for step in range(current, target):
            for statement in MIGRATIONS[step]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {step + 1}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back itself (disk full)
            conn.execute("ROLLBACK")
        raise
    return found
