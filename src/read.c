/*-------------------------------------------------------------------------
 *
 * read.c
 *	  Reading streams: es_read, es_read_backward, es_stream_version and
 *	  es_category.
 *
 * Every read that returns events goes through ReadEvents(): it runs one
 * kept query through a cursor, a chunk at a time, and stores each event as
 * an es_event row in the set-returning function's tuplestore.  Backend
 * memory therefore stays at one chunk plus what the tuplestore keeps in
 * work_mem (it spills to disk beyond that), however long the stream.
 * ReadEvents is the one place where a stored event becomes an es_event row:
 * each goes through EsUpcastTuple (upcast.c) on its way into the result.
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
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "es.h"

PG_FUNCTION_INFO_V1(es_read);
PG_FUNCTION_INFO_V1(es_read_backward);
PG_FUNCTION_INFO_V1(es_stream_version);
PG_FUNCTION_INFO_V1(es_category);

/* Events fetched from the cursor at a time. */
#define READ_CHUNK_SIZE 1000

#define EVENT_COLUMNS \
	"global_position, stream_id, version, event_id, event_type, " \
	"schema_version, data, metadata, recorded_at"

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
 * ReadEvents
 *		Runs a query that returns es_events rows (EVENT_COLUMNS, in order)
 *		and returns them as the function's result set.
 */
static void
ReadEvents(FunctionCallInfo fcinfo, EsPlan *plan, Datum *args, const char *nulls)
{
	TupleDesc	tupdesc;
	Tuplestorestate *store = MaterializeResult(fcinfo, &tupdesc);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	Portal		cursor;

	MemoryContext event_context;

	/* Upcast events are formed here, one at a time. */
	event_context = AllocSetContextCreate(CurrentMemoryContext, "es read event",
										  ALLOCSET_DEFAULT_SIZES);

	SPI_connect();
	EsUpcastBegin(cat);
	PG_TRY();
	{
		cursor = SPI_cursor_open(NULL, EsPlanGet(plan, cat), args, nulls, true);
		for (;;)
		{
			SPI_cursor_fetch(cursor, true, READ_CHUNK_SIZE);
			if (SPI_processed == 0)
				break;
			for (uint64 i = 0; i < SPI_processed; i++)
			{
				MemoryContext oldcontext = MemoryContextSwitchTo(event_context);

				tuplestore_puttuple(store, EsUpcastTuple(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc));
				MemoryContextSwitchTo(oldcontext);
				MemoryContextReset(event_context);
			}
			SPI_freetuptable(SPI_tuptable);
			CHECK_FOR_INTERRUPTS();
		}
		SPI_cursor_close(cursor);
	}
	PG_FINALLY();
	{
		EsUpcastEnd();
	}
	PG_END_TRY();
	SPI_finish();
	MemoryContextDelete(event_context);
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

	ReadEvents(fcinfo, &read_forward_plan, args, nulls);
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

	ReadEvents(fcinfo, &read_backward_plan, args, nulls);
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
