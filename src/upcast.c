/*-------------------------------------------------------------------------
 *
 * upcast.c
 *	  Upcasters: old event schemas turned into the newest one on the way out.
 *
 * es_upcasters registers, per event type, one function per schema step:
 * the function registered "from schema version v" turns the data of version
 * v into version v + 1.  Stored events never change; every event that leaves
 * es through a read goes through EsUpcastEvent(), which runs the chain
 * v -> v + 1 -> ... for as long as steps are registered.
 *
 * Each backend keeps the registry in a cache (a hash table keyed by event
 * type, with an FmgrInfo per step) in its own memory context under
 * CacheMemoryContext.  The cache is dropped when
 *	- es_upcasters changes in any session: a statement trigger on it sends a
 *	  relcache invalidation for the table (catalog.c's callback lands here);
 *	- any function is created, replaced or dropped (a pg_proc syscache
 *	  invalidation), so a replaced upcaster body is used by the next read.
 * A read pins the cache for its duration (EsUpcastBegin/EsUpcastEnd): an
 * invalidation that arrives in the middle of a read takes effect at the next
 * one, so no read, and no event, is upcast by a mix of old and new chains.
 *
 * Reading an event type without upcasters costs a hash lookup, and nothing
 * at all when no upcaster is registered.
 *
 * Locks: AccessShareLock on es_upcasters while the cache is built.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "es.h"

PG_FUNCTION_INFO_V1(es_upcasters_changed);

/* The registered chain of one event type. */
typedef struct UpcastChain
{
	uint32		type_hash;		/* hash key: hash of the event type */
	struct UpcastChain *next;	/* other types with the same hash */
	char	   *event_type;
	int			nsteps;			/* steps[i] turns version i + 1 into i + 2 */
	int			capacity;
	Oid		   *step_oids;
	FmgrInfo   *steps;
	/* the read (read_serial) and role whose EXECUTE on a step was checked */
	uint64	   *checked_read;
	Oid		   *checked_user;
} UpcastChain;

typedef struct UpcastCache
{
	MemoryContext context;
	HTAB	   *chains;			/* NULL when no upcaster is registered */
} UpcastCache;

static UpcastCache *cache = NULL;
static bool cache_valid = false;
static int	read_depth = 0;		/* reads in progress that pinned the cache */
static int	call_depth = 0;		/* upcaster calls in progress */
static bool callbacks_registered = false;
static uint64 read_serial = 0;	/* counts EsUpcastBegin calls */

/* For the error context of a failing upcaster. */
typedef struct UpcastErrorContext
{
	Datum	   *values;			/* the event, as in EsUpcastEvent */
	Oid			fn_oid;
	int32		from_version;
} UpcastErrorContext;

static EsPlan load_registry_plan = {
	"SELECT event_type, from_schema_version, pg_catalog.to_regprocedure(function) "
	"FROM @extschema@.es_upcasters ORDER BY event_type, from_schema_version",
	0, {InvalidOid}
};

/* Column numbers of EVENT_COLUMNS (read.c) in an es_events tuple. */
#define COL_STREAM_ID		2
#define COL_VERSION			3
#define COL_EVENT_TYPE		5
#define COL_SCHEMA_VERSION	6
#define COL_DATA			7

/*
 * EsUpcastInvalidate
 *		Forgets the cache (at the next read that is not nested in another).
 */
void
EsUpcastInvalidate(void)
{
	cache_valid = false;
}

static void
InvalidateForFunctions(Datum arg, int cacheid, uint32 hashvalue)
{
	/* Only when there are upcasters: other function DDL should cost nothing. */
	if (cache != NULL && cache->chains != NULL)
		cache_valid = false;
}

static void
ResetReadDepthAtEnd(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
	{
		read_depth = 0;
		call_depth = 0;
	}
}

static uint32
HashEventType(const char *s, int len)
{
	return DatumGetUInt32(hash_any((const unsigned char *) s, len));
}

static UpcastChain *
FindChain(UpcastCache *in, const char *event_type, int len)
{
	uint32		hash;
	UpcastChain *chain;

	if (in->chains == NULL)
		return NULL;
	hash = HashEventType(event_type, len);
	chain = hash_search(in->chains, &hash, HASH_FIND, NULL);
	for (; chain != NULL; chain = chain->next)
		if (strlen(chain->event_type) == (size_t) len &&
			memcmp(chain->event_type, event_type, len) == 0)
			return chain;
	return NULL;
}

/*
 * The chain of the type looked up last in this read, or NULL: the events of
 * a read are mostly of few types, often one, and comparing a few bytes
 * costs less than hashing them.  Valid while read_serial is unchanged.
 */
#define MEMO_TYPE_LEN 64
static uint64 memo_serial = 0;
static int	memo_len = -1;
static char memo_type[MEMO_TYPE_LEN];
static UpcastChain *memo_chain;

static UpcastChain *FindChainInRead(const char *event_type, int len);

/*
 * AddStep
 *		Appends one registered step to its type's chain (rows arrive ordered
 *		by type and version, so steps come in order).
 */
static void
AddStep(UpcastCache *building, const char *event_type, int32 from_version,
		Oid fn_oid)
{
	UpcastChain *chain = FindChain(building, event_type, strlen(event_type));

	if (chain == NULL)
	{
		uint32		hash = HashEventType(event_type, strlen(event_type));
		bool		found;
		UpcastChain *head = hash_search(building->chains, &hash, HASH_ENTER, &found);

		if (!found)
		{
			chain = head;
			chain->next = NULL;
		}
		else
		{
			chain = MemoryContextAllocZero(building->context, sizeof(UpcastChain));
			chain->type_hash = hash;
			chain->next = head->next;
			head->next = chain;
		}
		chain->event_type = MemoryContextStrdup(building->context, event_type);
		chain->nsteps = 0;
		chain->capacity = 4;
		chain->step_oids = MemoryContextAlloc(building->context, sizeof(Oid) * chain->capacity);
		chain->steps = MemoryContextAlloc(building->context, sizeof(FmgrInfo) * chain->capacity);
		chain->checked_read = MemoryContextAlloc(building->context, sizeof(uint64) * chain->capacity);
		chain->checked_user = MemoryContextAlloc(building->context, sizeof(Oid) * chain->capacity);
	}

	/* registration keeps chains gap-free; a hand-edited table may not be */
	if (from_version != chain->nsteps + 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("upcasters of event type \"%s\" have a gap before schema version %d",
						event_type, from_version),
				 errhint("Every step from schema version 1 on must be registered; see table es_upcasters.")));

	if (chain->nsteps == chain->capacity)
	{
		chain->capacity *= 2;
		chain->step_oids = repalloc(chain->step_oids, sizeof(Oid) * chain->capacity);
		chain->steps = repalloc(chain->steps, sizeof(FmgrInfo) * chain->capacity);
		chain->checked_read = repalloc(chain->checked_read, sizeof(uint64) * chain->capacity);
		chain->checked_user = repalloc(chain->checked_user, sizeof(Oid) * chain->capacity);
	}
	chain->step_oids[chain->nsteps] = fn_oid;
	chain->checked_read[chain->nsteps] = 0;
	chain->checked_user[chain->nsteps] = InvalidOid;
	fmgr_info_cxt(fn_oid, &chain->steps[chain->nsteps], building->context);
	chain->nsteps++;
}

/*
 * BuildCache
 *		Reads es_upcasters into a new cache and makes it the current one.
 *		Called while connected to SPI.  The new cache is built in a context
 *		under the caller's, so that a failure (a registered function that is
 *		gone) leaves nothing behind, and is moved under CacheMemoryContext
 *		once complete.
 */
static void
BuildCache(const EsCatalog *cat)
{
	UpcastCache *building;
	MemoryContext context;
	int			ret;

	if (cache != NULL)
	{
		MemoryContextDelete(cache->context);
		cache = NULL;
	}

	/* An invalidation that arrives while we read the table wins. */
	cache_valid = true;

	context = AllocSetContextCreate(CurrentMemoryContext, "es upcasters",
									ALLOCSET_SMALL_SIZES);
	building = MemoryContextAllocZero(context, sizeof(UpcastCache));
	building->context = context;

	/*
	 * As the owner: resolving a registered name needs USAGE on the
	 * function's schema, which a reader need not have, and the cache serves
	 * every role of this backend, so it must not depend on which one built
	 * it.  Only names are resolved here; what a reader may run is checked
	 * per step when it runs (EsUpcastEvent).
	 */
	ret = EsExecuteAsOwner(cat, &load_registry_plan, NULL, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "reading es_upcasters failed: %s", SPI_result_code_string(ret));

	if (SPI_processed > 0)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(uint32);
		ctl.entrysize = sizeof(UpcastChain);
		ctl.hcxt = context;
		building->chains = hash_create("es upcaster chains", 64, &ctl,
									   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		char	   *event_type = TextDatumGetCString(SPI_getbinval(tuple, desc, 1, &isnull));
		int32		from_version = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
		Datum		fn = SPI_getbinval(tuple, desc, 3, &isnull);

		if (isnull)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("upcaster of event type \"%s\" from schema version %d does not exist",
							event_type, from_version),
					 errhint("Its function was dropped or renamed; register the step again (es_unregister_upcaster, es_register_upcaster).")));
		AddStep(building, event_type, from_version, DatumGetObjectId(fn));
	}

	MemoryContextSetParent(context, CacheMemoryContext);
	cache = building;
}

/*
 * EsUpcastBegin / EsUpcastEnd
 *		Bracket a read: the first refreshes the cache if it was invalidated
 *		(unless a read is already in progress in this backend, say inside an
 *		upcaster) and pins it; the second unpins.  Begin must be called while
 *		connected to SPI.
 */
void
EsUpcastBegin(const EsCatalog *cat)
{
	if (!callbacks_registered)
	{
		CacheRegisterSyscacheCallback(PROCOID, InvalidateForFunctions, (Datum) 0);
		RegisterXactCallback(ResetReadDepthAtEnd, NULL);
		callbacks_registered = true;
	}

	/* See changes committed by other sessions before this read. */
	AcceptInvalidationMessages();
	if ((cache == NULL || !cache_valid) && read_depth == 0)
		BuildCache(cat);
	if (cache == NULL)			/* nested in a read whose cache failed to build */
		BuildCache(cat);
	read_depth++;
	read_serial++;
}

void
EsUpcastEnd(void)
{
	if (read_depth > 0)
		read_depth--;
}

/*
 * EsNewestSchemaVersion
 *		The schema version new events of this type are stored with: one past
 *		the newest registered step, 1 when there is none.  Must be called
 *		while connected to SPI.
 */
int32
EsNewestSchemaVersion(const EsCatalog *cat, text *event_type)
{
	UpcastChain *chain;

	EsUpcastBegin(cat);
	chain = FindChain(cache, VARDATA_ANY(event_type), VARSIZE_ANY_EXHDR(event_type));
	EsUpcastEnd();
	return chain ? chain->nsteps + 1 : 1;
}

static void
UpcastErrorCallback(void *arg)
{
	UpcastErrorContext *ctx = (UpcastErrorContext *) arg;

	errcontext("upcasting event %s (stream \"%s\", version " INT64_FORMAT
			   ") from schema version %d with %s",
			   TextDatumGetCString(ctx->values[COL_EVENT_TYPE - 1]),
			   TextDatumGetCString(ctx->values[COL_STREAM_ID - 1]),
			   DatumGetInt64(ctx->values[COL_VERSION - 1]),
			   ctx->from_version, format_procedure(ctx->fn_oid));
}

static UpcastChain *
FindChainInRead(const char *event_type, int len)
{
	if (memo_serial == read_serial && memo_len == len &&
		memcmp(memo_type, event_type, len) == 0)
		return memo_chain;
	memo_chain = FindChain(cache, event_type, len);
	if (len <= MEMO_TYPE_LEN)
	{
		memcpy(memo_type, event_type, len);
		memo_len = len;
		memo_serial = read_serial;
	}
	else
		memo_len = -1;
	return memo_chain;
}

/*
 * EsUpcastWanted
 *		Whether an event (a slot with the columns of es_event) has steps to
 *		go through; looks at its type and schema version only.  Must be
 *		called between EsUpcastBegin and EsUpcastEnd.
 */
bool
EsUpcastWanted(TupleTableSlot *slot)
{
	bool		isnull;
	text	   *event_type;
	UpcastChain *chain;

	if (cache->chains == NULL)
		return false;
	event_type = DatumGetTextPP(slot_getattr(slot, COL_EVENT_TYPE, &isnull));
	chain = FindChainInRead(VARDATA_ANY(event_type), VARSIZE_ANY_EXHDR(event_type));
	return chain != NULL &&
		DatumGetInt32(slot_getattr(slot, COL_SCHEMA_VERSION, &isnull)) <= chain->nsteps;
}

/*
 * EsUpcastEvent
 *		Turns an event (the columns of es_event, as values and nulls) into
 *		what it reads as now: when its type has steps to apply, replaces the
 *		data and schema version (allocated in the current memory context)
 *		and returns true; otherwise leaves it alone and returns false.  Must
 *		be called between EsUpcastBegin and EsUpcastEnd.
 */
bool
EsUpcastEvent(Datum *values, bool *nulls)
{
	text	   *event_type;
	UpcastChain *chain;
	int32		schema_version;
	Datum		data;
	ErrorContextCallback errcallback;
	UpcastErrorContext errctx;

	if (cache->chains == NULL)
		return false;

	event_type = DatumGetTextPP(values[COL_EVENT_TYPE - 1]);
	chain = FindChainInRead(VARDATA_ANY(event_type), VARSIZE_ANY_EXHDR(event_type));
	if (chain == NULL)
		return false;
	schema_version = DatumGetInt32(values[COL_SCHEMA_VERSION - 1]);
	if (schema_version > chain->nsteps)
		return false;

	data = values[COL_DATA - 1];

	errctx.values = values;
	errcallback.callback = UpcastErrorCallback;
	errcallback.arg = &errctx;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	for (int step = Max(schema_version, 1) - 1; step < chain->nsteps; step++)
	{
		LOCAL_FCINFO(fcinfo, 1);
		FmgrInfo   *flinfo = &chain->steps[step];
		FmgrInfo	private_flinfo;
		Jsonb	   *result;

		errctx.fn_oid = chain->step_oids[step];
		errctx.from_version = step + 1;

		/*
		 * Called through fmgr, so check what the executor would have: the
		 * reader's EXECUTE on the step (else a SECURITY DEFINER upcaster
		 * would lend its owner's rights to anyone who reads).  Once per
		 * read and role: a nested read, say by a SECURITY DEFINER upcaster,
		 * checks for its own role.
		 */
		if (chain->checked_read[step] != read_serial ||
			chain->checked_user[step] != GetUserId())
		{
			if (object_aclcheck_compat(chain->step_oids[step], GetUserId()) != ACLCHECK_OK)
				aclcheck_error(ACLCHECK_NO_PRIV, OBJECT_FUNCTION,
							   get_func_name(chain->step_oids[step]));
			chain->checked_read[step] = read_serial;
			chain->checked_user[step] = GetUserId();
		}

		/*
		 * An upcaster that reads events runs upcasters itself; a nested call
		 * gets its own FmgrInfo, since function handlers keep per-call state
		 * in it (fn_extra) that a recursive call must not share.
		 */
		if (call_depth > 0)
		{
			fmgr_info_copy(&private_flinfo, flinfo, CurrentMemoryContext);
			flinfo = &private_flinfo;
		}

		InitFunctionCallInfoData(*fcinfo, flinfo, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = data;
		fcinfo->args[0].isnull = false;
		call_depth++;
		data = FunctionCallInvoke(fcinfo);
		call_depth--;
		if (fcinfo->isnull)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("upcaster %s returned NULL", format_procedure(chain->step_oids[step])),
					 errhint("An upcaster must return the event's data as a JSON object; events are never skipped.")));
		result = DatumGetJsonbP(data);
		if (!JB_ROOT_IS_OBJECT(result) || JB_ROOT_IS_SCALAR(result))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("upcaster %s did not return a JSON object",
							format_procedure(chain->step_oids[step]))));
		data = PointerGetDatum(result);
	}

	error_context_stack = errcallback.previous;

	values[COL_DATA - 1] = data;
	values[COL_SCHEMA_VERSION - 1] = Int32GetDatum(chain->nsteps + 1);
	return true;
}

/*
 * es_upcasters_changed() RETURNS trigger
 *		Statement trigger on es_upcasters: every session's cache is dropped
 *		when this transaction commits.
 */
Datum
es_upcasters_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_upcasters_changed() must be called as a trigger")));
	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);	/* ignored for AFTER triggers */
}
