/*-------------------------------------------------------------------------
 *
 * es_follower.c
 *	  Follower test of the gap-free global order (es_read_all,
 *	  es_read_category, es_wait), as a libpq client.
 *
 * The property (SPEC, Read): es_read_all and es_read_category never return
 * an event at position p while an event with a lower position can still
 * commit, so a reader that keeps the last position it saw and asks again
 * "after" it sees every committed event exactly once, in increasing
 * position, whatever the concurrent writers do.  And es_wait(after, timeout)
 * blocks until an event after "after" can be read by es_read_all (returning
 * the newest readable position), or the timeout passes (returning "after").
 *
 * Several writers (threads, one connection each) append for a while, in a
 * mix meant to make commits happen out of position order:
 *
 *	- single appends and batches of 2-5 events (the jsonb form), autocommit;
 *	- "held" transactions: BEGIN, append (so a position is taken), sleep
 *	  1-50 ms with the transaction open, COMMIT -- meanwhile other writers
 *	  take and commit higher positions;
 *	- transactions that append and ROLLBACK: their events must never be
 *	  seen (and their positions never hold a reader back for good);
 *	- transactions appending to two streams (in stream order, so that they
 *	  cannot deadlock with each other).
 *
 * Every append uses expected_version NULL: conflicts are not the subject
 * here.  Every event carries a unique tag in its metadata; the writers
 * record each tag whose commit was acknowledged, with the time the commit
 * returned (CLOCK_MONOTONIC), and each tag that was rolled back.  Any error
 * is a failure.
 *
 * Meanwhile two followers (threads, one connection each) read:
 *
 *	- es_read_all(after_position => last, max_count => n), keeping the run's
 *	  events (stream ids "fol<tag>-<n>"), with n mostly 1000, sometimes 100
 *	  or 3 to page;
 *	- es_read_category('fol<tag>', after_position => last, max_count => n):
 *	  the run's streams form one category.
 *
 * After an empty read, "--follow sleep" sleeps 1-5 ms, "--follow wait" calls
 * es_wait(last, 1000) instead (the category follower waits after the newest
 * position es_wait reported).  While running, the followers check that
 *	- positions strictly increase across the whole run (every row, other
 *	  runs' included: positions are global), and a page never exceeds
 *	  max_count;
 *	- es_wait returns either its after_position, only once the timeout has
 *	  passed, or a higher position that the next es_read_all(after) reaches
 *	  (at least one row; up to that position unless the page was full).
 * Once the writers are done, each follower reads on until it has seen as
 * many of the run's events as were acknowledged (and one more read is
 * empty), or CATCH_UP_SECONDS pass.
 *
 * Afterwards, on the main connection, the run's rows of es_events and what
 * the followers recorded are compared, and every violation is printed:
 *	- every acknowledged event was returned to each follower, exactly once;
 *	- every event committed in es_events for the run was returned (one that
 *	  was not is a gap: the follower moved past its position before it was
 *	  readable, and never sees it) -- at the position, stream and version
 *	  stored;
 *	- no rolled-back event, nor any event not acknowledged, was returned;
 *	- the category follower returned nothing outside the category;
 *	- acknowledged events are stored, rolled-back ones are not;
 *	- consumer groups: es_read_category(category, 0, 100000, k, 3) for
 *	  k = 0, 1, 2 return disjoint sets whose union is the whole category,
 *	  each stream's events all in one member, in version order (1..N), in
 *	  increasing position;
 *	- with --follow wait, the median time from a writer's COMMIT returning
 *	  to the follower seeing the event stays under MAX_WAIT_MEDIAN_MS (a
 *	  follower that waited out every es_wait timeout would be ~500 ms).
 *
 * The summary gives the numbers of events written and seen, rollbacks, how
 * many events committed after a higher position had (so that the scenario
 * was really exercised), es_wait wakeups and timeouts, and the median, p99
 * and maximum time from COMMIT returning to each follower seeing the event.
 *
 * --sabotage KIND corrupts what the es_read_all follower recorded (or the
 * consumer groups' reads), after the run, to show that the checks catch it.  Streams are named "fol<tag>-<n>" with a random
 * run tag, so that runs against one database do not mix.
 *
 * The server is the one the PG* environment variables name.  Exit status: 0
 * when everything checks out, 1 on any failure or violation (connection
 * errors included), 2 on bad usage.
 *
 * tests/follower/run.sh builds and runs it.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
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

#include "libpq-fe.h"

#include "es_client.h"

/* Checks a follower makes while it runs (each has a name of its own). */
#define MAX_RUNTIME_CHECKS 8

/* Events in a batch: 2 to MAX_BATCH; streams in a transaction: 1 or 2. */
#define MAX_BATCH 5
#define MAX_TX_STREAMS 2
#define MAX_TX_EVENTS (MAX_BATCH * MAX_TX_STREAMS)

#define TAG_SIZE 48
#define STREAM_SIZE 64

/* es_wait's timeout, and how early a timeout may come back (clock slack). */
#define WAIT_TIMEOUT_MS 1000
#define WAIT_EARLY_SLACK 0.9

/* How long a follower may take to catch up once the writers are done. */
#define CATCH_UP_SECONDS 10

/* Consumer groups checked after the run. */
#define GROUP_SIZE 3
#define GROUP_MAX_COUNT 100000

/* --follow wait: the highest acceptable median commit-to-seen time. */
#define MAX_WAIT_MEDIAN_MS 250

/* Every connection: no statement may hang the run. */
#define STATEMENT_TIMEOUT "SET statement_timeout = '20s'"

#define CONNINFO "fallback_application_name=es_follower"

const char *const es_progname = "follower";

/* A macro's value as a string literal, for SQL text. */
#define StringOf(x) #x
#define ValueString(x) StringOf(x)

typedef enum FollowMode
{
	FOLLOW_SLEEP,
	FOLLOW_WAIT
} FollowMode;

typedef struct Options
{
	int			seconds;
	int			writers;
	int			streams;
	long		loops;			/* per writer; 0: as many as fit in seconds */
	FollowMode	follow;
	char		run_tag[ES_MAX_RUN_TAG + 1];
	const char *sabotage;		/* NULL: none */
} Options;

/* An event whose commit was acknowledged: every follower must see it. */
typedef struct AckedEvent
{
	char		tag[TAG_SIZE];
	int			stream;
	double		committed_at;	/* when COMMIT returned, seconds since start */
	const char *kind;
} AckedEvent;

/* An event that was not committed: no follower may see it. */
typedef struct UnackedEvent
{
	char		tag[TAG_SIZE];
	int			stream;
	const char *reason;			/* "rolled back" or "failed" */
} UnackedEvent;

typedef struct WriterStats
{
	long		loops;
	long		singles;
	long		batches;
	long		batch_events;
	long		held;			/* transactions kept open after appending */
	long		held_events;
	long		pairs;			/* transactions over two streams */
	long		pair_events;
	long		rollbacks;
	long		rollback_events;
} WriterStats;

typedef struct Writer
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

	WriterStats stats;
	int			failures;
} Writer;

/* What one writer loop does. */
typedef struct Plan
{
	const char *kind;			/* also the events' type */
	bool		explicit_tx;	/* BEGIN ... COMMIT/ROLLBACK around the appends */
	bool		commit;
	int			nstreams;
	int			streams[MAX_TX_STREAMS];	/* ascending: no deadlocks */
	int			counts[MAX_TX_STREAMS]; /* 1: the single form */
	int			hold_ms;		/* sleep before COMMIT/ROLLBACK */
} Plan;

/* One event of the run, as a follower read it. */
typedef struct SeenEvent
{
	char		tag[TAG_SIZE];	/* "" when it has none */
	char		stream_id[STREAM_SIZE];
	int64_t		position;
	int64_t		version;
	double		seen_at;		/* seconds since start */
	long		read_no;
} SeenEvent;

typedef struct FollowerStats
{
	long		reads;
	long		empty_reads;
	long		full_pages;
	long		rows;			/* every row, other runs' included */
	long		sleeps;
	long		waits;
	long		wakeups;
	long		timeouts;
	long		stale_timeouts; /* timeouts the next read found events after */
	double		wait_seconds;
} FollowerStats;

/* Violations of one check found while following: printed, then counted. */
typedef struct RuntimeCheck
{
	const char *name;
	long		count;
} RuntimeCheck;

typedef struct Follower
{
	const char *name;			/* "es_read_all" or "es_read_category" */
	bool		category;
	const Options *opt;
	PGconn	   *conn;
	uint64_t	rng;
	pthread_t	thread;

	SeenEvent  *seen;
	int			nseen;
	int			maxseen;
	int64_t		last;			/* the highest position returned so far */
	bool		caught_up;

	FollowerStats stats;
	int			failures;
	long		violations;
	RuntimeCheck checks[MAX_RUNTIME_CHECKS];
	int			nchecks;
} Follower;

/* Set up in main(), read-only while the threads run. */
static char **stream_names;
static char *ext_schema;		/* quoted, for SQL text */
static char run_prefix[ES_MAX_RUN_TAG + 8];	/* "fol<tag>-" */
static char run_category[ES_MAX_RUN_TAG + 8];	/* "fol<tag>" */
static double run_start;

/* Written by main() when the writers are done, read by the followers. */
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static bool writers_done = false;
static long acked_total = 0;


/*
 * Time, and the writers' state
 */

/* Seconds since the run started. */
static double
Elapsed(void)
{
	return EsNow() - run_start;
}

static void
SleepMs(int ms)
{
	struct timespec ts;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (long) (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void
GetWriterState(bool *done, long *total)
{
	pthread_mutex_lock(&state_lock);
	*done = writers_done;
	*total = acked_total;
	pthread_mutex_unlock(&state_lock);
}


/*
 * Reporting
 */

/* Prints a writer's failure; the writer stops after its current loop. */
static void
WriterFail(Writer *w, const char *fmt,...)
{
	char		who[32];
	va_list		args;

	snprintf(who, sizeof(who), "writer %d", w->id);
	va_start(args, fmt);
	EsVFail(&w->failures, who, fmt, args);
	va_end(args);
}

/* Prints a follower's failure (an error, not a violation); it stops. */
static void
FollowerFail(Follower *f, const char *fmt,...)
{
	char		who[64];
	va_list		args;

	snprintf(who, sizeof(who), "%s follower", f->name);
	va_start(args, fmt);
	EsVFail(&f->failures, who, fmt, args);
	va_end(args);
}

/* Prints a violation seen while following (the first few of each check). */
static void
FollowerViolation(Follower *f, const char *check, const char *fmt,...)
{
	char		message[2048];
	va_list		args;
	RuntimeCheck *c = NULL;

	f->violations++;
	for (int i = 0; i < f->nchecks && c == NULL; i++)
		if (strcmp(f->checks[i].name, check) == 0)
			c = &f->checks[i];
	if (c == NULL && f->nchecks < MAX_RUNTIME_CHECKS)
	{
		c = &f->checks[f->nchecks++];
		c->name = check;
		c->count = 0;
	}
	if (c != NULL && c->count++ >= ES_MAX_REPORTED_PER_CHECK)
		return;

	va_start(args, fmt);
	vsnprintf(message, sizeof(message), fmt, args);
	va_end(args);

	pthread_mutex_lock(&es_output_lock);
	printf("follower: VIOLATION (%s): %s: %s\n", check, f->name, message);
	fflush(stdout);
	pthread_mutex_unlock(&es_output_lock);
}

/* After the run: how many of each check's violations were not printed. */
static void
PrintUnreported(const Follower *f)
{
	for (int i = 0; i < f->nchecks; i++)
		if (f->checks[i].count > ES_MAX_REPORTED_PER_CHECK)
			printf("follower: VIOLATION (%s): %s: ... and %ld more\n", f->checks[i].name,
				   f->name, f->checks[i].count - ES_MAX_REPORTED_PER_CHECK);
}


/*
 * Connections
 */

/*
 * A connection at read committed, where no statement may hang the run; NULL
 * after printing why if there is none.
 */
static PGconn *
Connect(void)
{
	PGconn	   *conn = EsConnect(CONNINFO);
	char		error[1024];

	if (conn == NULL)
		return NULL;

	/* What the contract is written for; and nothing may hang the run. */
	if (!EsTryCommand(conn, "SET default_transaction_isolation = 'read committed'; "
					  STATEMENT_TIMEOUT, error, sizeof(error)))
	{
		fprintf(stderr, "follower: SET failed: %s\n", error);
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/* Prepares statements on a connection; %s in their text is the schema. */
static bool
Prepare(PGconn *conn, const char *name, const char *sql_format)
{
	char		sql[1024];
	char		error[1024];
	PGresult   *res;

	snprintf(sql, sizeof(sql), sql_format, ext_schema, ext_schema);
	res = PQprepare(conn, name, sql, 0, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "follower: preparing %s failed: %s\n", sql,
				EsErrorText(conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	PQclear(res);
	return true;
}


/*
 * Writers
 */

static void
RecordAcked(Writer *w, const char *tag, int stream, double committed_at,
			const char *kind)
{
	AckedEvent *e;

	w->acked = EsGrowArray(w->acked, w->nacked, &w->maxacked, sizeof(AckedEvent));
	e = &w->acked[w->nacked++];
	EsCopyString(e->tag, tag, TAG_SIZE);
	e->stream = stream;
	e->committed_at = committed_at;
	e->kind = kind;
}

static void
RecordUnacked(Writer *w, const char *tag, int stream, const char *reason)
{
	UnackedEvent *e;

	w->unacked = EsGrowArray(w->unacked, w->nunacked, &w->maxunacked,
							 sizeof(UnackedEvent));
	e = &w->unacked[w->nunacked++];
	EsCopyString(e->tag, tag, TAG_SIZE);
	e->stream = stream;
	e->reason = reason;
}

/* BEGIN, COMMIT or ROLLBACK; a failure is reported here (see EsTryCommand). */
static bool
WriterCommand(Writer *w, const char *sql)
{
	char		error[1024];

	if (EsTryCommand(w->conn, sql, error, sizeof(error)))
		return true;
	WriterFail(w, "%s failed: %s", sql, error);
	return false;
}

/*
 * AppendEvents
 *		One es_append of count events to a stream (the single form when count
 *		is 1, the batch form otherwise), tagged tags[0..count-1], with
 *		expected_version NULL.  Any error is a failure, reported here.
 */
static bool
AppendEvents(Writer *w, const Plan *p, int part, int loop, int first_index,
			 char tags[][TAG_SIZE])
{
	int			stream = p->streams[part];
	int			count = p->counts[part];
	const char *params[4];
	char		data[2048];
	char		metadata[256];
	const char *statement;
	int			nparams;
	PGresult   *res;
	char		error[1024];
	int64_t		version;
	bool		ok = false;

	for (int i = 0; i < count; i++)
		snprintf(tags[i], TAG_SIZE, "%d-%d-%d", w->id, loop, first_index + i);

	params[0] = stream_names[stream];
	if (count == 1)
	{
		params[1] = p->kind;
		snprintf(data, sizeof(data), "{\"writer\": %d, \"loop\": %d, \"i\": %d}",
				 w->id, loop, first_index);
		snprintf(metadata, sizeof(metadata), "{\"tag\": \"%s\", \"run\": \"%s\"}",
				 tags[0], w->opt->run_tag);
		params[2] = data;
		params[3] = metadata;
		statement = "append";
		nparams = 4;
	}
	else
	{
		size_t		len = 0;

		len += snprintf(data + len, sizeof(data) - len, "[");
		for (int i = 0; i < count; i++)
			len += snprintf(data + len, sizeof(data) - len,
							"%s{\"type\": \"%s\", \"data\": {\"writer\": %d, \"loop\": %d, \"i\": %d}, "
							"\"metadata\": {\"tag\": \"%s\", \"run\": \"%s\"}}",
							i > 0 ? ", " : "", p->kind, w->id, loop, first_index + i,
							tags[i], w->opt->run_tag);
		snprintf(data + len, sizeof(data) - len, "]");
		params[1] = data;
		statement = "append_batch";
		nparams = 2;
	}

	res = PQexecPrepared(w->conn, statement, nparams, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		WriterFail(w, "es_append of %d events to %s failed: %s", count, params[0],
				   EsErrorText(w->conn, res, error, sizeof(error)));
	else if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0) ||
			 !EsParseInt64(PQgetvalue(res, 0, 0), &version))
		WriterFail(w, "es_append of %d events to %s returned no version", count, params[0]);
	else if (version < count)
		WriterFail(w, "es_append of %d events to %s returned version %" PRId64,
				   count, params[0], version);
	else
		ok = true;
	PQclear(res);
	return ok;
}

/*
 * RunPlan
 *		Carries out one loop: its appends, in a transaction or not, the hold,
 *		the COMMIT or ROLLBACK; then records what became of each event.
 */
static bool
RunPlan(Writer *w, int loop, const Plan *p)
{
	char		tags[MAX_TX_EVENTS][TAG_SIZE];
	int			tag_streams[MAX_TX_EVENTS];
	int			ntags = 0;
	bool		ok = true;
	double		committed_at;

	if (p->explicit_tx && !WriterCommand(w, "BEGIN"))
		return false;

	for (int part = 0; part < p->nstreams && ok; part++)
	{
		ok = AppendEvents(w, p, part, loop, ntags, &tags[ntags]);
		for (int i = 0; i < p->counts[part]; i++)
			tag_streams[ntags++] = p->streams[part];
	}

	if (ok && p->hold_ms > 0)
		SleepMs(p->hold_ms);

	if (!ok || !p->commit)
	{
		/* Even if ROLLBACK fails, an open transaction never commits. */
		if (p->explicit_tx && !WriterCommand(w, "ROLLBACK"))
			ok = false;
		for (int i = 0; i < ntags; i++)
			RecordUnacked(w, tags[i], tag_streams[i], ok ? "rolled back" : "failed");
		return ok;
	}

	/*
	 * If COMMIT fails (see EsTryCommand), the outcome is unknown: the events
	 * are neither acked nor unacked.
	 */
	if (p->explicit_tx && !WriterCommand(w, "COMMIT"))
		return false;
	committed_at = Elapsed();
	for (int i = 0; i < ntags; i++)
		RecordAcked(w, tags[i], tag_streams[i], committed_at, p->kind);
	return true;
}

/* Two different streams, ascending. */
static void
PickTwoStreams(Writer *w, int *streams)
{
	int			n = w->opt->streams;
	int			s1 = EsRandomInt(&w->rng, n);
	int			s2 = (s1 + 1 + EsRandomInt(&w->rng, n - 1)) % n;

	streams[0] = s1 < s2 ? s1 : s2;
	streams[1] = s1 < s2 ? s2 : s1;
}

/* One loop of a randomly chosen kind. */
static bool
RunLoop(Writer *w, int loop)
{
	Plan		p = {0};
	int			dice = EsRandomInt(&w->rng, 100);
	int			events = 0;

	p.nstreams = 1;
	p.streams[0] = EsRandomInt(&w->rng, w->opt->streams);
	p.counts[0] = 1;
	p.commit = true;

	if (dice < 30)
		p.kind = "Single";
	else if (dice < 50)
	{
		p.kind = "Batch";
		p.counts[0] = 2 + EsRandomInt(&w->rng, MAX_BATCH - 1);
	}
	else if (dice < 72)
	{
		/* Takes its position(s), then keeps them open while others commit. */
		p.kind = "Held";
		p.explicit_tx = true;
		p.counts[0] = EsRandomInt(&w->rng, 3) == 0 ? 2 + EsRandomInt(&w->rng, MAX_BATCH - 1) : 1;
		p.hold_ms = 1 + EsRandomInt(&w->rng, 50);
	}
	else if (dice < 85)
	{
		p.kind = "RolledBack";
		p.explicit_tx = true;
		p.commit = false;
		if (EsRandomInt(&w->rng, 3) == 0)
		{
			p.nstreams = 2;
			PickTwoStreams(w, p.streams);
			p.counts[1] = 1;
		}
		else
			p.counts[0] = EsRandomInt(&w->rng, 2) == 0 ? 1 : 2 + EsRandomInt(&w->rng, MAX_BATCH - 1);
		p.hold_ms = EsRandomInt(&w->rng, 21);
	}
	else
	{
		p.kind = "Pair";
		p.explicit_tx = true;
		p.nstreams = 2;
		PickTwoStreams(w, p.streams);
		p.counts[0] = 1 + EsRandomInt(&w->rng, 2);
		p.counts[1] = 1 + EsRandomInt(&w->rng, 2);
		p.hold_ms = EsRandomInt(&w->rng, 11);
	}

	if (!RunPlan(w, loop, &p))
		return false;

	for (int i = 0; i < p.nstreams; i++)
		events += p.counts[i];
	w->stats.loops++;
	if (!p.commit)
	{
		w->stats.rollbacks++;
		w->stats.rollback_events += events;
	}
	else if (p.nstreams == 2)
	{
		w->stats.pairs++;
		w->stats.pair_events += events;
	}
	else if (p.explicit_tx)
	{
		w->stats.held++;
		w->stats.held_events += events;
	}
	else if (events > 1)
	{
		w->stats.batches++;
		w->stats.batch_events += events;
	}
	else
		w->stats.singles++;
	return true;
}

static void *
WriterMain(void *arg)
{
	Writer	   *w = arg;
	double		deadline = run_start + w->opt->seconds;

	for (int loop = 0; w->opt->loops == 0 || loop < w->opt->loops; loop++)
	{
		if (EsNow() >= deadline || !RunLoop(w, loop))
			break;
	}
	return NULL;
}

static bool
SetUpWriter(Writer *w)
{
	if (!EsSeedRandom(&w->rng))
		return false;
	w->conn = Connect();
	return w->conn != NULL &&
		Prepare(w->conn, "append",
				"SELECT %s.es_append($1::text, NULL::bigint, $2::text, $3::jsonb, $4::jsonb)") &&
		Prepare(w->conn, "append_batch",
				"SELECT %s.es_append($1::text, NULL::bigint, $2::jsonb)");
}


/*
 * Followers
 */

static void
RecordSeen(Follower *f, const char *tag, const char *stream_id,
		   int64_t position, int64_t version, double seen_at)
{
	SeenEvent  *e;

	f->seen = EsGrowArray(f->seen, f->nseen, &f->maxseen, sizeof(SeenEvent));
	e = &f->seen[f->nseen++];
	EsCopyString(e->tag, tag, TAG_SIZE);
	snprintf(e->stream_id, STREAM_SIZE, "%s", stream_id);
	e->position = position;
	e->version = version;
	e->seen_at = seen_at;
	e->read_no = f->stats.reads;
}

/* Mostly 1000; sometimes 100, or 3, so that catching up takes pages. */
static int64_t
PickMaxCount(Follower *f)
{
	int			dice = EsRandomInt(&f->rng, 20);

	if (dice == 0)
		return 3;
	if (dice <= 5)
		return 100;
	return 1000;
}

/*
 * ReadOnce
 *		One read after f->last: checks that positions keep increasing and
 *		records the run's events.  Returns the number of rows, -1 on error.
 */
static int
ReadOnce(Follower *f, int64_t max_count)
{
	char		after_text[ES_INT64_TEXT_SIZE];
	char		max_text[ES_INT64_TEXT_SIZE];
	const char *params[3];
	PGresult   *res;
	char		error[1024];
	double		seen_at;
	int64_t		after = f->last;
	int			rows;

	snprintf(after_text, sizeof(after_text), "%" PRId64, after);
	snprintf(max_text, sizeof(max_text), "%" PRId64, max_count);
	if (f->category)
	{
		params[0] = run_category;
		params[1] = after_text;
		params[2] = max_text;
		res = PQexecPrepared(f->conn, "read", 3, params, NULL, NULL, 0);
	}
	else
	{
		params[0] = after_text;
		params[1] = max_text;
		res = PQexecPrepared(f->conn, "read", 2, params, NULL, NULL, 0);
	}
	seen_at = Elapsed();
	f->stats.reads++;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		FollowerFail(f, "%s after %" PRId64 " failed: %s", f->name, after,
					 EsErrorText(f->conn, res, error, sizeof(error)));
		PQclear(res);
		return -1;
	}

	rows = PQntuples(res);
	if (rows > max_count)
		FollowerViolation(f, "page larger than max_count",
						  "read #%ld after %" PRId64 " with max_count %" PRId64 " returned %d rows",
						  f->stats.reads, after, max_count, rows);
	if (rows == 0)
		f->stats.empty_reads++;
	else if (rows == max_count)
		f->stats.full_pages++;
	f->stats.rows += rows;

	for (int i = 0; i < rows; i++)
	{
		int64_t		position;
		int64_t		version;
		const char *stream_id = PQgetvalue(res, i, 1);

		if (!EsParseInt64(PQgetvalue(res, i, 0), &position) ||
			!EsParseInt64(PQgetvalue(res, i, 2), &version))
		{
			FollowerFail(f, "read #%ld returned a row without position or version", f->stats.reads);
			PQclear(res);
			return -1;
		}
		if (position <= f->last)
			FollowerViolation(f, "position not increasing",
							  "read #%ld after %" PRId64 " returned position %" PRId64 " (%s version %" PRId64 ") as row %d, after position %" PRId64,
							  f->stats.reads, after, position, stream_id, version, i + 1, f->last);
		else
			f->last = position;

		/* Everything the category follower reads is the run's, or a violation. */
		if (f->category || strncmp(stream_id, run_prefix, strlen(run_prefix)) == 0)
			RecordSeen(f, PQgetvalue(res, i, 3), stream_id, position, version, seen_at);
	}
	PQclear(res);
	return rows;
}

/*
 * CheckWaitTarget
 *		es_wait(after) returned target > after: the read that followed, after
 *		the same position, must have returned something (an event after
 *		"after" was readable), and reached target -- the newest readable
 *		position, so an event's -- unless its page was full.  Readable stays
 *		readable, so neither depends on timing.
 */
static void
CheckWaitTarget(Follower *f, int64_t after, int64_t target, int rows,
				int64_t max_count)
{
	if (rows == 0)
		FollowerViolation(f, "es_wait returned without a readable event",
						  "es_wait(%" PRId64 ", %d) returned %" PRId64 ", but es_read_all(after_position => %" PRId64 ") right after returned no event",
						  after, WAIT_TIMEOUT_MS, target, after);
	else if (rows < max_count && f->last < target)
		FollowerViolation(f, "es_wait returned a position past the newest readable event",
						  "es_wait(%" PRId64 ", %d) returned %" PRId64 ", but es_read_all(after_position => %" PRId64 ", max_count => %" PRId64 ") right after returned %d events, up to position %" PRId64,
						  after, WAIT_TIMEOUT_MS, target, after, max_count, rows, f->last);
}

/*
 * Wait
 *		es_wait(after, WAIT_TIMEOUT_MS), after an empty read.  The es_read_all
 *		follower waits after its last position and returns in *target what
 *		es_wait reported (0 on timeout), for the next read to check; the
 *		category follower waits after *horizon, the newest position es_wait
 *		reported so far (an event past it may not be in the category).
 *		*timed_out tells whether es_wait returned its after_position.
 */
static bool
Wait(Follower *f, int64_t *horizon, int64_t *target, bool *timed_out)
{
	int64_t		after = f->category ? *horizon : f->last;
	char		after_text[ES_INT64_TEXT_SIZE];
	char		timeout_text[ES_INT64_TEXT_SIZE];
	const char *params[2];
	PGresult   *res;
	char		error[1024];
	double		started;
	double		took;
	int64_t		returned;

	*target = 0;
	*timed_out = false;
	snprintf(after_text, sizeof(after_text), "%" PRId64, after);
	snprintf(timeout_text, sizeof(timeout_text), "%d", WAIT_TIMEOUT_MS);
	params[0] = after_text;
	params[1] = timeout_text;
	started = EsNow();
	res = PQexecPrepared(f->conn, "wait", 2, params, NULL, NULL, 0);
	took = EsNow() - started;
	f->stats.waits++;
	f->stats.wait_seconds += took;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 ||
		PQgetisnull(res, 0, 0) || !EsParseInt64(PQgetvalue(res, 0, 0), &returned))
	{
		FollowerFail(f, "es_wait(%" PRId64 ", %d) failed: %s", after, WAIT_TIMEOUT_MS,
					 PQresultStatus(res) == PGRES_TUPLES_OK ? "no position returned" :
					 EsErrorText(f->conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	PQclear(res);

	if (returned == after)
	{
		f->stats.timeouts++;
		*timed_out = true;
		if (took < WAIT_EARLY_SLACK * WAIT_TIMEOUT_MS / 1000.0)
			FollowerViolation(f, "es_wait returned before its timeout",
							  "es_wait(%" PRId64 ", %d) returned its after_position after %.0f ms",
							  after, WAIT_TIMEOUT_MS, took * 1000);
	}
	else if (returned > after)
	{
		f->stats.wakeups++;
		if (f->category)
			*horizon = returned;
		else
			*target = returned;
	}
	else
		FollowerViolation(f, "es_wait went backwards",
						  "es_wait(%" PRId64 ", %d) returned %" PRId64 ", below its after_position",
						  after, WAIT_TIMEOUT_MS, returned);
	return true;
}

/*
 * FollowerMain
 *		Reads after the last position seen, sleeping or waiting after empty
 *		reads, until the writers are done and every acknowledged event has
 *		been seen (and one more read was empty), or CATCH_UP_SECONDS after
 *		the writers were done.
 */
static void *
FollowerMain(void *arg)
{
	Follower   *f = arg;
	int64_t		horizon = 0;
	int64_t		target = 0;
	bool		timed_out = false;
	double		catch_up_deadline = 0;

	for (;;)
	{
		int64_t		max_count = PickMaxCount(f);
		int64_t		after = f->last;
		int			rows;
		bool		done;
		long		total;

		/* Before the read: nothing acknowledged later counts for it. */
		GetWriterState(&done, &total);

		rows = ReadOnce(f, max_count);
		if (rows < 0)
			break;
		if (target > 0)
		{
			CheckWaitTarget(f, after, target, rows, max_count);
			target = 0;
		}
		if (timed_out && rows > 0)
			f->stats.stale_timeouts++;
		timed_out = false;

		if (done)
		{
			if (catch_up_deadline == 0)
				catch_up_deadline = EsNow() + CATCH_UP_SECONDS;
			else if (EsNow() > catch_up_deadline)
			{
				pthread_mutex_lock(&es_output_lock);
				printf("follower: %s follower gave up catching up after %d s, with %d of %ld acknowledged events seen\n",
					   f->name, CATCH_UP_SECONDS, f->nseen, total);
				pthread_mutex_unlock(&es_output_lock);
				break;
			}
			if (rows == 0 && f->nseen >= total)
			{
				f->caught_up = true;
				break;
			}
		}
		if (rows > 0)
			continue;

		if (f->opt->follow == FOLLOW_SLEEP)
		{
			SleepMs(1 + EsRandomInt(&f->rng, 5));
			f->stats.sleeps++;
		}
		else if (!Wait(f, &horizon, &target, &timed_out))
			break;
	}
	return NULL;
}

static bool
SetUpFollower(Follower *f)
{
	if (!EsSeedRandom(&f->rng))
		return false;
	f->conn = Connect();
	if (f->conn == NULL)
		return false;
	if (f->category)
	{
		if (!Prepare(f->conn, "read",
					 "SELECT global_position, stream_id, version, metadata->>'tag' "
					 "FROM %s.es_read_category(category => $1::text, after_position => $2::bigint, "
					 "max_count => $3::bigint)"))
			return false;
	}
	else if (!Prepare(f->conn, "read",
					  "SELECT global_position, stream_id, version, metadata->>'tag' "
					  "FROM %s.es_read_all(after_position => $1::bigint, max_count => $2::bigint)"))
		return false;
	return Prepare(f->conn, "wait", "SELECT %s.es_wait($1::bigint, $2::integer)");
}


/*
 * Main connection: set-up, sabotage and verification
 */

/* Creates the extension if needed, finds its schema, checks the functions. */
static bool
SetUpExtension(PGconn *conn)
{
	PGresult   *res;

	res = EsSetUpExtension(conn,
						   "SELECT pg_catalog.quote_ident(n.nspname), "
						   "pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) || '.es_read_all(bigint, bigint, text[])') IS NOT NULL, "
						   "pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) || '.es_read_category(text, bigint, bigint, integer, integer)') IS NOT NULL, "
						   "pg_catalog.to_regprocedure(pg_catalog.quote_ident(n.nspname) || '.es_wait(bigint, integer)') IS NOT NULL "
						   "FROM pg_catalog.pg_extension e "
						   "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
						   "WHERE e.extname = 'es'");
	if (res == NULL)
		return false;
	ext_schema = EsStrdup(PQgetvalue(res, 0, 0));
	if (strcmp(PQgetvalue(res, 0, 1), "t") != 0 || strcmp(PQgetvalue(res, 0, 2), "t") != 0 ||
		strcmp(PQgetvalue(res, 0, 3), "t") != 0)
	{
		fprintf(stderr, "follower: the installed es lacks es_read_all(bigint, bigint, text[]), "
				"es_read_category(text, bigint, bigint, integer, integer) or es_wait(bigint, integer)\n");
		PQclear(res);
		return false;
	}
	PQclear(res);
	return true;
}

/*
 * LoadRun
 *		Loads what the writers and followers recorded, the run's rows of
 *		es_events, and the consumer groups' reads of the run's category into
 *		temporary tables for the checks.
 */
static bool
LoadRun(PGconn *conn, Writer *writers, int nwriters, Follower *followers,
		int nfollowers)
{
	EsStrBuf	acked = {0};
	EsStrBuf	unacked = {0};
	EsStrBuf	seen = {0};
	const char *params[1] = {run_prefix};
	const char *category_params[1] = {run_category};
	char		sql[2048];
	bool		ok;

	for (int i = 0; i < nwriters; i++)
	{
		Writer	   *w = &writers[i];

		for (int j = 0; j < w->nacked; j++)
			EsStrBufAppend(&acked, "%s\t%s\t%.6f\t%s\n", w->acked[j].tag,
						   stream_names[w->acked[j].stream], w->acked[j].committed_at,
						   w->acked[j].kind);
		for (int j = 0; j < w->nunacked; j++)
			EsStrBufAppend(&unacked, "%s\t%s\t%s\n", w->unacked[j].tag,
						   stream_names[w->unacked[j].stream], w->unacked[j].reason);
	}
	for (int i = 0; i < nfollowers; i++)
	{
		Follower   *f = &followers[i];

		for (int j = 0; j < f->nseen; j++)
		{
			SeenEvent  *e = &f->seen[j];

			EsStrBufAppend(&seen, "%s\t%d\t%ld\t%s\t%" PRId64 "\t%s\t%" PRId64 "\t%.6f\n",
						   f->name, j + 1, e->read_no, e->tag[0] ? e->tag : "\\N",
						   e->position, e->stream_id, e->version, e->seen_at);
		}
	}

	ok = EsCommand(conn,
				   "CREATE TEMP TABLE fol_acked (tag text, stream_id text, committed_at float8, kind text); "
				   "CREATE TEMP TABLE fol_unacked (tag text, stream_id text, reason text); "
				   "CREATE TEMP TABLE fol_seen (follower text, seq int, read_no bigint, tag text, "
				   "global_position bigint, stream_id text, version bigint, seen_at float8); "
				   "CREATE TEMP TABLE fol_followers (follower text); "
				   "CREATE TEMP TABLE fol_stored (global_position bigint, stream_id text, version bigint, tag text); "
				   "CREATE TEMP TABLE fol_group (member int, seq bigint, global_position bigint, "
				   "stream_id text, version bigint, tag text)",
				   0, NULL) &&
		EsCopyIn(conn, "COPY fol_acked FROM STDIN", &acked) &&
		EsCopyIn(conn, "COPY fol_unacked FROM STDIN", &unacked) &&
		EsCopyIn(conn, "COPY fol_seen FROM STDIN", &seen);
	free(acked.data);
	free(unacked.data);
	free(seen.data);
	if (!ok)
		return false;

	for (int i = 0; i < nfollowers; i++)
	{
		const char *name[1] = {followers[i].name};

		if (!EsCommand(conn, "INSERT INTO fol_followers VALUES ($1)", 1, name))
			return false;
	}

	snprintf(sql, sizeof(sql),
			 "INSERT INTO fol_stored "
			 "SELECT global_position, stream_id, version, metadata->>'tag' "
			 "FROM %s.es_events WHERE pg_catalog.starts_with(stream_id, $1)",
			 ext_schema);
	if (!EsCommand(conn, sql, 1, params))
		return false;

	snprintf(sql, sizeof(sql),
			 "INSERT INTO fol_group "
			 "SELECT k, r.ordinality, r.global_position, r.stream_id, r.version, r.metadata->>'tag' "
			 "FROM pg_catalog.generate_series(0, %d) AS k, "
			 "LATERAL %s.es_read_category($1::text, 0, %d, k, %d) WITH ORDINALITY AS r",
			 GROUP_SIZE - 1, ext_schema, GROUP_MAX_COUNT, GROUP_SIZE);
	if (!EsCommand(conn, sql, 1, category_params))
		return false;

	return EsCommand(conn, "ANALYZE fol_acked, fol_unacked, fol_seen, fol_stored, fol_group",
					 0, NULL);
}

/*
 * Each check returns one row, one text column, per violation; $1 is the
 * run's category.
 */
static const EsCheck checks[] =
{
	{"position not increasing",
		"SELECT format('%s follower: read #%s returned position %s (%s) after position %s', "
		"follower, read_no, global_position, coalesce(tag, 'without tag'), previous) "
		"FROM (SELECT *, lag(global_position) OVER (PARTITION BY follower ORDER BY seq) AS previous "
		"FROM fol_seen) s WHERE global_position <= previous ORDER BY follower, seq"},
	{"event returned more than once",
		"SELECT format('%s follower: event %s was returned %s times, at positions %s', "
		"follower, tag, count(*), string_agg(global_position::text, ', ' ORDER BY seq)) "
		"FROM fol_seen WHERE tag IS NOT NULL GROUP BY follower, tag HAVING count(*) > 1 ORDER BY 1"},
	{"rolled-back event returned",
		"SELECT format('%s follower: event %s (%s) was returned at position %s by read #%s, but was rolled back', "
		"s.follower, s.tag, s.stream_id, s.global_position, s.read_no) "
		"FROM fol_seen s JOIN fol_unacked u USING (tag) WHERE u.reason = 'rolled back' "
		"ORDER BY s.follower, s.seq"},
	{"unacknowledged event returned",
		"SELECT format('%s follower: event %s (%s version %s) was returned at position %s but was %s', "
		"s.follower, coalesce(s.tag, 'without tag'), s.stream_id, s.version, s.global_position, "
		"coalesce('not committed (' || u.reason || ')', 'never appended by this run')) "
		"FROM fol_seen s LEFT JOIN fol_unacked u USING (tag) "
		"WHERE coalesce(u.reason, '') <> 'rolled back' "
		"AND NOT EXISTS (SELECT FROM fol_acked a WHERE a.tag = s.tag) ORDER BY s.follower, s.seq"},
	{"event outside the category",
		"SELECT format('%s follower: read #%s returned %s (position %s), not in category %s', "
		"follower, read_no, stream_id, global_position, $1::text) "
		"FROM fol_seen WHERE follower = 'es_read_category' "
		"AND pg_catalog.split_part(stream_id, '-', 1) <> $1::text ORDER BY seq"},
	{"acknowledged event never returned",
		"SELECT format('%s follower: event %s (%s, committed at +%ss) was acknowledged but never returned%s', "
		"f.follower, a.tag, a.stream_id, to_char(a.committed_at, 'FM999990.000'), "
		"coalesce(' (stored at position ' || st.global_position || ')', ' (not stored)')) "
		"FROM fol_acked a CROSS JOIN fol_followers f LEFT JOIN fol_stored st USING (tag) "
		"WHERE NOT EXISTS (SELECT FROM fol_seen s WHERE s.follower = f.follower AND s.tag = a.tag) "
		"ORDER BY f.follower, st.global_position"},
	{"gap: committed event never returned",
		"SELECT format('%s follower: %s version %s (%s) is committed at position %s but was never returned; "
		"the follower returned position %s before it and %s after it', "
		"f.follower, st.stream_id, st.version, coalesce(st.tag, 'without tag'), st.global_position, "
		"coalesce((SELECT max(s.global_position)::text FROM fol_seen s "
		"WHERE s.follower = f.follower AND s.global_position < st.global_position), 'none'), "
		"coalesce((SELECT min(s.global_position)::text FROM fol_seen s "
		"WHERE s.follower = f.follower AND s.global_position > st.global_position), 'none')) "
		"FROM fol_stored st CROSS JOIN fol_followers f "
		"WHERE NOT EXISTS (SELECT FROM fol_seen s WHERE s.follower = f.follower "
		"AND s.global_position = st.global_position) "
		"ORDER BY f.follower, st.global_position"},
	{"returned event differs from stored",
		"SELECT format('%s follower: event %s was returned as %s version %s at position %s, but is stored as %s version %s at position %s', "
		"s.follower, s.tag, s.stream_id, s.version, s.global_position, st.stream_id, st.version, st.global_position) "
		"FROM fol_seen s JOIN fol_stored st USING (tag) "
		"WHERE (s.stream_id, s.version, s.global_position) IS DISTINCT FROM (st.stream_id, st.version, st.global_position) "
		"ORDER BY s.follower, s.seq"},
	{"acknowledged event not stored",
		"SELECT format('event %s (%s), acknowledged at +%ss, is not in es_events', a.tag, a.stream_id, "
		"to_char(a.committed_at, 'FM999990.000')) "
		"FROM fol_acked a WHERE NOT EXISTS (SELECT FROM fol_stored st WHERE st.tag = a.tag) ORDER BY 1"},
	{"uncommitted event stored",
		"SELECT format('event %s (%s) is stored at position %s but was %s', st.tag, st.stream_id, "
		"st.global_position, coalesce('not committed (' || u.reason || ')', 'never acknowledged')) "
		"FROM fol_stored st LEFT JOIN fol_unacked u USING (tag) "
		"WHERE NOT EXISTS (SELECT FROM fol_acked a WHERE a.tag = st.tag) ORDER BY st.global_position"},
	{"group: category event in no member",
		"SELECT format('%s version %s (position %s) is in none of the %s group members', "
		"st.stream_id, st.version, st.global_position, " ValueString(GROUP_SIZE) ") "
		"FROM fol_stored st WHERE NOT EXISTS (SELECT FROM fol_group g WHERE g.global_position = st.global_position) "
		"ORDER BY st.global_position"},
	{"group: event in more than one member",
		"SELECT format('%s version %s (position %s) was returned %s times, to members %s', "
		"stream_id, version, global_position, count(*), string_agg(member::text, ', ' ORDER BY member)) "
		"FROM fol_group GROUP BY global_position, stream_id, version HAVING count(*) > 1 ORDER BY global_position"},
	{"group: stream split across members",
		"SELECT format('stream %s went to members %s', stream_id, "
		"string_agg(format('%s (%s events)', member, n), ', ' ORDER BY member)) "
		"FROM (SELECT stream_id, member, count(*) AS n FROM fol_group GROUP BY 1, 2) g "
		"GROUP BY stream_id HAVING count(*) > 1 ORDER BY 1"},
	{"group: stream out of version order",
		"SELECT format('member %s returned %s version %s as that stream''s event number %s', "
		"member, stream_id, version, n) "
		"FROM (SELECT *, row_number() OVER (PARTITION BY member, stream_id ORDER BY seq) AS n FROM fol_group) g "
		"WHERE version <> n ORDER BY member, seq"},
	{"group: position not increasing",
		"SELECT format('member %s returned position %s after position %s', member, global_position, previous) "
		"FROM (SELECT *, lag(global_position) OVER (PARTITION BY member ORDER BY seq) AS previous FROM fol_group) g "
		"WHERE global_position <= previous ORDER BY member, seq"},
	{"group: event outside the category",
		"SELECT format('member %s returned %s version %s (position %s), not in category %s', "
		"member, stream_id, version, global_position, $1::text) "
		"FROM fol_group g WHERE NOT EXISTS (SELECT FROM fol_stored st WHERE st.global_position = g.global_position) "
		"ORDER BY member, seq"},
};

/*
 * PrintLatencies
 *		For each follower, the time from a writer's COMMIT returning to the
 *		follower seeing the event (0 when it saw it first).  With --follow
 *		wait, a median above MAX_WAIT_MEDIAN_MS is a violation: es_wait did
 *		not wake on commit.  Returns the number of violations.
 */
static long
PrintLatencies(PGconn *conn, FollowMode follow)
{
	PGresult   *res = EsQuery(conn,
							  "SELECT follower, count(*), "
							  "to_char(percentile_disc(0.5) WITHIN GROUP (ORDER BY lag), 'FM9999990.0'), "
							  "to_char(percentile_disc(0.99) WITHIN GROUP (ORDER BY lag), 'FM9999990.0'), "
							  "to_char(max(lag), 'FM9999990.0'), count(*) FILTER (WHERE early), "
							  "percentile_disc(0.5) WITHIN GROUP (ORDER BY lag) > " ValueString(MAX_WAIT_MEDIAN_MS) " "
							  "FROM (SELECT s.follower, greatest(s.seen_at - a.committed_at, 0) * 1000 AS lag, "
							  "s.seen_at < a.committed_at AS early FROM fol_seen s JOIN fol_acked a USING (tag)) x "
							  "GROUP BY follower ORDER BY follower",
							  0, NULL, PGRES_TUPLES_OK);
	long		violations = 0;

	if (res == NULL)
		return 1;
	for (int r = 0; r < PQntuples(res); r++)
	{
		printf("follower: %s: commit-to-seen time over %s events: median %s ms, p99 %s ms, max %s ms "
			   "(%s seen before their COMMIT returned)\n",
			   PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), PQgetvalue(res, r, 2),
			   PQgetvalue(res, r, 3), PQgetvalue(res, r, 4), PQgetvalue(res, r, 5));
		if (follow == FOLLOW_WAIT && strcmp(PQgetvalue(res, r, 6), "t") == 0)
		{
			printf("follower: VIOLATION (es_wait does not wake on commit): %s follower: median commit-to-seen time %s ms is above %d ms\n",
				   PQgetvalue(res, r, 0), PQgetvalue(res, r, 2), MAX_WAIT_MEDIAN_MS);
			violations++;
		}
	}
	PQclear(res);
	return violations;
}

/* How far the scenario went: out-of-order commits, group split. */
static void
PrintScenario(PGconn *conn)
{
	PGresult   *res;

	res = EsQuery(conn,
				  "SELECT count(*), count(*) FILTER (WHERE global_position < previous_max) "
				  "FROM (SELECT st.global_position, max(st.global_position) OVER "
				  "(ORDER BY a.committed_at, st.global_position ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) "
				  "AS previous_max FROM fol_acked a JOIN fol_stored st USING (tag)) x",
				  0, NULL, PGRES_TUPLES_OK);
	if (res != NULL)
	{
		printf("follower: %s events stored; %s of them committed after an event with a higher position had "
			   "(commits out of position order)\n",
			   PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
		PQclear(res);
	}
	res = EsQuery(conn,
				  "SELECT string_agg(format('member %s: %s events of %s streams', member, n, s), '; ' ORDER BY member) "
				  "FROM (SELECT member, count(*) AS n, count(DISTINCT stream_id) AS s FROM fol_group GROUP BY 1) g",
				  0, NULL, PGRES_TUPLES_OK);
	if (res != NULL)
	{
		printf("follower: consumer groups of %d over %s: %s\n", GROUP_SIZE, run_category,
			   PQgetisnull(res, 0, 0) ? "no events" : PQgetvalue(res, 0, 0));
		PQclear(res);
	}
}


/*
 * Sabotage: corrupt what was recorded after the run, to see the checks fail.
 */
static const char *const sabotage_kinds[] = {
	"skip", "duplicate", "rollback", "phantom", "order", "group", NULL
};

/*
 * Sabotage
 *		"group" moves one event to another consumer group member in fol_group
 *		(so it runs after LoadRun); the others change what the es_read_all
 *		follower f recorded (so they run before it):
 *		skip: forgets one event it saw (a gap);
 *		duplicate: it saw one event twice;
 *		rollback: it saw a rolled-back event;
 *		phantom: it saw an event nobody appended;
 *		order: two events it saw swap positions.
 */
static bool
Sabotage(PGconn *conn, const char *kind, Writer *writers, int nwriters,
		 Follower *f)
{
	if (strcmp(kind, "group") == 0)
	{
		if (!EsCommand(conn,
					   "UPDATE fol_group SET member = (member + 1) % " ValueString(GROUP_SIZE) " "
					   "WHERE ctid = (SELECT ctid FROM fol_group WHERE stream_id IN "
					   "(SELECT stream_id FROM fol_group GROUP BY 1 HAVING count(*) > 1) "
					   "ORDER BY member, seq LIMIT 1)",
					   0, NULL))
			return false;
		printf("follower: sabotage: moved one event to another consumer group member\n");
		return true;
	}

	if (f->nseen < 3)
	{
		fprintf(stderr, "follower: sabotage %s: too few events seen\n", kind);
		return false;
	}
	if (strcmp(kind, "skip") == 0)
	{
		int			victim = f->nseen / 2;

		printf("follower: sabotage: forgot that the %s follower saw %s at position %" PRId64 "\n",
			   f->name, f->seen[victim].tag, f->seen[victim].position);
		memmove(&f->seen[victim], &f->seen[victim + 1],
				sizeof(SeenEvent) * (f->nseen - victim - 1));
		f->nseen--;
		return true;
	}
	if (strcmp(kind, "duplicate") == 0)
	{
		SeenEvent	copy = f->seen[f->nseen / 2];

		RecordSeen(f, copy.tag, copy.stream_id, copy.position, copy.version, copy.seen_at);
		printf("follower: sabotage: the %s follower now saw %s twice\n", f->name, copy.tag);
		return true;
	}
	if (strcmp(kind, "rollback") == 0 || strcmp(kind, "phantom") == 0)
	{
		const char *tag = "sabotage-phantom";
		const char *stream_id = stream_names[0];

		if (strcmp(kind, "rollback") == 0)
		{
			tag = NULL;
			for (int i = 0; i < nwriters && tag == NULL; i++)
				for (int j = 0; j < writers[i].nunacked && tag == NULL; j++)
					if (strcmp(writers[i].unacked[j].reason, "rolled back") == 0)
					{
						tag = writers[i].unacked[j].tag;
						stream_id = stream_names[writers[i].unacked[j].stream];
					}
			if (tag == NULL)
			{
				fprintf(stderr, "follower: sabotage rollback: nothing was rolled back\n");
				return false;
			}
		}
		RecordSeen(f, tag, stream_id, f->seen[f->nseen - 1].position + 1, 1, Elapsed());
		printf("follower: sabotage: the %s follower now saw %s\n", f->name, tag);
		return true;
	}
	if (strcmp(kind, "order") == 0)
	{
		int			i = f->nseen / 2;
		int64_t		position = f->seen[i].position;

		f->seen[i].position = f->seen[i + 1].position;
		f->seen[i + 1].position = position;
		printf("follower: sabotage: swapped the positions the %s follower saw for %s and %s\n",
			   f->name, f->seen[i].tag, f->seen[i + 1].tag);
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
			"Usage: es_follower [OPTION]...\n"
			"Follower test of the es extension's gap-free global order (es_read_all,\n"
			"es_read_category, es_wait), against the server the PG* environment\n"
			"variables name.\n\n"
			"  --follow MODE    after an empty read: sleep (1-5 ms) or wait (es_wait)\n"
			"                   (default sleep)\n"
			"  --seconds N      how long the writers write (default 10)\n"
			"  --writers N      concurrent writers, one connection each (default 8)\n"
			"  --streams N      streams shared by the writers, at least 2 (default 16)\n"
			"  --loops N        at most N loops per writer, 0 for no limit (default 0)\n"
			"  --tag TAG        run tag, [0-9a-z], in stream ids fol<TAG>-<n> (default: random)\n"
			"  --sabotage KIND  corrupt what was recorded before checking it, to see the\n"
			"                   checks fail: skip, duplicate, rollback, phantom, order, group\n"
			"  --help           show this help\n");
}

static bool
ParseOptions(int argc, char **argv, Options *opt)
{
	static const struct option long_options[] = {
		{"follow", required_argument, NULL, 'f'},
		{"seconds", required_argument, NULL, 's'},
		{"writers", required_argument, NULL, 'w'},
		{"streams", required_argument, NULL, 'n'},
		{"loops", required_argument, NULL, 'l'},
		{"tag", required_argument, NULL, 't'},
		{"sabotage", required_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			ch;
	long		n;

	opt->follow = FOLLOW_SLEEP;
	opt->seconds = 10;
	opt->writers = 8;
	opt->streams = 16;
	opt->loops = 0;
	opt->run_tag[0] = '\0';
	opt->sabotage = NULL;

	while ((ch = getopt_long(argc, argv, "", long_options, NULL)) != -1)
	{
		switch (ch)
		{
			case 'f':
				if (strcmp(optarg, "sleep") == 0)
					opt->follow = FOLLOW_SLEEP;
				else if (strcmp(optarg, "wait") == 0)
					opt->follow = FOLLOW_WAIT;
				else
				{
					fprintf(stderr, "follower: --follow must be sleep or wait\n");
					return false;
				}
				break;
			case 's':
				if (!EsParseCount(optarg, "seconds", 1, 3600, &n))
					return false;
				opt->seconds = (int) n;
				break;
			case 'w':
				if (!EsParseCount(optarg, "writers", 1, 64, &n))
					return false;
				opt->writers = (int) n;
				break;
			case 'n':
				if (!EsParseCount(optarg, "streams", 2, 10000, &n))
					return false;
				opt->streams = (int) n;
				break;
			case 'l':
				if (!EsParseCount(optarg, "loops", 0, 100000000, &opt->loops))
					return false;
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
		fprintf(stderr, "follower: unexpected argument \"%s\"\n", argv[optind]);
		Usage(stderr);
		return false;
	}
	return true;
}

static void
AddStats(WriterStats *total, const WriterStats *s)
{
	total->loops += s->loops;
	total->singles += s->singles;
	total->batches += s->batches;
	total->batch_events += s->batch_events;
	total->held += s->held;
	total->held_events += s->held_events;
	total->pairs += s->pairs;
	total->pair_events += s->pair_events;
	total->rollbacks += s->rollbacks;
	total->rollback_events += s->rollback_events;
}

static void
PrintFollower(const Follower *f, long acked)
{
	const FollowerStats *s = &f->stats;

	printf("follower: %s: %ld reads (%ld empty, %ld full pages), %ld rows, %d of this run's %ld events seen%s\n",
		   f->name, s->reads, s->empty_reads, s->full_pages, s->rows, f->nseen, acked,
		   f->caught_up ? "" : " (did not catch up)");
	if (f->opt->follow == FOLLOW_WAIT)
		printf("follower: %s: %ld es_wait calls: %ld wakeups, %ld timeouts (%ld of them with events "
			   "to read right after), %.1f s waiting\n",
			   f->name, s->waits, s->wakeups, s->timeouts, s->stale_timeouts, s->wait_seconds);
	else
		printf("follower: %s: %ld sleeps after empty reads\n", f->name, s->sleeps);
}

int
main(int argc, char **argv)
{
	Options		opt;
	PGconn	   *conn;
	Writer	   *writers = NULL;
	Follower	followers[2];
	int			nfollowers = 2;
	WriterStats total = {0};
	long		acked = 0;
	long		unacked = 0;
	long		failures = 0;
	long		violations = 0;
	int			writers_started = 0;
	int			followers_started = 0;
	double		elapsed;
	int			status = 1;

	if (!ParseOptions(argc, argv, &opt))
		return 2;
	if (opt.run_tag[0] == '\0' && !EsRandomRunTag(opt.run_tag))
		return 1;
	snprintf(run_category, sizeof(run_category), "fol%s", opt.run_tag);
	snprintf(run_prefix, sizeof(run_prefix), "fol%s-", opt.run_tag);

	conn = Connect();
	if (conn == NULL)
		return 1;
	memset(followers, 0, sizeof(followers));
	if (!SetUpExtension(conn) || !EsRunPrefixUnused(conn, ext_schema, run_prefix))
		goto done;

	stream_names = EsMakeStreamNames(run_prefix, opt.streams);

	printf("follower: run %s: %d writers for %d s over %d streams (%s*), --follow %s\n",
		   opt.run_tag, opt.writers, opt.seconds, opt.streams, run_prefix,
		   opt.follow == FOLLOW_WAIT ? "wait" : "sleep");
	fflush(stdout);

	writers = calloc(opt.writers, sizeof(Writer));
	if (writers == NULL)
	{
		fprintf(stderr, "follower: out of memory\n");
		goto done;
	}
	for (int i = 0; i < opt.writers; i++)
	{
		writers[i].id = i;
		writers[i].opt = &opt;
		if (!SetUpWriter(&writers[i]))
			goto done;
	}
	followers[0].name = "es_read_all";
	followers[1].name = "es_read_category";
	followers[1].category = true;
	for (int i = 0; i < nfollowers; i++)
	{
		followers[i].opt = &opt;
		if (!SetUpFollower(&followers[i]))
			goto done;
	}

	run_start = EsNow();
	for (; followers_started < nfollowers; followers_started++)
	{
		int			err = pthread_create(&followers[followers_started].thread, NULL,
										 FollowerMain, &followers[followers_started]);

		if (err != 0)
		{
			fprintf(stderr, "follower: could not start a follower thread: %s\n", strerror(err));
			failures++;
			break;
		}
	}
	for (; writers_started < opt.writers && failures == 0; writers_started++)
	{
		int			err = pthread_create(&writers[writers_started].thread, NULL, WriterMain,
										 &writers[writers_started]);

		if (err != 0)
		{
			fprintf(stderr, "follower: could not start a writer thread: %s\n", strerror(err));
			failures++;
			break;
		}
	}
	for (int i = 0; i < writers_started; i++)
		pthread_join(writers[i].thread, NULL);
	elapsed = Elapsed();

	for (int i = 0; i < opt.writers; i++)
	{
		AddStats(&total, &writers[i].stats);
		acked += writers[i].nacked;
		unacked += writers[i].nunacked;
		failures += writers[i].failures;
	}
	pthread_mutex_lock(&state_lock);
	acked_total = acked;
	writers_done = true;
	pthread_mutex_unlock(&state_lock);

	for (int i = 0; i < followers_started; i++)
		pthread_join(followers[i].thread, NULL);
	if (failures > 0 || followers_started < nfollowers || writers_started < opt.writers)
		failures += failures == 0;

	printf("follower: %ld loops in %.2f s: %ld events committed (%.0f events/s), %ld rolled back\n",
		   total.loops, elapsed, acked, elapsed > 0 ? acked / elapsed : 0.0, unacked);
	printf("follower: %ld single appends, %ld batches (%ld events), %ld held transactions (%ld events), "
		   "%ld two-stream transactions (%ld events), %ld rollbacks (%ld events)\n",
		   total.singles, total.batches, total.batch_events, total.held, total.held_events,
		   total.pairs, total.pair_events, total.rollbacks, total.rollback_events);
	for (int i = 0; i < nfollowers; i++)
	{
		PrintFollower(&followers[i], acked);
		PrintUnreported(&followers[i]);
		failures += followers[i].failures;
		violations += followers[i].violations;
	}
	fflush(stdout);

	/* "group" corrupts fol_group once loaded; the others, what was recorded. */
	if (opt.sabotage && strcmp(opt.sabotage, "group") != 0 &&
		!Sabotage(conn, opt.sabotage, writers, opt.writers, &followers[0]))
	{
		fprintf(stderr, "follower: sabotage %s failed\n", opt.sabotage);
		failures++;
	}
	if (!LoadRun(conn, writers, opt.writers, followers, nfollowers))
	{
		fprintf(stderr, "follower: could not load the run for checking\n");
		failures++;
		goto done;
	}
	if (opt.sabotage && strcmp(opt.sabotage, "group") == 0 &&
		!Sabotage(conn, opt.sabotage, writers, opt.writers, &followers[0]))
	{
		fprintf(stderr, "follower: sabotage %s failed\n", opt.sabotage);
		failures++;
	}

	PrintScenario(conn);
	violations += PrintLatencies(conn, opt.follow);
	violations += EsRunChecks(conn, checks, sizeof(checks) / sizeof(checks[0]), run_category);

	if (failures == 0 && violations == 0)
	{
		printf("follower: OK\n");
		status = 0;
	}
	else
		printf("follower: FAILED: %ld failures, %ld violations\n", failures, violations);

done:
	if (writers != NULL)
	{
		for (int i = 0; i < opt.writers; i++)
		{
			if (writers[i].conn)
				PQfinish(writers[i].conn);
			free(writers[i].acked);
			free(writers[i].unacked);
		}
		free(writers);
	}
	for (int i = 0; i < nfollowers; i++)
	{
		if (followers[i].conn)
			PQfinish(followers[i].conn);
		free(followers[i].seen);
	}
	EsFreeStreamNames(stream_names, opt.streams);
	free(ext_schema);
	PQfinish(conn);
	fflush(stdout);
	return status;
}
