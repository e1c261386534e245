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
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libpq-fe.h"

/* SE409 retries allowed per loop before the loop counts as a failure. */
#define MAX_CONFLICT_RETRIES 1000

/* Violations printed per check; the rest are only counted. */
#define MAX_REPORTED_PER_CHECK 20

/* Events in a batch: 2 or 3. */
#define MAX_BATCH 3

#define TAG_SIZE 48
#define UUID_SIZE 37			/* 36 characters and the terminator */
#define INT64_TEXT_SIZE 24
#define MAX_RUN_TAG 32

#define SQLSTATE_WRONG_EXPECTED_VERSION "SE409"

#define CONNINFO "fallback_application_name=es_stress"

typedef struct Options
{
	int			clients;
	int			loops;
	int			streams;
	char		run_tag[MAX_RUN_TAG + 1];
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

/* A small growable string. */
typedef struct StrBuf
{
	char	   *data;
	size_t		len;
	size_t		size;
} StrBuf;

/* Set up in main(), read-only while the clients run. */
static char **stream_names;
static char *ext_schema;		/* quoted, for SQL text */
static char *ext_schema_raw;	/* as is, for parameters */

static pthread_mutex_t output_lock = PTHREAD_MUTEX_INITIALIZER;


/*
 * Memory and strings
 */

static void *
xmalloc(size_t size)
{
	void	   *p = malloc(size);

	if (p == NULL)
	{
		fprintf(stderr, "stress: out of memory\n");
		exit(1);
	}
	return p;
}

static void *
xrealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (p == NULL)
	{
		fprintf(stderr, "stress: out of memory\n");
		exit(1);
	}
	return p;
}

static char *
xstrdup(const char *s)
{
	char	   *copy = xmalloc(strlen(s) + 1);

	strcpy(copy, s);
	return copy;
}

/* Makes room for one more element in a growable array. */
static void *
GrowArray(void *array, int count, int *max, size_t element_size)
{
	if (count < *max)
		return array;
	*max = *max > 0 ? *max * 2 : 64;
	return xrealloc(array, (size_t) *max * element_size);
}

static void
StrBufAppend(StrBuf *buf, const char *fmt,...)
{
	va_list		args;
	int			n;

	va_start(args, fmt);
	n = vsnprintf(NULL, 0, fmt, args);
	va_end(args);
	if (n < 0)
	{
		fprintf(stderr, "stress: vsnprintf failed\n");
		exit(1);
	}
	if (buf->len + n + 1 > buf->size)
	{
		while (buf->len + n + 1 > buf->size)
			buf->size = buf->size > 0 ? buf->size * 2 : 4096;
		buf->data = xrealloc(buf->data, buf->size);
	}
	va_start(args, fmt);
	vsnprintf(buf->data + buf->len, buf->size - buf->len, fmt, args);
	va_end(args);
	buf->len += n;
}

static bool
ParseInt64(const char *s, int64_t *value)
{
	char	   *end;

	errno = 0;
	*value = strtoll(s, &end, 10);
	return errno == 0 && end != s && *end == '\0';
}

static double
Now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static bool
ReadUrandom(void *buf, size_t len)
{
	int			fd = open("/dev/urandom", O_RDONLY);
	size_t		done = 0;

	if (fd < 0)
		return false;
	while (done < len)
	{
		ssize_t		n = read(fd, (char *) buf + done, len - done);

		if (n <= 0)
		{
			close(fd);
			return false;
		}
		done += n;
	}
	close(fd);
	return true;
}

/* splitmix64: small, fast, and good enough to pick streams and loop kinds. */
static uint64_t
NextRandom(uint64_t *state)
{
	uint64_t	z = (*state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

static int
RandomInt(Client *c, int n)
{
	return (int) (NextRandom(&c->rng) % (uint64_t) n);
}

/* A version 4 UUID from /dev/urandom, as text. */
static bool
RandomUuid(char *out)
{
	unsigned char b[16];

	if (!ReadUrandom(b, sizeof(b)))
		return false;
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, UUID_SIZE,
			 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
			 b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
	return true;
}


/*
 * Reporting
 */

/* Prints a client's failure; the client stops after its current loop. */
static void
ClientFail(Client *c, const char *fmt,...)
{
	char		message[2048];
	va_list		args;

	va_start(args, fmt);
	vsnprintf(message, sizeof(message), fmt, args);
	va_end(args);

	pthread_mutex_lock(&output_lock);
	fprintf(stderr, "stress: FAILURE: client %d: %s\n", c->id, message);
	pthread_mutex_unlock(&output_lock);
	c->failures++;
}

/* The error of a failed statement, on one line, without the final newline. */
static const char *
ErrorText(PGconn *conn, const PGresult *res, char *buf, size_t size)
{
	const char *message = res ? PQresultErrorMessage(res) : "";
	size_t		len;

	if (message[0] == '\0')
		message = PQerrorMessage(conn);
	snprintf(buf, size, "%s", message);
	len = strlen(buf);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return buf;
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

	c->acked = GrowArray(c->acked, c->nacked, &c->maxacked, sizeof(AckedEvent));
	e = &c->acked[c->nacked++];
	snprintf(e->tag, TAG_SIZE, "%s", tag);
	e->stream = stream;
	e->version = version;
	snprintf(e->event_id, UUID_SIZE, "%s", event_id ? event_id : "");
}

static void
RecordUnacked(Client *c, const char *tag, int stream, const char *reason)
{
	UnackedEvent *e;

	c->unacked = GrowArray(c->unacked, c->nunacked, &c->maxunacked,
						   sizeof(UnackedEvent));
	e = &c->unacked[c->nunacked++];
	snprintf(e->tag, TAG_SIZE, "%s", tag);
	e->stream = stream;
	e->reason = reason;
}

static void
SaveCall(Client *c, const char *statement, int nparams,
		 const char *const *params, int64_t version)
{
	SavedCall  *call;

	c->saved = GrowArray(c->saved, c->nsaved, &c->maxsaved, sizeof(SavedCall));
	call = &c->saved[c->nsaved++];
	call->statement = statement;
	call->nparams = nparams;
	for (int i = 0; i < nparams; i++)
		call->params[i] = params[i] ? xstrdup(params[i]) : NULL;
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

static bool
ExecCommand(Client *c, const char *sql)
{
	PGresult   *res = PQexec(c->conn, sql);
	bool		ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	char		error[1024];

	if (!ok)
		ClientFail(c, "%s failed: %s", sql, ErrorText(c->conn, res, error, sizeof(error)));
	PQclear(res);
	return ok;
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
			ParseInt64(PQgetvalue(res, 0, 0), version))
			outcome = APPEND_OK;
		else
			ClientFail(c, "es_append on %s returned no version", params[0]);
	}
	else if (IsConflict(res))
		outcome = APPEND_CONFLICT;
	else
		ClientFail(c, "es_append on %s failed: %s", params[0],
				   ErrorText(c->conn, res, error, sizeof(error)));
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
	char		from_text[INT64_TEXT_SIZE];
	char		error[1024];
	PGresult   *res;
	int64_t		from;
	int64_t		last;
	int			rows;

	params[0] = name;
	res = PQexecPrepared(c->conn, "version", 1, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
		PQgetisnull(res, 0, 0) || !ParseInt64(PQgetvalue(res, 0, 0), version) ||
		*version < 0)
	{
		ClientFail(c, "es_stream_version(%s) failed: %s", name,
				   PQresultStatus(res) == PGRES_TUPLES_OK ? "no version" :
				   ErrorText(c->conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	PQclear(res);

	if (RandomInt(c, 4) != 0)
		return true;

	from = RandomInt(c, 2) == 0 ? 1 : (*version > 4 ? *version - 3 : 1);
	snprintf(from_text, sizeof(from_text), "%" PRId64, from);
	params[1] = from_text;
	res = PQexecPrepared(c->conn, "read", 2, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		ClientFail(c, "es_read(%s, %" PRId64 ") failed: %s", name, from,
				   ErrorText(c->conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	rows = PQntuples(res);
	for (int i = 0; i < rows; i++)
	{
		int64_t		v;

		if (!ParseInt64(PQgetvalue(res, i, 0), &v) || v != from + i ||
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
	char		expected_text[INT64_TEXT_SIZE];
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
	char		expected_text[INT64_TEXT_SIZE];
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
		char		expected_text[INT64_TEXT_SIZE];
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

	{
		PGresult   *res = PQexec(c->conn, "COMMIT");
		char		error[1024];

		/* COMMIT of a failed transaction "succeeds" as ROLLBACK. */
		if (PQresultStatus(res) != PGRES_COMMAND_OK ||
			strcmp(PQcmdStatus(res), "COMMIT") != 0)
		{
			/* The outcome is unknown: the events are neither acked nor unacked. */
			ClientFail(c, "COMMIT failed: %s",
					   PQresultStatus(res) == PGRES_COMMAND_OK ? PQcmdStatus(res) :
					   ErrorText(c->conn, res, error, sizeof(error)));
			PQclear(res);
			return APPEND_FAILED;
		}
		PQclear(res);
	}
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
	int			dice = RandomInt(c, 100);

	if (dice < 20)
	{
		BatchArgs	a = {.stream = RandomInt(c, nstreams)};

		a.count = 2 + RandomInt(c, MAX_BATCH - 1);
		if (!RetryOnConflict(c, loop, AttemptBatch, &a))
			return false;
		c->stats.batches++;
		c->stats.batch_events += a.count;
	}
	else if (dice < 35)
	{
		TransactionArgs a;
		int			s1 = RandomInt(c, nstreams);
		int			s2 = (s1 + 1 + RandomInt(c, nstreams - 1)) % nstreams;

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
		BatchArgs	a = {.stream = RandomInt(c, nstreams), .with_ids = true};

		a.count = RandomInt(c, 2) == 0 ? 1 : 2 + RandomInt(c, MAX_BATCH - 1);
		if (!RandomIds(c, &a) || !RetryOnConflict(c, loop, AttemptBatch, &a))
			return false;
		c->stats.idempotent_appends++;
	}
	else
	{
		SingleArgs	a = {.stream = RandomInt(c, nstreams), .any_version = dice < 50};

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

static PGconn *
Connect(void)
{
	PGconn	   *conn = PQconnectdb(CONNINFO);

	if (PQstatus(conn) != CONNECTION_OK)
	{
		char		error[1024];

		fprintf(stderr, "stress: could not connect to the server (PGHOST=%s, PGPORT=%s, PGDATABASE=%s): %s\n",
				getenv("PGHOST") ? getenv("PGHOST") : "",
				getenv("PGPORT") ? getenv("PGPORT") : "",
				getenv("PGDATABASE") ? getenv("PGDATABASE") : "",
				ErrorText(conn, NULL, error, sizeof(error)));
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* Connects a client and prepares its statements. */
static bool
SetUpClient(Client *c)
{
	PGresult   *res;
	char		error[1024];

	if (!ReadUrandom(&c->rng, sizeof(c->rng)))
	{
		fprintf(stderr, "stress: could not read /dev/urandom\n");
		return false;
	}
	c->conn = Connect();
	if (c->conn == NULL)
		return false;

	/* What the concurrency contract is written for. */
	res = PQexec(c->conn, "SET default_transaction_isolation = 'read committed'");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "stress: client %d: SET failed: %s\n", c->id,
				ErrorText(c->conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	PQclear(res);

	for (size_t i = 0; i < sizeof(client_statements) / sizeof(client_statements[0]); i++)
	{
		char		sql[512];

		snprintf(sql, sizeof(sql), client_statements[i].sql, ext_schema);
		res = PQprepare(c->conn, client_statements[i].name, sql, 0, NULL);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
		{
			fprintf(stderr, "stress: client %d: preparing %s failed: %s\n", c->id, sql,
					ErrorText(c->conn, res, error, sizeof(error)));
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

/* Runs one statement that must succeed; prints its error otherwise. */
static PGresult *
Query(PGconn *conn, const char *sql, int nparams, const char *const *params,
	  ExecStatusType expected_status)
{
	PGresult   *res;
	char		error[1024];

	/* PQexec for several statements at once; they take no parameters. */
	if (nparams == 0)
		res = PQexec(conn, sql);
	else
		res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != expected_status)
	{
		fprintf(stderr, "stress: query failed: %s\n  query: %s\n",
				ErrorText(conn, res, error, sizeof(error)), sql);
		PQclear(res);
		return NULL;
	}
	return res;
}

static bool
Command(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = Query(conn, sql, nparams, params, PGRES_COMMAND_OK);

	PQclear(res);
	return res != NULL;
}

/* Creates the extension if needed and finds its schema. */
static bool
SetUpExtension(PGconn *conn)
{
	PGresult   *res;

	if (!Command(conn, "SET client_min_messages = warning", 0, NULL) ||
		!Command(conn, "CREATE EXTENSION IF NOT EXISTS es", 0, NULL))
		return false;
	res = Query(conn,
				"SELECT pg_catalog.quote_ident(n.nspname), n.nspname "
				"FROM pg_catalog.pg_extension e "
				"JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
				"WHERE e.extname = 'es'",
				0, NULL, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	if (PQntuples(res) != 1)
	{
		fprintf(stderr, "stress: extension es not found after CREATE EXTENSION\n");
		PQclear(res);
		return false;
	}
	ext_schema = xstrdup(PQgetvalue(res, 0, 0));
	ext_schema_raw = xstrdup(PQgetvalue(res, 0, 1));
	PQclear(res);
	return true;
}

/* Refuses a run tag that already has streams: the checks would mix runs. */
static bool
CheckTagUnused(PGconn *conn, const char *prefix)
{
	char		sql[512];
	const char *params[1] = {prefix};
	PGresult   *res;
	bool		unused;

	snprintf(sql, sizeof(sql),
			 "SELECT EXISTS (SELECT FROM %s.es_streams WHERE pg_catalog.starts_with(stream_id, $1)) "
			 "OR EXISTS (SELECT FROM %s.es_events WHERE pg_catalog.starts_with(stream_id, $1))",
			 ext_schema, ext_schema);
	res = Query(conn, sql, 1, params, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	unused = strcmp(PQgetvalue(res, 0, 0), "f") == 0;
	if (!unused)
		fprintf(stderr, "stress: streams named %s* already exist; choose another --tag\n", prefix);
	PQclear(res);
	return unused;
}

static bool
CopyIn(PGconn *conn, const char *sql, const StrBuf *rows)
{
	PGresult   *res = PQexec(conn, sql);
	char		error[1024];
	bool		ok;

	if (PQresultStatus(res) != PGRES_COPY_IN)
	{
		fprintf(stderr, "stress: %s failed: %s\n", sql, ErrorText(conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	PQclear(res);
	ok = (rows->len == 0 || PQputCopyData(conn, rows->data, (int) rows->len) == 1) &&
		PQputCopyEnd(conn, NULL) == 1;
	res = PQgetResult(conn);
	if (!ok || PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "stress: %s failed: %s\n", sql, ErrorText(conn, res, error, sizeof(error)));
		ok = false;
	}
	PQclear(res);
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
	return ok;
}

/*
 * Loads what the clients recorded, and the run's rows of es_events and
 * es_streams, into temporary tables for the checks.
 */
static bool
LoadRun(PGconn *conn, Client *clients, int nclients, const char *prefix)
{
	StrBuf		acked = {0};
	StrBuf		unacked = {0};
	const char *params[1] = {prefix};
	char		sql[1024];
	bool		ok;

	for (int i = 0; i < nclients; i++)
	{
		Client	   *c = &clients[i];

		for (int j = 0; j < c->nacked; j++)
			StrBufAppend(&acked, "%s\t%s\t%" PRId64 "\t%s\n", c->acked[j].tag,
						 stream_names[c->acked[j].stream], c->acked[j].version,
						 c->acked[j].event_id[0] ? c->acked[j].event_id : "\\N");
		for (int j = 0; j < c->nunacked; j++)
			StrBufAppend(&unacked, "%s\t%s\t%s\n", c->unacked[j].tag,
						 stream_names[c->unacked[j].stream], c->unacked[j].reason);
	}

	ok = Command(conn,
				 "CREATE TEMP TABLE stress_acked (tag text, stream_id text, version bigint, event_id uuid); "
				 "CREATE TEMP TABLE stress_unacked (tag text, stream_id text, reason text); "
				 "CREATE TEMP TABLE stress_events (global_position bigint, stream_id text, version bigint, "
				 "event_id uuid, event_type text, tag text); "
				 "CREATE TEMP TABLE stress_streams (stream_id text, version bigint)",
				 0, NULL) &&
		CopyIn(conn, "COPY stress_acked FROM STDIN", &acked) &&
		CopyIn(conn, "COPY stress_unacked FROM STDIN", &unacked);
	free(acked.data);
	free(unacked.data);
	if (!ok)
		return false;

	snprintf(sql, sizeof(sql),
			 "INSERT INTO stress_events "
			 "SELECT global_position, stream_id, version, event_id, event_type, metadata->>'tag' "
			 "FROM %s.es_events WHERE pg_catalog.starts_with(stream_id, $1)",
			 ext_schema);
	if (!Command(conn, sql, 1, params))
		return false;
	snprintf(sql, sizeof(sql),
			 "INSERT INTO stress_streams "
			 "SELECT stream_id, version FROM %s.es_streams WHERE pg_catalog.starts_with(stream_id, $1)",
			 ext_schema);
	if (!Command(conn, sql, 1, params))
		return false;
	return Command(conn, "ANALYZE stress_acked, stress_unacked, stress_events, stress_streams",
				   0, NULL);
}

/* Each check returns one row, one text column, per violation. */
static const struct
{
	const char *name;
	const char *sql;
}			checks[] =
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

/* Runs every check and prints its violations; returns how many there were. */
static long
RunChecks(PGconn *conn)
{
	long		violations = 0;

	for (size_t i = 0; i < sizeof(checks) / sizeof(checks[0]); i++)
	{
		PGresult   *res = Query(conn, checks[i].sql, 0, NULL, PGRES_TUPLES_OK);
		int			rows;

		if (res == NULL)
		{
			fprintf(stderr, "stress: check \"%s\" could not run\n", checks[i].name);
			violations++;
			continue;
		}
		rows = PQntuples(res);
		for (int r = 0; r < rows && r < MAX_REPORTED_PER_CHECK; r++)
			printf("stress: VIOLATION (%s): %s\n", checks[i].name, PQgetvalue(res, r, 0));
		if (rows > MAX_REPORTED_PER_CHECK)
			printf("stress: VIOLATION (%s): ... and %d more\n", checks[i].name,
				   rows - MAX_REPORTED_PER_CHECK);
		violations += rows;
		PQclear(res);
	}
	return violations;
}

/* The run's numbers of stored events and streams, for the summary. */
static void
PrintStoredCounts(PGconn *conn)
{
	PGresult   *res = Query(conn,
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
	if (!Command(conn, sql, 3, params))
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
		if (!Command(conn, sql, 1, params))
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
ParseCount(const char *arg, const char *name, int min, int max, int *value)
{
	char	   *end;
	long		n;

	errno = 0;
	n = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || n < min || n > max)
	{
		fprintf(stderr, "stress: --%s must be a whole number from %d to %d\n", name, min, max);
		return false;
	}
	*value = (int) n;
	return true;
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
				if (!ParseCount(optarg, "clients", 1, 1000, &opt->clients))
					return false;
				break;
			case 'l':
				if (!ParseCount(optarg, "loops", 0, 10000000, &opt->loops))
					return false;
				break;
			case 's':
				if (!ParseCount(optarg, "streams", 2, 100000, &opt->streams))
					return false;
				break;
			case 't':
				if (strlen(optarg) == 0 || strlen(optarg) > MAX_RUN_TAG ||
					strspn(optarg, "0123456789abcdefghijklmnopqrstuvwxyz") != strlen(optarg))
				{
					fprintf(stderr, "stress: --tag must be 1 to %d characters of [0-9a-z]\n",
							MAX_RUN_TAG);
					return false;
				}
				strcpy(opt->run_tag, optarg);
				break;
			case 'S':
				{
					bool		known = false;

					for (int i = 0; sabotage_kinds[i] != NULL; i++)
						known |= strcmp(optarg, sabotage_kinds[i]) == 0;
					if (!known)
					{
						fprintf(stderr, "stress: unknown --sabotage kind \"%s\"\n", optarg);
						return false;
					}
					opt->sabotage = optarg;
				}
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
	char		prefix[MAX_RUN_TAG + 16];
	long		acked_events = 0;
	long		failures = 0;
	long		violations;
	double		start;
	double		elapsed;
	int			started = 0;
	int			status = 1;

	if (!ParseOptions(argc, argv, &opt))
		return 2;
	if (opt.run_tag[0] == '\0')
	{
		unsigned char b[6];

		if (!ReadUrandom(b, sizeof(b)))
		{
			fprintf(stderr, "stress: could not read /dev/urandom\n");
			return 1;
		}
		snprintf(opt.run_tag, sizeof(opt.run_tag), "%02x%02x%02x%02x%02x%02x",
				 b[0], b[1], b[2], b[3], b[4], b[5]);
	}
	snprintf(prefix, sizeof(prefix), "stress%s-", opt.run_tag);

	conn = Connect();
	if (conn == NULL)
		return 1;
	if (!SetUpExtension(conn) || !CheckTagUnused(conn, prefix))
	{
		PQfinish(conn);
		return 1;
	}

	stream_names = xmalloc(sizeof(char *) * opt.streams);
	for (int i = 0; i < opt.streams; i++)
	{
		char		name[MAX_RUN_TAG + 32];

		snprintf(name, sizeof(name), "%s%d", prefix, i);
		stream_names[i] = xstrdup(name);
	}

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

	start = Now();
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
	elapsed = Now() - start;
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
	violations = RunChecks(conn);

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
	for (int i = 0; i < opt.streams; i++)
		free(stream_names[i]);
	free(stream_names);
	free(ext_schema);
	free(ext_schema_raw);
	PQfinish(conn);
	fflush(stdout);
	return status;
}
