/*-------------------------------------------------------------------------
 *
 * es_stress.c
 *	  Concurrency stress test for es_append, as a libpq client.
 *
 * Several clients (threads, one connection each) run read-decide-append
 * loops over a few streams, all at once, so that they keep colliding:
 *
 *	- read the stream's version (es_stream_version, and one time in four
 *	  es_read too), append one event expecting that version, and on SE409
 *	  read again and retry (at most MAX_CONFLICT_RETRIES times per loop);
 *	- one loop in five appends a batch of 2-3 events (the jsonb form);
 *	- some run an explicit transaction with appends to two streams, and a
 *	  third of those roll it back on purpose;
 *	- some append with caller-chosen event ids (single and batch form) and
 *	  repeat the exact call at once, and again after all loops: every repeat
 *	  must return the first call's version and store nothing;
 *	- a few append with expected_version NULL (any version).
 *
 * Every event carries a unique tag in its metadata, "client-loop-attempt"
 * plus ".i" for the i-th event of a batch or transaction.  Each client
 * records the tags it got an acknowledgement for, with the version it was
 * told, and the tags that must not be stored (SE409, rolled back, failed).
 * Any error other than SE409 is a failure and stops that client.
 *
 * While running, every append must return the version right after the one
 * it expected, and every es_read must return contiguous versions reaching at
 * least the version es_stream_version reported just before.  Afterwards the
 * run's rows in es_events and es_streams are checked, and every violation
 * is printed:
 *	- every stream's versions are exactly 1..N (no gap, no duplicate);
 *	- every acknowledged event is stored exactly once, in its stream, at the
 *	  version it was told (a batch: consecutive versions ending at the
 *	  returned one), with the event id it was given;
 *	- no version was acknowledged to two appends;
 *	- no event that was not acknowledged is stored (SE409, rollbacks,
 *	  failures, or anything else);
 *	- es_streams.version is each stream's newest version; no stream row
 *	  without events, no events without a stream row;
 *	- global positions are unique and increase with version in each stream;
 *	- as many events are stored as were acknowledged.
 *
 * Streams are named "stress<tag>-<n>" with a random run tag, so that runs
 * against one database do not mix.  --sabotage KIND corrupts the run's data
 * after the loops, as a superuser could, to show that the checks catch it.
 *
 * The server is the one the PG* environment variables name.  Exit status: 0
 * when everything checks out, 1 on any failure or violation (connection
 * errors included), 2 on bad usage.
 *
 * tests/stress/run.sh builds and runs it.
 *
 *-------------------------------------------------------------------------
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libpq-fe.h"

#include "es_client.h"

/* SE409 retries allowed per loop before the loop counts as a failure. */
#define MAX_CONFLICT_RETRIES 1000

/* Events in a batch: 2 or 3. */
#define MAX_BATCH 3

#define TAG_SIZE 48
#define UUID_SIZE 37			/* 36 characters and the terminator */

#define SQLSTATE_WRONG_EXPECTED_VERSION "SE409"

#define CONNINFO "fallback_application_name=es_stress"

const char *const es_progname = "stress";

typedef struct Options
{
	int			clients;
	int			loops;
	int			streams;
	char		run_tag[ES_MAX_RUN_TAG + 1];
	const char *sabotage;		/* NULL: none */
} Options;

/* An event the server acknowledged: it must be stored, exactly there. */
typedef struct AckedEvent
{
	char		tag[TAG_SIZE];
	int			stream;
	int64_t		version;
	char		event_id[UUID_SIZE];	/* "" when the server chose it */
} AckedEvent;

/* An event that was sent but not acknowledged: it must not be stored. */
typedef struct UnackedEvent
{
	char		tag[TAG_SIZE];
	int			stream;
	const char *reason;
} UnackedEvent;

/* An append with caller-chosen ids, kept to be repeated after the loops. */
typedef struct SavedCall
{
	const char *statement;
	int			nparams;
	char	   *params[5];
	int64_t		version;		/* what the first call returned */
} SavedCall;

typedef struct Stats
{
	long		loops;
	long		single_appends;
	long		any_version_appends;
	long		batches;
	long		batch_events;
	long		tx_committed;
	long		tx_rolled_back;
	long		idempotent_appends;
	long		idempotent_repeats;
	long		conflicts;		/* SE409s, each one retried */
	long		reads;			/* es_read calls */
} Stats;

typedef struct Client
{
	int			id;
	const Options *opt;
	PGconn	   *conn;
	uint64_t	rng;
	pthread_t	thread;

	AckedEvent *acked;
	int			nacked;
	int			maxacked;
	UnackedEvent *unacked;
	int			nunacked;
	int			maxunacked;
	SavedCall  *saved;
	int			nsaved;
	int			maxsaved;

	Stats		stats;
	int			failures;
} Client;

/* What became of one append attempt. */
typedef enum AppendOutcome
{
	APPEND_OK,
	APPEND_CONFLICT,			/* SE409: read again and retry */
	APPEND_FAILED				/* anything else: already reported */
} AppendOutcome;

typedef AppendOutcome (*AttemptFunc) (Client *c, int loop, int attempt, void *arg);

/* Arguments of the attempt functions. */
typedef struct SingleArgs
{
	int			stream;
	bool		any_version;	/* expected_version NULL */
} SingleArgs;

typedef struct BatchArgs
{
	int			stream;
	int			count;			/* 1: the single form */
	bool		with_ids;		/* caller-chosen ids, repeated */
	char		ids[MAX_BATCH][UUID_SIZE];
} BatchArgs;

typedef struct TransactionArgs
{
	int			streams[2];		/* ascending, so transactions cannot deadlock */
	bool		commit;
} TransactionArgs;

/* Set up in main(), read-only while the clients run. */
static char **stream_names;
static char *ext_schema;		/* quoted, for SQL text */
static char *ext_schema_raw;	/* as is, for parameters */


/*
 * Randomness and reporting
 */

/* A version 4 UUID from /dev/urandom, as text. */
static bool
RandomUuid(char *out)
{
	unsigned char b[16];

	if (!EsReadUrandom(b, sizeof(b)))
		return false;
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, UUID_SIZE,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
			 b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	return true;
}

/* Prints a client's failure; the client stops after its current loop. */
static void
ClientFail(Client *c, const char *fmt,...)
{
	char		who[32];
	va_list		args;

	snprintf(who, sizeof(who), "client %d", c->id);
	va_start(args, fmt);
	EsVFail(&c->failures, who, fmt, args);
	va_end(args);
}

static bool
IsConflict(const PGresult *res)
{
	const char *sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	return sqlstate != NULL && strcmp(sqlstate, SQLSTATE_WRONG_EXPECTED_VERSION) == 0;
}


/*
 * What each client records
 */

static void
MakeTag(char *tag, const Client *c, int loop, int attempt, int index)
{
	if (index < 0)
		snprintf(tag, TAG_SIZE, "%d-%d-%d", c->id, loop, attempt);
	else
		snprintf(tag, TAG_SIZE, "%d-%d-%d.%d", c->id, loop, attempt, index);
}

static void
RecordAcked(Client *c, const char *tag, int stream, int64_t version,
			const char *event_id)
{
	AckedEvent *e;

	c->acked = EsGrowArray(c->acked, c->nacked, &c->maxacked, sizeof(AckedEvent));
	e = &c->acked[c->nacked++];
	EsCopyString(e->tag, tag, TAG_SIZE);
	e->stream = stream;
	e->version = version;
	EsCopyString(e->event_id, event_id ? event_id : "", UUID_SIZE);
}

static void
RecordUnacked(Client *c, const char *tag, int stream, const char *reason)
{
	UnackedEvent *e;

	c->unacked = EsGrowArray(c->unacked, c->nunacked, &c->maxunacked,
							 sizeof(UnackedEvent));
	e = &c->unacked[c->nunacked++];
	EsCopyString(e->tag, tag, TAG_SIZE);
	e->stream = stream;
	e->reason = reason;
}

static void
SaveCall(Client *c, const char *statement, int nparams,
		 const char *const *params, int64_t version)
{
	SavedCall  *call;

	c->saved = EsGrowArray(c->saved, c->nsaved, &c->maxsaved, sizeof(SavedCall));
	call = &c->saved[c->nsaved++];
	call->statement = statement;
	call->nparams = nparams;
	for (int i = 0; i < nparams; i++)
		call->params[i] = params[i] ? EsStrdup(params[i]) : NULL;
	call->version = version;
}

static void
FreeClient(Client *c)
{
	if (c->conn)
		PQfinish(c->conn);
	for (int i = 0; i < c->nsaved; i++)
		for (int j = 0; j < c->saved[i].nparams; j++)
			free(c->saved[i].params[j]);
	free(c->saved);
	free(c->acked);
	free(c->unacked);
}


/*
 * Statements
 */

/* Prepared on every client connection; %s is the extension's schema. */
static const struct
{
	const char *name;
	const char *sql;
}			client_statements[] =
{
	{"version", "SELECT %s.es_stream_version($1::text)"},
	{"read", "SELECT version, stream_id FROM %s.es_read($1::text, $2::bigint)"},
	{"append",
	"SELECT %s.es_append($1::text, $2::bigint, 'Tick', $3::jsonb, $4::jsonb, $5::uuid)"},
	{"append_batch", "SELECT %s.es_append($1::text, $2::bigint, $3::jsonb)"},
};

/* BEGIN, COMMIT or ROLLBACK; a failure is reported here (see EsTryCommand). */
static bool
ExecCommand(Client *c, const char *sql)
{
	char		error[1024];

	if (EsTryCommand(c->conn, sql, error, sizeof(error)))
		return true;
	ClientFail(c, "%s failed: %s", sql, error);
	return false;
}

/*
 * ExecAppend
 *		Runs a prepared es_append statement; on success *version is the new
 *		version the server returned.  SE409 is a conflict, anything else a
 *		failure, reported here.
 */
static AppendOutcome
ExecAppend(Client *c, const char *statement, int nparams,
		   const char *const *params, int64_t *version)
{
	PGresult   *res = PQexecPrepared(c->conn, statement, nparams, params,
									 NULL, NULL, 0);
	AppendOutcome outcome = APPEND_FAILED;
	char		error[1024];

	if (PQresultStatus(res) == PGRES_TUPLES_OK)
	{
		if (PQntuples(res) == 1 && PQnfields(res) == 1 && !PQgetisnull(res, 0, 0) &&
			EsParseInt64(PQgetvalue(res, 0, 0), version))
			outcome = APPEND_OK;
		else
			ClientFail(c, "es_append on %s returned no version", params[0]);
	}
	else if (IsConflict(res))
		outcome = APPEND_CONFLICT;
	else
		ClientFail(c, "es_append on %s failed: %s", params[0],
				   EsErrorText(c->conn, res, error, sizeof(error)));
	PQclear(res);
	return outcome;
}

/*
 * ReadVersion
 *		The read of read-decide-append: the stream's current version from
 *		es_stream_version and, one time in four, from es_read as well (the
 *		whole stream or its last few events), whose versions must run on
 *		contiguously and reach at least what es_stream_version said.
 */
static bool
ReadVersion(Client *c, int stream, int64_t *version)
{
	const char *name = stream_names[stream];
	const char *params[2];
	char		from_text[ES_INT64_TEXT_SIZE];
	char		error[1024];
	PGresult   *res;
	int64_t		from;
	int64_t		last;
	int			rows;

	params[0] = name;
	res = PQexecPrepared(c->conn, "version", 1, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
		PQgetisnull(res, 0, 0) || !EsParseInt64(PQgetvalue(res, 0, 0), version) ||
		*version < 0)
	{
		ClientFail(c, "es_stream_version(%s) failed: %s", name,
				   PQresultStatus(res) == PGRES_TUPLES_OK ? "no version" :
				   EsErrorText(c->conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	PQclear(res);

	if (EsRandomInt(&c->rng, 4) != 0)
		return true;

	from = EsRandomInt(&c->rng, 2) == 0 ? 1 : (*version > 4 ? *version - 3 : 1);
	snprintf(from_text, sizeof(from_text), "%" PRId64, from);
	params[1] = from_text;
	res = PQexecPrepared(c->conn, "read", 2, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		ClientFail(c, "es_read(%s, %" PRId64 ") failed: %s", name, from,
				   EsErrorText(c->conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	rows = PQntuples(res);
	for (int i = 0; i < rows; i++)
	{
		int64_t		v;

		if (!EsParseInt64(PQgetvalue(res, i, 0), &v) || v != from + i ||
			strcmp(PQgetvalue(res, i, 1), name) != 0)
		{
			ClientFail(c, "es_read(%s, %" PRId64 ") returned %s version %s as row %d, expected %s version %" PRId64,
					   name, from, PQgetvalue(res, i, 1), PQgetvalue(res, i, 0),
					   i + 1, name, from + i);
			PQclear(res);
			return false;
		}
	}
	PQclear(res);

	last = from + rows - 1;
	if (last < *version)
	{
		ClientFail(c, "es_read(%s, %" PRId64 ") returned versions up to %" PRId64 ", but es_stream_version had just said %" PRId64,
				   name, from, last, *version);
		return false;
	}
	*version = last;
	c->stats.reads++;
	return true;
}


/*
 * Attempts: one try of one loop.  On SE409 RetryOnConflict tries again, with
 * the next attempt number (hence new tags).
 */

/* One event, expecting the version just read, or any version. */
static AppendOutcome
AttemptSingle(Client *c, int loop, int attempt, void *arg)
{
	const SingleArgs *a = arg;
	int64_t		expected = 0;
	int64_t		version;
	char		expected_text[ES_INT64_TEXT_SIZE];
	char		tag[TAG_SIZE];
	char		data[128];
	char		metadata[256];
	const char *params[5];
	AppendOutcome outcome;

	if (!a->any_version && !ReadVersion(c, a->stream, &expected))
		return APPEND_FAILED;

	MakeTag(tag, c, loop, attempt, -1);
	snprintf(expected_text, sizeof(expected_text), "%" PRId64, expected);
	snprintf(data, sizeof(data), "{\"client\": %d, \"seq\": %d}", c->id, loop);
	snprintf(metadata, sizeof(metadata), "{\"tag\": \"%s\"}", tag);
	params[0] = stream_names[a->stream];
	params[1] = a->any_version ? NULL : expected_text;
	params[2] = data;
	params[3] = metadata;
	params[4] = NULL;

	outcome = ExecAppend(c, "append", 5, params, &version);
	if (outcome != APPEND_OK)
	{
		RecordUnacked(c, tag, a->stream, outcome == APPEND_CONFLICT ? "SE409" : "failed");
		if (outcome == APPEND_CONFLICT && a->any_version)
		{
			ClientFail(c, "SE409 for an append to %s with expected_version NULL",
					   params[0]);
			return APPEND_FAILED;
		}
		return outcome;
	}

	RecordAcked(c, tag, a->stream, version, NULL);
	if (!a->any_version && version != expected + 1)
	{
		ClientFail(c, "es_append(%s, %" PRId64 ") returned version %" PRId64 ", expected %" PRId64,
				   params[0], expected, version, expected + 1);
		return APPEND_FAILED;
	}
	return APPEND_OK;
}

/*
 * Builds the parameters of an append of a->count events (the single form
 * when count is 1, the batch form otherwise), with ids when a->with_ids.
 * Returns the statement name and sets *nparams; the texts live in the
 * caller's buffers.
 */
static const char *
BuildAppend(Client *c, const BatchArgs *a, int loop, int attempt,
			const char *expected_text, char tags[][TAG_SIZE],
			char *data, size_t data_size, char *metadata, size_t metadata_size,
			const char **params, int *nparams)
{
	params[0] = stream_names[a->stream];
	params[1] = expected_text;

	if (a->count == 1)
	{
		MakeTag(tags[0], c, loop, attempt, -1);
		snprintf(data, data_size, "{\"client\": %d, \"seq\": %d}", c->id, loop);
		snprintf(metadata, metadata_size, "{\"tag\": \"%s\"}", tags[0]);
		params[2] = data;
		params[3] = metadata;
		params[4] = a->with_ids ? a->ids[0] : NULL;
		*nparams = 5;
		return "append";
	}
	else
	{
		size_t		len = 0;

		len += snprintf(data + len, data_size - len, "[");
		for (int i = 0; i < a->count; i++)
		{
			MakeTag(tags[i], c, loop, attempt, i);
			len += snprintf(data + len, data_size - len,
							"%s{\"type\": \"Tick\", \"data\": {\"client\": %d, \"seq\": %d, \"i\": %d}, \"metadata\": {\"tag\": \"%s\"}",
							i > 0 ? ", " : "", c->id, loop, i, tags[i]);
			if (a->with_ids)
				len += snprintf(data + len, data_size - len, ", \"id\": \"%s\"", a->ids[i]);
			len += snprintf(data + len, data_size - len, "}");
		}
		snprintf(data + len, data_size - len, "]");
		params[2] = data;
		*nparams = 3;
		return "append_batch";
	}
}

/*
 * A batch, or with ids an idempotent append: the exact call is then repeated
 * at once, must return the same version, and is saved to be repeated again
 * after the loops.
 */
static AppendOutcome
AttemptBatch(Client *c, int loop, int attempt, void *arg)
{
	const BatchArgs *a = arg;
	int64_t		expected;
	int64_t		version;
	int64_t		again;
	char		expected_text[ES_INT64_TEXT_SIZE];
	char		tags[MAX_BATCH][TAG_SIZE];
	char		data[1024];
	char		metadata[256];
	const char *params[5];
	const char *statement;
	int			nparams;
	AppendOutcome outcome;

	if (!ReadVersion(c, a->stream, &expected))
		return APPEND_FAILED;
	snprintf(expected_text, sizeof(expected_text), "%" PRId64, expected);
	statement = BuildAppend(c, a, loop, attempt, expected_text, tags,
							data, sizeof(data), metadata, sizeof(metadata),
							params, &nparams);

	outcome = ExecAppend(c, statement, nparams, params, &version);
	if (outcome != APPEND_OK)
	{
		for (int i = 0; i < a->count; i++)
			RecordUnacked(c, tags[i], a->stream,
						  outcome == APPEND_CONFLICT ? "SE409" : "failed");
		return outcome;
	}

	for (int i = 0; i < a->count; i++)
		RecordAcked(c, tags[i], a->stream, version - a->count + 1 + i,
					a->with_ids ? a->ids[i] : NULL);
	if (version != expected + a->count)
	{
		ClientFail(c, "es_append(%s, %" PRId64 ") of %d events returned version %" PRId64 ", expected %" PRId64,
				   params[0], expected, a->count, version, expected + a->count);
		return APPEND_FAILED;
	}
	if (!a->with_ids)
		return APPEND_OK;

	/* The idempotent retry: exactly the same call. */
	outcome = ExecAppend(c, statement, nparams, params, &again);
	if (outcome == APPEND_CONFLICT)
		ClientFail(c, "repeating an append of %d events with the same ids to %s at expected version %" PRId64 " got SE409 instead of version %" PRId64,
				   a->count, params[0], expected, version);
	if (outcome != APPEND_OK)
		return APPEND_FAILED;
	if (again != version)
	{
		ClientFail(c, "repeating an append of %d events with the same ids to %s at expected version %" PRId64 " returned version %" PRId64 " instead of %" PRId64,
				   a->count, params[0], expected, again, version);
		return APPEND_FAILED;
	}
	c->stats.idempotent_repeats++;
	SaveCall(c, statement, nparams, params, version);
	return APPEND_OK;
}

/*
 * An explicit transaction appending one event to each of two streams, then
 * committed or deliberately rolled back.
 */
static AppendOutcome
AttemptTransaction(Client *c, int loop, int attempt, void *arg)
{
	const TransactionArgs *a = arg;
	int64_t		expected[2];
	int64_t		version[2];
	char		tags[2][TAG_SIZE];
	int			sent = 0;
	AppendOutcome outcome = APPEND_OK;
	const char *reason;

	for (int i = 0; i < 2; i++)
		if (!ReadVersion(c, a->streams[i], &expected[i]))
			return APPEND_FAILED;

	if (!ExecCommand(c, "BEGIN"))
		return APPEND_FAILED;
	for (int i = 0; i < 2 && outcome == APPEND_OK; i++)
	{
		char		expected_text[ES_INT64_TEXT_SIZE];
		char		data[128];
		char		metadata[256];
		const char *params[5];

		MakeTag(tags[i], c, loop, attempt, i);
		snprintf(expected_text, sizeof(expected_text), "%" PRId64, expected[i]);
		snprintf(data, sizeof(data), "{\"client\": %d, \"seq\": %d, \"i\": %d}",
				 c->id, loop, i);
		snprintf(metadata, sizeof(metadata), "{\"tag\": \"%s\"}", tags[i]);
		params[0] = stream_names[a->streams[i]];
		params[1] = expected_text;
		params[2] = data;
		params[3] = metadata;
		params[4] = NULL;
		outcome = ExecAppend(c, "append", 5, params, &version[i]);
		sent = i + 1;
		if (outcome == APPEND_OK && version[i] != expected[i] + 1)
		{
			ClientFail(c, "es_append(%s, %" PRId64 ") in a transaction returned version %" PRId64 ", expected %" PRId64,
					   params[0], expected[i], version[i], expected[i] + 1);
			outcome = APPEND_FAILED;
		}
	}

	if (outcome != APPEND_OK || !a->commit)
	{
		if (outcome == APPEND_OK)
			reason = "rolled back";
		else if (outcome == APPEND_CONFLICT)
			reason = "SE409 in transaction";
		else
			reason = "failed transaction";
		/* Even if ROLLBACK fails, an open transaction never commits. */
		if (!ExecCommand(c, "ROLLBACK"))
			outcome = APPEND_FAILED;
		for (int i = 0; i < sent; i++)
			RecordUnacked(c, tags[i], a->streams[i], reason);
		return outcome;
	}

	/*
	 * If COMMIT fails (see EsTryCommand), the outcome is unknown: the events
	 * are neither acked nor unacked.
	 */
	if (!ExecCommand(c, "COMMIT"))
		return APPEND_FAILED;
	for (int i = 0; i < 2; i++)
		RecordAcked(c, tags[i], a->streams[i], version[i], NULL);
	return APPEND_OK;
}

/* Runs one loop's attempts until one is not an SE409, within the cap. */
static bool
RetryOnConflict(Client *c, int loop, AttemptFunc attempt_func, void *arg)
{
	for (int attempt = 0; attempt <= MAX_CONFLICT_RETRIES; attempt++)
	{
		switch (attempt_func(c, loop, attempt, arg))
		{
			case APPEND_OK:
				return true;
			case APPEND_FAILED:
				return false;
			case APPEND_CONFLICT:
				c->stats.conflicts++;
				break;
		}
	}
	ClientFail(c, "loop %d: still SE409 after %d retries", loop, MAX_CONFLICT_RETRIES);
	return false;
}


/*
 * The client threads
 */

static bool
RandomIds(Client *c, BatchArgs *a)
{
	for (int i = 0; i < a->count; i++)
		if (!RandomUuid(a->ids[i]))
		{
			ClientFail(c, "could not read /dev/urandom");
			return false;
		}
	return true;
}

/* One read-decide-append loop, of a randomly chosen kind. */
static bool
RunLoop(Client *c, int loop)
{
	int			nstreams = c->opt->streams;
	int			dice = EsRandomInt(&c->rng, 100);

	if (dice < 20)
	{
		BatchArgs	a = {.stream = EsRandomInt(&c->rng, nstreams)};

		a.count = 2 + EsRandomInt(&c->rng, MAX_BATCH - 1);
		if (!RetryOnConflict(c, loop, AttemptBatch, &a))
			return false;
		c->stats.batches++;
		c->stats.batch_events += a.count;
	}
	else if (dice < 35)
	{
		TransactionArgs a;
		int			s1 = EsRandomInt(&c->rng, nstreams);
		int			s2 = (s1 + 1 + EsRandomInt(&c->rng, nstreams - 1)) % nstreams;

		a.streams[0] = s1 < s2 ? s1 : s2;
		a.streams[1] = s1 < s2 ? s2 : s1;
		a.commit = dice < 30;
		if (!RetryOnConflict(c, loop, AttemptTransaction, &a))
			return false;
		if (a.commit)
			c->stats.tx_committed++;
		else
			c->stats.tx_rolled_back++;
	}
	else if (dice < 45)
	{
		/* The ids stay the same across SE409 retries: nothing was stored. */
		BatchArgs	a = {.stream = EsRandomInt(&c->rng, nstreams), .with_ids = true};

		a.count = EsRandomInt(&c->rng, 2) == 0 ? 1 : 2 + EsRandomInt(&c->rng, MAX_BATCH - 1);
		if (!RandomIds(c, &a) || !RetryOnConflict(c, loop, AttemptBatch, &a))
			return false;
		c->stats.idempotent_appends++;
	}
	else
	{
		SingleArgs	a = {.stream = EsRandomInt(&c->rng, nstreams), .any_version = dice < 50};

		if (!RetryOnConflict(c, loop, AttemptSingle, &a))
			return false;
		if (a.any_version)
			c->stats.any_version_appends++;
		else
			c->stats.single_appends++;
	}
	c->stats.loops++;
	return true;
}

/*
 * Repeats every append with ids once more, now that the streams have moved
 * on: each must still return its first version and store nothing.
 */
static void
RepeatSavedCalls(Client *c)
{
	for (int i = 0; i < c->nsaved && c->failures == 0; i++)
	{
		SavedCall  *call = &c->saved[i];
		int64_t		version;
		AppendOutcome outcome;

		outcome = ExecAppend(c, call->statement, call->nparams,
							 (const char *const *) call->params, &version);
		if (outcome == APPEND_CONFLICT)
			ClientFail(c, "repeating an append with ids to %s at expected version %s after the loops got SE409 instead of version %" PRId64,
					   call->params[0], call->params[1], call->version);
		else if (outcome == APPEND_OK && version != call->version)
			ClientFail(c, "repeating an append with ids to %s at expected version %s after the loops returned version %" PRId64 " instead of %" PRId64,
					   call->params[0], call->params[1], version, call->version);
		else if (outcome == APPEND_OK)
			c->stats.idempotent_repeats++;
	}
}

static void *
ClientMain(void *arg)
{
	Client	   *c = arg;

	for (int loop = 0; loop < c->opt->loops; loop++)
		if (!RunLoop(c, loop))
			break;
	if (c->failures == 0)
		RepeatSavedCalls(c);
	return NULL;
}

/* Connects a client and prepares its statements. */
static bool
SetUpClient(Client *c)
{
	PGresult   *res;
	char		error[1024];

	if (!EsSeedRandom(&c->rng))
		return false;
	c->conn = EsConnect(CONNINFO);
	if (c->conn == NULL)
		return false;

	/* What the concurrency contract is written for. */
	if (!EsTryCommand(c->conn, "SET default_transaction_isolation = 'read committed'",
					  error, sizeof(error)))
	{
		fprintf(stderr, "stress: client %d: SET failed: %s\n", c->id, error);
		return false;
	}

	for (size_t i = 0; i < sizeof(client_statements) / sizeof(client_statements[0]); i++)
	{
		char		sql[512];

		snprintf(sql, sizeof(sql), client_statements[i].sql, ext_schema);
		res = PQprepare(c->conn, client_statements[i].name, sql, 0, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "stress: client %d: preparing %s failed: %s\n", c->id, sql,
					EsErrorText(c->conn, res, error, sizeof(error)));
			PQclear(res);
			return false;
		}
		PQclear(res);
	}
	return true;
}


/*
 * Main connection: set-up, sabotage and verification
 */

/* Creates the extension if needed and finds its schema. */
static bool
SetUpExtension(PGconn *conn)
{
	PGresult   *res = EsSetUpExtension(conn,
									   "SELECT pg_catalog.quote_ident(n.nspname), n.nspname "
									   "FROM pg_catalog.pg_extension e "
									   "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
									   "WHERE e.extname = 'es'");

	if (res == NULL)
		return false;
	ext_schema = EsStrdup(PQgetvalue(res, 0, 0));
	ext_schema_raw = EsStrdup(PQgetvalue(res, 0, 1));
	PQclear(res);
	return true;
}

/*
 * Loads what the clients recorded, and the run's rows of es_events and
 * es_streams, into temporary tables for the checks.
 */
static bool
LoadRun(PGconn *conn, Client *clients, int nclients, const char *prefix)
{
	EsStrBuf	acked = {0};
	EsStrBuf	unacked = {0};
	const char *params[1] = {prefix};
	char		sql[1024];
	bool		ok;

	for (int i = 0; i < nclients; i++)
	{
		Client	   *c = &clients[i];

		for (int j = 0; j < c->nacked; j++)
			EsStrBufAppend(&acked, "%s\t%s\t%" PRId64 "\t%s\n", c->acked[j].tag,
						   stream_names[c->acked[j].stream], c->acked[j].version,
						   c->acked[j].event_id[0] ? c->acked[j].event_id : "\\N");
		for (int j = 0; j < c->nunacked; j++)
			EsStrBufAppend(&unacked, "%s\t%s\t%s\n", c->unacked[j].tag,
						   stream_names[c->unacked[j].stream], c->unacked[j].reason);
	}

	ok = EsCommand(conn,
				   "CREATE TEMP TABLE stress_acked (tag text, stream_id text, version bigint, event_id uuid); "
				   "CREATE TEMP TABLE stress_unacked (tag text, stream_id text, reason text); "
				   "CREATE TEMP TABLE stress_events (global_position bigint, stream_id text, version bigint, "
				   "event_id uuid, event_type text, tag text); "
				   "CREATE TEMP TABLE stress_streams (stream_id text, version bigint)",
				   0, NULL) &&
		EsCopyIn(conn, "COPY stress_acked FROM STDIN", &acked) &&
		EsCopyIn(conn, "COPY stress_unacked FROM STDIN", &unacked);
	free(acked.data);
	free(unacked.data);
	if (!ok)
		return false;

	snprintf(sql, sizeof(sql),
			 "INSERT INTO stress_events "
			 "SELECT global_position, stream_id, version, event_id, event_type, metadata->>'tag' "
			 "FROM %s.es_events WHERE pg_catalog.starts_with(stream_id, $1)",
			 ext_schema);
	if (!EsCommand(conn, sql, 1, params))
		return false;
	snprintf(sql, sizeof(sql),
			 "INSERT INTO stress_streams "
			 "SELECT stream_id, version FROM %s.es_streams WHERE pg_catalog.starts_with(stream_id, $1)",
			 ext_schema);
	if (!EsCommand(conn, sql, 1, params))
		return false;
	return EsCommand(conn, "ANALYZE stress_acked, stress_unacked, stress_events, stress_streams",
					 0, NULL);
}

/* Each check returns one row, one text column, per violation. */
static const EsCheck checks[] =
{
	{"version below 1",
		"SELECT format('stream %s has version %s', stream_id, version) "
		"FROM stress_events WHERE version < 1 ORDER BY 1"},
	{"missing version",
		"SELECT format('stream %s has no version %s (its newest is %s)', s.stream_id, g, s.newest) "
		"FROM (SELECT stream_id, max(version) AS newest FROM stress_events GROUP BY 1) s, "
		"generate_series(1, s.newest) g "
		"WHERE NOT EXISTS (SELECT FROM stress_events e WHERE e.stream_id = s.stream_id AND e.version = g) "
		"ORDER BY s.stream_id, g"},
	{"duplicate version",
		"SELECT format('stream %s has %s events at version %s', stream_id, count(*), version) "
		"FROM stress_events GROUP BY stream_id, version HAVING count(*) > 1 ORDER BY 1"},
	{"acknowledged event not stored",
		"SELECT format('event %s, acknowledged as %s version %s, is not stored', a.tag, a.stream_id, a.version) "
		"FROM stress_acked a WHERE NOT EXISTS (SELECT FROM stress_events e WHERE e.tag = a.tag) "
		"ORDER BY a.stream_id, a.version"},
	{"event stored more than once",
		"SELECT format('event %s is stored %s times: %s', tag, count(*), "
		"string_agg(format('%s version %s', stream_id, version), ', ' ORDER BY global_position)) "
		"FROM stress_events WHERE tag IS NOT NULL GROUP BY tag HAVING count(*) > 1 ORDER BY 1"},
	{"event stored elsewhere than acknowledged",
		"SELECT format('event %s was acknowledged as %s version %s but is stored as %s version %s', "
		"a.tag, a.stream_id, a.version, e.stream_id, e.version) "
		"FROM stress_acked a JOIN stress_events e USING (tag) "
		"WHERE (e.stream_id, e.version) IS DISTINCT FROM (a.stream_id, a.version) ORDER BY 1"},
	{"wrong event id",
		"SELECT format('event %s was appended with id %s but is stored with id %s', a.tag, a.event_id, e.event_id) "
		"FROM stress_acked a JOIN stress_events e USING (tag) "
		"WHERE a.event_id IS NOT NULL AND e.event_id <> a.event_id ORDER BY 1"},
	{"wrong event type",
		"SELECT format('event %s (%s version %s) has type %s', tag, stream_id, version, event_type) "
		"FROM stress_events WHERE event_type <> 'Tick' ORDER BY 1"},
	{"version acknowledged twice",
		"SELECT format('%s version %s was acknowledged to %s appends: %s', stream_id, version, count(*), "
		"string_agg(tag, ', ' ORDER BY tag)) "
		"FROM stress_acked GROUP BY stream_id, version HAVING count(*) > 1 ORDER BY 1"},
	{"unacknowledged event stored",
		"SELECT format('event %s is stored as %s version %s but was %s', coalesce(e.tag, '(without tag)'), "
		"e.stream_id, e.version, coalesce('not acknowledged (' || u.reason || ')', 'never appended by this run')) "
		"FROM stress_events e LEFT JOIN stress_unacked u USING (tag) "
		"WHERE NOT EXISTS (SELECT FROM stress_acked a WHERE a.tag = e.tag) "
		"ORDER BY e.stream_id, e.version"},
	{"es_streams.version is not the newest version",
		"SELECT format('stream %s: es_streams.version is %s but its newest event is version %s', "
		"s.stream_id, s.version, e.newest) "
		"FROM stress_streams s JOIN (SELECT stream_id, max(version) AS newest FROM stress_events GROUP BY 1) e "
		"USING (stream_id) WHERE s.version <> e.newest ORDER BY 1"},
	{"stream row without events",
		"SELECT format('stream %s has an es_streams row (version %s) but no events', stream_id, version) "
		"FROM stress_streams s WHERE NOT EXISTS (SELECT FROM stress_events e WHERE e.stream_id = s.stream_id) "
		"ORDER BY 1"},
	{"events without stream row",
		"SELECT format('stream %s has %s events but no es_streams row', stream_id, count(*)) "
		"FROM stress_events e WHERE NOT EXISTS (SELECT FROM stress_streams s WHERE s.stream_id = e.stream_id) "
		"GROUP BY stream_id ORDER BY 1"},
	{"duplicate global position",
		"SELECT format('global position %s is taken by %s events: %s', global_position, count(*), "
		"string_agg(format('%s version %s', stream_id, version), ', ')) "
		"FROM stress_events GROUP BY global_position HAVING count(*) > 1 ORDER BY 1"},
	{"global position not increasing with version",
		"SELECT format('stream %s: version %s has global position %s, not above version %s''s %s', "
		"stream_id, version, global_position, previous_version, previous_position) "
		"FROM (SELECT stream_id, version, global_position, "
		"lag(version) OVER w AS previous_version, lag(global_position) OVER w AS previous_position "
		"FROM stress_events WINDOW w AS (PARTITION BY stream_id ORDER BY version, global_position)) x "
		"WHERE previous_position >= global_position ORDER BY stream_id, version"},
	{"event count",
		"SELECT format('%s events are stored but %s were acknowledged', "
		"(SELECT count(*) FROM stress_events), (SELECT count(*) FROM stress_acked)) "
		"WHERE (SELECT count(*) FROM stress_events) <> (SELECT count(*) FROM stress_acked)"},
};

/* The run's numbers of stored events and streams, for the summary. */
static void
PrintStoredCounts(PGconn *conn)
{
	PGresult   *res = EsQuery(conn,
							  "SELECT count(*), count(DISTINCT stream_id) FROM stress_events",
							  0, NULL, PGRES_TUPLES_OK);

	if (res == NULL)
		return;
	printf("stress: checked %s stored events in %s streams\n",
		   PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
	PQclear(res);
}


/*
 * Sabotage: corrupt the run's data after the loops, to see the checks fail.
 * "lost" needs no SQL: the client is made to believe in an event it never
 * appended.  The others insert into es_events or es_streams directly (which
 * needs the rights of a superuser or the tables' owner).
 */
static const char *const sabotage_kinds[] = {
	"lost", "duplicate", "gap", "unacked", "order", "orphan", NULL
};

/*
 * Inserts an event tagged tag into the run's first stream, version_step
 * versions past its newest, at the next global position (or its negative).
 */
static bool
InsertBogusEvent(PGconn *conn, const char *tag, int version_step,
				 bool negative_position)
{
	char		sql[1024];
	const char *params[3] = {stream_names[0], ext_schema_raw, tag};

	snprintf(sql, sizeof(sql),
			 "INSERT INTO %s.es_events (global_position, stream_id, version, event_id, "
			 "event_type, data, metadata) "
			 "SELECT %snextval(pg_catalog.format('%%I.es_events_global_position_seq', $2::text)::regclass), "
			 "$1, max(version) + %d, gen_random_uuid(), 'Tick', '{}', "
			 "pg_catalog.jsonb_build_object('tag', $3::text) "
			 "FROM %s.es_events WHERE stream_id = $1",
			 ext_schema, negative_position ? "- " : "", version_step, ext_schema);
	if (!EsCommand(conn, sql, 3, params))
		return false;
	printf("stress: sabotage: inserted an event tagged %s into %s\n", tag, stream_names[0]);
	return true;
}

/* The tag of an event acknowledged in the first stream. */
static const char *
FindAckedTag(Client *clients, int nclients)
{
	for (int i = 0; i < nclients; i++)
		for (int j = 0; j < clients[i].nacked; j++)
			if (clients[i].acked[j].stream == 0)
				return clients[i].acked[j].tag;
	return "sabotage-none-acked";
}

/* The tag of a rolled back event, or else of any unacknowledged one. */
static const char *
FindUnackedTag(Client *clients, int nclients)
{
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < nclients; i++)
			for (int j = 0; j < clients[i].nunacked; j++)
				if (pass == 1 || strcmp(clients[i].unacked[j].reason, "rolled back") == 0)
					return clients[i].unacked[j].tag;
	return "sabotage-none-unacked";
}

/*
 * Sabotage
 *		Corrupts the run's data after the loops, to see the checks fail.
 *		"lost" needs no SQL: a client is made to believe in an event it never
 *		appended.  The others insert into es_events or es_streams directly,
 *		which takes a superuser or the tables' owner.
 */
static bool
Sabotage(PGconn *conn, const char *kind, Client *clients, int nclients,
		 const char *prefix)
{
	if (strcmp(kind, "lost") == 0)
	{
		RecordAcked(&clients[0], "sabotage-lost", 0, 1000000, NULL);
		printf("stress: sabotage: client 0 now believes in an acknowledged event it never appended\n");
		return true;
	}
	if (strcmp(kind, "duplicate") == 0)
		return InsertBogusEvent(conn, FindAckedTag(clients, nclients), 1, false);
	if (strcmp(kind, "gap") == 0)
		return InsertBogusEvent(conn, "sabotage-gap", 2, false);
	if (strcmp(kind, "unacked") == 0)
		return InsertBogusEvent(conn, FindUnackedTag(clients, nclients), 1, false);
	if (strcmp(kind, "order") == 0)
		return InsertBogusEvent(conn, "sabotage-order", 1, true);
	if (strcmp(kind, "orphan") == 0)
	{
		char		sql[512];
		char		orphan[256];
		const char *params[1] = {orphan};

		snprintf(orphan, sizeof(orphan), "%sorphan", prefix);
		snprintf(sql, sizeof(sql),
				 "INSERT INTO %s.es_streams (stream_id, version) VALUES ($1, 1)", ext_schema);
		if (!EsCommand(conn, sql, 1, params))
			return false;
		printf("stress: sabotage: inserted an es_streams row for %s, without events\n", orphan);
		return true;
	}
	return false;
}


/*
 * Options and main
 */

static void
Usage(FILE *out)
{
	fprintf(out,
			"Usage: es_stress [OPTION]...\n"
			"Concurrency stress test of the es extension's es_append, against the\n"
			"server the PG* environment variables name.\n\n"
			"  --clients N      concurrent clients, one connection each (default 16)\n"
			"  --loops N        read-decide-append loops per client (default 500)\n"
			"  --streams N      streams shared by the clients, at least 2 (default 20)\n"
			"  --tag TAG        run tag, [0-9a-z], in stream ids stress<TAG>-<n> (default: random)\n"
			"  --sabotage KIND  corrupt the run's data before checking it, to see the\n"
			"                   checks fail: lost, duplicate, gap, unacked, order, orphan\n"
			"  --help           show this help\n");
}

static bool
ParseOptions(int argc, char **argv, Options *opt)
{
	static const struct option long_options[] = {
		{"clients", required_argument, NULL, 'c'},
		{"loops", required_argument, NULL, 'l'},
		{"streams", required_argument, NULL, 's'},
		{"tag", required_argument, NULL, 't'},
		{"sabotage", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			ch;
	long		n;

	opt->clients = 16;
	opt->loops = 500;
	opt->streams = 20;
	opt->run_tag[0] = '\0';
	opt->sabotage = NULL;

	while ((ch = getopt_long(argc, argv, "", long_options, NULL)) != -1)
	{
		switch (ch)
		{
			case 'c':
				if (!EsParseCount(optarg, "clients", 1, 1000, &n))
					return false;
				opt->clients = (int) n;
				break;
			case 'l':
				if (!EsParseCount(optarg, "loops", 0, 10000000, &n))
					return false;
				opt->loops = (int) n;
				break;
			case 's':
				if (!EsParseCount(optarg, "streams", 2, 100000, &n))
					return false;
				opt->streams = (int) n;
				break;
			case 't':
				if (!EsParseRunTag(optarg, opt->run_tag))
					return false;
				break;
			case 'S':
				if (!EsKnownSabotage(optarg, sabotage_kinds))
					return false;
				opt->sabotage = optarg;
				break;
			case 'h':
				Usage(stdout);
				exit(0);
			default:
				Usage(stderr);
				return false;
		}
	}
	if (optind < argc)
	{
		fprintf(stderr, "stress: unexpected argument \"%s\"\n", argv[optind]);
		Usage(stderr);
		return false;
	}
	return true;
}

static void
AddStats(Stats *total, const Stats *s)
{
	total->loops += s->loops;
	total->single_appends += s->single_appends;
	total->any_version_appends += s->any_version_appends;
	total->batches += s->batches;
	total->batch_events += s->batch_events;
	total->tx_committed += s->tx_committed;
	total->tx_rolled_back += s->tx_rolled_back;
	total->idempotent_appends += s->idempotent_appends;
	total->idempotent_repeats += s->idempotent_repeats;
	total->conflicts += s->conflicts;
	total->reads += s->reads;
}

int
main(int argc, char **argv)
{
	Options		opt;
	PGconn	   *conn;
	Client	   *clients;
	Stats		total = {0};
	char		prefix[ES_MAX_RUN_TAG + 16];
	long		acked_events = 0;
	long		failures = 0;
	long		violations;
	double		start;
	double		elapsed;
	int			started = 0;
	int			status = 1;

	if (!ParseOptions(argc, argv, &opt))
		return 2;
	if (opt.run_tag[0] == '\0' && !EsRandomRunTag(opt.run_tag))
		return 1;
	snprintf(prefix, sizeof(prefix), "stress%s-", opt.run_tag);

	conn = EsConnect(CONNINFO);
	if (conn == NULL)
		return 1;
	if (!SetUpExtension(conn) || !EsRunPrefixUnused(conn, ext_schema, prefix))
	{
		PQfinish(conn);
		return 1;
	}

	stream_names = EsMakeStreamNames(prefix, opt.streams);

	printf("stress: run %s: %d clients x %d loops over %d streams (%s*)\n",
		   opt.run_tag, opt.clients, opt.loops, opt.streams, prefix);
	fflush(stdout);

	clients = calloc(opt.clients, sizeof(Client));
	if (clients == NULL)
	{
		fprintf(stderr, "stress: out of memory\n");
		return 1;
	}
	for (int i = 0; i < opt.clients; i++)
	{
		clients[i].id = i;
		clients[i].opt = &opt;
		if (!SetUpClient(&clients[i]))
			goto done;
	}

	start = EsNow();
	for (; started < opt.clients; started++)
	{
		int			err = pthread_create(&clients[started].thread, NULL, ClientMain,
										 &clients[started]);

		if (err != 0)
		{
			fprintf(stderr, "stress: could not start a client thread: %s\n", strerror(err));
			failures++;
			break;
		}
	}
	for (int i = 0; i < started; i++)
		pthread_join(clients[i].thread, NULL);
	elapsed = EsNow() - start;
	if (started < opt.clients)
		goto done;

	for (int i = 0; i < opt.clients; i++)
	{
		AddStats(&total, &clients[i].stats);
		acked_events += clients[i].nacked;
		failures += clients[i].failures;
	}

	printf("stress: %ld loops in %.2f s: %ld events acknowledged, %.0f events/s\n",
		   total.loops, elapsed, acked_events, elapsed > 0 ? acked_events / elapsed : 0.0);
	printf("stress: %ld single appends, %ld with expected_version NULL, %ld batches (%ld events), "
		   "%ld transactions committed, %ld rolled back on purpose\n",
		   total.single_appends, total.any_version_appends, total.batches, total.batch_events,
		   total.tx_committed, total.tx_rolled_back);
	printf("stress: %ld idempotent appends, %ld idempotent retries; %ld SE409 retries; %ld es_read checks\n",
		   total.idempotent_appends, total.idempotent_repeats, total.conflicts, total.reads);
	fflush(stdout);

	if (opt.sabotage && !Sabotage(conn, opt.sabotage, clients, opt.clients, prefix))
	{
		fprintf(stderr, "stress: sabotage %s failed\n", opt.sabotage);
		failures++;
	}

	if (!LoadRun(conn, clients, opt.clients, prefix))
	{
		fprintf(stderr, "stress: could not load the run for checking\n");
		goto done;
	}
	PrintStoredCounts(conn);
	violations = EsRunChecks(conn, checks, sizeof(checks) / sizeof(checks[0]), NULL);

	if (failures == 0 && violations == 0)
	{
		printf("stress: OK\n");
		status = 0;
	}
	else
		printf("stress: FAILED: %ld client failures, %ld violations\n", failures, violations);

done:
	for (int i = 0; i < opt.clients; i++)
		FreeClient(&clients[i]);
	free(clients);
	EsFreeStreamNames(stream_names, opt.streams);
	free(ext_schema);
	free(ext_schema_raw);
	PQfinish(conn);
	fflush(stdout);
	return status;
}
