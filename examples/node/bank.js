// The es bank account as a Node.js application would write it (node-postgres).
//
// Connects with the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE)
// as a role that may only call es_append and read (app_writer of
// examples/setup.sql, which must have been run in that database).  It shows:
//
//  * a repository: es_load for the account's state and version, a decision,
//    es_append with that version, and a retry when another writer got there
//    first (SQLSTATE SE409), with two writers withdrawing at once;
//  * a follower that pages through es_read_all from its own checkpoint (its
//    own table) and sleeps in es_wait between pages, until it has seen the
//    events this program appends;
//  * read-your-writes on an async projection with es_projection_wait, when
//    this es has projections.
//
// Exits 0 when everything went as described, 1 otherwise.
'use strict';

const { Client } = require('pg');

const ACCOUNT = 'account-alice';
const EVENTS_APPENDED = 4; // opened, deposited, two withdrawals
const FOLLOWER_PAGE = 2; // small, so that the follower pages
const MAX_ATTEMPTS = 5;

// node-postgres returns bigint (versions, positions) as strings: they can
// exceed 2^53.  The figures here are small, so Number() is safe.

async function connect() {
  // new Client() takes PGHOST, PGPORT, PGUSER, PGDATABASE from the environment.
  const client = new Client();
  await client.connect();
  return client;
}

class InsufficientFunds extends Error {}

// Another writer appended after we loaded (SQLSTATE SE409).
class Conflict extends Error {}

class AccountRepository {
  constructor(client) {
    this.client = client;
  }

  // The account's state and the version it is at (0: no such stream).
  async load(account) {
    const { rows } = await this.client.query(
      'SELECT state, version FROM es_load($1)', [account]);
    return { state: rows[0].state, version: Number(rows[0].version) };
  }

  // Appends one event if the stream is still at expectedVersion; returns the
  // new version.
  async append(account, expectedVersion, eventType, data) {
    try {
      const { rows } = await this.client.query(
        'SELECT es_append($1, $2, $3, $4) AS version',
        [account, expectedVersion, eventType, data]);
      return Number(rows[0].version);
    } catch (e) {
      if (e.code === 'SE409') throw new Conflict(e.message);
      throw e;
    }
  }

  // The global position of an appended event (for es_projection_wait).
  async positionOf(account, version) {
    const { rows } = await this.client.query(
      'SELECT global_position FROM es_events WHERE stream_id = $1 AND version = $2',
      [account, version]);
    return Number(rows[0].global_position);
  }
}

// Load, decide, append at the loaded version; on a conflict, do it all again
// with the newer state.  Returns { version, attempt }.
async function withdraw(repo, account, amount, who = '', beforeAppend = null) {
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const { state, version } = await repo.load(account);
    const balance = state.balance ?? 0;
    if (balance < amount) {
      throw new InsufficientFunds(
        `withdraw ${amount} from ${account}: insufficient funds (balance ${balance})`);
    }
    if (beforeAppend) await beforeAppend(attempt);
    try {
      return { version: await repo.append(account, version, 'MoneyWithdrawn', { amount }), attempt };
    } catch (e) {
      if (!(e instanceof Conflict)) throw e;
      console.log(`${who}SE409 at expected version ${version} (${e.message}), retrying`);
    }
  }
  throw new Error(`gave up after ${MAX_ATTEMPTS} conflicts`);
}

// Prints every event after its checkpoint, in global order, until it has seen
// `expected` events; the checkpoint moves with each page.  Returns true when
// it caught up.
async function follow(name, expected) {
  const client = await connect();
  try {
    await client.query(
      'INSERT INTO follower_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING', [name]);
    let position = Number((await client.query(
      'SELECT position FROM follower_checkpoints WHERE name = $1', [name])).rows[0].position);
    let seen = 0;
    let idle = 0;
    while (seen < expected) {
      // One page and its checkpoint in one transaction: a follower that
      // writes a read model would do its writes here too.
      await client.query('BEGIN');
      const { rows } = await client.query(
        'SELECT global_position, stream_id, version, event_type FROM es_read_all($1, $2)',
        [position, FOLLOWER_PAGE]);
      for (const e of rows) {
        console.log(`follower: position ${e.global_position} ${e.stream_id} v${e.version} ${e.event_type}`);
      }
      if (rows.length > 0) {
        position = Number(rows[rows.length - 1].global_position);
        await client.query('UPDATE follower_checkpoints SET position = $1 WHERE name = $2',
          [position, name]);
      }
      await client.query('COMMIT');
      seen += rows.length;
      if (rows.length > 0) {
        idle = 0;
      } else if (idle === 30) {
        console.log(`follower: nothing new after position ${position} for 30 s`);
        return false;
      } else {
        // Sleeps until an event after `position` can be read (or 1 s).
        await client.query('SELECT es_wait($1, 1000)', [position]);
        idle++;
      }
    }
    console.log(`follower: caught up with ${seen} events, checkpoint ${position}`);
    return true;
  } finally {
    await client.end();
  }
}

// Two writers, each with its own connection, withdraw 30 at once: both load
// version 2 and decide before either appends (a barrier), so one append
// conflicts; that writer loads again and its retry wins.
async function concurrentWithdrawals() {
  const writers = ['A', 'B'];
  let arrived = 0;
  let release;
  const barrier = new Promise((resolve) => { release = resolve; });
  const bothDecided = async (attempt) => {
    if (attempt !== 1) return;
    if (++arrived === writers.length) release();
    await barrier;
  };
  const results = await Promise.all(writers.map(async (who) => {
    const client = await connect();
    try {
      const r = await withdraw(new AccountRepository(client), ACCOUNT, 30, `writer ${who}: `, bothDecided);
      console.log(`writer ${who}: withdrew 30, ${ACCOUNT} now at version ${r.version} (attempt ${r.attempt})`);
      return r;
    } finally {
      await client.end();
    }
  }));
  return results.map((r) => r.attempt).sort().join(',') === '1,2';
}

async function main() {
  const follower = follow('node-follower', EVENTS_APPENDED);

  const client = await connect();
  try {
    const repo = new AccountRepository(client);
    await repo.append(ACCOUNT, 0, 'AccountOpened', { owner: 'Alice' });
    const opened = await repo.append(ACCOUNT, 1, 'MoneyDeposited', { amount: 100 });
    console.log(`opened ${ACCOUNT} with 100 at version ${opened}`);

    try {
      await withdraw(repo, ACCOUNT, 1000);
      console.log('error: a withdrawal beyond the balance was accepted');
      return 1;
    } catch (e) {
      if (!(e instanceof InsufficientFunds)) throw e;
      console.log(`refused: ${e.message}`);
    }

    if (!await concurrentWithdrawals()) {
      console.log('error: expected one first-attempt win and one retry');
      return 1;
    }

    const { state, version } = await repo.load(ACCOUNT);
    console.log(`balance of ${ACCOUNT}: ${state.balance} at version ${version}`);

    if (!await follower) return 1;

    // Read-your-writes on the async projection: wait until it has handled
    // our last event, then read the read model.
    const { rows: [{ has }] } = await client.query(
      "SELECT to_regprocedure('es_register_projection(text, regprocedure, text[], text, regprocedure)') IS NOT NULL AS has");
    if (!has) {
      console.log('projection: skipped, this es has no es_register_projection');
      return 0;
    }
    const position = await repo.positionOf(ACCOUNT, version);
    const { rows: [{ reached }] } = await client.query(
      "SELECT es_projection_wait('account_balances', $1, 10000) AS reached", [position]);
    if (!reached) {
      console.log(`error: projection account_balances did not reach position ${position} in 10 s`);
      return 1;
    }
    const { rows: [b] } = await client.query(
      'SELECT balance, events FROM account_balances WHERE account = $1', [ACCOUNT]);
    console.log(`projection account_balances: ${ACCOUNT} balance ${b.balance} after ${b.events} events (waited for position ${position})`);
    return 0;
  } finally {
    await client.end();
  }
}

main().then(
  (code) => process.exit(code),
  (e) => { console.error(e); process.exit(1); });
