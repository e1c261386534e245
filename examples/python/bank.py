#!/usr/bin/python3
"""The es bank account as a Python application would write it (psycopg 3).

Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE) as
a role that may only call es_append and read (app_writer of
examples/setup.sql, which must have been run in that database).  It shows:

  * a repository: es_load for the account's state and version, a decision,
    es_append with that version, and a retry when another writer got there
    first (SQLSTATE SE409), with two writers withdrawing at once;
  * a follower that pages through es_read_all from its own checkpoint (its
    own table) and sleeps in es_wait between pages, until it has seen the
    events this program appends;
  * read-your-writes on an async projection with es_projection_wait, when
    this es has projections.

Exits 0 when everything went as described, 1 otherwise.
"""

import sys
import threading

import psycopg
from psycopg.types.json import Jsonb

ACCOUNT = "account-alice"
EVENTS_APPENDED = 4        # opened, deposited, two withdrawals
FOLLOWER_PAGE = 2          # small, so that the follower pages
MAX_ATTEMPTS = 5

print_lock = threading.Lock()


def say(*args):
    with print_lock:
        print(*args, flush=True)


def connect():
    # "" means: everything from the PG* environment variables, as psql does.
    return psycopg.connect("", autocommit=True)


class InsufficientFunds(Exception):
    pass


class Conflict(Exception):
    """Another writer appended after we loaded (SQLSTATE SE409)."""


class AccountRepository:
    def __init__(self, conn):
        self.conn = conn

    def load(self, account):
        """The account's state and the version it is at (0: no such stream)."""
        row = self.conn.execute(
            "SELECT state, version FROM es_load(%s)", (account,)).fetchone()
        return row[0], row[1]

    def append(self, account, expected_version, event_type, data):
        """Appends one event if the stream is still at expected_version;
        returns the new version."""
        try:
            return self.conn.execute(
                "SELECT es_append(%s, %s, %s, %s)",
                (account, expected_version, event_type, Jsonb(data))).fetchone()[0]
        except psycopg.Error as e:
            if e.sqlstate == "SE409":
                raise Conflict(e.diag.message_primary) from e
            raise

    def position_of(self, account, version):
        """The global position of an appended event (for es_projection_wait)."""
        return self.conn.execute(
            "SELECT global_position FROM es_events WHERE stream_id = %s AND version = %s",
            (account, version)).fetchone()[0]


def withdraw(repo, account, amount, who="", before_append=None):
    """Load, decide, append at the loaded version; on a conflict, do it all
    again with the newer state.  Returns (new version, attempts)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        state, version = repo.load(account)
        if state.get("balance", 0) < amount:
            raise InsufficientFunds(
                f"withdraw {amount} from {account}: insufficient funds "
                f"(balance {state.get('balance', 0)})")
        if before_append:
            before_append(attempt)
        try:
            return repo.append(account, version, "MoneyWithdrawn", {"amount": amount}), attempt
        except Conflict as e:
            say(f"{who}SE409 at expected version {version} ({e}), retrying")
    raise RuntimeError(f"gave up after {MAX_ATTEMPTS} conflicts")


def follower(name, expected, result):
    """Prints every event after its checkpoint, in global order, until it has
    seen `expected` events; the checkpoint moves with each page."""
    seen = 0
    with connect() as conn:
        conn.execute("INSERT INTO follower_checkpoints (name) VALUES (%s) "
                      "ON CONFLICT (name) DO NOTHING", (name,))
        position = conn.execute("SELECT position FROM follower_checkpoints WHERE name = %s",
                                (name,)).fetchone()[0]
        idle = 0
        while seen < expected:
            # One page and its checkpoint in one transaction: a follower that
            # writes a read model would do its writes here too.
            with conn.transaction():
                rows = conn.execute(
                    "SELECT global_position, stream_id, version, event_type "
                    "FROM es_read_all(%s, %s)", (position, FOLLOWER_PAGE)).fetchall()
                for pos, stream, version, event_type in rows:
                    say(f"follower: position {pos} {stream} v{version} {event_type}")
                if rows:
                    position = rows[-1][0]
                    conn.execute("UPDATE follower_checkpoints SET position = %s WHERE name = %s",
                                 (position, name))
            seen += len(rows)
            if rows:
                idle = 0
            elif idle == 30:
                say(f"follower: nothing new after position {position} for 30 s")
                return
            else:
                # Sleeps until an event after `position` can be read (or 1 s).
                conn.execute("SELECT es_wait(%s, 1000)", (position,))
                idle += 1
    say(f"follower: caught up with {seen} events, checkpoint {position}")
    result["ok"] = True


def main():
    follower_result = {}
    follower_thread = threading.Thread(target=follower, daemon=True,
                                       args=("python-follower", EVENTS_APPENDED, follower_result))
    follower_thread.start()

    with connect() as conn:
        repo = AccountRepository(conn)
        repo.append(ACCOUNT, 0, "AccountOpened", {"owner": "Alice"})
        version = repo.append(ACCOUNT, 1, "MoneyDeposited", {"amount": 100})
        say(f"opened {ACCOUNT} with 100 at version {version}")

        try:
            withdraw(repo, ACCOUNT, 1000)
            say("error: a withdrawal beyond the balance was accepted")
            return 1
        except InsufficientFunds as e:
            say(f"refused: {e}")

    # Two writers, each with its own connection, withdraw 30 at once: both
    # load version 2 and decide before either appends (the barrier), so one
    # append conflicts; that writer loads again and its retry wins.
    barrier = threading.Barrier(2, timeout=10)
    results = {}

    def writer(who):
        with connect() as c:
            results[who] = withdraw(AccountRepository(c), ACCOUNT, 30, f"writer {who}: ",
                                    lambda attempt: attempt == 1 and barrier.wait())
        say(f"writer {who}: withdrew 30, {ACCOUNT} now at version {results[who][0]} "
            f"(attempt {results[who][1]})")

    writers = [threading.Thread(target=writer, args=(w,)) for w in ("A", "B")]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    if sorted(a for _, a in results.values()) != [1, 2]:
        say(f"error: expected one first-attempt win and one retry, got {results}")
        return 1

    with connect() as conn:
        repo = AccountRepository(conn)
        state, version = repo.load(ACCOUNT)
        say(f"balance of {ACCOUNT}: {state['balance']} at version {version}")

        follower_thread.join()
        if not follower_result.get("ok"):
            return 1

        # Read-your-writes on the async projection: wait until it has handled
        # our last event, then read the read model.
        has_projections = conn.execute(
            "SELECT to_regprocedure('es_register_projection(text, regprocedure, text[], text, "
            "regprocedure)') IS NOT NULL").fetchone()[0]
        if not has_projections:
            say("projection: skipped, this es has no es_register_projection")
            return 0
        position = repo.position_of(ACCOUNT, version)
        if not conn.execute("SELECT es_projection_wait('account_balances', %s, 10000)",
                            (position,)).fetchone()[0]:
            say(f"error: projection account_balances did not reach position {position} in 10 s")
            return 1
        balance, events = conn.execute(
            "SELECT balance, events FROM account_balances WHERE account = %s",
            (ACCOUNT,)).fetchone()
        say(f"projection account_balances: {ACCOUNT} balance {balance} after {events} events "
            f"(waited for position {position})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
