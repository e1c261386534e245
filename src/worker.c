/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The es background worker: coalesced notifications on channel
 *	  "es_events".
 *
 * Registered from _PG_init when es is in shared_preload_libraries: one
 * worker per cluster, connected to the database named by
 * es.worker_database, started once recovery has finished and restarted
 * after a crash.  It sleeps on its latch; every appending commit in its
 * database sets the latch (order.c).  When woken, it waits until
 * es.notify_interval has passed since its last notification, computes the
 * horizon of the gap-free global order and, if it moved, sends one NOTIFY
 * with the new horizon as payload.  So listeners hear at most one
 * notification per interval, and appending transactions never take the
 * notification queue's lock at commit: PostgreSQL serialises notifying
 * commits on it, which was measured to halve append throughput at 8
 * clients.  Appends in other databases notify from their own transactions.
 *
 * The worker idles while the extension is not installed in its database,
 * and wakes at least every es.worker_naptime to look again.  SIGHUP reloads
 * the configuration (a new es.worker_database makes it exit, to be started
 * again by the postmaster after bgw_restart_time); SIGTERM ends it.
 *
 * Locks: those of its own short transactions (the registry lock shared,
 * through EsReadHorizon).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "es.h"

PGDLLEXPORT void es_worker_main(Datum main_arg);

/*
 * EsWorkerRegister
 *		From _PG_init while preloading.
 */
void
EsWorkerRegister(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 10;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "es");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "es_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "es worker");
	snprintf(worker.bgw_type, BGW_MAXLEN, "es worker");
	RegisterBackgroundWorker(&worker);
}

static void
ForgetWorker(int code, Datum arg)
{
	EsOrderSetWorker(NULL, InvalidOid);
}

/*
 * The schema es is installed in, or InvalidOid.  Inside a transaction.
 */
static Oid
ExtensionSchema(void)
{
	int			ret;
	Oid			schema = InvalidOid;

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
	return schema;
}

/*
 * Notify
 *		One short transaction: the horizon, and a NOTIFY if it moved past
 *		what listeners were last told.  Returns the horizon notified (or the
 *		old one).
 */
static int64
Notify(int64 last_notified, bool *installed)
{
	int64		horizon = last_notified;
	Oid			schema;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "es worker: notify");

	schema = ExtensionSchema();
	*installed = OidIsValid(schema);
	if (*installed)
	{
		const EsCatalog *cat = EsCatalogForSchema(schema);

		/* the newest event readers can get, not a rolled-back position */
		horizon = EsNewestEventUpTo(cat, 0, EsReadHorizon(cat));
		/* (lower only when the extension was dropped and created again) */
		if (horizon != last_notified && horizon > 0)
		{
			char		payload[32];
			Oid			argtypes[1] = {TEXTOID};
			Datum		args[1];
			int			ret;

			snprintf(payload, sizeof(payload), INT64_FORMAT, horizon);
			args[0] = CStringGetTextDatum(payload);
			ret = SPI_execute_with_args("SELECT pg_catalog.pg_notify('" ES_NOTIFY_CHANNEL "', $1)",
										1, argtypes, args, NULL, false, 1);
			if (ret != SPI_OK_SELECT)
				elog(ERROR, "pg_notify failed: %s", SPI_result_code_string(ret));
		}
		else
			horizon = last_notified;
	}

	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return horizon;
}

void
es_worker_main(Datum main_arg)
{
	int64		last_notified = 0;
	uint64		commits_seen = 0;
	TimestampTz last_notify_time = 0;
	bool		installed = false;
	char	   *database;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* A reload may change es.worker_database later: remember this one. */
	database = pstrdup(es_worker_database);
	BackgroundWorkerInitializeConnection(database, NULL, 0);
	ereport(LOG,
			(errmsg("es worker started for database \"%s\"", es_worker_database)));

	on_shmem_exit(ForgetWorker, (Datum) 0);
	EsOrderSetWorker(MyLatch, MyDatabaseId);

	/* Tell listeners where things stand, once, at start. */
	last_notified = Notify(0, &installed);
	last_notify_time = GetCurrentTimestamp();

	for (;;)
	{
		uint64		commits;

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 es_worker_naptime, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			if (strcmp(es_worker_database, database) != 0)
			{
				ereport(LOG,
						(errmsg("es worker restarting to connect to database \"%s\"",
								es_worker_database)));
				proc_exit(1);	/* the postmaster starts us again */
			}
		}

		commits = EsOrderAppendingCommits();
		if (!es_notify || (commits == commits_seen && installed))
			continue;

		/* Coalesce: at most one notification per es.notify_interval. */
		for (;;)
		{
			long		wait_ms = TimestampDifferenceMilliseconds(GetCurrentTimestamp(),
																  TimestampTzPlusMilliseconds(last_notify_time,
																							  es_notify_interval));

			if (wait_ms <= 0)
				break;
			(void) WaitLatch(MyLatch, WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, wait_ms,
							 PG_WAIT_EXTENSION);
			CHECK_FOR_INTERRUPTS();
		}

		commits_seen = EsOrderAppendingCommits();
		last_notified = Notify(last_notified, &installed);
		last_notify_time = GetCurrentTimestamp();
	}
}

/*
 * EsWorkerWake
 *		A registration changed: wake this database's worker (at commit).
 *		(Placeholder until the per-database scheduler lands.)
 */
void
EsWorkerWake(void)
{
}

/*
 * EsWorkerReport
 *		What a task did last, for es_worker_status.
 *		(Placeholder until the per-database scheduler lands.)
 */
void
EsWorkerReport(const char *task, const char *what)
{
}
