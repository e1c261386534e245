/*-------------------------------------------------------------------------
 *
 * aggregate.c
 *	  Aggregates and snapshots: es_load, es_load_at, es_snapshot_save,
 *	  es_snapshot_load and es_snapshot_take.
 *
 * An aggregate's state is the left fold of its apply function over the
 * stream's upcast events (EsScanEvents), from its initial state.  A
 * snapshot is that state at a version, kept as an optimisation: es_load
 * starts from the newest *current* snapshot at or below the wanted version
 * and folds only the events after it.  Current means: taken at the
 * aggregate's schema_version with the same logic, which the fingerprint
 * says: an md5 over the apply function's definition (language, source,
 * binary, argument and result types, settings, volatility, security,
 * strictness) and over the upcaster registry (its rows and its functions'
 * definitions).  The fingerprint is computed by the statement that reads
 * the registry; each session keeps what it read (and the planned apply
 * call) until an invalidation says the registry, the upcasters or any
 * function changed, so a CREATE OR REPLACE of apply or a new upcaster is
 * seen by the next load of every session, on a standby too.  Types and
 * languages enter it by name, not oid, so that fingerprints survive
 * pg_dump/pg_restore.
 *
 * apply is called as the planner would call it in a query: a SQL function
 * whose body is a single expression is inlined (as in a PL/pgSQL loop),
 * anything else is called through fmgr.
 *
 * The fold keeps only the current state: apply runs in the per-event
 * memory context of EsScanEvents and its result is copied out, the
 * previous state freed, so memory stays flat however long the stream.
 *
 * Who runs what: apply runs as the caller of es_load and es_snapshot_take
 * (the invoking role); es_snapshots is read and written as the tables'
 * owner, so that loading needs no more than reading (SELECT on es_events)
 * and nobody writes a snapshot except through es.
 *
 * Retention: saving a snapshot deletes the stream's stale ones and, among
 * those with the saved one's logic, keeps the newest three plus the newest
 * of each power-of-two band of versions (at most ~66 per stream), so that
 * loads at old versions (temporal loads) still find a snapshot near by.
 *
 * Locks: AccessShareLock on es_events, es_aggregates and es_snapshots;
 * RowExclusiveLock on es_snapshots when saving.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/typcache.h"
#include "utils/acl.h"

#include "es.h"

PG_FUNCTION_INFO_V1(es_load);
PG_FUNCTION_INFO_V1(es_load_at);
PG_FUNCTION_INFO_V1(es_snapshot_save);
PG_FUNCTION_INFO_V1(es_snapshot_load);
PG_FUNCTION_INFO_V1(es_snapshot_take);

/* The registration of a category, with the fingerprint of its logic now. */
typedef struct Aggregate
{
	Oid			apply_oid;
	char	   *apply_signature;
	Datum		initial_state;
	int32		schema_version;
	text	   *fingerprint;
} Aggregate;

static EsPlan aggregate_plan = {
	"SELECT pg_catalog.to_regprocedure(a.apply), a.apply, a.initial_state, a.schema_version, "
	"(SELECT pg_catalog.md5(pg_catalog.concat_ws('|', l.lanname, p.prosrc, p.probin, "
	"p.proargtypes::pg_catalog.regtype[]::text, p.prorettype::pg_catalog.regtype::text, "
	"p.proconfig::text, p.provolatile, p.prosecdef, p.proisstrict, "
	"(SELECT pg_catalog.string_agg(pg_catalog.concat_ws(':', u.event_type, u.from_schema_version, "
	"u.function, ql.lanname, q.prosrc, q.probin, q.proconfig::text, q.prosecdef, q.proisstrict), "
	"',' ORDER BY u.event_type, u.from_schema_version) "
	"FROM @extschema@.es_upcasters u "
	"LEFT JOIN pg_catalog.pg_proc q ON q.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(u.function) "
	"LEFT JOIN pg_catalog.pg_language ql ON ql.oid OPERATOR(pg_catalog.=) q.prolang))) "
	"FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid OPERATOR(pg_catalog.=) p.prolang "
	"WHERE p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(a.apply)) "
	"FROM @extschema@.es_aggregates a WHERE a.category OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan current_snapshot_plan = {
	"SELECT version, state FROM @extschema@.es_snapshots "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.<=) $2 "
	"AND schema_version OPERATOR(pg_catalog.=) $3 AND fingerprint OPERATOR(pg_catalog.=) $4 "
	"ORDER BY stream_id DESC, version DESC LIMIT 1",
	4, {TEXTOID, INT8OID, INT4OID, TEXTOID}
};

static EsPlan fold_plan = {
	"SELECT " ES_EVENT_COLUMNS " FROM @extschema@.es_events "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
	"AND version OPERATOR(pg_catalog.>) $2 AND version OPERATOR(pg_catalog.<=) $3 "
	"ORDER BY stream_id, version",
	3, {TEXTOID, INT8OID, INT8OID}
};

static EsPlan first_after_plan = {
	"SELECT pg_catalog.min(version) FROM @extschema@.es_events "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1 AND recorded_at OPERATOR(pg_catalog.>) $2",
	2, {TEXTOID, TIMESTAMPTZOID}
};

static EsPlan save_plan = {
	"INSERT INTO @extschema@.es_snapshots (stream_id, version, schema_version, fingerprint, state) "
	"VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream_id, version) DO UPDATE "
	"SET schema_version = EXCLUDED.schema_version, fingerprint = EXCLUDED.fingerprint, "
	"state = EXCLUDED.state, created_at = pg_catalog.now()",
	5, {TEXTOID, INT8OID, INT4OID, TEXTOID, JSONBOID}
};

/* Stale snapshots of a stream ($2, $3: the aggregate's logic now). */
static EsPlan delete_stale_plan = {
	"DELETE FROM @extschema@.es_snapshots WHERE stream_id OPERATOR(pg_catalog.=) $1 "
	"AND (schema_version OPERATOR(pg_catalog.<>) $2 OR fingerprint IS DISTINCT FROM $3)",
	3, {TEXTOID, INT4OID, TEXTOID}
};

/* Keep the newest three and the newest of each power-of-two band. */
static EsPlan retention_plan = {
	"DELETE FROM @extschema@.es_snapshots s WHERE s.stream_id OPERATOR(pg_catalog.=) $1 "
	"AND s.version OPERATOR(pg_catalog.=) ANY (ARRAY(SELECT k.version FROM ("
	"SELECT version, pg_catalog.row_number() OVER (PARTITION BY schema_version, fingerprint "
	"ORDER BY version DESC) AS rn, pg_catalog.row_number() OVER (PARTITION BY schema_version, "
	"fingerprint, pg_catalog.floor(pg_catalog.log(2::numeric, version::numeric)) "
	"ORDER BY version DESC) AS band FROM @extschema@.es_snapshots "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1) k "
	"WHERE k.rn OPERATOR(pg_catalog.>) 3 AND k.band OPERATOR(pg_catalog.>) 1))",
	1, {TEXTOID}
};

static EsPlan snapshot_load_plan = {
	"SELECT version, schema_version, state, created_at FROM @extschema@.es_snapshots "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
	"AND ($2 IS NULL OR schema_version OPERATOR(pg_catalog.=) $2) "
	"ORDER BY stream_id DESC, version DESC LIMIT 1",
	2, {TEXTOID, INT4OID}
};

static Aggregate *LookupCategory(const EsCatalog *cat, text *category, text *stream_id,
								 bool must_exist, MemoryContext cxt);

static text *
CategoryOf(text *stream_id)
{
	const char *s = VARDATA_ANY(stream_id);
	int			len = VARSIZE_ANY_EXHDR(stream_id);
	const char *dash = memchr(s, '-', len);

	return cstring_to_text_with_len(s, dash ? dash - s : len);
}

static text *
StreamIdArgument(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("stream_id must not be NULL")));
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream_id must not be empty")));
	return PG_GETARG_TEXT_PP(0);
}

/*
 * LookupAggregate
 *		The aggregate of a stream's category, in the caller's memory context
 *		(not SPI's); NULL when there is none (unless must_exist: 42704).
 *		Must be called while connected to SPI.
 */
static Aggregate *
LookupAggregate(const EsCatalog *cat, text *stream_id, bool must_exist,
				MemoryContext cxt)
{
	text	   *category = CategoryOf(stream_id);

	return LookupCategory(cat, category, stream_id, must_exist, cxt);
}

/*
 * The session's cache of registrations, by category: reading the registry
 * and computing the fingerprint is most of what loading a short stream
 * costs.  Dropped whenever what the fingerprint covers may have changed:
 * es_aggregates or es_upcasters changed (their statement triggers send a
 * relcache invalidation, catalog.c's callback calls EsAggregateInvalidate),
 * or any function was created, replaced, altered or dropped (pg_proc).  A
 * transaction processes the invalidations committed before it starts (and
 * whenever it takes a new lock), so the next load of every session, on a
 * standby too, sees a change; an aborted transaction's own changes are
 * flushed at its abort.
 */
typedef struct CachedAggregate
{
	text	   *category;
	Aggregate  *agg;			/* NULL: none registered */
} CachedAggregate;

#define AGGREGATE_CACHE_MAX 256

static MemoryContext aggregate_cache_cxt = NULL;
static List *aggregate_cache = NIL;
static List *planned_applies = NIL;	/* PlannedApply, below */
static uint64 aggregate_cache_generation = 0;

static void
InvalidateAggregatesForFunctions(Datum arg, int cacheid, uint32 hashvalue)
{
	EsAggregateInvalidate();
}

/*
 * EsAggregateInvalidate
 *		Forget every cached registration.
 */
void
EsAggregateInvalidate(void)
{
	aggregate_cache_generation++;
	aggregate_cache = NIL;
	planned_applies = NIL;
	if (aggregate_cache_cxt != NULL)
		MemoryContextReset(aggregate_cache_cxt);
}

static Aggregate *
CopyAggregate(const Aggregate *from, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	Aggregate  *agg = palloc(sizeof(Aggregate));

	agg->apply_oid = from->apply_oid;
	agg->apply_signature = pstrdup(from->apply_signature);
	agg->initial_state = PointerGetDatum(PG_DETOAST_DATUM_COPY(from->initial_state));
	agg->schema_version = from->schema_version;
	agg->fingerprint = from->fingerprint ? DatumGetTextPCopy(PointerGetDatum(from->fingerprint)) : NULL;
	MemoryContextSwitchTo(old);
	return agg;
}

static Aggregate *FetchCategory(const EsCatalog *cat, text *category, text *stream_id,
								bool must_exist, MemoryContext cxt);

/*
 * LookupCategory
 *		LookupAggregate by category; stream_id (may be NULL) only names the
 *		stream in the error.
 */
static Aggregate *
LookupCategory(const EsCatalog *cat, text *category, text *stream_id,
			   bool must_exist, MemoryContext cxt)
{
	ListCell   *lc;
	uint64		generation;
	Aggregate  *agg;

	if (aggregate_cache_cxt == NULL)
	{
		aggregate_cache_cxt = AllocSetContextCreate(CacheMemoryContext,
													"es aggregate cache",
													ALLOCSET_SMALL_SIZES);
		CacheRegisterSyscacheCallback(PROCOID, InvalidateAggregatesForFunctions,
									  (Datum) 0);
	}

	foreach(lc, aggregate_cache)
	{
		CachedAggregate *entry = lfirst(lc);

		if (VARSIZE_ANY_EXHDR(entry->category) != VARSIZE_ANY_EXHDR(category) ||
			memcmp(VARDATA_ANY(entry->category), VARDATA_ANY(category),
				   VARSIZE_ANY_EXHDR(category)) != 0)
			continue;
		if (entry->agg != NULL)
			return CopyAggregate(entry->agg, cxt);
		if (must_exist)
			break;				/* FetchCategory says so in its words */
		return NULL;
	}

	/* An invalidation during the fetch makes its result unfit to keep. */
	generation = aggregate_cache_generation;
	agg = FetchCategory(cat, category, stream_id, must_exist, cxt);
	if (generation == aggregate_cache_generation)
	{
		MemoryContext old;
		CachedAggregate *entry;

		if (list_length(aggregate_cache) >= AGGREGATE_CACHE_MAX)
			EsAggregateInvalidate();
		old = MemoryContextSwitchTo(aggregate_cache_cxt);
		entry = palloc(sizeof(CachedAggregate));
		entry->category = DatumGetTextPCopy(PointerGetDatum(category));
		entry->agg = agg ? CopyAggregate(agg, aggregate_cache_cxt) : NULL;
		aggregate_cache = lappend(aggregate_cache, entry);
		MemoryContextSwitchTo(old);
	}
	return agg;
}

/*
 * FetchCategory
 *		Read a category's registration, and the fingerprint of its logic,
 *		from the registry.
 */
static Aggregate *
FetchCategory(const EsCatalog *cat, text *category, text *stream_id,
			  bool must_exist, MemoryContext cxt)
{
	Datum		arg = PointerGetDatum(category);
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Aggregate  *agg;
	Datum		fp;
	MemoryContext old;
	int			ret;

	/*
	 * As the owner: the fingerprint resolves every upcaster, which may live
	 * in schemas the caller cannot look into.
	 */
	ret = EsExecuteAsOwner(cat, &aggregate_plan, &arg, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading es_aggregates failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
	{
		if (must_exist)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("no aggregate of category \"%s\" is registered",
							text_to_cstring(category)),
					 stream_id ? errdetail("Stream \"%s\" belongs to category \"%s\".",
										   text_to_cstring(stream_id),
										   text_to_cstring(category)) : 0,
					 errhint("Register one with es_register_aggregate.")));
		return NULL;
	}

	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(cxt);
	agg = palloc0(sizeof(Aggregate));
	agg->apply_signature = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
	agg->apply_oid = DatumGetObjectId(SPI_getbinval(tuple, desc, 1, &isnull));
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("apply function %s of category \"%s\" does not exist",
						agg->apply_signature, text_to_cstring(category)),
				 errhint("It was dropped or renamed; register the aggregate again with a higher schema_version.")));
	agg->initial_state = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tuple, desc, 3, &isnull)));
	agg->schema_version = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
	fp = SPI_getbinval(tuple, desc, 5, &isnull);
	agg->fingerprint = isnull ? NULL : DatumGetTextPCopy(fp);
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return agg;
}

/* A fold in progress. */
typedef struct Fold
{
	Oid			apply_oid;
	Oid			event_type;
	TupleDesc	event_desc;
	MemoryContext fold_cxt;		/* the compiled call, for the whole fold */
	MemoryContext state_cxt;	/* holds state, and nothing else for long */
	ExprState  *apply;			/* apply($1, $2), planned; NULL until needed */
	ExprContext *econtext;		/* holds the two parameters */
	Datum		state;
	int64		version;
} Fold;

/*
 * Planned calls of apply functions, kept with the registrations (and
 * dropped with them): inlining a SQL function parses and analyses its body,
 * which costs more than folding a short stream.  Keyed by the function, the
 * role (inlining depends on its EXECUTE privilege) and the search_path (the
 * body's names are resolved with it).
 */
typedef struct PlannedApply
{
	Oid			apply_oid;
	Oid			event_type;
	Oid			userid;
	OverrideSearchPath *search_path;
	Expr	   *call;
} PlannedApply;

/* A copy of the kept planned call, in the current context; or NULL. */
static Expr *
CachedPlannedApply(Oid apply_oid, Oid event_type)
{
	ListCell   *lc;

	foreach(lc, planned_applies)
	{
		PlannedApply *p = lfirst(lc);

		if (p->apply_oid == apply_oid && p->event_type == event_type &&
			p->userid == GetUserId() &&
			OverrideSearchPathMatchesCurrent(p->search_path))
			return copyObject(p->call);
	}
	return NULL;
}

static void
KeepPlannedApply(Oid apply_oid, Oid event_type, Expr *call)
{
	MemoryContext old;
	PlannedApply *p;

	if (aggregate_cache_cxt == NULL)
		return;
	if (list_length(planned_applies) >= AGGREGATE_CACHE_MAX)
		EsAggregateInvalidate();
	old = MemoryContextSwitchTo(aggregate_cache_cxt);
	p = palloc(sizeof(PlannedApply));
	p->apply_oid = apply_oid;
	p->event_type = event_type;
	p->userid = GetUserId();
	p->search_path = GetOverrideSearchPath(aggregate_cache_cxt);
	p->call = copyObject(call);
	planned_applies = lappend(planned_applies, p);
	MemoryContextSwitchTo(old);
}

/*
 * PrepareApply
 *		Compile the call apply($1, $2) as the planner would plan it in a
 *		query.  A SQL apply function with a single-expression body is then
 *		inlined, as in a PL/pgSQL loop, instead of running its query
 *		through fmgr for every event (several times slower); other
 *		functions are called as before.  The planner also checks EXECUTE
 *		before it inlines, and the executor before it calls.  Done at the
 *		first event, so that a load with nothing to fold never plans.
 */
static void
PrepareApply(Fold *fold)
{
	MemoryContext old = MemoryContextSwitchTo(fold->fold_cxt);
	Param	   *state_param = makeNode(Param);
	Param	   *event_param = makeNode(Param);
	Expr	   *call;
	ParamListInfo params;

	state_param->paramkind = PARAM_EXTERN;
	state_param->paramid = 1;
	state_param->paramtype = JSONBOID;
	state_param->paramtypmod = -1;
	state_param->paramcollid = InvalidOid;
	state_param->location = -1;
	*event_param = *state_param;
	event_param->paramid = 2;
	event_param->paramtype = fold->event_type;

	call = CachedPlannedApply(fold->apply_oid, fold->event_type);
	if (call == NULL)
	{
		uint64		generation = aggregate_cache_generation;

		call = (Expr *) makeFuncExpr(fold->apply_oid, JSONBOID,
									 list_make2(state_param, event_param),
									 InvalidOid, InvalidOid, COERCE_EXPLICIT_CALL);
		call = expression_planner(call);
		if (generation == aggregate_cache_generation)
			KeepPlannedApply(fold->apply_oid, fold->event_type, call);
	}

	params = makeParamList(2);
	params->numParams = 2;
	params->params[0].ptype = JSONBOID;
	params->params[0].pflags = 0;
	params->params[1].ptype = fold->event_type;
	params->params[1].pflags = 0;

	fold->econtext = CreateStandaloneExprContext();
	fold->econtext->ecxt_param_list_info = params;
	fold->apply = ExecInitExprWithParams(call, params);
	MemoryContextSwitchTo(old);
}

static void
FoldEvent(Datum *values, bool *nulls, void *arg)
{
	Fold	   *fold = (Fold *) arg;
	ParamListInfo params;
	HeapTuple	event;
	Datum		result;
	bool		isnull;
	Datum		old_state = fold->state;
	MemoryContext old;

	if (fold->apply == NULL)
		PrepareApply(fold);
	params = fold->econtext->ecxt_param_list_info;

	event = heap_form_tuple(fold->event_desc, values, nulls);
	params->params[0].value = fold->state;
	params->params[0].isnull = false;
	params->params[1].value = HeapTupleGetDatum(event);
	params->params[1].isnull = false;
	/* in the per-event context, which is reset after this call */
	result = ExecEvalExpr(fold->apply, fold->econtext, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("apply function %s returned NULL", format_procedure(fold->apply_oid)),
				 errdetail("At event %s, version " INT64_FORMAT " of stream \"%s\".",
						   TextDatumGetCString(values[4]), DatumGetInt64(values[2]),
						   TextDatumGetCString(values[1])),
				 errhint("An apply function must return the new state as jsonb.")));

	/* Keep the new state only; the per-event context is reset next. */
	old = MemoryContextSwitchTo(fold->state_cxt);
	fold->state = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
	MemoryContextSwitchTo(old);
	pfree(DatumGetPointer(old_state));
	fold->version = DatumGetInt64(values[2]);
}

/*
 * LoadState
 *		The state of a stream at version target (PG_INT64_MAX: now), in the
 *		caller's memory context; *version is the version it is at (0 for a
 *		stream without events).  Apply runs as the current user.
 */
static Datum
LoadState(const EsCatalog *cat, text *stream_id, int64 target, Aggregate **agg_out,
		  int64 *version)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	Aggregate  *agg;
	Fold		fold;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Datum		result;

	memset(&fold, 0, sizeof(fold));
	fold.state_cxt = AllocSetContextCreate(caller_cxt, "es fold state", ALLOCSET_DEFAULT_SIZES);
	fold.fold_cxt = AllocSetContextCreate(caller_cxt, "es fold", ALLOCSET_DEFAULT_SIZES);

	SPI_connect();
	agg = LookupAggregate(cat, stream_id, true, caller_cxt);
	fold.apply_oid = agg->apply_oid;
	fold.state = PointerGetDatum(MemoryContextAlloc(fold.state_cxt,
													VARSIZE(DatumGetPointer(agg->initial_state))));
	memcpy(DatumGetPointer(fold.state), DatumGetPointer(agg->initial_state),
		   VARSIZE(DatumGetPointer(agg->initial_state)));

	/* The newest current snapshot at or below target, read as the owner. */
	if (agg->fingerprint != NULL)
	{
		int			ret;

		args[0] = PointerGetDatum(stream_id);
		args[1] = Int64GetDatum(target);
		args[2] = Int32GetDatum(agg->schema_version);
		args[3] = PointerGetDatum(agg->fingerprint);
		ret = EsExecuteAsOwner(cat, &current_snapshot_plan, args, NULL, true, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "reading es_snapshots failed: %s", SPI_result_code_string(ret));
		if (SPI_processed > 0)
		{
			bool		isnull;
			HeapTuple	tuple = SPI_tuptable->vals[0];
			MemoryContext old;

			fold.version = DatumGetInt64(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 1, &isnull));
			pfree(DatumGetPointer(fold.state));
			old = MemoryContextSwitchTo(fold.state_cxt);
			fold.state = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tuple, SPI_tuptable->tupdesc, 2, &isnull)));
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
	}

	fold.event_type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
									  CStringGetDatum("es_event"),
									  ObjectIdGetDatum(cat->schema_oid));
	fold.event_desc = lookup_rowtype_tupdesc_copy(fold.event_type, -1);
	BlessTupleDesc(fold.event_desc);
	/*
	 * Checked here: an inlined apply is never called, so the executor does
	 * not check EXECUTE on it, and the planner did so only when the kept
	 * call was planned.
	 */
	if (object_aclcheck_compat(agg->apply_oid, GetUserId()) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(agg->apply_oid));

	args[0] = PointerGetDatum(stream_id);
	args[1] = Int64GetDatum(fold.version);
	args[2] = Int64GetDatum(target);
	if (fold.version < target)
		(void) EsScanEvents(cat, &fold_plan, args, nulls, false, FoldEvent, &fold);
	SPI_finish();

	result = PointerGetDatum(PG_DETOAST_DATUM_COPY(fold.state));
	if (fold.econtext != NULL)
		FreeExprContext(fold.econtext, true);
	MemoryContextDelete(fold.fold_cxt);
	MemoryContextDelete(fold.state_cxt);
	*version = fold.version;
	if (agg_out)
		*agg_out = agg;
	return result;
}

static void
ReturnState(FunctionCallInfo fcinfo, Datum state, int64 version)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		values[2];
	bool		nulls[2] = {false, false};

	InitMaterializedSRF(fcinfo, 0);
	values[0] = state;
	values[1] = Int64GetDatum(version);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * es_load(stream_id text, at_version bigint DEFAULT NULL)
 *		RETURNS TABLE(state jsonb, version bigint)
 */
Datum
es_load(PG_FUNCTION_ARGS)
{
	text	   *stream_id = StreamIdArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	int64		target = PG_INT64_MAX;
	bool		at_version = !PG_ARGISNULL(1);
	int64		version;
	Datum		state;

	if (at_version)
	{
		target = PG_GETARG_INT64(1);
		if (target < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("at_version must not be negative"),
					 errhint("Use NULL for the current state, 0 for the initial state.")));
	}
	state = LoadState(cat, stream_id, target, NULL, &version);
	/* (PG_INT64_MAX itself, given, is a version beyond any stream) */
	if (at_version && version < target)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream \"%s\" has no version " INT64_FORMAT,
						text_to_cstring(stream_id), target),
				 errdetail("Its version is " INT64_FORMAT ".", version)));
	ReturnState(fcinfo, state, version);
	return (Datum) 0;
}

/*
 * es_load_at(stream_id text, at timestamptz)
 *		RETURNS TABLE(state jsonb, version bigint)
 *
 * The state after the longest prefix of the stream whose events were all
 * recorded at or before at (recorded_at is the appending transaction's
 * start), so no event recorded later ever counts.
 */
Datum
es_load_at(PG_FUNCTION_ARGS)
{
	text	   *stream_id = StreamIdArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	Datum		args[2];
	int64		target = PG_INT64_MAX;
	int64		version;
	Datum		state;
	bool		isnull;
	Datum		first;
	int			ret;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("at must not be NULL"),
				 errhint("Use es_load for the current state.")));
	args[0] = PointerGetDatum(stream_id);
	args[1] = PG_GETARG_DATUM(1);
	SPI_connect();
	ret = SPI_execute_plan(EsPlanGet(&first_after_plan, cat), args, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading es_events failed: %s", SPI_result_code_string(ret));
	first = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		target = DatumGetInt64(first) - 1;
	SPI_finish();

	state = LoadState(cat, stream_id, target, NULL, &version);
	ReturnState(fcinfo, state, version);
	return (Datum) 0;
}

/*
 * SaveSnapshot
 *		Writes a snapshot as the tables' owner, with the logic's fingerprint
 *		when the category has an aggregate, and applies the retention rule.
 *		Must be called while connected to SPI.
 */
static void
SaveSnapshot(const EsCatalog *cat, text *stream_id, int64 version, Datum state,
			 int32 schema_version, Aggregate *agg)
{
	EsUserSwitch sw;
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};

	args[0] = PointerGetDatum(stream_id);
	args[1] = Int64GetDatum(version);
	args[2] = Int32GetDatum(schema_version);
	if (agg && agg->fingerprint)
		args[3] = PointerGetDatum(agg->fingerprint);
	else
		nulls[3] = 'n';
	args[4] = state;

	EsBecomeOwner(cat, &sw);
	PG_TRY();
	{
		if (SPI_execute_plan(EsPlanGet(&save_plan, cat), args, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "saving the snapshot failed");
		if (agg && agg->fingerprint && schema_version == agg->schema_version)
		{
			Datum		stale_args[3] = {args[0], args[2], args[3]};

			if (SPI_execute_plan(EsPlanGet(&delete_stale_plan, cat), stale_args, NULL,
								 false, 0) != SPI_OK_DELETE)
				elog(ERROR, "deleting stale snapshots failed");
		}
		if (SPI_execute_plan(EsPlanGet(&retention_plan, cat), args, NULL, false, 0) != SPI_OK_DELETE)
			elog(ERROR, "deleting old snapshots failed");
	}
	PG_CATCH();
	{
		EsResetInvokingUser(&sw);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EsRestoreUser(&sw);
}

/*
 * es_snapshot_save(stream_id text, version bigint, state jsonb,
 *					schema_version int DEFAULT 1) RETURNS void
 */
Datum
es_snapshot_save(PG_FUNCTION_ARGS)
{
	text	   *stream_id = StreamIdArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	int64		version;
	int64		current;
	Aggregate  *agg;

	PreventCommandIfReadOnly("es_snapshot_save()");
	PreventCommandDuringRecovery("es_snapshot_save()");
	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("version, state and schema_version must not be NULL")));
	version = PG_GETARG_INT64(1);
	if (version < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("version must be at least 1"),
				 errdetail("It is " INT64_FORMAT ".", version)));
	if (PG_GETARG_INT32(3) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema_version must be at least 1")));

	SPI_connect();
	current = EsStreamVersion(cat, stream_id, false);
	if (current == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream \"%s\" does not exist", text_to_cstring(stream_id))));
	if (version > current)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream \"%s\" has no version " INT64_FORMAT,
						text_to_cstring(stream_id), version),
				 errdetail("Its version is " INT64_FORMAT ".", current)));
	agg = LookupAggregate(cat, stream_id, false, CurrentMemoryContext);
	SaveSnapshot(cat, stream_id, version, PG_GETARG_DATUM(2), PG_GETARG_INT32(3), agg);
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * es_snapshot_take(stream_id text) RETURNS bigint
 *		Folds the stream now (apply as the invoking role), saves the state
 *		as a current snapshot, returns its version.
 */
Datum
es_snapshot_take(PG_FUNCTION_ARGS)
{
	text	   *stream_id = StreamIdArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	Aggregate  *agg;
	int64		version;
	Datum		state;
	EsUserSwitch sw;

	PreventCommandIfReadOnly("es_snapshot_take()");
	PreventCommandDuringRecovery("es_snapshot_take()");

	EsBecomeUser(EsInvokingUserId(), &sw);
	state = LoadState(cat, stream_id, PG_INT64_MAX, &agg, &version);
	EsRestoreUser(&sw);
	if (version == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream \"%s\" does not exist", text_to_cstring(stream_id))));
	SPI_connect();
	SaveSnapshot(cat, stream_id, version, state, agg->schema_version, agg);
	SPI_finish();
	PG_RETURN_INT64(version);
}

/*
 * es_snapshot_load(stream_id text, only_schema_version int DEFAULT NULL)
 *		RETURNS TABLE(version bigint, schema_version int, state jsonb,
 *					  created_at timestamptz)
 *
 * The newest snapshot, current or not: for applications that keep their
 * own snapshots with es_snapshot_save.
 */
Datum
es_snapshot_load(PG_FUNCTION_ARGS)
{
	text	   *stream_id = StreamIdArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		args[2];
	char		nulls[2] = {' ', ' '};
	int			ret;

	InitMaterializedSRF(fcinfo, 0);
	args[0] = PointerGetDatum(stream_id);
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	else
		args[1] = PG_GETARG_DATUM(1);

	SPI_connect();
	ret = EsExecuteAsOwner(cat, &snapshot_load_plan, args, nulls, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading es_snapshots failed: %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		Datum		values[4];
		bool		isnull[4];

		heap_deform_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, values, isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * EsAggregateLogic
 *		For the worker's snapshot task: whether category has an aggregate,
 *		and if so the schema_version and fingerprint a current snapshot of
 *		it has now, in the caller's memory context (42883 when apply no
 *		longer exists).  Must be called while connected to SPI.
 */
bool
EsAggregateLogic(const EsCatalog *cat, text *category, int32 *schema_version,
				 text **fingerprint)
{
	Aggregate  *agg;

	agg = LookupCategory(cat, category, NULL, false, CurrentMemoryContext);
	if (agg == NULL)
		return false;
	*schema_version = agg->schema_version;
	*fingerprint = agg->fingerprint;
	return true;
}

/*
 * EsSnapshotTakeAs
 *		es_snapshot_take for the worker: folds the stream with apply running
 *		as roleid (the role that registered the aggregate), saves the state
 *		as a current snapshot as the tables' owner, and returns its version
 *		(0, and nothing saved, for a stream without events).
 */
int64
EsSnapshotTakeAs(const EsCatalog *cat, text *stream_id, Oid roleid)
{
	Aggregate  *agg;
	int64		version;
	Datum		state;
	EsUserSwitch sw;

	EsBecomeUser(roleid, &sw);
	PG_TRY();
	{
		state = LoadState(cat, stream_id, PG_INT64_MAX, &agg, &version);
	}
	PG_CATCH();
	{
		/* the (sub)transaction's abort restores the user itself */
		EsResetInvokingUser(&sw);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EsRestoreUser(&sw);
	if (version == 0)
		return 0;
	SPI_connect();
	SaveSnapshot(cat, stream_id, version, state, agg->schema_version, agg);
	SPI_finish();
	return version;
}
