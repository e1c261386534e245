/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The es worker of one database: a small scheduler, the one home of
 *	  es's background work.
 *
 * The launcher (launcher.c) starts one in every database where es is
 * installed.  It runs the tasks in the table below.  Each task says what
 * wakes it: an appending commit in this database (every commit sets the
 * worker's latch and bumps a counter in its slot), a registry change
 * (EsWorkerWake at the commit of a registration), or its own timer (the
 * delay it returned last time).  A task runs outside any transaction,
 * starts its own, and reports what it did (EsWorkerReport), which
 * es_worker_status shows.
 *
 * Commits are coalesced: after a turn the worker sleeps out
 * es.notify_interval before it looks at the commit counter again, so a
 * busy database costs it at most one turn per interval, and appending
 * transactions only ever set a latch.  Notifications are the first task:
 * one NOTIFY per turn at most, with the newest readable position as
 * payload, so that appending transactions never take the notification
 * queue's lock at commit (PostgreSQL serialises notifying commits on it,
 * which was measured to halve append throughput at 8 clients).
 *
 * A task that raises an error is logged, its transaction rolled back, and
 * it is run again after a backoff (1 s, doubling up to a minute); the other
 * tasks go on.  The worker leaves when es is no longer installed (it looks
 * at least every es.worker_naptime, and at once after DROP EXTENSION), on
 * SIGTERM (the launcher's utility hook asks it to when its database is
 * dropped, renamed or copied), and at postmaster death.  SIGHUP reloads the
 * configuration.
 *
 * Locks: those of its tasks' short transactions, and the slot's spinlock
 * for its report.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "es.h"
#include "launcher.h"

PGDLLEXPORT void es_worker_main(Datum main_arg);

PG_FUNCTION_INFO_V1(es_get_worker_status);
PG_FUNCTION_INFO_V1(es_registry_changed);

static long NotifyTask(void);

typedef struct EsTask
{
	const char *name;
	int			wakes;			/* ES_WAKE_* */
	EsTaskRun	run;
	/* scheduling state */
	bool		ran;
	uint64		commits_seen;
	uint64		registry_seen;
	TimestampTz due;			/* 0: not on a timer */
	int			backoff_ms;		/* after an error */
} EsTask;

/*
 * The tasks, in the order they run in each turn.
 */
static EsTask tasks[] = {
	{"notify", ES_WAKE_COMMIT, NotifyTask},
	{"projections", ES_WAKE_COMMIT | ES_WAKE_REGISTRY, EsProjectionTask},
	{"snapshots", ES_WAKE_COMMIT | ES_WAKE_REGISTRY, EsSnapshotTask},
};

#define MIN_BACKOFF_MS	1000
#define MAX_BACKOFF_MS	60000

static EsWorkerSlot *my_slot = NULL;

static void
SetState(const char *state)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	strlcpy(my_slot->state, state, sizeof(my_slot->state));
	SpinLockRelease(&my_slot->mutex);
}

/*
 * EsWorkerReport
 *		What a task did last, for es_worker_status.  A no-op outside the
 *		worker (tasks also run from SQL).
 */
void
EsWorkerReport(const char *task, const char *what)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	strlcpy(my_slot->last_task, task, sizeof(my_slot->last_task));
	strlcpy(my_slot->last_report, what, sizeof(my_slot->last_report));
	my_slot->last_report_at = GetCurrentTimestamp();
	SpinLockRelease(&my_slot->mutex);
}

/*
 * es_registry_changed() RETURNS trigger
 *		Statement trigger on the registries whose changes wake tasks
 *		(ES_WAKE_REGISTRY): the worker is woken when this transaction
 *		commits, and the sessions' caches of the registry are invalidated.
 *		The worker's own bookkeeping in those tables (positions, failures)
 *		does neither.
 */
Datum
es_registry_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_registry_changed() must be called as a trigger")));
	if (my_slot == NULL)
	{
		TriggerData *trigdata = (TriggerData *) fcinfo->context;

		/* the sessions' caches of the registry (aggregate.c) */
		CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
		EsWorkerWake();
	}
	return PointerGetDatum(NULL);	/* ignored for AFTER triggers */
}

static void
LeaveSlot(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	my_slot->serving = false;
	my_slot->latch = NULL;
	pg_write_barrier();
	my_slot->exited = true;
}

/*
 * EsExtensionSchema
 *		The schema es is installed in, or InvalidOid.  Inside a transaction;
 *		for tasks, which run outside any function call of the extension.
 */
Oid
EsExtensionSchema(void)
{
	int			ret;
	Oid			schema = InvalidOid;

	SPI_connect();
	ret = SPI_execute("SELECT e.extnamespace FROM pg_catalog.pg_extension e "
					  "WHERE e.extname OPERATOR(pg_catalog.=) 'es'", true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "looking up extension es failed: %s", SPI_result_code_string(ret));
	if (SPI_processed > 0)
	{
		bool		isnull;

		schema = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();
	return schema;
}

static char *database_name = NULL;

static bool
ExtensionInstalled(void)
{
	bool		installed;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (database_name == NULL)
	{
		char	   *name = get_database_name(MyDatabaseId);

		database_name = MemoryContextStrdup(TopMemoryContext, name ? name : "?");
	}
	installed = OidIsValid(EsExtensionSchema());
	PopActiveSnapshot();
	CommitTransactionCommand();
	return installed;
}

/*
 * Notifications
 */

static int64 last_notified = 0;
static TimestampTz last_notify_time = 0;

/*
 * NotifyTask
 *		One short transaction: the newest readable position, and a NOTIFY
 *		if it moved past what listeners were last told.  Waits its turn:
 *		at most one notification per es.notify_interval.
 */
static long
NotifyTask(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		wait_ms;
	Oid			schema;
	int64		newest = last_notified;

	if (!es_notify)
		return -1;
	wait_ms = TimestampDifferenceMilliseconds(now,
											  TimestampTzPlusMilliseconds(last_notify_time,
																		  es_notify_interval));
	if (wait_ms > 0)
		return wait_ms;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	schema = EsExtensionSchema();
	if (OidIsValid(schema))
	{
		const EsCatalog *cat = EsCatalogForSchema(schema);

		SPI_connect();
		/* the newest event readers can get, not a rolled-back position */
		newest = EsNewestEventUpTo(cat, 0, EsReadHorizon(cat));
		/* (lower only when the extension was dropped and created again) */
		if (newest != last_notified && newest > 0)
		{
			char		payload[32];
			Oid			argtypes[1] = {TEXTOID};
			Datum		args[1];
			int			ret;

			snprintf(payload, sizeof(payload), INT64_FORMAT, newest);
			args[0] = CStringGetTextDatum(payload);
			ret = SPI_execute_with_args("SELECT pg_catalog.pg_notify('" ES_NOTIFY_CHANNEL "', $1)",
										1, argtypes, args, NULL, false, 1);
			if (ret != SPI_OK_SELECT)
				elog(ERROR, "pg_notify failed: %s", SPI_result_code_string(ret));
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();

	if (newest != last_notified && newest > 0)
	{
		char		what[64];

		snprintf(what, sizeof(what), "notified position " INT64_FORMAT, newest);
		EsWorkerReport("notify", what);
		last_notified = newest;
	}
	last_notify_time = GetCurrentTimestamp();
	return -1;
}

/*
 * The scheduler
 */

/*
 * RunTask
 *		One run of a task; an error is logged and rolled back, and the task
 *		runs again after a backoff.
 */
static void
RunTask(EsTask *task)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	char		state[64];
	long		delay_ms = -1;

	snprintf(state, sizeof(state), "running %s", task->name);
	SetState(state);
	pgstat_report_activity(STATE_RUNNING, state);

	PG_TRY();
	{
		delay_ms = task->run();
		task->backoff_ms = 0;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char		what[ES_STATUS_TEXT];

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("es worker task \"%s\" failed: %s", task->name, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 edata->context ? errcontext("%s", edata->context) : 0,
				 errhint("The task runs again in %d ms.",
						 task->backoff_ms == 0 ? MIN_BACKOFF_MS
						 : Min(task->backoff_ms * 2, MAX_BACKOFF_MS))));
		task->backoff_ms = task->backoff_ms == 0 ? MIN_BACKOFF_MS
			: Min(task->backoff_ms * 2, MAX_BACKOFF_MS);
		delay_ms = task->backoff_ms;
		snprintf(what, sizeof(what), "failed: %s (again in %d ms)",
				 edata->message, task->backoff_ms);
		EsWorkerReport(task->name, what);
		FreeErrorData(edata);
	}
	PG_END_TRY();

	task->ran = true;
	task->due = delay_ms >= 0
		? TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay_ms) : 0;
	MemoryContextSwitchTo(oldcontext);
	SetState("idle");
	pgstat_report_activity(STATE_IDLE, NULL);
}

static bool
TaskWoken(EsTask *task, uint64 commits, uint64 registry, TimestampTz now)
{
	if (!task->ran)
		return true;
	if (task->backoff_ms > 0)
		return task->due <= now;
	if ((task->wakes & ES_WAKE_COMMIT) && commits != task->commits_seen)
		return true;
	if ((task->wakes & ES_WAKE_REGISTRY) && registry != task->registry_seen)
		return true;
	return task->due != 0 && task->due <= now;
}

void
es_worker_main(Datum main_arg)
{
	int			index = DatumGetInt32(main_arg);
	Oid			dboid;
	TimestampTz last_check;
	MemoryContext turn_context;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	my_slot = EsWorkerSlotGet(index);
	my_slot->started_at = GetCurrentTimestamp();
	SetState("starting");
	on_shmem_exit(LeaveSlot, (Datum) 0);
	if (!EsWorkerMayConnect(my_slot))
		proc_exit(0);			/* its database is being dropped, renamed or copied */

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	if (!ExtensionInstalled())
	{
		my_slot->exit_reason = ES_WORKER_EXIT_NO_EXTENSION;
		proc_exit(0);
	}
	ereport(LOG,
			(errmsg("es worker started for database \"%s\"", database_name)));

	my_slot->latch = MyLatch;
	pg_write_barrier();
	my_slot->serving = true;
	last_check = GetCurrentTimestamp();
	SetState("idle");

	turn_context = AllocSetContextCreate(TopMemoryContext, "es worker turn",
										 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TimestampTz now;
		long		sleep_ms;
		uint64		commits;
		uint64		registry;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* Still installed?  At least every naptime, and after DROP EXTENSION. */
		now = GetCurrentTimestamp();
		if (my_slot->check_extension ||
			TimestampDifferenceExceeds(last_check, now, es_worker_naptime))
		{
			my_slot->check_extension = false;
			if (!ExtensionInstalled())
			{
				ereport(LOG,
						(errmsg("es worker for database \"%s\" stops: the extension was dropped",
								database_name)));
				my_slot->exit_reason = ES_WORKER_EXIT_NO_EXTENSION;
				proc_exit(0);
			}
			last_check = now;
		}

		/* Read the counters before the tasks, so nothing is missed. */
		ResetLatch(MyLatch);
		pg_memory_barrier();
		commits = pg_atomic_read_u64(&my_slot->commits);
		registry = pg_atomic_read_u64(&my_slot->registry_changes);
		now = GetCurrentTimestamp();

		MemoryContextSwitchTo(turn_context);
		for (int i = 0; i < lengthof(tasks); i++)
		{
			EsTask	   *task = &tasks[i];

			if (!TaskWoken(task, commits, registry, now))
				continue;
			task->commits_seen = commits;
			task->registry_seen = registry;
			RunTask(task);
		}
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(turn_context);

		/* Sleep until the next timer, the naptime, or a wake-up. */
		now = GetCurrentTimestamp();
		sleep_ms = es_worker_naptime;
		for (int i = 0; i < lengthof(tasks); i++)
		{
			if (tasks[i].due != 0)
				sleep_ms = Min(sleep_ms,
							   Max(0, TimestampDifferenceMilliseconds(now, tasks[i].due)));
		}
		if (sleep_ms > 0)
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);

		/*
		 * Coalesce commits: let es.notify_interval pass before the next
		 * turn, whatever woke us (the latch stays set meanwhile, so commits
		 * cost the appenders nothing).
		 */
		(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 es_notify_interval, PG_WAIT_EXTENSION);
	}
}

/*
 * es_get_worker_status() RETURNS TABLE(pid int, started_at timestamptz,
 *		state text, last_task text, last_report text, last_report_at timestamptz)
 *
 * This database's worker, as it reports itself (the es_worker_status view).
 */
Datum
es_get_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	EsWorkerReportCopy reports[4];
	int			n;

	InitMaterializedSRF(fcinfo, 0);
	n = EsWorkerSlotsForStatus(MyDatabaseId, reports, lengthof(reports));
	for (int i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, false, false, false, false};

		values[0] = Int32GetDatum(reports[i].pid);
		values[1] = TimestampTzGetDatum(reports[i].started_at);
		values[2] = CStringGetTextDatum(reports[i].state);
		if (reports[i].last_report_at == 0)
		{
			nulls[3] = nulls[4] = nulls[5] = true;
		}
		else
		{
			values[3] = CStringGetTextDatum(reports[i].last_task);
			values[4] = CStringGetTextDatum(reports[i].last_report);
			values[5] = TimestampTzGetDatum(reports[i].last_report_at);
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
