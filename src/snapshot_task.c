/*-------------------------------------------------------------------------
 *
 * snapshot_task.c
 *	  The worker task that takes automatic snapshots: count-based
 *	  (snapshot_every), time-based (snapshot_after), and the refresh of
 *	  stale snapshots after a change of an aggregate's logic.
 *
 * Nothing here runs on the append path: appends only set the worker's
 * latch (ES_WAKE_COMMIT), and an automatic snapshot that fails never fails
 * anything but itself.
 *
 * Finding work without scanning every stream.  Each aggregate keeps its
 * place in its category's gap-free global order (es_aggregates.position,
 * durable, dumped): a run reads the category's events after it, up to the
 * read horizon (EsReadHorizon: no event below it can still commit), so
 * every appended event is seen once, and only the streams that got events
 * are looked at.  For each such stream one query says how far its newest
 * current snapshot is behind (schema_version and fingerprint equal to the
 * aggregate's now): snapshot_every or more versions behind, it gets a
 * snapshot; with snapshot_after set and events newer than that snapshot, it
 * gets one once the snapshot is older than snapshot_after (a stream without
 * any: once the stream is), and until then waits in es_snapshot_queue with
 * the time it falls due, so that the worker need not remember it in memory.
 * A re-registration with a higher schema_version starts the position again
 * from 0 (sql/es.sql), so the new logic's snapshots are built for the whole
 * category.
 *
 * An aggregate with snapshot_every = 0 and no snapshot_after gets no
 * automatic snapshot at all, not even a refresh: its snapshots are the
 * application's (es_snapshot_take, es_snapshot_save).
 *
 * Refresh.  A CREATE OR REPLACE of apply or an upcaster change makes
 * snapshots stale without touching es_aggregates.  The worker notices that
 * an aggregate's logic (schema_version, fingerprint) is not the one it last
 * checked and makes one pass, in batches, over the streams that have
 * snapshots (es_snapshots, in index order): each whose newest snapshot is
 * stale gets a current one at its current version, so loads are fast again
 * soon after a deploy.  What was checked is kept in memory only: a worker
 * that starts makes the pass once (it is bounded by the number of streams
 * with snapshots).  Changes that fire no trigger are noticed within
 * es.worker_naptime.
 *
 * Failures.  Each snapshot is taken in a subtransaction.  When apply (or
 * anything else) fails, the error is logged, the stream goes into
 * es_snapshot_queue to be retried after a backoff (1 s, doubling up to a
 * minute), es_aggregates.failures and last_error say so, and the other
 * streams and aggregates go on.  An aggregate that cannot run at all (its
 * apply or owner role is gone) is retried after the same backoff
 * (es_aggregates.retry_at).  An error outside of these is the scheduler's
 * to log and retry (worker.c).
 *
 * Who runs what.  apply runs as the role that registered the aggregate
 * (es_aggregates.owner, EsBecomeUser via EsSnapshotTakeAs): never as the
 * worker's superuser or the tables' owner, so a role that may register an
 * aggregate gains no right through the worker.  The task's own statements
 * (es_aggregates, es_snapshot_queue, es_snapshots) run as the tables'
 * owner.
 *
 * Bounds.  A run reads at most FOLLOW_BATCH events per aggregate, takes at
 * most TAKE_BATCH snapshots per transaction, looks at REFRESH_BATCH streams
 * of the refresh pass and QUEUE_BATCH queued streams; when there is more it
 * asks to run again after MORE_DELAY_MS.
 *
 * Locks: those of es_load and es_snapshot_take, RowExclusiveLock on
 * es_aggregates and es_snapshot_queue.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "es.h"
#include "launcher.h"

#define TASK_NAME		"snapshots"
#define FOLLOW_BATCH	1000
#define TAKE_BATCH		32
#define REFRESH_BATCH	100
#define QUEUE_BATCH		32
#define MORE_DELAY_MS	10
#define PAUSED_DELAY_MS 1000

/* An aggregate as this run sees it. */
typedef struct AggregateRun
{
	text	   *category;
	char	   *owner;
	Oid			roleid;
	int32		every;			/* 0: no count-based snapshots */
	Datum		after;			/* interval, when has_after */
	bool		has_after;
	int64		position;
	Datum		registered_at;
	int32		failures;
	bool		waiting;		/* backing off (retry_at in the future) */
	TimestampTz retry_at;
	bool		automatic;		/* snapshot_every or snapshot_after set */
	bool		usable;			/* its logic was found this run */
	int32		schema_version;
	text	   *fingerprint;
	bool		changed;		/* failures / last_error to write */
	char	   *last_error;
} AggregateRun;

typedef struct Run
{
	MemoryContext cxt;			/* lives for the run */
	AggregateRun *aggs;
	int			naggs;
	bool		more;			/* run again soon */
	TimestampTz next_due;		/* 0: nothing timed */
	int			taken;
	int			failed;
} Run;

static EsPlan aggregates_plan = {
	"SELECT category, owner, snapshot_every, snapshot_after, position, registered_at, "
	"failures, retry_at OPERATOR(pg_catalog.>) pg_catalog.clock_timestamp(), retry_at "
	"FROM @extschema@.es_aggregates ORDER BY category",
	0, {InvalidOid}
};

/*
 * The streams with events in the next batch of a category ($1) after $2 up
 * to the horizon $3 (at most $4 events), in the order they first appear,
 * with how far their newest current snapshot ($5, $6: the logic) is, when a
 * time-based one ($7: snapshot_after) falls due, and their queue entry.
 * Planned per call, like es_read_category (see read.c).
 */
static EsPlan follow_plan = {
	"WITH b AS (SELECT stream_id, version, global_position FROM @extschema@.es_events "
	"WHERE @extschema@.es_category(stream_id) OPERATOR(pg_catalog.=) $1 "
	"AND global_position OPERATOR(pg_catalog.>) $2 AND global_position OPERATOR(pg_catalog.<=) $3 "
	"ORDER BY global_position LIMIT $4), "
	"s AS (SELECT stream_id, pg_catalog.max(version) AS version, "
	"pg_catalog.min(global_position) AS first_pos, pg_catalog.count(*) AS n, "
	"pg_catalog.max(global_position) AS last_pos FROM b GROUP BY stream_id) "
	"SELECT s.stream_id, s.version, s.first_pos, s.n, s.last_pos, "
	"COALESCE(c.version, 0), "
	"COALESCE(c.created_at, st.created_at) OPERATOR(pg_catalog.+) $7, "
	"q.due_at, q.failures "
	"FROM s LEFT JOIN LATERAL (SELECT x.version, x.created_at FROM @extschema@.es_snapshots x "
	"WHERE x.stream_id OPERATOR(pg_catalog.=) s.stream_id "
	"AND x.schema_version OPERATOR(pg_catalog.=) $5 AND x.fingerprint OPERATOR(pg_catalog.=) $6 "
	"ORDER BY x.stream_id DESC, x.version DESC LIMIT 1) c ON true "
	"LEFT JOIN @extschema@.es_streams st ON st.stream_id OPERATOR(pg_catalog.=) s.stream_id "
	"LEFT JOIN @extschema@.es_snapshot_queue q ON q.stream_id OPERATOR(pg_catalog.=) s.stream_id "
	"ORDER BY s.first_pos",
	7, {TEXTOID, INT8OID, INT8OID, INT8OID, INT4OID, TEXTOID, INTERVALOID},
	CURSOR_OPT_CUSTOM_PLAN
};

/* Moves the position on, unless a re-registration reset it meanwhile. */
static EsPlan position_plan = {
	"UPDATE @extschema@.es_aggregates SET position = $2 "
	"WHERE category OPERATOR(pg_catalog.=) $1 AND position OPERATOR(pg_catalog.=) $3 "
	"AND registered_at OPERATOR(pg_catalog.=) $4",
	4, {TEXTOID, INT8OID, INT8OID, TIMESTAMPTZOID}
};

/* $2: the error, or NULL after a success; $3: retry after ms, or NULL. */
static EsPlan aggregate_failure_plan = {
	"UPDATE @extschema@.es_aggregates SET "
	"failures = CASE WHEN $2 IS NULL THEN 0 ELSE failures OPERATOR(pg_catalog.+) 1 END, "
	"last_error = $2, retry_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) "
	"pg_catalog.make_interval(secs => $3::pg_catalog.float8 OPERATOR(pg_catalog./) 1000) "
	"WHERE category OPERATOR(pg_catalog.=) $1",
	3, {TEXTOID, TEXTOID, INT4OID}
};

/* A time-based snapshot falls due at $3 (an earlier entry stays). */
static EsPlan enqueue_plan = {
	"INSERT INTO @extschema@.es_snapshot_queue (stream_id, category, due_at) "
	"VALUES ($1, $2, $3) ON CONFLICT (stream_id) DO NOTHING",
	3, {TEXTOID, TEXTOID, TIMESTAMPTZOID}
};

/* A failed snapshot: retry after 1 s, 2 s, 4 s ... at most a minute. */
static EsPlan retry_plan = {
	"INSERT INTO @extschema@.es_snapshot_queue AS q (stream_id, category, due_at, failures, last_error) "
	"VALUES ($1, $2, pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) interval '1 s', 1, $3) "
	"ON CONFLICT (stream_id) DO UPDATE SET category = EXCLUDED.category, "
	"failures = q.failures OPERATOR(pg_catalog.+) 1, last_error = EXCLUDED.last_error, "
	"due_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) pg_catalog.make_interval("
	"secs => LEAST(pg_catalog.power(2::pg_catalog.float8, q.failures), 60))",
	3, {TEXTOID, TEXTOID, TEXTOID}
};

static EsPlan dequeue_plan = {
	"DELETE FROM @extschema@.es_snapshot_queue WHERE stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan postpone_plan = {
	"UPDATE @extschema@.es_snapshot_queue SET due_at = $2 "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1",
	2, {TEXTOID, TIMESTAMPTZOID}
};

static EsPlan queue_due_plan = {
	"SELECT stream_id, category FROM @extschema@.es_snapshot_queue "
	"WHERE due_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp() ORDER BY due_at LIMIT $1",
	1, {INT8OID}
};

static EsPlan queue_next_plan = {
	"SELECT pg_catalog.min(due_at) FROM @extschema@.es_snapshot_queue",
	0, {InvalidOid}
};

/* The newest snapshot of each stream, going down from $1 (NULL: the top). */
static EsPlan refresh_plan = {
	"SELECT DISTINCT ON (stream_id) stream_id, schema_version, fingerprint "
	"FROM @extschema@.es_snapshots WHERE $1 IS NULL OR stream_id OPERATOR(pg_catalog.<) $1 "
	"ORDER BY stream_id DESC, version DESC LIMIT $2",
	2, {TEXTOID, INT8OID}
};

/*
 * The refresh pass: the logic (of every aggregate) it was last completed
 * for, the logic it is working towards, and where it is.
 */
static char *refresh_done = NULL;
static char *refresh_target = NULL;
static char *refresh_cursor = NULL;

static void
Exec(EsPlan *plan, const EsCatalog *cat, Datum *args, const char *nulls, int expected)
{
	int			ret = SPI_execute_plan(EsPlanGet(plan, cat), args, nulls, false, 0);

	if (ret != expected)
		elog(ERROR, "es snapshot task: statement failed: %s", SPI_result_code_string(ret));
}

/* Byte equality: fingerprints are hex digests, no collation applies. */
static bool
TextEqual(text *a, text *b)
{
	return VARSIZE_ANY_EXHDR(a) == VARSIZE_ANY_EXHDR(b) &&
		memcmp(VARDATA_ANY(a), VARDATA_ANY(b), VARSIZE_ANY_EXHDR(a)) == 0;
}

static AggregateRun *
FindAggregate(Run *run, const char *category, int len)
{
	for (int i = 0; i < run->naggs; i++)
	{
		text	   *c = run->aggs[i].category;

		if (VARSIZE_ANY_EXHDR(c) == len && memcmp(VARDATA_ANY(c), category, len) == 0)
			return &run->aggs[i];
	}
	return NULL;
}

static AggregateRun *
AggregateOfStream(Run *run, text *stream_id)
{
	const char *s = VARDATA_ANY(stream_id);
	int			len = VARSIZE_ANY_EXHDR(stream_id);
	const char *dash = memchr(s, '-', len);

	return FindAggregate(run, s, dash ? dash - s : len);
}

static void
NoteDue(Run *run, TimestampTz due)
{
	if (run->next_due == 0 || due < run->next_due)
		run->next_due = due;
}

/*
 * Guarded
 *		Runs fn(arg) in a subtransaction; on error logs it (what names the
 *		work), rolls the subtransaction back and returns the message (in
 *		the run's context), else NULL.
 */
static char *
Guarded(Run *run, void (*fn) (void *), void *arg, const char *what, const char *retry)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	char	   *volatile message = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("es worker: %s failed: %s", what, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 edata->context ? errcontext("%s", edata->context) : 0,
				 errhint("%s", retry)));
		message = MemoryContextStrdup(run->cxt, edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return message;
}

typedef struct TakeArgs
{
	const EsCatalog *cat;
	text	   *stream_id;
	Oid			roleid;
} TakeArgs;

static void
TakeFn(void *arg)
{
	TakeArgs   *a = (TakeArgs *) arg;

	(void) EsSnapshotTakeAs(a->cat, a->stream_id, a->roleid);
}

/*
 * Take
 *		One automatic snapshot of a stream of agg, in a subtransaction.  On
 *		success its queue entry goes; on failure the stream is queued for a
 *		retry with backoff.  Connected to SPI, as the tables' owner.
 */
static bool
Take(Run *run, const EsCatalog *cat, AggregateRun *agg, text *stream_id, bool queued)
{
	TakeArgs	a = {cat, stream_id, agg->roleid};
	char		what[200];
	char	   *error;
	Datum		args[3];

	snprintf(what, sizeof(what), "automatic snapshot of stream \"%s\"",
			 text_to_cstring(stream_id));
	error = Guarded(run, TakeFn, &a, what,
					"It is retried after a backoff (es_snapshot_queue); es_load is not affected.");
	args[0] = PointerGetDatum(stream_id);
	if (error == NULL)
	{
		run->taken++;
		if (queued)
			Exec(&dequeue_plan, cat, args, NULL, SPI_OK_DELETE);
		if (agg->failures > 0)
		{
			agg->failures = 0;
			agg->last_error = NULL;
			agg->changed = true;
		}
		return true;
	}
	run->failed++;
	args[1] = PointerGetDatum(agg->category);
	args[2] = CStringGetTextDatum(error);
	Exec(&retry_plan, cat, args, NULL, SPI_OK_INSERT);
	agg->failures++;
	agg->last_error = error;
	agg->changed = true;
	NoteDue(run, TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000));
	return false;
}

/* Writes failures/last_error of the aggregates whose count changed. */
static void
WriteAggregateStates(Run *run, const EsCatalog *cat)
{
	for (int i = 0; i < run->naggs; i++)
	{
		AggregateRun *agg = &run->aggs[i];
		Datum		args[3];
		char		nulls[3] = {' ', ' ', 'n'};

		if (!agg->changed)
			continue;
		args[0] = PointerGetDatum(agg->category);
		if (agg->last_error)
			args[1] = CStringGetTextDatum(agg->last_error);
		else
			nulls[1] = 'n';
		Exec(&aggregate_failure_plan, cat, args, nulls, SPI_OK_UPDATE);
		agg->changed = false;
	}
}

/* Set by BeginBatch: a session holds es_snapshot_queue (see BeginBatch). */
static bool paused = false;

/*
 * BeginBatch
 *		Starts a transaction of the run, as the tables' owner, and returns
 *		the catalog; NULL (and no transaction) when this database has no es
 *		0.2.0 (dropped, or not yet updated from 0.1.0), or when automatic
 *		snapshots are paused.
 *
 * Pausing: every batch first takes RowExclusiveLock on es_snapshot_queue
 * without waiting.  A session that holds a stronger lock on it (LOCK TABLE
 * es_snapshot_queue IN EXCLUSIVE MODE, README) therefore stops the task
 * from writing anything until it commits, and the worker's other tasks go
 * on; tests/hostile.sh uses it to see what sessions alone write.
 */
static const EsCatalog *
BeginBatch(EsUserSwitch *sw)
{
	Oid			schema;
	Oid			queue;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	schema = EsExtensionSchema();
	queue = OidIsValid(schema) ? get_relname_relid("es_snapshot_queue", schema) : InvalidOid;
	paused = OidIsValid(queue) && !ConditionalLockRelationOid(queue, RowExclusiveLock);
	if (!OidIsValid(queue) || paused)
	{
		PopActiveSnapshot();
		CommitTransactionCommand();
		return NULL;
	}
	SPI_connect();
	{
		const EsCatalog *cat = EsCatalogForSchema(schema);

		EsBecomeOwner(cat, sw);
		return cat;
	}
}

static void
EndBatch(EsUserSwitch *sw)
{
	EsRestoreUser(sw);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
}

typedef struct LogicArgs
{
	const EsCatalog *cat;
	AggregateRun *agg;
	MemoryContext cxt;
} LogicArgs;

static void
LogicFn(void *arg)
{
	LogicArgs  *a = (LogicArgs *) arg;
	AggregateRun *agg = a->agg;
	MemoryContext old;
	int32		schema_version;
	text	   *fingerprint;

	if (!OidIsValid(agg->roleid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("role \"%s\" that registered the aggregate of category \"%s\" does not exist",
						agg->owner, text_to_cstring(agg->category)),
				 errhint("Register the aggregate again as the role its apply function must run as.")));
	if (!EsAggregateLogic(a->cat, agg->category, &schema_version, &fingerprint))
		return;					/* unregistered meanwhile */
	old = MemoryContextSwitchTo(a->cxt);
	agg->schema_version = schema_version;
	agg->fingerprint = fingerprint ? DatumGetTextPCopy(PointerGetDatum(fingerprint)) : NULL;
	MemoryContextSwitchTo(old);
	agg->usable = fingerprint != NULL;
}

/*
 * LoadAggregates
 *		The registry, with each aggregate's logic now.  An aggregate whose
 *		logic cannot be found is backed off.
 */
static bool
LoadAggregates(Run *run)
{
	EsUserSwitch sw;
	const EsCatalog *cat = BeginBatch(&sw);
	SPITupleTable *tt;
	MemoryContext old;
	TimestampTz now = GetCurrentTimestamp();

	if (cat == NULL)
		return false;
	Exec(&aggregates_plan, cat, NULL, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;
	run->naggs = (int) SPI_processed;
	run->aggs = MemoryContextAllocZero(run->cxt, sizeof(AggregateRun) * Max(run->naggs, 1));
	old = MemoryContextSwitchTo(run->cxt);
	for (int i = 0; i < run->naggs; i++)
	{
		HeapTuple	tuple = tt->vals[i];
		TupleDesc	desc = tt->tupdesc;
		AggregateRun *agg = &run->aggs[i];
		bool		isnull;
		Datum		d;

		agg->category = DatumGetTextPCopy(SPI_getbinval(tuple, desc, 1, &isnull));
		agg->owner = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
		agg->roleid = get_role_oid(agg->owner, true);
		agg->every = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
		d = SPI_getbinval(tuple, desc, 4, &isnull);
		agg->has_after = !isnull;
		if (!isnull)
			agg->after = datumCopy(d, false, sizeof(Interval));
		agg->position = DatumGetInt64(SPI_getbinval(tuple, desc, 5, &isnull));
		agg->registered_at = SPI_getbinval(tuple, desc, 6, &isnull);
		agg->failures = DatumGetInt32(SPI_getbinval(tuple, desc, 7, &isnull));
		d = SPI_getbinval(tuple, desc, 8, &isnull);
		agg->waiting = !isnull && DatumGetBool(d);
		d = SPI_getbinval(tuple, desc, 9, &isnull);
		agg->retry_at = isnull ? 0 : DatumGetTimestampTz(d);
		agg->automatic = agg->every > 0 || agg->has_after;
	}
	MemoryContextSwitchTo(old);

	for (int i = 0; i < run->naggs; i++)
	{
		AggregateRun *agg = &run->aggs[i];
		LogicArgs	a = {cat, agg, run->cxt};
		char		what[200];
		char	   *error;

		if (!agg->automatic)
			continue;			/* its snapshots are the application's */
		if (agg->waiting)
		{
			NoteDue(run, agg->retry_at);
			continue;
		}
		snprintf(what, sizeof(what), "automatic snapshots of category \"%s\"",
				 text_to_cstring(agg->category));
		error = Guarded(run, LogicFn, &a, what, "They are retried after a backoff.");
		if (error != NULL)
		{
			Datum		args[3];
			int			backoff = Min(1000 << Min(agg->failures, 6), 60000);

			args[0] = PointerGetDatum(agg->category);
			args[1] = CStringGetTextDatum(error);
			args[2] = Int32GetDatum(backoff);
			Exec(&aggregate_failure_plan, cat, args, NULL, SPI_OK_UPDATE);
			agg->waiting = true;
			run->failed++;
			NoteDue(run, TimestampTzPlusMilliseconds(now, backoff));
		}
		else if (agg->retry_at != 0)
		{
			/* it backed off before and runs again: clear its failure */
			agg->failures = 0;
			agg->last_error = NULL;
			agg->changed = true;
		}
	}
	EndBatch(&sw);
	return true;
}

/*
 * FollowBatch
 *		One batch of agg's category in global order: the count- and
 *		time-based snapshots its streams need, and the new position.
 */
static void
FollowBatch(Run *run, AggregateRun *agg)
{
	EsUserSwitch sw;
	const EsCatalog *cat = BeginBatch(&sw);
	int64		horizon;
	int64		position;
	int64		seen = 0;
	int64		last = 0;
	Datum		args[7];
	char		nulls[7] = {' ', ' ', ' ', ' ', ' ', ' ', ' '};
	SPITupleTable *tt;
	uint64		nrows;
	int			takes = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (cat == NULL)
		return;

	/* Everything committed below the horizon, read with a snapshot taken after it. */
	horizon = EsReadHorizon(cat);
	PushActiveSnapshot(GetLatestSnapshot());

	args[0] = PointerGetDatum(agg->category);
	args[1] = Int64GetDatum(agg->position);
	args[2] = Int64GetDatum(horizon);
	args[3] = Int64GetDatum(FOLLOW_BATCH);
	args[4] = Int32GetDatum(agg->schema_version);
	args[5] = PointerGetDatum(agg->fingerprint);
	if (agg->has_after)
		args[6] = agg->after;
	else
		nulls[6] = 'n';
	if (SPI_execute_plan(EsPlanGet(&follow_plan, cat), args, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "es snapshot task: reading category \"%s\" failed",
			 text_to_cstring(agg->category));
	tt = SPI_tuptable;
	nrows = SPI_processed;
	for (uint64 i = 0; i < nrows; i++)
	{
		bool		isnull;

		seen += DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 4, &isnull));
		last = Max(last, DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 5, &isnull)));
	}

	/*
	 * Fewer than a batch: all of the category up to the horizon was seen.
	 * Else up to the batch's last event.
	 */
	position = seen < FOLLOW_BATCH ? Max(horizon, agg->position) : last;
	if (seen >= FOLLOW_BATCH)
		run->more = true;

	for (uint64 i = 0; i < nrows; i++)
	{
		HeapTuple	tuple = tt->vals[i];
		TupleDesc	desc = tt->tupdesc;
		bool		isnull;
		text	   *stream_id = DatumGetTextPP(SPI_getbinval(tuple, desc, 1, &isnull));
		int64		version = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
		int64		first_pos = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
		int64		snapshot = DatumGetInt64(SPI_getbinval(tuple, desc, 6, &isnull));
		Datum		d;
		bool		time_set;
		TimestampTz due = 0;
		bool		queued;
		bool		backing_off = false;

		d = SPI_getbinval(tuple, desc, 7, &isnull);
		time_set = !isnull;
		if (time_set)
			due = DatumGetTimestampTz(d);
		d = SPI_getbinval(tuple, desc, 8, &isnull);
		queued = !isnull;
		if (queued)
		{
			int32		failures = DatumGetInt32(SPI_getbinval(tuple, desc, 9, &isnull));

			backing_off = failures > 0 && DatumGetTimestampTz(d) > now;
		}
		if (backing_off)
			continue;			/* the queue retries it */

		if ((agg->every > 0 && version - snapshot >= agg->every) ||
			(time_set && version > snapshot && due <= now))
		{
			if (takes == TAKE_BATCH)
			{
				/* every event before this stream's first is done with */
				position = first_pos - 1;
				run->more = true;
				break;
			}
			takes++;
			(void) Take(run, cat, agg, stream_id, queued);
		}
		else if (time_set && version > snapshot && !queued)
		{
			Datum		qargs[3] = {PointerGetDatum(stream_id),
			PointerGetDatum(agg->category), TimestampTzGetDatum(due)};

			Exec(&enqueue_plan, cat, qargs, NULL, SPI_OK_INSERT);
			NoteDue(run, due);
		}
		else if (time_set && version > snapshot)
			NoteDue(run, due);
	}
	PopActiveSnapshot();

	if (position >= 0 && position != agg->position)
	{
		Datum		pargs[4] = {PointerGetDatum(agg->category), Int64GetDatum(position),
		Int64GetDatum(agg->position), agg->registered_at};

		Exec(&position_plan, cat, pargs, NULL, SPI_OK_UPDATE);
		agg->position = position;
	}
	WriteAggregateStates(run, cat);
	EndBatch(&sw);
}

/*
 * QueueBatch
 *		The queued streams that are due: time-based snapshots and retries.
 */
static void
QueueBatch(Run *run)
{
	EsUserSwitch sw;
	const EsCatalog *cat = BeginBatch(&sw);
	Datum		arg = Int64GetDatum(QUEUE_BATCH);
	SPITupleTable *tt;
	uint64		nrows;
	bool		isnull;
	Datum		d;

	if (cat == NULL)
		return;
	Exec(&queue_due_plan, cat, &arg, NULL, SPI_OK_SELECT);
	tt = SPI_tuptable;
	nrows = SPI_processed;
	for (uint64 i = 0; i < nrows; i++)
	{
		text	   *stream_id = DatumGetTextPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 1, &isnull));
		text	   *category = DatumGetTextPP(SPI_getbinval(tt->vals[i], tt->tupdesc, 2, &isnull));
		AggregateRun *agg = FindAggregate(run, VARDATA_ANY(category), VARSIZE_ANY_EXHDR(category));
		Datum		args[2] = {PointerGetDatum(stream_id), (Datum) 0};

		if (agg == NULL || !agg->automatic)
			Exec(&dequeue_plan, cat, args, NULL, SPI_OK_DELETE);	/* unregistered, or off */
		else if (agg->waiting || !agg->usable)
		{
			/* the aggregate backs off as a whole: so does the stream */
			args[1] = TimestampTzGetDatum(Max(agg->retry_at,
											  TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000)));
			Exec(&postpone_plan, cat, args, NULL, SPI_OK_UPDATE);
		}
		else
			(void) Take(run, cat, agg, stream_id, true);
	}
	if (nrows == QUEUE_BATCH)
		run->more = true;

	Exec(&queue_next_plan, cat, NULL, NULL, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		NoteDue(run, DatumGetTimestampTz(d));
	WriteAggregateStates(run, cat);
	EndBatch(&sw);
}

/* What the refresh pass checks against: every aggregate's logic now. */
static char *
LogicKey(Run *run)
{
	StringInfoData key;

	initStringInfo(&key);
	for (int i = 0; i < run->naggs; i++)
	{
		AggregateRun *agg = &run->aggs[i];

		if (!agg->usable)
			continue;
		appendStringInfo(&key, "%s:%d:%s;", text_to_cstring(agg->category),
						 agg->schema_version, text_to_cstring(agg->fingerprint));
	}
	return key.data;
}

/*
 * RefreshBatch
 *		The next streams of the refresh pass: each whose newest snapshot is
 *		stale for its aggregate gets a current one.
 */
static void
RefreshBatch(Run *run)
{
	EsUserSwitch sw;
	const EsCatalog *cat;
	char	   *key = LogicKey(run);
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	SPITupleTable *tt;
	uint64		nrows;
	uint64		done = 0;
	int			takes = 0;
	text	   *cursor;

	if (refresh_done != NULL && strcmp(key, refresh_done) == 0)
		return;
	if (refresh_target == NULL || strcmp(key, refresh_target) != 0)
	{
		/* (another change during a pass: start it again) */
		if (refresh_target)
			pfree(refresh_target);
		refresh_target = MemoryContextStrdup(TopMemoryContext, key);
		if (refresh_cursor)
			pfree(refresh_cursor);
		refresh_cursor = NULL;
	}

	cat = BeginBatch(&sw);
	if (cat == NULL)
		return;
	if (refresh_cursor)
		args[0] = CStringGetTextDatum(refresh_cursor);
	else
		nulls[0] = 'n';
	args[1] = Int64GetDatum(REFRESH_BATCH);
	Exec(&refresh_plan, cat, args, nulls, SPI_OK_SELECT);
	tt = SPI_tuptable;
	nrows = SPI_processed;
	cursor = NULL;
	for (; done < nrows; done++)
	{
		HeapTuple	tuple = tt->vals[done];
		bool		isnull;
		text	   *stream_id = DatumGetTextPP(SPI_getbinval(tuple, tt->tupdesc, 1, &isnull));
		int32		schema_version = DatumGetInt32(SPI_getbinval(tuple, tt->tupdesc, 2, &isnull));
		Datum		fp = SPI_getbinval(tuple, tt->tupdesc, 3, &isnull);
		AggregateRun *agg = AggregateOfStream(run, stream_id);

		if (agg != NULL && agg->usable && !agg->waiting &&
			(schema_version != agg->schema_version || isnull ||
			 !TextEqual(DatumGetTextPP(fp), agg->fingerprint)))
		{
			if (takes == TAKE_BATCH)
				break;
			takes++;
			(void) Take(run, cat, agg, stream_id, false);
		}
		cursor = stream_id;
	}
	if (cursor != NULL)
	{
		if (refresh_cursor)
			pfree(refresh_cursor);
		refresh_cursor = MemoryContextStrdup(TopMemoryContext, text_to_cstring(cursor));
	}
	if (done == nrows && nrows < REFRESH_BATCH)
	{
		/* the pass is complete */
		if (refresh_done)
			pfree(refresh_done);
		refresh_done = MemoryContextStrdup(TopMemoryContext, refresh_target);
		if (refresh_cursor)
			pfree(refresh_cursor);
		refresh_cursor = NULL;
	}
	else
		run->more = true;
	WriteAggregateStates(run, cat);
	EndBatch(&sw);
}

/*
 * EsSnapshotTask
 *		The worker task (worker.c's tasks[]): one bounded batch of each kind
 *		of work; returns when to run again.
 */
long
EsSnapshotTask(void)
{
	Run			run;
	TimestampTz now;

	memset(&run, 0, sizeof(run));
	paused = false;
	run.cxt = AllocSetContextCreate(CurrentMemoryContext, "es snapshot task",
									ALLOCSET_DEFAULT_SIZES);
	if (!LoadAggregates(&run) || run.naggs == 0)
	{
		MemoryContextDelete(run.cxt);
		return paused ? PAUSED_DELAY_MS : -1;
	}
	for (int i = 0; i < run.naggs; i++)
	{
		if (run.aggs[i].usable && !run.aggs[i].waiting)
			FollowBatch(&run, &run.aggs[i]);
	}
	QueueBatch(&run);
	RefreshBatch(&run);

	if (run.taken > 0 || run.failed > 0)
	{
		char		what[ES_STATUS_TEXT];

		snprintf(what, sizeof(what), "%d snapshots taken, %d failed%s",
				 run.taken, run.failed, run.more ? " (more to do)" : "");
		EsWorkerReport(TASK_NAME, what);
	}
	MemoryContextDelete(run.cxt);

	if (paused)
		return PAUSED_DELAY_MS;
	if (run.more)
		return MORE_DELAY_MS;
	/* a logic change that fires no trigger (CREATE OR REPLACE) is seen within naptime */
	now = GetCurrentTimestamp();
	if (run.next_due != 0)
		return Max(0, Min(TimestampDifferenceMilliseconds(now, run.next_due), es_worker_naptime));
	return es_worker_naptime;
}
