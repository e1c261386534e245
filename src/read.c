/*-------------------------------------------------------------------------
 *
 * read.c
 *	  Reading streams: es_read, es_read_backward, es_stream_version and
 *	  es_category.
 *
 * Every read that returns events goes through ReadEvents(): it runs one
 * kept query whose rows go, through a DestReceiver, one at a time into the
 * set-returning function's tuplestore.  Backend memory therefore stays at
 * what the tuplestore keeps in work_mem (it spills to disk beyond that),
 * however long the stream.  ReadEvents is the one place where a stored
 * event becomes an es_event row: each goes through EsUpcastEvent
 * (upcast.c) on its way into the result.
 *
 * All reads are read-only SPI queries on the caller's snapshot: they are
 * STABLE and work in read-only transactions and on hot standbys.
 *
 * Locks: AccessShareLock on es_events or es_streams.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/tuptable.h"
#include "funcapi.h"
#include "nodes/params.h"
#include "nodes/parsenodes.h"
#include "utils/memutils.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "es.h"

PG_FUNCTION_INFO_V1(es_read);
PG_FUNCTION_INFO_V1(es_read_backward);
PG_FUNCTION_INFO_V1(es_stream_version);
PG_FUNCTION_INFO_V1(es_category);
PG_FUNCTION_INFO_V1(es_read_all);
PG_FUNCTION_INFO_V1(es_read_category);
PG_FUNCTION_INFO_V1(es_wait);
PG_FUNCTION_INFO_V1(es_stream_hash);

#define EVENT_COLUMNS ES_EVENT_COLUMNS

/* LIMIT NULL is LIMIT ALL. */
static EsPlan read_forward_plan = {
	"SELECT " EVENT_COLUMNS " FROM @extschema@.es_events "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
	"AND version OPERATOR(pg_catalog.>=) $2 "
	"ORDER BY version LIMIT $3",
	3, {TEXTOID, INT8OID, INT8OID}
};

static EsPlan read_backward_plan = {
	"SELECT " EVENT_COLUMNS " FROM @extschema@.es_events "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
	"AND version OPERATOR(pg_catalog.<=) $2 "
	"ORDER BY version DESC LIMIT $3",
	3, {TEXTOID, INT8OID, INT8OID}
};

/*
 * In global order, up to the horizon ($2); $3: event types or NULL.
 *
 * The generic plan walks the primary key from $1 and stops after $4 rows,
 * which is right for every argument.  Left to choose, the plan cache kept
 * planning this statement for every call (the custom plans looked cheaper
 * than the generic one), and planning it probes the primary key for the
 * column's actual bounds (a reader's positions lie past the histogram):
 * 25 us more than the raw SELECT for a call that reads nothing, which is
 * what a caught-up reader's calls mostly are.
 */
static EsPlan read_all_plan = {
	"SELECT " EVENT_COLUMNS " FROM @extschema@.es_events "
	"WHERE global_position OPERATOR(pg_catalog.>) $1 "
	"AND global_position OPERATOR(pg_catalog.<=) $2 "
	"AND ($3 IS NULL OR event_type OPERATOR(pg_catalog.=) ANY ($3)) "
	"ORDER BY global_position LIMIT $4",
	4, {INT8OID, INT8OID, TEXTARRAYOID, INT8OID},
	CURSOR_OPT_GENERIC_PLAN
};

/*
 * One category in global order, through the index on
 * (es_category(stream_id), global_position); $5/$6: consumer group member
 * and size, or NULL.
 *
 * The category and the position range are one range of that index's keys,
 * (category, after) < (es_category(stream_id), global_position) <=
 * (category, horizon), ordered by its own columns, so that a kept generic
 * plan reads the category index whatever the category.  Written as
 * "es_category(stream_id) = $1 ... ORDER BY global_position", the planner
 * drops the category from the ordering (it is equal to a parameter), and
 * the generic plan then walks the primary key and filters by category:
 * for a sparse category that scans most of the table (measured: 50x slower
 * than the category index), and planning each call instead cost a third of
 * a 100-event read.  The btree starts at (category, after) and stops at
 * the end of the category; the few rows past the horizon in between (the
 * appends in flight) are filtered.
 */
static EsPlan read_category_plan = {
	"SELECT " EVENT_COLUMNS " FROM @extschema@.es_events "
	"WHERE ROW(@extschema@.es_category(stream_id), global_position) "
	"OPERATOR(pg_catalog.>) ROW($1, $2) "
	"AND ROW(@extschema@.es_category(stream_id), global_position) "
	"OPERATOR(pg_catalog.<=) ROW($1, $3) "
	"AND ($6 IS NULL OR @extschema@.es_stream_hash(stream_id) "
	"OPERATOR(pg_catalog.%) $6 OPERATOR(pg_catalog.=) $5) "
	"ORDER BY @extschema@.es_category(stream_id), global_position LIMIT $4",
	6, {TEXTOID, INT8OID, INT8OID, INT8OID, INT8OID, INT8OID},
	CURSOR_OPT_GENERIC_PLAN
};

static EsPlan newest_event_plan = {
	"SELECT pg_catalog.max(global_position) FROM @extschema@.es_events "
	"WHERE global_position OPERATOR(pg_catalog.>) $1 "
	"AND global_position OPERATOR(pg_catalog.<=) $2",
	2, {INT8OID, INT8OID}
};

static EsPlan stream_version_plan = {
	"SELECT version FROM @extschema@.es_streams "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

/*
 * MaterializeResult
 *		Sets up materialize mode for a set-returning function: a tuplestore
 *		in the per-query context, and the es_event descriptor.
 */
static Tuplestorestate *
MaterializeResult(FunctionCallInfo fcinfo, TupleDesc *tupdesc)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcontext;
	Tuplestorestate *store;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));

	oldcontext = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	if (get_call_result_type(fcinfo, NULL, tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	*tupdesc = CreateTupleDescCopy(*tupdesc);
	store = tuplestore_begin_heap(rsinfo->allowedModes & SFRM_Materialize_Random,
								  false, work_mem);
	MemoryContextSwitchTo(oldcontext);

	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = *tupdesc;
	return store;
}

/*
 * The receiver the read query's rows go to: each row goes through the
 * upcast step and then to its sink, without an intermediate copy (no SPI
 * tuple table, no cursor).  When the sink is a result tuplestore, an event
 * that needs no upcasting goes into it as stored, without being deformed.
 */
typedef struct EventReceiver
{
	DestReceiver pub;
	Tuplestorestate *store;		/* the result, or NULL: call sink */
	TupleDesc	result_desc;
	EsEventSink sink;
	void	   *sink_arg;
	uint64		count;
	MemoryContext event_context;	/* reset after each event */
	ErrorContextCallback *outer_error_context;	/* the caller's */
} EventReceiver;

static bool
ReceiveEvent(TupleTableSlot *slot, DestReceiver *self)
{
	EventReceiver *receiver = (EventReceiver *) self;
	MemoryContext oldcontext;
	ErrorContextCallback *saved_error_context;
	Datum		values[ES_EVENT_NATTS];
	bool		nulls[ES_EVENT_NATTS];

	receiver->count++;

	/* Most events read as stored: one copy, into the result. */
	if (receiver->store != NULL && !EsUpcastWanted(slot))
	{
		tuplestore_puttupleslot(receiver->store, slot);
		return true;
	}

	slot_getallattrs(slot);
	memcpy(values, slot->tts_values, sizeof(values));
	memcpy(nulls, slot->tts_isnull, sizeof(nulls));

	/*
	 * An upcaster's error names the event and the function (upcast.c); the
	 * text of our internal query, which SPI would add, would only be noise.
	 */
	saved_error_context = error_context_stack;
	error_context_stack = receiver->outer_error_context;
	oldcontext = MemoryContextSwitchTo(receiver->event_context);
	(void) EsUpcastEvent(values, nulls);
	if (receiver->store != NULL)
		tuplestore_putvalues(receiver->store, receiver->result_desc, values, nulls);
	else
		receiver->sink(values, nulls, receiver->sink_arg);
	MemoryContextSwitchTo(oldcontext);
	error_context_stack = saved_error_context;
	MemoryContextReset(receiver->event_context);

	CHECK_FOR_INTERRUPTS();
	return true;
}

static void
ReceiverStartup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	if (typeinfo->natts != ES_EVENT_NATTS)
		elog(ERROR, "a read query must return the %d columns of es_event", ES_EVENT_NATTS);
}

static void
ReceiverNoop(DestReceiver *self)
{
}

/*
 * ScanEvents
 *		Runs a query that returns es_events rows (ES_EVENT_COLUMNS, in
 *		order) and hands each, upcast, to the result tuplestore or to the
 *		sink.  With latest_snapshot, the query reads with a snapshot taken
 *		now rather than the statement's: reads in global order compute their
 *		horizon first and must then see everything that committed below it.
 *		Returns the number of events read.
 */
static uint64
ScanEvents(const EsCatalog *cat, EsPlan *plan, Datum *args, const char *nulls,
		   bool latest_snapshot, Tuplestorestate *store, TupleDesc result_desc,
		   EsEventSink sink, void *sink_arg)
{
	EventReceiver receiver;
	SPIExecuteOptions options;
	int			nargs = plan->nargs;
	int			ret;

	memset(&receiver, 0, sizeof(receiver));
	receiver.pub.receiveSlot = ReceiveEvent;
	receiver.pub.rStartup = ReceiverStartup;
	receiver.pub.rShutdown = ReceiverNoop;
	receiver.pub.rDestroy = ReceiverNoop;
	receiver.pub.mydest = DestNone;
	receiver.store = store;
	receiver.result_desc = result_desc;
	receiver.sink = sink;
	receiver.sink_arg = sink_arg;
	receiver.event_context = AllocSetContextCreate(CurrentMemoryContext, "es read event",
												   ALLOCSET_DEFAULT_SIZES);
	receiver.outer_error_context = error_context_stack;

	memset(&options, 0, sizeof(options));
	options.params = makeParamList(nargs);
	for (int i = 0; i < nargs; i++)
	{
		ParamExternData *param = &options.params->params[i];

		param->value = args[i];
		param->isnull = (nulls[i] == 'n');
		param->pflags = PARAM_FLAG_CONST;
		param->ptype = plan->argtypes[i];
	}
	options.read_only = true;
	options.dest = (DestReceiver *) &receiver;

	SPI_connect();
	EsUpcastBegin(cat);
	PG_TRY();
	{
		if (latest_snapshot)
			PushActiveSnapshot(GetLatestSnapshot());
		ret = SPI_execute_plan_extended(EsPlanGet(plan, cat), &options);
		if (ret < 0)
			elog(ERROR, "reading events failed: %s", SPI_result_code_string(ret));
		if (latest_snapshot)
			PopActiveSnapshot();
	}
	PG_FINALLY();
	{
		EsUpcastEnd();
	}
	PG_END_TRY();
	SPI_finish();
	MemoryContextDelete(receiver.event_context);
	return receiver.count;
}

/*
 * EsScanEvents
 *		The one place where stored events become es_event values, for C
 *		callers that fold or dispatch them: runs plan (a query returning
 *		ES_EVENT_COLUMNS) and calls sink once per event, upcast, in a memory
 *		context that is reset after each call.  Returns the number of events.
 */
uint64
EsScanEvents(const EsCatalog *cat, EsPlan *plan, Datum *args, const char *nulls,
			 bool latest_snapshot, EsEventSink sink, void *sink_arg)
{
	return ScanEvents(cat, plan, args, nulls, latest_snapshot, NULL, NULL,
					  sink, sink_arg);
}

/*
 * ReadEvents
 *		ScanEvents into the set-returning function's result.
 */
static void
ReadEvents(FunctionCallInfo fcinfo, EsPlan *plan, Datum *args, const char *nulls,
		   bool latest_snapshot)
{
	TupleDesc	tupdesc;
	Tuplestorestate *store = MaterializeResult(fcinfo, &tupdesc);

	(void) ScanEvents(EsCatalogGet(fcinfo), plan, args, nulls, latest_snapshot,
					  store, tupdesc, NULL, NULL);
}

static text *
StreamIdArgument(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream_id must not be NULL")));
	return PG_GETARG_TEXT_PP(0);
}

/* max_count: NULL (no limit) or a count >= 0; passed on as LIMIT. */
static void
MaxCountArgument(FunctionCallInfo fcinfo, int argno, Datum *arg, char *null)
{
	if (PG_ARGISNULL(argno))
	{
		*arg = (Datum) 0;
		*null = 'n';
		return;
	}
	if (PG_GETARG_INT64(argno) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_count must not be negative"),
				 errhint("Use NULL to read without a limit.")));
	*arg = PG_GETARG_DATUM(argno);
	*null = ' ';
}

/*
 * es_read(stream_id text, from_version bigint DEFAULT 1,
 *		   max_count bigint DEFAULT NULL) RETURNS SETOF es_event
 */
Datum
es_read(PG_FUNCTION_ARGS)
{
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};

	args[0] = PointerGetDatum(StreamIdArgument(fcinfo));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("from_version must not be NULL"),
				 errhint("Versions start at 1.")));
	if (PG_GETARG_INT64(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_version must be at least 1"),
				 errdetail("Versions start at 1.")));
	args[1] = PG_GETARG_DATUM(1);
	MaxCountArgument(fcinfo, 2, &args[2], &nulls[2]);

	ReadEvents(fcinfo, &read_forward_plan, args, nulls, false);
	return (Datum) 0;
}

/*
 * es_read_backward(stream_id text, from_version bigint DEFAULT NULL,
 *					max_count bigint DEFAULT NULL) RETURNS SETOF es_event
 *
 * from_version NULL: from the newest event.
 */
Datum
es_read_backward(PG_FUNCTION_ARGS)
{
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};

	args[0] = PointerGetDatum(StreamIdArgument(fcinfo));
	if (PG_ARGISNULL(1))
		args[1] = Int64GetDatum(PG_INT64_MAX);
	else if (PG_GETARG_INT64(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("from_version must be at least 1"),
				 errhint("Use NULL to read from the newest event.")));
	else
		args[1] = PG_GETARG_DATUM(1);
	MaxCountArgument(fcinfo, 2, &args[2], &nulls[2]);

	ReadEvents(fcinfo, &read_backward_plan, args, nulls, false);
	return (Datum) 0;
}

/*
 * EsStreamVersion
 *		A stream's current version, 0 when it does not exist.  read_only
 *		reads with the caller's snapshot; otherwise (inside a volatile
 *		function, READ COMMITTED) with a fresh one.  Must be called while
 *		connected to SPI.
 */
int64
EsStreamVersion(const EsCatalog *cat, text *stream_id, bool read_only)
{
	Datum		arg = PointerGetDatum(stream_id);
	int			ret;
	bool		isnull;

	ret = SPI_execute_plan(EsPlanGet(&stream_version_plan, cat), &arg, NULL,
						   read_only, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the stream version failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * EsNewestEventUpTo
 *		The highest position of a committed event in (after_position,
 *		horizon], or after_position when there is none, read with a snapshot
 *		taken now (after the caller computed the horizon).  Must be called
 *		while connected to SPI.
 */
int64
EsNewestEventUpTo(const EsCatalog *cat, int64 after_position, int64 horizon)
{
	Datum		args[2];
	int			ret;
	bool		isnull;
	Datum		newest;

	args[0] = Int64GetDatum(after_position);
	args[1] = Int64GetDatum(horizon);
	ret = SPI_execute_snapshot(EsPlanGet(&newest_event_plan, cat), args, NULL,
							   GetLatestSnapshot(), InvalidSnapshot, true, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading the newest position failed: %s", SPI_result_code_string(ret));
	newest = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	/* es_wait may come here many times in one call */
	SPI_freetuptable(SPI_tuptable);
	return isnull ? after_position : DatumGetInt64(newest);
}

/*
 * es_stream_version(stream_id text) RETURNS bigint
 */
Datum
es_stream_version(PG_FUNCTION_ARGS)
{
	text	   *stream_id = StreamIdArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	int64		version;

	SPI_connect();
	version = EsStreamVersion(cat, stream_id, true);
	SPI_finish();
	PG_RETURN_INT64(version);
}

/*
 * es_category(stream_id text) RETURNS text
 *		The part of the stream id before the first '-'; the whole id when it
 *		has none.  IMMUTABLE and STRICT, so it can be used in indexes.
 */
Datum
es_category(PG_FUNCTION_ARGS)
{
	text	   *stream_id = PG_GETARG_TEXT_PP(0);
	const char *s = VARDATA_ANY(stream_id);
	int			len = VARSIZE_ANY_EXHDR(stream_id);
	const char *dash = memchr(s, '-', len);

	if (dash == NULL)
		PG_RETURN_TEXT_P(stream_id);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(s, dash - s));
}

/*
 * Reads in global order
 */

static int64
AfterPositionArgument(FunctionCallInfo fcinfo, int argno)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("after_position must not be NULL"),
				 errhint("Use 0 to read from the first event.")));
	if (PG_GETARG_INT64(argno) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("after_position must not be negative"),
				 errhint("Use 0 to read from the first event.")));
	return PG_GETARG_INT64(argno);
}

/*
 * es_read_all(after_position bigint DEFAULT 0, max_count bigint DEFAULT 1000,
 *			   event_types text[] DEFAULT NULL) RETURNS SETOF es_event
 *
 * Events after after_position, in global order, up to the horizon: never
 * one while an event with a lower position can still commit.
 */
Datum
es_read_all(PG_FUNCTION_ARGS)
{
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};

	args[0] = Int64GetDatum(AfterPositionArgument(fcinfo, 0));
	MaxCountArgument(fcinfo, 1, &args[3], &nulls[3]);
	if (PG_ARGISNULL(2))
		nulls[2] = 'n';
	else
		args[2] = PG_GETARG_DATUM(2);

	args[1] = Int64GetDatum(EsReadHorizon(cat));
	ReadEvents(fcinfo, &read_all_plan, args, nulls, true);
	return (Datum) 0;
}

/*
 * es_read_category(category text, after_position bigint DEFAULT 0,
 *					max_count bigint DEFAULT 1000, group_member int DEFAULT NULL,
 *					group_size int DEFAULT NULL) RETURNS SETOF es_event
 *
 * Like es_read_all, for the streams of one category; with a consumer group,
 * only the streams whose es_stream_hash modulo group_size is group_member.
 */
Datum
es_read_category(PG_FUNCTION_ARGS)
{
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	Datum		args[6];
	char		nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("category must not be NULL")));
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("category must not be empty")));
	args[0] = PointerGetDatum(PG_GETARG_TEXT_PP(0));
	args[1] = Int64GetDatum(AfterPositionArgument(fcinfo, 1));
	MaxCountArgument(fcinfo, 2, &args[3], &nulls[3]);

	if (PG_ARGISNULL(3) != PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("group_member and group_size must be given together"),
				 errhint("Leave both NULL to read the whole category.")));
	if (PG_ARGISNULL(3))
	{
		nulls[4] = 'n';
		nulls[5] = 'n';
	}
	else
	{
		int32		member = PG_GETARG_INT32(3);
		int32		size = PG_GETARG_INT32(4);

		if (size < 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("group_size must be at least 1"),
					 errdetail("It is %d.", size)));
		if (member < 0 || member >= size)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("group_member must be between 0 and group_size - 1"),
					 errdetail("group_member is %d, group_size is %d.", member, size)));
		args[4] = Int64GetDatum((int64) member);
		args[5] = Int64GetDatum((int64) size);
	}

	args[2] = Int64GetDatum(EsReadHorizon(cat));
	ReadEvents(fcinfo, &read_category_plan, args, nulls, true);
	return (Datum) 0;
}

/*
 * es_wait(after_position bigint, timeout_ms int DEFAULT 10000) RETURNS bigint
 *
 * Blocks until es_read_all can return an event after after_position (and
 * returns the newest readable position), or until the timeout (and returns
 * after_position).  Woken by commits, not by a timer.
 */
Datum
es_wait(PG_FUNCTION_ARGS)
{
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	int64		after = AfterPositionArgument(fcinfo, 0);
	int32		timeout_ms;
	int64		newest;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout_ms must not be NULL")));
	timeout_ms = PG_GETARG_INT32(1);
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout_ms must not be negative")));

	SPI_connect();
	newest = EsWaitForHorizon(cat, after, timeout_ms);
	SPI_finish();
	PG_RETURN_INT64(newest);
}

/*
 * es_stream_hash(stream_id text) RETURNS bigint
 *
 * The hash that splits a category among a consumer group: 64-bit FNV-1a of
 * the stream id's bytes (in the database encoding), with the top bit
 * cleared so that it is a non-negative bigint.  Member k of a group of n
 * gets the streams whose hash modulo n is k.  Stable across versions,
 * platforms and PostgreSQL releases; a client can compute it too.
 */
Datum
es_stream_hash(PG_FUNCTION_ARGS)
{
	text	   *stream_id = PG_GETARG_TEXT_PP(0);
	const unsigned char *s = (const unsigned char *) VARDATA_ANY(stream_id);
	int			len = VARSIZE_ANY_EXHDR(stream_id);
	uint64		hash = UINT64CONST(0xcbf29ce484222325);

	for (int i = 0; i < len; i++)
	{
		hash ^= s[i];
		hash *= UINT64CONST(0x100000001b3);
	}
	PG_RETURN_INT64((int64) (hash & UINT64CONST(0x7fffffffffffffff)));
}
