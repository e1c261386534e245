#!/usr/bin/python3
"""tests/crash.py — crash safety under load: kill -9 of the postmaster.

Runs its own throwaway cluster (the server as the postgres OS user when run
as root, in a temporary directory, on a private socket), as a subreaper:
PID 1 of these machines reaps no orphans, so a killed postmaster would stay a
zombie and its lock file would keep a new one from starting.  Everything the
server forks is reaped here, and the cluster is stopped and removed at the
end, whatever happened.

Under load — 16 clients appending single events and batches of 2-3 with
exact expected versions (each client its own streams, plus shared streams
where conflicts and SE409 retries happen), while an async projection catches
up and snapshots are taken — the postmaster is killed with SIGKILL, the
server is started again (crash recovery), the clients reconnect and go on;
several times.  Then:
  - every acknowledged append is stored at its acknowledged versions, with
    its event ids, exactly once; an append whose outcome the client never
    heard (in flight at the kill) is stored entirely or not at all;
  - every stream's versions are 1..N; es_streams agrees;
  - es_read_all pages through every event once, in increasing order;
  - the async projection resumes by itself and equals a rebuild
    (exactly once across the crashes);
  - es_load of every stream equals a fold computed without snapshots.
Exit status 0 when all holds, 1 otherwise.

Usage: tests/crash.py [--kills N] [--seconds-between S]   (ES_PG_BIN names the server)
"""
import argparse
import ctypes
import json
import os
import pwd
import random
import shutil
from signal import SIGKILL
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psycopg

PR_SET_CHILD_SUBREAPER = 36
PG_BIN = os.environ.get("ES_PG_BIN", "/usr/lib/postgresql/15/bin")
CLIENTS = 16
OWN_STREAMS = 3
SHARED_STREAMS = 4

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


class Cluster:
    """A throwaway cluster whose postmaster is our (grand)child."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="es-crash.")
        os.chmod(self.dir, 0o755)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.as_root = os.getuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.conninfo = "host=%s port=5432 user=postgres dbname=es_crash" % self.dir

    def _demote(self):
        if self.as_root:
            os.setgid(self.gid)
            os.setuid(self.uid)

    def run(self, *args):
        subprocess.run(args, check=True, preexec_fn=self._demote,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def init(self):
        self.run(os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                 "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as conf:
            conf.write("listen_addresses = ''\nunix_socket_directories = '%s'\nport = 5432\n"
                       "shared_preload_libraries = 'es'\nmax_connections = 60\n"
                       % self.dir)

    def start(self):
        self.run(os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log,
                 "-w", "-t", "120", "start")

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            return int(f.readline())

    def kill9(self):
        pid = self.postmaster_pid()
        os.kill(pid, SIGKILL)
        # The postmaster and the processes it forked are all ours now (we are
        # their subreaper): reap them until none is left, so that no old
        # backend still holds the shared memory a new postmaster needs.
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return pid
            if done == 0:
                time.sleep(0.05)
        raise RuntimeError("the killed server's processes did not exit")

    def stop(self):
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            for mode in ("fast", "immediate"):
                r = subprocess.run([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", mode,
                                    "-w", "stop"], preexec_fn=self._demote,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                if r.returncode == 0:
                    break
        reap()
        if os.environ.get("ES_KEEP_CLUSTER_LOG") and os.path.exists(self.log):
            shutil.copy(self.log, os.environ["ES_KEEP_CLUSTER_LOG"])
        shutil.rmtree(self.dir, ignore_errors=True)


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class Client(threading.Thread):
    """Appends with exact expected versions; remembers what was acknowledged."""

    def __init__(self, n, conninfo, stop):
        super().__init__(daemon=True)
        self.n = n
        self.conninfo = conninfo
        self.stop = stop
        self.rng = random.Random(n)
        self.streams = ["crash-c%d_%d" % (n, i) for i in range(OWN_STREAMS)] + \
                       ["crash-shared_%d" % i for i in range(SHARED_STREAMS)]
        self.acked = []      # (stream, first_version, [event ids])
        self.maybe = []      # (stream, [event ids]): in flight when the connection went
        self.errors = []
        self.conflicts = 0
        self.reconnects = 0

    def connect(self):
        deadline = time.time() + 120
        while not self.stop.is_set() or time.time() < deadline:
            try:
                return psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            except psycopg.OperationalError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        return None

    def run(self):
        conn = self.connect()
        versions = {}
        while not self.stop.is_set():
            stream = self.rng.choice(self.streams)
            count = 1 if self.rng.random() < 0.7 else self.rng.randint(2, 3)
            ids = [str(uuid.uuid4()) for _ in range(count)]
            try:
                if stream not in versions:
                    versions[stream] = conn.execute("SELECT es_stream_version(%s)",
                                                    (stream,)).fetchone()[0]
                expected = versions[stream]
                amounts = [self.rng.randint(1, 100) for _ in range(count)]
                if count == 1:
                    row = conn.execute("SELECT es_append(%s, %s, 'Deposited', %s, NULL, %s)",
                                       (stream, expected, json.dumps({"amount": amounts[0]}),
                                        ids[0])).fetchone()
                else:
                    batch = [{"type": "Deposited", "data": {"amount": a}, "id": i}
                             for a, i in zip(amounts, ids)]
                    row = conn.execute("SELECT es_append(%s, %s, %s::jsonb)",
                                       (stream, expected, json.dumps(batch))).fetchone()
                version = row[0]
                if version != expected + count:
                    self.errors.append("append to %s at %d returned %d" % (stream, expected, version))
                self.acked.append((stream, expected + 1, ids))
                versions[stream] = version
                if self.rng.random() < 0.02:
                    conn.execute("SELECT es_snapshot_take(%s)", (stream,))
            except psycopg.Error as e:
                if e.sqlstate == "SE409":
                    self.conflicts += 1
                    versions.pop(stream, None)
                    continue
                if not (conn.closed or isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError))
                        or (e.sqlstate or "").startswith("57P")):
                    self.errors.append("%s (%s): %s" % (type(e).__name__, e.sqlstate, e))
                    return
                # The connection went: the outcome of the append in flight is unknown.
                self.maybe.append((stream, ids))
                versions.clear()
                self.reconnects += 1
                try:
                    conn.close()
                except Exception:
                    pass
                time.sleep(0.2)
                conn = self.connect()
                if conn is None:
                    return
            except Exception as e:   # anything else is a failure
                self.errors.append("%s: %s" % (type(e).__name__, e))
                return
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seconds-between", type=float, default=4.0)
    args = ap.parse_args()

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("cannot become a subreaper", file=sys.stderr)
        return 1

    cluster = Cluster()
    try:
        cluster.init()
        cluster.start()
        with psycopg.connect(cluster.conninfo.replace("dbname=es_crash", "dbname=postgres"),
                             autocommit=True) as c:
            c.execute("CREATE DATABASE es_crash")
        with psycopg.connect(cluster.conninfo, autocommit=True) as c:
            c.execute("""
                CREATE EXTENSION es;
                CREATE TABLE totals (stream_id text PRIMARY KEY, n int NOT NULL, total bigint NOT NULL);
                CREATE FUNCTION totals_handler(e es_event) RETURNS void LANGUAGE sql AS $$
                    INSERT INTO totals VALUES (e.stream_id, 1, (e.data->>'amount')::bigint)
                    ON CONFLICT (stream_id) DO UPDATE SET n = totals.n + 1, total = totals.total + EXCLUDED.total $$;
                CREATE FUNCTION totals_reset() RETURNS void LANGUAGE sql AS 'DELETE FROM totals';
                SELECT es_register_projection('totals', 'totals_handler(es_event)', NULL, 'async', 'totals_reset()');
                CREATE FUNCTION crash_apply(state jsonb, e es_event) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
                    SELECT jsonb_build_object('n', (state->>'n')::int + 1,
                                              'total', (state->>'total')::bigint + (e.data->>'amount')::bigint) $$;
                SELECT es_register_aggregate('crash', 'crash_apply(jsonb, es_event)',
                                             '{"n": 0, "total": 0}', 20);
            """)

        stop = threading.Event()
        clients = [Client(i, cluster.conninfo, stop) for i in range(CLIENTS)]
        for c in clients:
            c.start()
        for k in range(args.kills):
            time.sleep(args.seconds_between)
            acked = sum(len(c.acked) for c in clients)
            pid = cluster.kill9()
            print("kill %d: SIGKILL to postmaster %d after %d acknowledged appends" % (k + 1, pid, acked),
                  flush=True)
            cluster.start()
        time.sleep(args.seconds_between)
        stop.set()
        for c in clients:
            c.join(timeout=120)

        for c in clients:
            for e in c.errors:
                fail("client %d: %s" % (c.n, e))
        acked = [a for c in clients for a in c.acked]
        maybe = [m for c in clients for m in c.maybe]
        print("%d appends acknowledged, %d in flight at a kill, %d SE409 retries, %d reconnects"
              % (len(acked), len(maybe), sum(c.conflicts for c in clients),
                 sum(c.reconnects for c in clients)), flush=True)

        with psycopg.connect(cluster.conninfo, autocommit=True) as conn:
            verify(conn, acked, maybe)
    finally:
        cluster.stop()
    if failures:
        print("%d failures" % len(failures))
        return 1
    print("crash test: everything acknowledged survived %d kills, exactly once" % args.kills)
    return 0


def verify(conn, acked, maybe):
    stored = {}
    for stream, version, eid in conn.execute(
            "SELECT stream_id, version, event_id::text FROM es_events WHERE stream_id LIKE 'crash-%'"):
        stored[eid] = (stream, version)

    # every acknowledged append: at its versions, with its ids, once
    expected_ids = set()
    for stream, first, ids in acked:
        for i, eid in enumerate(ids):
            expected_ids.add(eid)
            got = stored.get(eid)
            if got != (stream, first + i):
                fail("acknowledged event %s of %s v%d is %s" % (eid, stream, first + i,
                                                                 "missing" if got is None else "at %s v%d" % got))
    # in flight at a kill: all of it or none of it
    maybe_ids = set()
    for stream, ids in maybe:
        present = [eid in stored for eid in ids]
        if any(present) and not all(present):
            fail("append in flight to %s stored partly: %s" % (stream, present))
        maybe_ids.update(ids)
    for eid in stored:
        if eid not in expected_ids and eid not in maybe_ids:
            fail("event %s stored but never appended by a client" % eid)

    # contiguous streams, es_streams agrees
    for stream, n, lo, hi, sv in conn.execute("""
            SELECT e.stream_id, count(*), min(e.version), max(e.version), s.version
              FROM es_events e LEFT JOIN es_streams s USING (stream_id)
             WHERE e.stream_id LIKE 'crash-%' GROUP BY e.stream_id, s.version"""):
        if lo != 1 or hi != n:
            fail("stream %s: versions %d..%d for %d events" % (stream, lo, hi, n))
        if sv != hi:
            fail("stream %s: es_streams says %s, events end at %d" % (stream, sv, hi))

    # the global order: every event once, increasing
    after, seen, total = 0, 0, conn.execute("SELECT count(*) FROM es_events").fetchone()[0]
    while True:
        rows = conn.execute("SELECT global_position FROM es_read_all(%s, 1000)", (after,)).fetchall()
        if not rows:
            break
        for (p,) in rows:
            if p <= after:
                fail("es_read_all went back from %d to %d" % (after, p))
            after = p
            seen += 1
    if seen != total:
        fail("es_read_all paged through %d of %d events" % (seen, total))

    # the async projection resumes by itself and equals a rebuild
    head = conn.execute("SELECT max(global_position) FROM es_events").fetchone()[0]
    if not conn.execute("SELECT es_projection_wait('totals', %s, 60000)", (head,)).fetchone()[0]:
        fail("the async projection did not catch up after the crashes: %s" %
             conn.execute("SELECT * FROM es_projection_status").fetchall())
    diff = conn.execute("""
        SELECT count(*) FROM (
            (SELECT stream_id, count(*)::int, sum((data->>'amount')::bigint) FROM es_events GROUP BY stream_id
             EXCEPT SELECT stream_id, n, total FROM totals)
            UNION ALL
            (SELECT stream_id, n, total FROM totals
             EXCEPT SELECT stream_id, count(*)::int, sum((data->>'amount')::bigint) FROM es_events GROUP BY stream_id)) d
    """).fetchone()[0]
    if diff:
        fail("the async projection differs from a rebuild in %d streams (exactly once broken)" % diff)

    # es_load equals a fold without snapshots
    snaps = conn.execute("SELECT count(*) FROM es_snapshots").fetchone()[0]
    bad = conn.execute("""
        SELECT count(*) FROM (
            SELECT e.stream_id, count(*) AS n, sum((e.data->>'amount')::bigint) AS total, max(version) AS v
              FROM es_events e WHERE e.stream_id LIKE 'crash-%' GROUP BY e.stream_id) f,
             LATERAL es_load(f.stream_id) l
         WHERE (l.state->>'n')::bigint <> f.n OR (l.state->>'total')::bigint <> f.total OR l.version <> f.v
    """).fetchone()[0]
    if bad:
        fail("es_load differs from a fold in %d streams" % bad)
    print("verified: %d events, %d streams contiguous, global order complete, projection exact, "
          "es_load exact (%d snapshots)" % (total, conn.execute(
              "SELECT count(*) FROM es_streams WHERE stream_id LIKE 'crash-%'").fetchone()[0], snaps),
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
