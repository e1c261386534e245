/*-------------------------------------------------------------------------
 *
 * es.h
 *	  Declarations shared by the C files of the es extension.
 *
 * Each .c file owns one concern; this header lists what one file offers
 * the others.  SQL-callable functions are declared by PG_FUNCTION_INFO_V1
 * in their own file and do not appear here.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_H
#define ES_H

#include "fmgr.h"
#include "access/htup.h"
#include "executor/tuptable.h"
#include "storage/latch.h"
#include "executor/spi.h"
#include "utils/relcache.h"

#include "compat.h"
#include "errcodes.h"

/* es.c: settings */
extern int	es_max_event_size;
extern bool es_notify;
extern int	es_notify_interval;
extern int	es_worker_naptime;

/* The channel es_append's notifications go to. */
#define ES_NOTIFY_CHANNEL "es_events"

/*
 * catalog.c: where the extension's objects are, and SPI plans over them.
 *
 * The catalog is looked up once per backend and forgotten when any of our
 * relations or schemas is invalidated (DROP/CREATE EXTENSION, ALTER
 * EXTENSION SET SCHEMA, DDL on our tables).
 */
typedef struct EsCatalog
{
	Oid			schema_oid;
	char	   *schema_quoted;	/* quote_identifier()'d schema name */
	Oid			events_relid;
	Oid			streams_relid;
	Oid			position_seqid; /* es_events_global_position_seq */
	Oid			upcasters_relid;
	Oid			aggregates_relid;	/* InvalidOid with 0.1.0's SQL objects */
	Oid			owner_oid;		/* owner of es_events: es writes as this role */
	bool		legacy_privileges;	/* es_events without row-level security:
									 * the SQL objects of 0.1.0, before ALTER
									 * EXTENSION es UPDATE */
	uint64		generation;		/* changes whenever the lookup is redone */
} EsCatalog;

extern const EsCatalog *EsCatalogGet(FunctionCallInfo fcinfo);
extern const EsCatalog *EsCatalogForSchema(Oid schema_oid);

/*
 * A statement kept prepared across calls.  Its text names the extension's
 * schema as @extschema@, like the install script does; the plan is rebuilt
 * whenever the catalog is.  Define one as a static with the text, the
 * argument count and types filled in.  A kept plan goes generic after five
 * executions; a statement whose best plan depends on its arguments (how
 * rare a value is) asks for CURSOR_OPT_CUSTOM_PLAN: planned for every call.
 */
#define ES_MAX_PLAN_ARGS 12
typedef struct EsPlan
{
	const char *sql;
	int			nargs;
	Oid			argtypes[ES_MAX_PLAN_ARGS];
	int			cursor_options; /* e.g. CURSOR_OPT_CUSTOM_PLAN; 0: default */
	SPIPlanPtr	plan;
	uint64		generation;
} EsPlan;

extern SPIPlanPtr EsPlanGet(EsPlan *plan, const EsCatalog *catalog);

/* Columns of the es_event type, as a read query must return them. */
#define ES_EVENT_NATTS 9
#define ES_EVENT_COLUMNS \
	"global_position, stream_id, version, event_id, event_type, " \
	"schema_version, data, metadata, recorded_at"

/* stream_row.c: an append's version bump of es_streams without a statement */
typedef enum EsStreamRowResult
{
	ES_STREAM_ROW_MOVED,		/* at the expected version, moved on */
	ES_STREAM_ROW_AT_OTHER_VERSION, /* nothing written */
	ES_STREAM_ROW_MISSING,		/* no row: the stream does not exist */
	ES_STREAM_ROW_USE_STATEMENT /* nothing done: only UPDATE will do */
} EsStreamRowResult;

extern EsStreamRowResult EsAdvanceStreamRow(const EsCatalog *catalog,
											text *stream_id,
											bool expected_is_null,
											int64 expected_version, int count,
											int64 *new_version);

/*
 * event_rows.c: an append's inserts into es_events without a statement.
 * Rows are es_events' columns in attribute order.
 */
#define ES_EVENT_ROW_NATTS 9
#define ES_EVENT_ROW_TYPE_ATTNUM 5
extern bool EsInsertEventRows(const EsCatalog *catalog, Datum *values,
							  bool *nulls, int count);
extern bool EsOtherTriggersFire(Relation rel, int16 event, const char *except,
								bool *except_fires);

/* upcast.c */
extern void EsUpcastInvalidate(void);
extern void EsUpcastBegin(const EsCatalog *catalog);
extern void EsUpcastEnd(void);
extern bool EsUpcastWanted(TupleTableSlot *slot);
extern bool EsUpcastEvent(Datum *values, bool *nulls);
extern int32 EsNewestSchemaVersion(const EsCatalog *catalog, text *event_type);

/* order.c */
extern void EsOrderInit(void);
extern bool EsOrderRegistryAvailable(void);
extern int64 EsTakeGlobalPosition(const EsCatalog *catalog);
extern int64 EsReadHorizon(const EsCatalog *catalog);
extern int64 EsWaitForHorizon(const EsCatalog *catalog, int64 after_position,
							  int timeout_ms);

/*
 * privilege.c: es's statements run as the tables' owner, user code as the
 * role that caused the call (see its header comment).
 */
typedef struct EsUserSwitch
{
	Oid			save_userid;
	int			save_sec_context;
	Oid			save_invoking_user;
} EsUserSwitch;

extern void EsBecomeOwner(const EsCatalog *catalog, EsUserSwitch *sw);
extern void EsBecomeUser(Oid roleid, EsUserSwitch *sw);
extern void EsRestoreUser(EsUserSwitch *sw);
extern void EsResetInvokingUser(EsUserSwitch *sw);
extern Oid	EsInvokingUserId(void);
extern int	EsExecuteAsOwner(const EsCatalog *catalog, EsPlan *plan, Datum *args,
							 const char *nulls, bool read_only, long tcount);

/*
 * worker.c: the launcher, and in each database where es is installed a
 * worker that is a small scheduler.  A task runs in the worker outside any
 * transaction (it starts its own, as many as it likes) and returns how many
 * milliseconds may pass before it must run again even when nothing wakes it
 * (-1: only when woken).  What wakes a task is its wake mask: an appending
 * commit in this database, a registry change (EsWorkerWake), or its timer.
 * Tasks report what they did with EsWorkerReport.
 */
#define ES_WAKE_COMMIT		0x01
#define ES_WAKE_REGISTRY	0x02

typedef long (*EsTaskRun) (void);

extern void EsWorkerReport(const char *task, const char *what);
extern Oid	EsExtensionSchema(void);

/*
 * projection.c: the worker task that feeds async projections, and the
 * inline projections of a row es_append inserted without firing triggers
 */
extern void EsDispatchAppended(const EsCatalog *catalog, Datum *row_values,
							   bool *row_nulls, int type_attnum);
extern long EsProjectionTask(void);

/* launcher.c */
extern void EsLauncherInit(void);
extern void EsWorkerWake(void);
extern bool EsWorkerCommitted(void);
extern bool EsWorkerNotifies(void);

/* aggregate.c: its session cache, dropped by catalog.c's invalidation callback */
extern void EsAggregateInvalidate(void);

/* aggregate.c, for the worker's automatic snapshots (snapshot_task.c) */
extern bool EsAggregateLogic(const EsCatalog *catalog, text *category,
							 int32 *schema_version, text **fingerprint);
extern int64 EsSnapshotTakeAs(const EsCatalog *catalog, text *stream_id, Oid roleid);

/* snapshot_task.c: the worker task that takes automatic snapshots */
extern long EsSnapshotTask(void);

/* append.c */
extern bool EsAppendInProgress(void);

/*
 * read.c.  EsScanEvents is the one place where stored events become es_event
 * values (upcast); sinks get them in a per-event memory context.
 */
typedef void (*EsEventSink) (Datum *values, bool *nulls, void *arg);

extern uint64 EsScanEvents(const EsCatalog *catalog, EsPlan *plan, Datum *args,
						   const char *nulls, bool latest_snapshot,
						   EsEventSink sink, void *sink_arg);
extern int64 EsStreamVersion(const EsCatalog *catalog, text *stream_id,
							 bool read_only);
extern int64 EsNewestEventUpTo(const EsCatalog *catalog, int64 after_position,
							   int64 horizon);

#endif							/* ES_H */
