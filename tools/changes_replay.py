#!/usr/bin/python3
"""changes_replay.py - rebuild a kvsql database from its changes stream.

Reads the stream T:changes of database KEY (docs/FORMAT.md, "The changes
stream") from its first entry and applies every entry to a native SQLite
file, one transaction per database version; with --follow it then waits
for new entries (XREAD BLOCK) and applies them as they come. It stops with
an error when it sees that entries are missing: the stream was trimmed
(MAXLEN) before it was read, or capture was off for a while, or a version
is skipped. Run by hand, and by tests/test_changes.py (replay equality).

    tools/changes_replay.py [--follow] redis://127.0.0.1:6379/KEY copy.db

Needs python3-redis. The copy is a data copy: same tables, indexes, views
and triggers, same rows (rowids included); entries are applied with
INSERT OR REPLACE and DELETE by key, so a trigger that fires again on the
copy converges to the rows its captured changes give.
"""
import json
import sqlite3
import sys
import urllib.parse

import redis


class Gap(Exception):
    """Entries are missing: the copy cannot be brought up to date."""


def aux_key(key, suffix):
    """The auxiliary key name of docs/FORMAT.md: K:suffix with K's hash tag, else {K}:suffix."""
    o = key.find("{")
    tagged = o >= 0 and key.find("}", o + 1) > o + 1
    return (key if tagged else "{" + key + "}") + suffix


def value(pair):
    """A typed pair ["integer","1"] as the Python value SQLite binds, and its placeholder."""
    kind, text = pair[0], pair[1]
    if kind == "integer":
        return int(text), "?"
    if kind == "real":
        return float(text.replace("Inf", "inf")), "?"
    if kind == "text":
        if len(pair) > 2:  # not valid UTF-8: the bytes in hex
            return bytes.fromhex(text), "CAST(? AS TEXT)"
        return text, "?"
    if kind == "blob":
        return bytes.fromhex(text), "?"
    return None, "?"


def ident(name):
    return '"' + name.replace('"', '""') + '"'


class Replayer:
    """Applies entries (dicts of str -> str) to an open sqlite3 connection."""

    def __init__(self, db):
        self.db = db
        self.last = None      # the last version applied
        self.in_txn = False

    def key_columns(self, table):
        """The key's columns: [rowid alias] for a rowid table, else the PRIMARY KEY's."""
        cols = self.db.execute("SELECT name, pk FROM pragma_table_info(?)", (table,)).fetchall()
        wr = self.db.execute("SELECT wr FROM pragma_table_list(?) WHERE schema = 'main'", (table,)).fetchone()
        if wr and wr[0]:
            return [n for n, pk in sorted((c for c in cols if c[1]), key=lambda c: c[1])], False
        names = {n.lower() for n, _ in cols}
        alias = next(a for a in ("rowid", "_rowid_", "oid") if a not in names)
        return [alias], True

    def where(self, table, key):
        cols, _ = self.key_columns(table)
        vals = [value(p) for p in key]
        return " AND ".join("%s IS %s" % (ident(c), v[1]) for c, v in zip(cols, vals)), [v[0] for v in vals]

    def row_op(self, op, table, key, new):
        if op == "delete":
            cond, args = self.where(table, key)
            self.db.execute("DELETE FROM %s WHERE %s" % (ident(table), cond), args)
            return
        names = list(new)
        vals = [value(new[n]) for n in names]
        if op == "insert":
            cols, rowid = self.key_columns(table)
            if rowid:
                names.append(cols[0])
                vals.append(value(key[0]))
            self.db.execute("INSERT OR REPLACE INTO %s (%s) VALUES (%s)" % (
                ident(table), ",".join(ident(n) for n in names), ",".join(v[1] for v in vals)),
                [v[0] for v in vals])
        else:
            cond, args = self.where(table, key)
            sets = ",".join("%s = %s" % (ident(n), v[1]) for n, v in zip(names, vals))
            self.db.execute("UPDATE %s SET %s WHERE %s" % (ident(table), sets, cond),
                            [v[0] for v in vals] + args)

    def check_version(self, op, version):
        if self.last is None:
            if op != "on":
                raise Gap("the stream does not start where capture was turned on "
                          "(trimmed by MAXLEN?): rebuild from a copy of the database instead")
        elif op == "on":
            if version != self.last:
                raise Gap("capture was off from version %d to %d" % (self.last, version))
        elif version not in (self.last, self.last + 1):
            raise Gap("versions %d to %d are missing" % (self.last + 1, version - 1))

    def apply(self, f):
        op, version = f["op"], int(f["version"])
        self.check_version(op, version)
        if self.in_txn and version != self.last:
            self.db.execute("COMMIT")
            self.in_txn = False
        if not self.in_txn and op not in ("on", "off", "commit"):
            self.db.execute("BEGIN")
            self.in_txn = True
        self.last = version
        if op == "schema":
            self.db.execute(f["sql"])
        elif op in ("insert", "update", "delete"):
            self.row_op(op, f["table"], json.loads(f["key"]), json.loads(f.get("new", "{}")))

    def flush(self):
        if self.in_txn:
            self.db.execute("COMMIT")
            self.in_txn = False


def entries(r, stream, follow):
    """The stream's entries from the first, as dicts of str; then new ones if follow."""
    last = "0-0"
    while True:
        got = r.xread({stream: last}, count=1000, block=2000 if follow else None)
        if not got:
            if follow:
                yield None  # idle: the caller commits what it has
                continue
            return
        for eid, fields in got[0][1]:
            last = eid
            yield {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in fields.items()}


def replay(r, key, path, follow=False):
    """Builds (or brings up to date) the SQLite file at path from key's stream."""
    db = sqlite3.connect(path, isolation_level=None)
    rep = Replayer(db)
    try:
        for f in entries(r, aux_key(key, ":changes"), follow):
            if f is None:
                rep.flush()
            else:
                rep.apply(f)
        rep.flush()
    finally:
        if rep.in_txn:
            db.execute("ROLLBACK")
        db.close()
    return rep.last


def main(argv):
    follow = "--follow" in argv
    args = [a for a in argv if a != "--follow"]
    if len(args) != 2:
        sys.exit("usage: changes_replay.py [--follow] redis://host:port[/db]/KEY copy.db")
    u = urllib.parse.urlparse(args[0])
    parts = u.path.lstrip("/").split("/")
    dbnum = int(parts[0]) if len(parts) > 1 else 0
    key = urllib.parse.unquote(parts[-1])
    unquote = urllib.parse.unquote  # %XX in user and password too, as src/client/config.c reads them
    r = redis.Redis(host=u.hostname or "127.0.0.1", port=u.port or 6379, db=dbnum,
                    username=u.username and unquote(u.username), password=u.password and unquote(u.password))
    try:
        last = replay(r, key, args[1], follow)
    except Gap as e:
        sys.exit("changes_replay: entries are missing: %s" % e)
    print("replayed %s into %s up to version %s" % (key, args[1], last))


if __name__ == "__main__":
    main(sys.argv[1:])
