"""One SQLite database in Debian's python3, driven line by line on stdin (tests/realworld/sqlite.rs).

The harness's line protocol (tests/fixtures/cmdloop.h): one command a line, one answer line,
`quit` -> `bye`, an unknown command -> `error unknown command: LINE`. Any exception becomes
`error <type>: <message>`, so a broken library shows as a wrong answer, not a hung test.

One connection lives as long as the process: WAL mode, statements cached by the module
(`cached_statements`), and a cursor left open over a multi-row result.

    lib        -> the path of the libsqlite3 mapped in this process
    check      -> ok <journal mode> (integrity_check must say ok)
    version    -> SELECT sqlite_version()
    source     -> SELECT sqlite_source_id()
    count      -> count <rows> sum <ids> (the same statement text every time: cached)
    open       -> opened (a cursor over every row, in id order)
    next       -> row <id> <v>, or end
    drain      -> rest <rows left> last <last id>
    insert V   -> inserted <rowid> (on the long-lived connection)
    other V    -> other <rows> (a new connection: open, write V, count, close)
"""
import sqlite3
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lineloop import mapped_lib, serve  # noqa: E402

DB = sys.argv[1]
ROWS = 100

conn = sqlite3.connect(DB, isolation_level=None, cached_statements=64)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
if conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0:
    conn.execute("BEGIN")
    for i in range(1, ROWS + 1):
        conn.execute("INSERT INTO t(id, v) VALUES (?, ?)", (i, "v%d" % i))
    conn.execute("COMMIT")
cursor = None


def handle(line):
    global cursor
    cmd, _, arg = line.partition(" ")
    if cmd == "lib":
        return mapped_lib("libsqlite3")
    if cmd == "check":
        ok = conn.execute("PRAGMA integrity_check").fetchone()[0]
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return "%s %s" % (ok, mode)
    if cmd == "version":
        return conn.execute("SELECT sqlite_version()").fetchone()[0]
    if cmd == "source":
        return conn.execute("SELECT sqlite_source_id()").fetchone()[0]
    if cmd == "count":
        n, s = conn.execute("SELECT count(*), sum(id) FROM t").fetchone()
        return "count %d sum %d" % (n, s)
    if cmd == "open":
        cursor = conn.execute("SELECT id, v FROM t ORDER BY id")
        return "opened"
    if cmd == "next":
        row = cursor.fetchone()
        return "end" if row is None else "row %d %s" % row
    if cmd == "drain":
        rows = cursor.fetchall()
        return "rest %d last %s" % (len(rows), rows[-1][0] if rows else "none")
    if cmd == "insert":
        return "inserted %d" % conn.execute("INSERT INTO t(v) VALUES (?)", (arg,)).lastrowid
    if cmd == "other":
        other = sqlite3.connect(DB, isolation_level=None)
        try:
            other.execute("INSERT INTO t(v) VALUES (?)", (arg,))
            n = other.execute("SELECT count(*) FROM t").fetchone()[0]
        finally:
            other.close()
        return "other %d" % n
    return None


serve(handle)
