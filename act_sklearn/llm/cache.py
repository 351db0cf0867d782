"""A persistent response cache keyed by the full request content.

One SQLite file (WAL mode) shared by threads and processes: a response is stored
the moment it arrives, so a run that is killed half-way and started again pays
only for what had not finished. Only request *content* is hashed and only the
response body is stored: no header, so no API key, ever reaches the file.
"""

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path


def request_key(base_url, body):
    """SHA-256 of the endpoint and the canonical JSON of the request body."""
    canonical = json.dumps(
        {"base_url": base_url, "body": body}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


LOCK_TIMEOUT = 60.0  # seconds a connection waits for another process's lock


def _enable_wal(db, timeout=LOCK_TIMEOUT):
    """Put the file in WAL mode (it stays so), retrying while another process holds it.

    Switching the journal mode needs the file alone; when several processes open
    a new cache at once, SQLite may answer "database is locked" at once instead of
    waiting (its busy handler is skipped where waiting could deadlock).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class ResponseCache:
    """Responses (JSON dicts) by request key, in an SQLite file.

    Parameters
    ----------
    path : str or Path
        The database file; its folder is created if missing.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connection() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, model TEXT, response TEXT NOT NULL,"
                " created REAL)"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS batches ("
                " input_file_id TEXT PRIMARY KEY, batch_id TEXT, base_url TEXT, custom_ids TEXT NOT NULL,"
                " status TEXT, request_counts TEXT, ingested INTEGER NOT NULL DEFAULT 0, created REAL)"
            )

    def _connection(self):
        # sqlite3 connections must stay in the thread that made them
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT, isolation_level=None)
            _enable_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    def get(self, key):
        """The stored response for ``key``, or None."""
        row = self._connection().execute(
            "SELECT response FROM responses WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key, model, response):
        """Store ``response``; a concurrent writer of the same key wins harmlessly."""
        self._connection().execute(
            "INSERT OR REPLACE INTO responses (key, model, response, created) VALUES (?, ?, ?, ?)",
            (key, model, json.dumps(response, separators=(",", ":")), time.time()),
        )

    def put_many(self, rows):
        """Store ``(key, model, response)`` rows in one transaction."""
        now = time.time()
        db = self._connection()
        with db:  # one BEGIN ... COMMIT
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR REPLACE INTO responses (key, model, response, created) VALUES (?, ?, ?, ?)",
                [(key, model, json.dumps(response, separators=(",", ":")), now) for key, model, response in rows],
            )

    # the batch ledger: one row per uploaded batch input file

    def record_batch_file(self, input_file_id, base_url, custom_ids):
        """Record an uploaded input file (and the request keys it holds) before its batch is created."""
        self._connection().execute(
            "INSERT OR REPLACE INTO batches (input_file_id, base_url, custom_ids, status, created)"
            " VALUES (?, ?, ?, 'uploaded', ?)",
            (input_file_id, base_url, json.dumps(list(custom_ids)), time.time()),
        )

    def record_batch(self, input_file_id, batch_id, status=None):
        """Record the batch created from ``input_file_id``."""
        self._connection().execute(
            "UPDATE batches SET batch_id = ?, status = COALESCE(?, status) WHERE input_file_id = ?",
            (batch_id, status, input_file_id),
        )

    def update_batch(self, batch_id, status, request_counts=None, ingested=False):
        """Record a batch's last known status (and, once its answers are in the cache, that it is done with)."""
        self._connection().execute(
            "UPDATE batches SET status = ?, request_counts = COALESCE(?, request_counts),"
            " ingested = MAX(ingested, ?) WHERE batch_id = ?",
            (status, None if request_counts is None else json.dumps(request_counts), int(ingested), batch_id),
        )

    def batch_records(self, base_url=..., open_only=False):
        """The recorded batches, oldest first, as dicts (of one endpoint unless ``base_url`` is left out)."""
        query = ("SELECT input_file_id, batch_id, base_url, custom_ids, status, request_counts, ingested, created"
                 " FROM batches")
        rows = self._connection().execute(query + " ORDER BY created, rowid").fetchall()
        records = []
        for file_id, batch_id, url, custom_ids, status, counts, ingested, created in rows:
            if (base_url is not ... and url != base_url) or (open_only and ingested):
                continue
            records.append(dict(
                input_file_id=file_id, batch_id=batch_id, base_url=url, custom_ids=json.loads(custom_ids),
                status=status, request_counts=None if counts is None else json.loads(counts),
                ingested=bool(ingested), created=created,
            ))
        return records

    def __len__(self):
        return self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self):
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None
