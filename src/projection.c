/*-------------------------------------------------------------------------
 *
 * projection.c
 *	  Projections: read models kept by handlers that es feeds events, inline
 *	  in the appending transaction, or from a checkpoint (async, manual).
 *
 * Inline projections run in the appending transaction.  A row trigger on
 * es_events hands each event es_append inserts (or logical replication
 * applies), upcast, to the inline handlers that want its type, in name
 * order, as the appending role; its WHEN clause (es_projection_wanted)
 * keeps events that no inline projection wants, and rows a restore
 * inserts, from even queueing a trigger event.  The list of inline
 * projections is cached per backend and dropped when es_projections
 * changes (a statement trigger invalidates its relcache entry).
 *
 * Async and manual projections are fed in the gap-free global order from
 * their checkpoint (FeedProjection): the events after it up to the horizon
 * (order.c), a bounded batch at a time, each batch in a subtransaction
 * whose last statement moves the checkpoint, so every event takes effect
 * exactly once.  When a handler fails, its batch is rolled back, the events
 * before the failing one are fed again, and the projection stops there
 * (state failed, last_error, failing_position) while the others go on.
 * The worker feeds async projections (EsProjectionTask), one batch of each
 * per turn so that a slow one cannot starve the others; es_projection_run
 * feeds async and manual ones from SQL.
 *
 * Who runs what: handlers and reset functions run as the role that caused
 * the call (the appender, the caller of es_projection_run/rebuild); in the
 * worker as the role that registered the projection, which must also be
 * allowed to read es_events.  The checkpoint is written as the tables'
 * owner.
 *
 * Locks: a change of what projections exist (es_projections_changed)
 * takes ShareLock on es_events until commit, so that every append either
 * committed before the change or sees it; an inline rebuild holds the same
 * lock while it replays, so no append is lost or doubled.  Feeding,
 * rebuilding and skipping lock the projection's es_projections row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "replication/logicalworker.h"
#include "storage/condition_variable.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/typcache.h"
#include "utils/wait_event.h"

#include "es.h"
#include "launcher.h"

PG_FUNCTION_INFO_V1(es_projections_changed);
PG_FUNCTION_INFO_V1(es_projection_wanted);
PG_FUNCTION_INFO_V1(es_projection_dispatch);
PG_FUNCTION_INFO_V1(es_projection_run);
PG_FUNCTION_INFO_V1(es_projection_rebuild);
PG_FUNCTION_INFO_V1(es_projection_wait);
PG_FUNCTION_INFO_V1(es_projection_head);

/*
 * A batch: at most this many events handed to the handler, from at most
 * this many positions, in one subtransaction (in the worker, one
 * transaction).  The window keeps a projection of a rare event type from
 * reading the whole store in one go; its checkpoint moves to the end of
 * the window when the batch handled fewer events than it could, so steady
 * state reads only what is new.
 */
#define BATCH_EVENTS		1000
#define BATCH_POSITIONS		100000

/* How often a rebuild reports its progress. */
#define PROGRESS_INTERVAL_MS 1000

/* Worker: a projection whose batch failed outside its handler waits. */
#define MIN_BACKOFF_MS		1000
#define MAX_BACKOFF_MS		60000

/* A registered projection, as its es_projections row says. */
typedef struct Projection
{
	char	   *name;
	char		mode;			/* 'i'nline, 'a'sync, 'm'anual */
	char	   *state;
	int64		position;
	Oid			handler_oid;	/* InvalidOid: the function is gone */
	char	   *handler_text;
	Oid			reset_oid;		/* InvalidOid: none */
	Datum		event_types;	/* text[]; 0 when NULL (every type) */
	char	   *owner;
} Projection;

/* Feeding a handler: the sink of EsScanEvents. */
typedef struct Feed
{
	Projection *proj;
	FmgrInfo	flinfo;
	TupleDesc	event_desc;
	int64		current;		/* position of the event being handled */
	int64		last_done;		/* position of the last event handled */
	int64		count;
	bool		in_handler;
	/* rebuild progress */
	bool		progress;
	int64		total;
	TimestampTz started;
	TimestampTz last_notice;
} Feed;

/* An inline projection, as the per-backend list keeps it. */
typedef struct InlineProjection
{
	char	   *name;
	Oid			handler_oid;
	FmgrInfo	flinfo;
	int			ntypes;			/* -1: every type */
	char	  **types;
	int		   *type_lens;
	Oid			owner_oid;		/* InvalidOid: the role no longer exists */
} InlineProjection;

static MemoryContext inline_cxt = NULL;
static InlineProjection *inline_list = NULL;
static int	inline_count = 0;
static bool inline_valid = false;
static uint64 inline_generation = 0;	/* catalog generation it was built for */
static Oid	projections_relid = InvalidOid;
static TupleDesc inline_event_desc = NULL;
static int	inline_event_attnums[ES_EVENT_NATTS];	/* es_event column → es_events attnum */
static int	dispatch_depth = 0;
static bool callbacks_registered = false;
static bool broadcast_at_commit = false;

static EsPlan load_inline_plan = {
	"SELECT name, pg_catalog.to_regprocedure(handler), event_types, "
	"pg_catalog.to_regrole(owner) "
	"FROM @extschema@.es_projections WHERE mode OPERATOR(pg_catalog.=) 'inline' "
	"ORDER BY name",
	0, {InvalidOid}
};

#define PROJECTION_COLUMNS \
	"name, mode, state, position, pg_catalog.to_regprocedure(handler), handler, " \
	"pg_catalog.to_regprocedure(reset), event_types, owner " \
	"FROM @extschema@.es_projections WHERE name OPERATOR(pg_catalog.=) $1"

static EsPlan lock_projection_plan = {
	"SELECT " PROJECTION_COLUMNS " FOR UPDATE",
	1, {TEXTOID}
};

static EsPlan try_lock_projection_plan = {
	"SELECT " PROJECTION_COLUMNS " FOR UPDATE SKIP LOCKED",
	1, {TEXTOID}
};

static EsPlan checkpoint_plan = {
	"UPDATE @extschema@.es_projections SET position = $2, state = $3, "
	"last_error = $4, failing_position = $5, updated_at = pg_catalog.now() "
	"WHERE name OPERATOR(pg_catalog.=) $1",
	5, {TEXTOID, INT8OID, TEXTOID, TEXTOID, INT8OID}
};

static EsPlan wait_position_plan = {
	"SELECT mode, position FROM @extschema@.es_projections "
	"WHERE name OPERATOR(pg_catalog.=) $1",
	1, {TEXTOID}
};

static EsPlan async_names_plan = {
	"SELECT name FROM @extschema@.es_projections "
	"WHERE mode OPERATOR(pg_catalog.=) 'async' "
	"AND state OPERATOR(pg_catalog.<>) 'failed' ORDER BY name",
	0, {InvalidOid}
};

/*
 * The events of a batch: (from, to] in global order, at most $3 (NULL: no
 * limit).  Planned per call: how selective the event types are decides the
 * plan.
 */
static EsPlan feed_all_plan = {
	"SELECT " ES_EVENT_COLUMNS " FROM @extschema@.es_events "
	"WHERE global_position OPERATOR(pg_catalog.>) $1 "
	"AND global_position OPERATOR(pg_catalog.<=) $2 "
	"ORDER BY global_position LIMIT $3",
	3, {INT8OID, INT8OID, INT8OID}, CURSOR_OPT_CUSTOM_PLAN
};

static EsPlan feed_types_plan = {
	"SELECT " ES_EVENT_COLUMNS " FROM @extschema@.es_events "
	"WHERE global_position OPERATOR(pg_catalog.>) $1 "
	"AND global_position OPERATOR(pg_catalog.<=) $2 "
	"AND event_type OPERATOR(pg_catalog.=) ANY ($4) "
	"ORDER BY global_position LIMIT $3",
	4, {INT8OID, INT8OID, INT8OID, TEXTARRAYOID}, CURSOR_OPT_CUSTOM_PLAN
};

static EsPlan count_all_plan = {
	"SELECT pg_catalog.count(*) FROM @extschema@.es_events "
	"WHERE global_position OPERATOR(pg_catalog.<=) $1",
	1, {INT8OID}
};

static EsPlan count_types_plan = {
	"SELECT pg_catalog.count(*) FROM @extschema@.es_events "
	"WHERE global_position OPERATOR(pg_catalog.<=) $1 "
	"AND event_type OPERATOR(pg_catalog.=) ANY ($2)",
	2, {INT8OID, TEXTARRAYOID}, CURSOR_OPT_CUSTOM_PLAN
};

/*
 * Per-backend state
 */

static void
InvalidateInlineForRelation(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == projections_relid)
		inline_valid = false;
}

static void
InvalidateInlineForFunctions(Datum arg, int cacheid, uint32 hashvalue)
{
	/* A handler dropped and created again resolves to another oid. */
	if (inline_count > 0)
		inline_valid = false;
}

static void
ProjectionXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (broadcast_at_commit && EsProjectionProgress() != NULL)
				ConditionVariableBroadcast(EsProjectionProgress());
			broadcast_at_commit = false;
			dispatch_depth = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			broadcast_at_commit = false;
			dispatch_depth = 0;
			break;
		default:
			break;
	}
}

static void
RegisterCallbacks(void)
{
	if (callbacks_registered)
		return;
	CacheRegisterRelcacheCallback(InvalidateInlineForRelation, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, InvalidateInlineForFunctions, (Datum) 0);
	RegisterXactCallback(ProjectionXactCallback, NULL);
	callbacks_registered = true;
}

/* The es_event row type's descriptor, in the caller's memory context. */
static TupleDesc
EventDesc(const EsCatalog *cat)
{
	Oid			typid;
	TupleDesc	desc;

	typid = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
							CStringGetDatum("es_event"),
							ObjectIdGetDatum(cat->schema_oid));
	if (!OidIsValid(typid))
		elog(ERROR, "type es_event of extension es does not exist");
	desc = lookup_rowtype_tupdesc_copy(typid, -1);
	BlessTupleDesc(desc);
	return desc;
}

/*
 * EnsureInlineList
 *		The list of inline projections, loaded if it was dropped (not while
 *		a dispatch is in progress in this backend: that one goes on with the
 *		list it started with).  Must be called while connected to SPI.
 */
static void LoadInlineList(const EsCatalog *cat);

static void
EnsureInlineList(const EsCatalog *cat)
{
	RegisterCallbacks();
	if (inline_valid && inline_generation == cat->generation)
		return;
	if (dispatch_depth > 0 && inline_list != NULL)
		return;

	if (inline_cxt == NULL)
		inline_cxt = AllocSetContextCreate(CacheMemoryContext, "es inline projections",
										   ALLOCSET_SMALL_SIZES);
	MemoryContextReset(inline_cxt);
	inline_list = NULL;
	inline_count = 0;
	inline_event_desc = NULL;

	/* Set first: an invalidation arriving while we read means read again. */
	inline_valid = true;
	inline_generation = cat->generation;
	projections_relid = get_relname_relid("es_projections", cat->schema_oid);
	if (!OidIsValid(projections_relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"es_projections\" of extension \"es\" does not exist"),
				 errhint("Run ALTER EXTENSION es UPDATE.")));

	PG_TRY();
	{
		LoadInlineList(cat);
	}
	PG_CATCH();
	{
		inline_valid = false;
		inline_count = 0;
		PG_RE_THROW();
	}
	PG_END_TRY();
}

static void
LoadInlineList(const EsCatalog *cat)
{
	MemoryContext old;
	int			ret;

	ret = SPI_execute_plan(EsPlanGet(&load_inline_plan, cat), NULL, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading es_projections failed: %s", SPI_result_code_string(ret));

	old = MemoryContextSwitchTo(inline_cxt);
	inline_list = palloc0(sizeof(InlineProjection) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		InlineProjection *p = &inline_list[inline_count];
		bool		isnull;
		Datum		types;

		p->name = TextDatumGetCString(SPI_getbinval(tuple, desc, 1, &isnull));
		p->handler_oid = DatumGetObjectId(SPI_getbinval(tuple, desc, 2, &isnull));
		if (isnull)
			p->handler_oid = InvalidOid;
		else
			fmgr_info_cxt(p->handler_oid, &p->flinfo, inline_cxt);
		p->owner_oid = DatumGetObjectId(SPI_getbinval(tuple, desc, 4, &isnull));
		if (isnull)
			p->owner_oid = InvalidOid;
		types = SPI_getbinval(tuple, desc, 3, &isnull);
		if (isnull)
			p->ntypes = -1;
		else
		{
			Datum	   *elems;
			bool	   *elem_nulls;

			deconstruct_array(DatumGetArrayTypeP(types), TEXTOID, -1, false,
							  TYPALIGN_INT, &elems, &elem_nulls, &p->ntypes);
			p->types = palloc(sizeof(char *) * Max(p->ntypes, 1));
			p->type_lens = palloc(sizeof(int) * Max(p->ntypes, 1));
			for (int t = 0; t < p->ntypes; t++)
			{
				text	   *type = DatumGetTextPP(elems[t]);

				p->type_lens[t] = VARSIZE_ANY_EXHDR(type);
				p->types[t] = pnstrdup(VARDATA_ANY(type), p->type_lens[t]);
			}
		}
		inline_count++;
	}

	if (inline_count > 0)
	{
		Relation	events = RelationIdGetRelation(cat->events_relid);
		TupleDesc	events_desc = RelationGetDescr(events);

		/* es_event's columns, found in es_events by name */
		inline_event_desc = EventDesc(cat);
		for (int c = 0; c < inline_event_desc->natts; c++)
		{
			const char *column = NameStr(TupleDescAttr(inline_event_desc, c)->attname);
			int			attnum = 0;

			for (int a = 0; a < events_desc->natts; a++)
				if (!TupleDescAttr(events_desc, a)->attisdropped &&
					strcmp(NameStr(TupleDescAttr(events_desc, a)->attname), column) == 0)
					attnum = a + 1;
			if (attnum == 0)
				elog(ERROR, "es_events has no column \"%s\"", column);
			inline_event_attnums[c] = attnum;
		}
		RelationClose(events);
	}
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
}

static bool
InlineWants(const InlineProjection *p, const char *type, int len)
{
	if (p->ntypes < 0)
		return true;
	for (int t = 0; t < p->ntypes; t++)
		if (p->type_lens[t] == len && memcmp(p->types[t], type, len) == 0)
			return true;
	return false;
}

/*
 * Registry changes
 */

/*
 * es_projections_changed() RETURNS trigger
 *		Statement trigger on es_projections, for changes of what projections
 *		exist: every session drops its list of inline projections when this
 *		transaction commits, and appends wait until then, so that each one
 *		either committed before the change or sees it.
 */
Datum
es_projections_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const EsCatalog *cat;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_projections_changed() must be called as a trigger")));
	cat = EsCatalogForSchema(RelationGetNamespace(trigdata->tg_relation));
	LockRelationOid(cat->events_relid, ShareLock);
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);	/* ignored for AFTER triggers */
}

/*
 * Inline projections
 */

/*
 * Does any inline projection of the current database want this event type?
 * The list is reloaded when the registry's generation moved on.
 */
static bool
AnyInlineWants(const EsCatalog *cat, text *event_type)
{
	bool		wanted = false;

	if (!(inline_valid && inline_generation == cat->generation))
	{
		SPI_connect();
		EnsureInlineList(cat);
		SPI_finish();
	}
	for (int i = 0; i < inline_count && !wanted; i++)
		wanted = InlineWants(&inline_list[i], VARDATA_ANY(event_type),
							 VARSIZE_ANY_EXHDR(event_type));
	return wanted;
}

/*
 * es_projection_wanted(event_type text) RETURNS boolean
 *		The WHEN clause of the dispatch trigger: whether an event being
 *		inserted now goes to an inline projection.  Only rows es_append
 *		writes, or logical replication applies, are dispatched: a restore
 *		brings its read models with it and must not apply events again.
 */
Datum
es_projection_wanted(PG_FUNCTION_ARGS)
{
	text	   *event_type = PG_GETARG_TEXT_PP(0);

	if (!EsAppendInProgress() && !IsLogicalWorker())
		PG_RETURN_BOOL(false);

	PG_RETURN_BOOL(AnyInlineWants(EsCatalogGet(fcinfo), event_type));
}

typedef struct HandlerErrorContext
{
	const char *projection;
	Datum	   *values;			/* the event, as es_event columns */
} HandlerErrorContext;

static void
HandlerErrorCallback(void *arg)
{
	HandlerErrorContext *ctx = (HandlerErrorContext *) arg;

	errcontext("projection \"%s\" handling event %s at position " INT64_FORMAT
			   " (stream \"%s\", version " INT64_FORMAT ")",
			   ctx->projection,
			   TextDatumGetCString(ctx->values[4]),
			   DatumGetInt64(ctx->values[0]),
			   TextDatumGetCString(ctx->values[1]),
			   DatumGetInt64(ctx->values[2]));
}

/* The permission check the executor would have made before a call. */
static void
CheckMayCall(Oid fn_oid, Oid roleid)
{
	if (object_aclcheck_compat(fn_oid, roleid) != ACLCHECK_OK)
		aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION, get_func_name(fn_oid));
}

/*
 * CallHandler
 *		Calls a handler (event es_event) RETURNS void with one event.
 */
static void
CallHandler(FmgrInfo *flinfo, const char *projection, TupleDesc event_desc,
			Datum *values, bool *nulls)
{
	LOCAL_FCINFO(fcinfo, 1);
	ErrorContextCallback errcallback;
	HandlerErrorContext errctx;
	HeapTuple	event;

	event = heap_form_tuple(event_desc, values, nulls);
	errctx.projection = projection;
	errctx.values = values;
	errcallback.callback = HandlerErrorCallback;
	errcallback.arg = &errctx;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = HeapTupleGetDatum(event);
	fcinfo->args[0].isnull = false;
	(void) FunctionCallInvoke(fcinfo);

	error_context_stack = errcallback.previous;
	heap_freetuple(event);
}

static void
CallHandlerAs(FmgrInfo *flinfo, const char *projection, Datum *values,
			  bool *nulls, Oid roleid)
{
	EsUserSwitch sw;

	EsBecomeUser(roleid, &sw);
	PG_TRY();
	{
		CallHandler(flinfo, projection, inline_event_desc, values, nulls);
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
 * CallInline
 *		One event to one inline projection's handler, as roleid; nested:
 *		inside another dispatch in this backend.
 */
static void
CallInline(InlineProjection *p, Datum *values, bool *nulls, Oid roleid,
		   bool nested)
{
	FmgrInfo	private_flinfo;
	FmgrInfo   *flinfo = &p->flinfo;

	if (!OidIsValid(p->handler_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the handler of projection \"%s\" does not exist", p->name),
				 errhint("Create the function again, or unregister the projection.")));

	/*
	 * Function handlers keep per-call state in fn_extra, which a nested call
	 * must not share.
	 */
	if (nested)
	{
		fmgr_info_copy(&private_flinfo, flinfo, CurrentMemoryContext);
		flinfo = &private_flinfo;
	}

	CheckMayCall(p->handler_oid, roleid);
	CallHandlerAs(flinfo, p->name, values, nulls, roleid);
}

/*
 * UpcastAs
 *		Upcasts an event in place, running the upcasters as roleid: user
 *		code, like the handlers, never runs as the tables' owner.
 */
static void
UpcastAs(const EsCatalog *cat, Datum *values, bool *nulls, Oid roleid)
{
	EsUserSwitch sw;

	EsBecomeUser(roleid, &sw);
	EsUpcastBegin(cat);
	PG_TRY();
	{
		(void) EsUpcastEvent(values, nulls);
	}
	PG_CATCH();
	{
		EsUpcastEnd();
		EsResetInvokingUser(&sw);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EsUpcastEnd();
	EsRestoreUser(&sw);
}

/*
 * DispatchRow
 *		A row of es_events (its columns in attribute order), upcast, to every
 *		inline projection that wants its type, as the appending role.
 */
static void
DispatchRow(const EsCatalog *cat, Datum *row_values, bool *row_nulls)
{
	Datum		values[ES_EVENT_NATTS];
	bool		nulls[ES_EVENT_NATTS];
	Oid			roleid = EsInvokingUserId();
	volatile int saved_depth = dispatch_depth;

	SPI_connect();
	EnsureInlineList(cat);
	if (inline_count == 0)
	{
		SPI_finish();
		return;
	}

	for (int c = 0; c < ES_EVENT_NATTS; c++)
	{
		values[c] = row_values[inline_event_attnums[c] - 1];
		nulls[c] = row_nulls[inline_event_attnums[c] - 1];
	}

	dispatch_depth++;
	PG_TRY();
	{
		text	   *event_type = DatumGetTextPP(values[4]);

		if (!IsLogicalWorker())
		{
			/* The appender's event, upcast and handled as the appender. */
			UpcastAs(cat, values, nulls, roleid);
			for (int i = 0; i < inline_count; i++)
				if (InlineWants(&inline_list[i], VARDATA_ANY(event_type),
								VARSIZE_ANY_EXHDR(event_type)))
					CallInline(&inline_list[i], values, nulls, roleid,
							   saved_depth > 0);
		}
		else
		{
			/*
			 * Logical replication applies the row: background work, so each
			 * projection's upcasters and handler run as the role that
			 * registered it, not as the subscription's owner.
			 */
			for (int i = 0; i < inline_count; i++)
			{
				InlineProjection *p = &inline_list[i];
				Datum		upcast_values[ES_EVENT_NATTS];
				bool		upcast_nulls[ES_EVENT_NATTS];

				if (!InlineWants(p, VARDATA_ANY(event_type),
								 VARSIZE_ANY_EXHDR(event_type)))
					continue;
				if (!OidIsValid(p->owner_oid))
					ereport(ERROR,
							(errcode(ERRCODE_UNDEFINED_OBJECT),
							 errmsg("the role that registered projection \"%s\" does not exist",
									p->name),
							 errhint("Register the projection again as an existing role.")));
				memcpy(upcast_values, values, sizeof(values));
				memcpy(upcast_nulls, nulls, sizeof(nulls));
				UpcastAs(cat, upcast_values, upcast_nulls, p->owner_oid);
				CallInline(p, upcast_values, upcast_nulls, p->owner_oid,
						   saved_depth > 0);
			}
		}
	}
	PG_FINALLY();
	{
		dispatch_depth = saved_depth;
	}
	PG_END_TRY();

	SPI_finish();
}

/*
 * es_projection_dispatch() RETURNS trigger
 *		AFTER INSERT row trigger on es_events: the event, upcast, goes to
 *		every inline projection that wants its type, as the appending role.
 *		An error aborts the append.  es_append itself inserts without
 *		firing it where it can, and calls EsDispatchAppended instead.
 */
Datum
es_projection_dispatch(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	TupleDesc	row_desc;
	Datum	   *values;
	bool	   *nulls;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_projection_dispatch() must be called as an AFTER INSERT row trigger")));

	row_desc = RelationGetDescr(trigdata->tg_relation);
	values = palloc(sizeof(Datum) * row_desc->natts);
	nulls = palloc(sizeof(bool) * row_desc->natts);
	heap_deform_tuple(trigdata->tg_trigtuple, row_desc, values, nulls);
	DispatchRow(EsCatalogForSchema(RelationGetNamespace(trigdata->tg_relation)),
				values, nulls);
	pfree(values);
	pfree(nulls);
	return PointerGetDatum(NULL);	/* ignored for AFTER triggers */
}

/*
 * EsDispatchAppended
 *		What the dispatch trigger (when and WHEN clause included) would do
 *		for a row es_append inserted without firing triggers: the row's
 *		columns in es_events' attribute order.
 */
void
EsDispatchAppended(const EsCatalog *cat, Datum *row_values, bool *row_nulls,
				   int type_attnum)
{
	text	   *event_type = DatumGetTextPP(row_values[type_attnum - 1]);

	if (AnyInlineWants(cat, event_type))
		DispatchRow(cat, row_values, row_nulls);
}

/*
 * Feeding async and manual projections
 */

static bool
TextIs(Datum d, const char *s)
{
	return strcmp(TextDatumGetCString(d), s) == 0;
}

/*
 * LockProjection
 *		Reads a projection's row and locks it, as the tables' owner; with
 *		skip_locked, returns false when another transaction has it.  Returns
 *		false when there is no such projection.  Must be called while
 *		connected to SPI; the result is in the caller's memory context.
 */
static bool
LockProjection(const EsCatalog *cat, const char *name, bool skip_locked, Projection *p)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	Datum		args[1];
	int			ret;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	MemoryContext old;

	args[0] = CStringGetTextDatum(name);
	ret = EsExecuteAsOwner(cat, skip_locked ? &try_lock_projection_plan : &lock_projection_plan,
						   args, NULL, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading es_projections failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;

	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	old = MemoryContextSwitchTo(caller_cxt);
	memset(p, 0, sizeof(*p));
	p->name = TextDatumGetCString(SPI_getbinval(tuple, desc, 1, &isnull));
	d = SPI_getbinval(tuple, desc, 2, &isnull);
	p->mode = TextIs(d, "inline") ? 'i' : TextIs(d, "async") ? 'a' : 'm';
	p->state = TextDatumGetCString(SPI_getbinval(tuple, desc, 3, &isnull));
	p->position = DatumGetInt64(SPI_getbinval(tuple, desc, 4, &isnull));
	d = SPI_getbinval(tuple, desc, 5, &isnull);
	p->handler_oid = isnull ? InvalidOid : DatumGetObjectId(d);
	p->handler_text = TextDatumGetCString(SPI_getbinval(tuple, desc, 6, &isnull));
	d = SPI_getbinval(tuple, desc, 7, &isnull);
	p->reset_oid = isnull ? InvalidOid : DatumGetObjectId(d);
	d = SPI_getbinval(tuple, desc, 8, &isnull);
	p->event_types = isnull ? (Datum) 0 : datumCopy(d, false, -1);
	p->owner = TextDatumGetCString(SPI_getbinval(tuple, desc, 9, &isnull));
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return true;
}

static void
CheckHandlerExists(const Projection *p)
{
	if (!OidIsValid(p->handler_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("the handler of projection \"%s\" does not exist", p->name),
				 errdetail("It was registered as %s.", p->handler_text),
				 errhint("Create the function again, or unregister the projection.")));
}

/*
 * WriteCheckpoint
 *		Moves a projection's checkpoint (and state), as the tables' owner,
 *		in the current (sub)transaction.
 */
static void
WriteCheckpoint(const EsCatalog *cat, const char *name, int64 position,
				const char *state, const char *error, int64 failing_position)
{
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	int			ret;

	args[0] = CStringGetTextDatum(name);
	args[1] = Int64GetDatum(position);
	args[2] = CStringGetTextDatum(state);
	if (error)
		args[3] = CStringGetTextDatum(error);
	else
		nulls[3] = 'n';
	args[4] = Int64GetDatum(failing_position);
	if (failing_position <= 0)
		nulls[4] = 'n';

	RegisterCallbacks();
	ret = EsExecuteAsOwner(cat, &checkpoint_plan, args, nulls, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "moving the checkpoint failed: %s", SPI_result_code_string(ret));
	broadcast_at_commit = true;
}

static void
ReportProgress(Feed *feed, bool last)
{
	TimestampTz now = GetCurrentTimestamp();
	long		secs;
	int			usecs;
	double		elapsed;

	TimestampDifference(feed->started, now, &secs, &usecs);
	elapsed = secs + usecs / 1000000.0;
	if (last)
		ereport(NOTICE,
				(errmsg("projection \"%s\" rebuilt: " INT64_FORMAT " events in %.1f s (%.0f events/s)",
						feed->proj->name, feed->count, elapsed,
						elapsed > 0 ? feed->count / elapsed : 0)));
	else
		ereport(NOTICE,
				(errmsg("projection \"%s\": " INT64_FORMAT " of " INT64_FORMAT " events replayed (%.0f events/s)",
						feed->proj->name, feed->count, feed->total,
						elapsed > 0 ? feed->count / elapsed : 0)));
	feed->last_notice = now;
}

/* EsScanEvents sink: one event to the handler, as the current user. */
static void
FeedEvent(Datum *values, bool *nulls, void *arg)
{
	Feed	   *feed = (Feed *) arg;

	feed->current = DatumGetInt64(values[0]);
	feed->in_handler = true;
	CallHandler(&feed->flinfo, feed->proj->name, feed->event_desc, values, nulls);
	feed->in_handler = false;
	feed->last_done = feed->current;
	feed->count++;

	if (feed->progress && feed->count % 1000 == 0 &&
		TimestampDifferenceExceeds(feed->last_notice, GetCurrentTimestamp(),
								   PROGRESS_INTERVAL_MS))
		ReportProgress(feed, false);
}

/*
 * ScanRange
 *		Hands the projection's events in (from, to] to its handler, at most
 *		limit of them (-1: all), as the current user.  Returns where the
 *		checkpoint may move: to, or the last event handled when the limit
 *		cut the range short.
 */
static int64
ScanRange(const EsCatalog *cat, Feed *feed, int64 from, int64 to, int64 limit)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int64		before = feed->count;

	args[0] = Int64GetDatum(from);
	args[1] = Int64GetDatum(to);
	args[2] = Int64GetDatum(limit);
	if (limit < 0)
		nulls[2] = 'n';
	args[3] = feed->proj->event_types;
	feed->last_done = from;
	(void) EsScanEvents(cat, feed->proj->event_types ? &feed_types_plan : &feed_all_plan,
						args, nulls, true, FeedEvent, feed);
	if (limit >= 0 && feed->count - before >= limit)
		return feed->last_done;
	return to;
}

/* A feed of p's handler, which run_as will call. */
static void
InitFeed(Feed *feed, const EsCatalog *cat, Projection *p, Oid run_as)
{
	memset(feed, 0, sizeof(*feed));
	feed->proj = p;
	CheckHandlerExists(p);
	CheckMayCall(p->handler_oid, run_as);
	fmgr_info(p->handler_oid, &feed->flinfo);
	feed->event_desc = EventDesc(cat);
}

/* A cancel or shutdown: never caught, always passed on. */
static bool
IsInterruption(ErrorData *edata)
{
	return edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
		edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
		edata->sqlerrcode == ERRCODE_CRASH_SHUTDOWN;
}

/*
 * Errors that say nothing about the event: they stop this feeding (to be
 * tried again), not the projection.
 */
static bool
IsTransient(ErrorData *edata)
{
	return IsInterruption(edata) ||
		edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED ||
		edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		edata->sqlerrcode == ERRCODE_OUT_OF_MEMORY;
}

/*
 * FeedIsolated
 *		ScanRange as run_as and the move of the checkpoint, in a
 *		subtransaction.  Returns true when both committed (*new_position is
 *		the checkpoint now).  When the handler failed, rolls the batch back
 *		and returns false with the error (feed->current is the failing
 *		event); any other error is raised again.
 */
static bool
FeedIsolated(const EsCatalog *cat, Feed *feed, int64 from, int64 to, int64 limit,
			 int64 horizon, Oid run_as, int64 *new_position, ErrorData **error)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool switched = false;
	EsUserSwitch sw;
	volatile bool ok = true;

	feed->count = 0;
	feed->in_handler = false;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		int64		position;
		const char *state;

		EsBecomeUser(run_as, &sw);
		switched = true;
		position = ScanRange(cat, feed, from, to, limit);
		EsRestoreUser(&sw);
		switched = false;

		/* A rebuilding projection is running again once it has caught up. */
		state = feed->proj->state;
		if (strcmp(state, "rebuilding") == 0 && position >= horizon)
			state = "running";
		WriteCheckpoint(cat, feed->proj->name, position, state, NULL, 0);
		feed->proj->state = (char *) state;
		*new_position = position;

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		bool		handler_failed = feed->in_handler;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		if (switched)
			EsResetInvokingUser(&sw);
		if (!handler_failed || IsTransient(edata))
			ReThrowError(edata);
		*error = edata;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * FeedProjection
 *		Feeds a locked async or manual projection the events after its
 *		checkpoint up to horizon, at most max_events (-1: all), one batch
 *		only when one_batch, handlers as run_as.  A failing event stops the
 *		projection: the events before it are handled, it is recorded as
 *		failed with the error, and a WARNING says so.  Returns the number of
 *		events handled; *more says whether events up to the horizon remain.
 */
static int64
FeedProjection(const EsCatalog *cat, Projection *p, int64 horizon, int64 max_events,
			   bool one_batch, Oid run_as, bool *more)
{
	Feed		feed;
	int64		position = p->position;
	int64		total = 0;
	bool		failed = false;

	InitFeed(&feed, cat, p, run_as);
	while (position < horizon && (max_events < 0 || total < max_events))
	{
		int64		to = horizon - position > BATCH_POSITIONS ? position + BATCH_POSITIONS : horizon;
		int64		limit = BATCH_EVENTS;
		int64		failing;
		ErrorData  *edata = NULL;

		if (max_events >= 0)
			limit = Min(limit, max_events - total);
		if (FeedIsolated(cat, &feed, position, to, limit, horizon, run_as, &position, &edata))
		{
			total += feed.count;
			if (one_batch)
				break;
			continue;
		}

		/*
		 * The handler failed at feed.current: feed the events before it
		 * again, and stop there.  (Should one of them fail this time, the
		 * projection stops at that one.)
		 */
		failing = feed.current;
		while (failing - 1 > position)
		{
			ErrorData  *again = NULL;
			int64		redone;

			if (FeedIsolated(cat, &feed, position, failing - 1, -1, horizon, run_as,
							 &redone, &again))
			{
				total += feed.count;
				position = redone;
				break;
			}
			FreeErrorData(edata);
			edata = again;
			failing = feed.current;
		}
		WriteCheckpoint(cat, p->name, position, "failed", edata->message, failing);
		p->state = "failed";
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("projection \"%s\" failed at position " INT64_FORMAT ": %s",
						p->name, failing, edata->message),
				 edata->context ? errcontext("%s", edata->context) : 0,
				 errhint("Fix the handler and call es_projection_resume('%s'), or step over the event with es_projection_skip('%s').",
						 p->name, p->name)));
		FreeErrorData(edata);
		failed = true;
		break;
	}
	p->position = position;
	*more = !failed && position < horizon;
	return total;
}

static void
CallReset(const Projection *p, Oid roleid)
{
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 0);

	CheckMayCall(p->reset_oid, roleid);
	fmgr_info(p->reset_oid, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 0, InvalidOid, NULL, NULL);
	(void) FunctionCallInvoke(fcinfo);
}

/* How many of the projection's events there are up to horizon. */
static int64
CountEvents(const EsCatalog *cat, const Projection *p, int64 horizon)
{
	Datum		args[2];
	int			ret;
	bool		isnull;
	int64		count;

	args[0] = Int64GetDatum(horizon);
	args[1] = p->event_types;
	ret = SPI_execute_snapshot(EsPlanGet(p->event_types ? &count_types_plan : &count_all_plan, cat),
							   args, NULL, GetLatestSnapshot(), InvalidSnapshot,
							   true, false, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "counting events failed: %s", SPI_result_code_string(ret));
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_freetuptable(SPI_tuptable);
	return count;
}

static char *
NameArgument(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("projection name must not be NULL")));
	return text_to_cstring(PG_GETARG_TEXT_PP(0));
}

static void
NoSuchProjection(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("no projection \"%s\" is registered", name)));
}

/*
 * es_projection_run(name text, max_events bigint DEFAULT NULL) RETURNS bigint
 *		Feeds an async or manual projection the events after its checkpoint,
 *		in this transaction, handlers as the caller.
 */
Datum
es_projection_run(PG_FUNCTION_ARGS)
{
	char	   *name = NameArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	int64		max_events = -1;
	Projection	p;
	int64		handled;
	bool		more;

	if (!PG_ARGISNULL(1))
	{
		max_events = PG_GETARG_INT64(1);
		if (max_events < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_events must not be negative"),
					 errhint("Use NULL for no limit.")));
	}
	PreventCommandIfReadOnly("es_projection_run()");
	PreventCommandDuringRecovery("es_projection_run()");

	SPI_connect();
	if (!LockProjection(cat, name, false, &p))
		NoSuchProjection(name);
	if (p.mode == 'i')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("projection \"%s\" is inline: its handler runs in every append", name),
				 errhint("es_projection_rebuild replays the events appended before it was registered.")));
	if (strcmp(p.state, "failed") == 0)
	{
		ereport(WARNING,
				(errmsg("projection \"%s\" has failed and is not run", name),
				 errhint("Call es_projection_resume('%s') to retry its failing event, or es_projection_skip('%s') to step over it.",
						 name, name)));
		SPI_finish();
		PG_RETURN_INT64(0);
	}
	handled = max_events == 0 ? 0
		: FeedProjection(cat, &p, EsReadHorizon(cat), max_events, false,
						 EsInvokingUserId(), &more);
	SPI_finish();
	PG_RETURN_INT64(handled);
}

/*
 * es_projection_rebuild(name text) RETURNS bigint
 *		Empties the read model (reset) and replays every event.  Inline and
 *		manual projections are replayed now, in this transaction (an inline
 *		one holding appends back meanwhile); an async one starts from
 *		position 0 and the worker replays it in the background.  Returns the
 *		number of events replayed (async: to replay).
 */
Datum
es_projection_rebuild(PG_FUNCTION_ARGS)
{
	char	   *name = NameArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	Oid			roleid = EsInvokingUserId();
	Projection	p;
	Feed		feed;
	int64		horizon;
	int64		position;
	EsUserSwitch sw;

	PreventCommandIfReadOnly("es_projection_rebuild()");
	PreventCommandDuringRecovery("es_projection_rebuild()");

	SPI_connect();
	if (!LockProjection(cat, name, false, &p))
		NoSuchProjection(name);
	CheckHandlerExists(&p);
	if (!OidIsValid(p.reset_oid))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("projection \"%s\" has no reset function", name),
				 errdetail("A rebuild replays every event: without emptying the read model first it would apply them twice."),
				 errhint("Unregister it and register it again with a reset function that empties its read model.")));

	/* An inline projection: appends wait until the replay commits. */
	if (p.mode == 'i')
		LockRelationOid(cat->events_relid, ShareLock);
	horizon = EsReadHorizon(cat);

	EsBecomeUser(roleid, &sw);
	PG_TRY();
	{
		CallReset(&p, roleid);
	}
	PG_CATCH();
	{
		EsResetInvokingUser(&sw);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EsRestoreUser(&sw);

	InitFeed(&feed, cat, &p, roleid);
	feed.total = CountEvents(cat, &p, horizon);

	if (p.mode == 'a')
	{
		WriteCheckpoint(cat, name, 0, "rebuilding", NULL, 0);
		ereport(NOTICE,
				(errmsg("projection \"%s\" is rebuilt in the background: " INT64_FORMAT " events to replay",
						name, feed.total),
				 errhint("es_projection_status shows its progress; es_projection_wait waits for it.")));
		SPI_finish();
		PG_RETURN_INT64(feed.total);
	}

	feed.progress = true;
	feed.started = feed.last_notice = GetCurrentTimestamp();
	EsBecomeUser(roleid, &sw);
	PG_TRY();
	{
		position = ScanRange(cat, &feed, 0, horizon, -1);
	}
	PG_CATCH();
	{
		EsResetInvokingUser(&sw);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EsRestoreUser(&sw);
	WriteCheckpoint(cat, name, position, "running", NULL, 0);
	ReportProgress(&feed, true);
	SPI_finish();
	PG_RETURN_INT64(feed.count);
}

/*
 * es_projection_wait(name text, position bigint, timeout_ms int DEFAULT 10000)
 *		RETURNS boolean
 *		Read-your-writes: true once the projection's checkpoint has reached
 *		position, false after timeout_ms.  Sleeps on the condition variable
 *		that checkpoint commits broadcast; reads the checkpoint with a fresh
 *		snapshot each time, so it works in any isolation level.
 */
Datum
es_projection_wait(PG_FUNCTION_ARGS)
{
	char	   *name = NameArgument(fcinfo);
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	int64		wanted;
	int			timeout_ms;
	TimestampTz deadline;
	ConditionVariable *cv = EsProjectionProgress();
	bool		reached = false;
	Datum		args[1];

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("position and timeout_ms must not be NULL")));
	wanted = PG_GETARG_INT64(1);
	timeout_ms = PG_GETARG_INT32(2);
	if (timeout_ms < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timeout_ms must not be negative")));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	args[0] = CStringGetTextDatum(name);

	SPI_connect();
	for (;;)
	{
		int			ret;
		bool		isnull;
		long		remaining;

		if (cv)
			ConditionVariablePrepareToSleep(cv);
		ret = SPI_execute_snapshot(EsPlanGet(&wait_position_plan, cat), args, NULL,
								   GetLatestSnapshot(), InvalidSnapshot, true, false, 1);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "reading es_projections failed: %s", SPI_result_code_string(ret));
		if (SPI_processed == 0)
		{
			if (cv)
				ConditionVariableCancelSleep();
			NoSuchProjection(name);
		}
		/* An inline projection is current in every transaction that can see an event. */
		if (TextIs(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull), "inline") ||
			DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull)) >= wanted)
			reached = true;
		SPI_freetuptable(SPI_tuptable);
		if (reached)
			break;

		remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (remaining <= 0)
			break;
		/*
		 * Checkpoint commits wake us; the one-second cap covers progress no
		 * broadcast announces (a standby replaying it, a server without
		 * preloading).
		 */
		if (cv)
			(void) ConditionVariableTimedSleep(cv, Min(remaining, 1000), PG_WAIT_EXTENSION);
		else
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, 100), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		CHECK_FOR_INTERRUPTS();
	}
	if (cv)
		ConditionVariableCancelSleep();
	SPI_finish();
	PG_RETURN_BOOL(reached);
}

/*
 * es_projection_head() RETURNS bigint
 *		The newest event readable in the gap-free order (0: none).
 */
Datum
es_projection_head(PG_FUNCTION_ARGS)
{
	const EsCatalog *cat = EsCatalogGet(fcinfo);
	int64		head;

	SPI_connect();
	head = EsNewestEventUpTo(cat, 0, EsReadHorizon(cat));
	SPI_finish();
	PG_RETURN_INT64(head);
}

/*
 * The worker's task
 */

/* A projection whose batch failed outside its handler, waiting to retry. */
typedef struct Backoff
{
	char	   *name;
	TimestampTz due;
	int			ms;
} Backoff;

static List *backoffs = NIL;

static Backoff *
FindBackoff(const char *name)
{
	ListCell   *lc;

	foreach(lc, backoffs)
	{
		Backoff    *b = lfirst(lc);

		if (strcmp(b->name, name) == 0)
			return b;
	}
	return NULL;
}

static void
ClearBackoff(const char *name)
{
	Backoff    *b = FindBackoff(name);

	if (b)
	{
		backoffs = list_delete_ptr(backoffs, b);
		pfree(b->name);
		pfree(b);
	}
}

static int
SetBackoff(const char *name)
{
	Backoff    *b = FindBackoff(name);
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	if (b == NULL)
	{
		b = palloc0(sizeof(Backoff));
		b->name = pstrdup(name);
		backoffs = lappend(backoffs, b);
	}
	MemoryContextSwitchTo(old);
	b->ms = b->ms == 0 ? MIN_BACKOFF_MS : Min(b->ms * 2, MAX_BACKOFF_MS);
	b->due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), b->ms);
	return b->ms;
}

/*
 * FeedOneBatch
 *		In its own transaction: one batch of one async projection, handlers
 *		as the role that registered it.  Returns the number of events
 *		handled; *more when it has events left.
 */
static int64
FeedOneBatch(Oid schema, const char *name, bool *more)
{
	const EsCatalog *cat;
	Projection	p;
	int64		handled = 0;

	*more = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	cat = EsCatalogForSchema(schema);
	SPI_connect();
	if (LockProjection(cat, name, true, &p) && p.mode == 'a' &&
		strcmp(p.state, "failed") != 0)
	{
		Oid			owner = get_role_oid(p.owner, true);

		if (!OidIsValid(owner))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role \"%s\", which registered projection \"%s\", does not exist",
							p.owner, name),
					 errhint("Unregister the projection and register it again as an existing role.")));
		handled = FeedProjection(cat, &p, EsReadHorizon(cat), -1, true, owner, more);
	}
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	return handled;
}

/*
 * TryFeedOneBatch
 *		FeedOneBatch; when it fails, logs why and sets the projection's
 *		backoff (lowering *delay to it), and returns false.
 */
static bool
TryFeedOneBatch(Oid schema, const char *name, MemoryContext task_cxt, bool *more,
				int64 *handled, long *delay)
{
	volatile bool ok = true;

	PG_TRY();
	{
		*handled += FeedOneBatch(schema, name, more);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		int			ms;

		MemoryContextSwitchTo(task_cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		if (IsInterruption(edata))
			ReThrowError(edata);
		ms = SetBackoff(name);
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("es worker could not feed projection \"%s\": %s", name, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 edata->context ? errcontext("%s", edata->context) : 0,
				 errhint("It is tried again in %d ms.", ms)));
		*delay = *delay < 0 ? ms : Min(*delay, ms);
		FreeErrorData(edata);
		*more = false;
		ok = false;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(task_cxt);
	return ok;
}

/*
 * EsProjectionTask
 *		The worker's task: one batch of every async projection that has
 *		events to handle, each in its own transaction, so that none waits
 *		for another; again at once while any has more.  A batch that fails
 *		outside a handler (an upcaster, a missing role) is logged and that
 *		projection retried with backoff.
 */
long
EsProjectionTask(void)
{
	MemoryContext task_cxt;
	MemoryContext old;
	Oid			schema;
	List	   *names = NIL;
	ListCell   *lc;
	bool		any_more = false;
	int64		handled = 0;
	int			nfed = 0;
	long		delay = -1;
	TimestampTz now;

	task_cxt = AllocSetContextCreate(CurrentMemoryContext, "es projection task",
									 ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(task_cxt);

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	schema = EsExtensionSchema();
	if (OidIsValid(schema) &&
		OidIsValid(get_relname_relid("es_projections", schema)))
	{
		const EsCatalog *cat = EsCatalogForSchema(schema);
		int			ret;

		SPI_connect();
		ret = SPI_execute_plan(EsPlanGet(&async_names_plan, cat), NULL, NULL, true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "reading es_projections failed: %s", SPI_result_code_string(ret));
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
			MemoryContext spi_cxt = MemoryContextSwitchTo(task_cxt);

			/* the list outlives SPI_finish and the transaction */
			names = lappend(names, TextDatumGetCString(d));
			MemoryContextSwitchTo(spi_cxt);
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(task_cxt);

	now = GetCurrentTimestamp();
	foreach(lc, names)
	{
		const char *name = lfirst(lc);
		Backoff    *b = FindBackoff(name);
		bool		more = false;

		if (b && b->due > now)
		{
			long		wait = TimestampDifferenceMilliseconds(now, b->due);

			delay = delay < 0 ? wait : Min(delay, wait);
			continue;
		}

		if (TryFeedOneBatch(schema, name, task_cxt, &more, &handled, &delay))
		{
			nfed++;
			if (b)
				ClearBackoff(name);
		}
		MemoryContextSwitchTo(task_cxt);
		any_more |= more;
	}

	if (handled > 0)
	{
		char		what[96];

		snprintf(what, sizeof(what), "fed " INT64_FORMAT " events to %d projections",
				 handled, nfed);
		EsWorkerReport("projections", what);
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(task_cxt);
	return any_more ? 0 : delay;
}
