/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The es launcher: one background worker per database where es is
 *	  installed, with no configuration.
 *
 * With shared_preload_libraries = 'es' the postmaster starts the launcher,
 * a background worker connected to no database (it reads pg_database
 * only).  Which databases have es can only be seen from inside each one, so
 * the launcher starts a worker (worker.c) in every connectable database it
 * has not looked at yet; a worker that finds no es there says so and exits,
 * and the launcher leaves that database alone until CREATE EXTENSION es
 * runs in it.  A worker that exits for any other reason, or crashes, is
 * started again after a second.  After a crash restart of the server the
 * launcher starts from nothing and looks at every database again.  Template
 * databases (datistemplate) get no worker: nobody appends there, and a
 * connection to a template would make CREATE DATABASE fail.
 *
 * Shared memory holds one slot per worker: its database, its pid, and
 * what the worker reports about itself (es_worker_status), plus the
 * per-database counters that wake it (appending commits, registry changes).
 * Appending backends find their database's slot to wake its worker at
 * commit (EsWorkerCommitted); when there is none, they notify themselves.
 *
 * Asking a worker to leave.  DROP DATABASE, ALTER DATABASE ... RENAME and
 * CREATE DATABASE ... TEMPLATE need the database to themselves.  A
 * ProcessUtility hook in the backend that runs them first puts a hold on
 * the database (the launcher starts nothing there while it stands), stops
 * the workers there and waits for them to be gone, then runs the command,
 * and lifts the hold afterwards (holds also expire, should the backend
 * die).  The same hook tells the launcher at the commit of CREATE
 * EXTENSION es to look at that database again, and wakes the worker at the
 * commit of DROP EXTENSION es so that it leaves at once.
 *
 * When no worker can be started (max_worker_processes in use), the log
 * says so once per database with a hint, the launcher tries again every
 * few seconds, and that database's appends notify from their own
 * transactions: correct, slower.
 *
 * Locks: the launcher LWLock (exclusive to allocate or free a slot or
 * change a hold; shared to look slots up), a spinlock per slot for its
 * report, and BackgroundWorkerLock inside PostgreSQL's bgworker calls.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "es.h"
#include "launcher.h"

PGDLLEXPORT void es_launcher_main(Datum main_arg);

/* How long the launcher waits before starting a worker again. */
#define RESTART_DELAY_MS		1000
#define NO_SLOT_RETRY_MS		5000
#define LAUNCHER_NAPTIME_MS		1000
/* A hold outlives a backend that died while holding it by this much. */
#define HOLD_EXPIRY_MS			60000
/* How long a command waits for the workers of its database to leave. */
#define LEAVE_TIMEOUT_MS		10000

#define MAX_HOLDS				16
#define MAX_REQUESTS			32

typedef struct EsHold
{
	Oid			dboid;			/* InvalidOid: free */
	int			pid;			/* the backend holding it */
	TimestampTz expires;
} EsHold;

typedef struct EsLauncherShared
{
	LWLock	   *lock;
	Latch	   *launcher_latch;
	EsHold		holds[MAX_HOLDS];
	int			nrequests;		/* databases to look at again */
	Oid			requests[MAX_REQUESTS];
	bool		rescan_all;		/* requests overflowed */
	ConditionVariable projection_progress;	/* a projection checkpoint moved */
	int			nslots;
	EsWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} EsLauncherShared;

static EsLauncherShared *launcher_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ProcessUtility_hook_type prev_process_utility_hook = NULL;

/* This backend's cached slot of its database, or -1. */
static int	my_db_slot = -1;

/* Set by the utility hook, acted on at commit. */
static bool extension_created = false;
static bool extension_dropped = false;
static bool registry_changed = false;
static bool xact_callback_registered = false;

static int
SlotCount(void)
{
	/* Every worker process could be one of ours. */
	return Max(max_worker_processes, 1);
}

static Size
LauncherShmemSize(void)
{
	return add_size(offsetof(EsLauncherShared, slots),
					mul_size(sizeof(EsWorkerSlot), SlotCount()));
}

static void
LauncherShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(LauncherShmemSize());
	RequestNamedLWLockTranche("es launcher", 1);
}

static void
LauncherShmemStartup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	launcher_shared = ShmemInitStruct("es launcher", LauncherShmemSize(), &found);
	if (!found)
	{
		memset(launcher_shared, 0, LauncherShmemSize());
		launcher_shared->lock = &(GetNamedLWLockTranche("es launcher"))->lock;
		launcher_shared->nslots = SlotCount();
		ConditionVariableInit(&launcher_shared->projection_progress);
		for (int i = 0; i < launcher_shared->nslots; i++)
		{
			EsWorkerSlot *slot = &launcher_shared->slots[i];

			SpinLockInit(&slot->mutex);
			pg_atomic_init_u64(&slot->commits, 0);
			pg_atomic_init_u64(&slot->registry_changes, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * At commit: tell the launcher about a new installation, wake the worker
 * after a DROP EXTENSION or a registry change.
 */
static void
LauncherXactCallback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
	{
		if (extension_created && launcher_shared != NULL)
		{
			LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
			if (launcher_shared->nrequests < MAX_REQUESTS)
				launcher_shared->requests[launcher_shared->nrequests++] = MyDatabaseId;
			else
				launcher_shared->rescan_all = true;
			LWLockRelease(launcher_shared->lock);
			if (launcher_shared->launcher_latch)
				SetLatch(launcher_shared->launcher_latch);
		}
		if (registry_changed || extension_dropped)
		{
			EsWorkerSlot *slot = EsWorkerSlotForDatabase(MyDatabaseId);

			if (slot != NULL)
			{
				if (registry_changed)
					pg_atomic_fetch_add_u64(&slot->registry_changes, 1);
				if (extension_dropped)
					slot->check_extension = true;
				pg_memory_barrier();
				if (slot->latch)
					SetLatch(slot->latch);
			}
		}
	}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		extension_created = false;
		extension_dropped = false;
		registry_changed = false;
	}
}

static void
RegisterLauncherXactCallback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(LauncherXactCallback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * EsWorkerWake
 *		A registration changed: wake this database's worker at commit, so
 *		that tasks woken by ES_WAKE_REGISTRY run.
 */
void
EsWorkerWake(void)
{
	if (launcher_shared == NULL)
		return;
	RegisterLauncherXactCallback();
	registry_changed = true;
}

/*
 * EsWorkerSlotForDatabase
 *		The slot of the worker serving dboid, or NULL.  Lock-free: a slot's
 *		database changes only while its worker is not serving it, and a
 *		wake-up sent to a worker that is just leaving is harmless.
 */
EsWorkerSlot *
EsWorkerSlotForDatabase(Oid dboid)
{
	EsLauncherShared *shared = launcher_shared;

	if (shared == NULL)
		return NULL;
	if (dboid == MyDatabaseId && my_db_slot >= 0)
	{
		EsWorkerSlot *slot = &shared->slots[my_db_slot];

		if (slot->in_use && slot->dboid == dboid && slot->serving)
			return slot;
	}
	for (int i = 0; i < shared->nslots; i++)
	{
		EsWorkerSlot *slot = &shared->slots[i];

		if (slot->in_use && slot->dboid == dboid && slot->serving)
		{
			if (dboid == MyDatabaseId)
				my_db_slot = i;
			return slot;
		}
	}
	return NULL;
}

/*
 * EsWorkerCommitted
 *		An appending transaction of this database committed (or one that
 *		held a position aborted): wake its worker.  Returns whether a worker
 *		serves this database and sends its notifications.
 */
bool
EsWorkerCommitted(void)
{
	EsWorkerSlot *slot = EsWorkerSlotForDatabase(MyDatabaseId);
	Latch	   *latch;

	if (slot == NULL)
		return false;
	pg_atomic_fetch_add_u64(&slot->commits, 1);
	pg_memory_barrier();
	latch = slot->latch;
	if (latch != NULL)
		SetLatch(latch);
	return true;
}

/*
 * EsWorkerNotifies
 *		Whether a worker sends this database's notifications (else the
 *		appending transactions send their own).
 */
bool
EsWorkerNotifies(void)
{
	return EsWorkerSlotForDatabase(MyDatabaseId) != NULL;
}

/*
 * EsProjectionProgress
 *		The condition variable es_projection_wait sleeps on, broadcast when
 *		a projection checkpoint commits (projection.c); NULL without
 *		preloading.
 */
ConditionVariable *
EsProjectionProgress(void)
{
	return launcher_shared ? &launcher_shared->projection_progress : NULL;
}

/*
 * EsWorkerSlotGet
 *		For the worker: its own slot, by index.
 */
EsWorkerSlot *
EsWorkerSlotGet(int index)
{
	if (launcher_shared == NULL || index < 0 || index >= launcher_shared->nslots)
		elog(ERROR, "es: worker slot %d out of range", index);
	return &launcher_shared->slots[index];
}

/*
 * EsWorkerSlotsForStatus
 *		Copies the reports of the workers serving dboid into out (at most
 *		max); returns how many.
 */
int
EsWorkerSlotsForStatus(Oid dboid, EsWorkerReportCopy *out, int max)
{
	int			n = 0;

	if (launcher_shared == NULL)
		return 0;
	for (int i = 0; i < launcher_shared->nslots && n < max; i++)
	{
		EsWorkerSlot *slot = &launcher_shared->slots[i];

		if (!slot->in_use || slot->dboid != dboid || slot->pid == 0)
			continue;
		SpinLockAcquire(&slot->mutex);
		out[n].pid = slot->pid;
		out[n].started_at = slot->started_at;
		strlcpy(out[n].state, slot->state, sizeof(out[n].state));
		strlcpy(out[n].last_task, slot->last_task, sizeof(out[n].last_task));
		strlcpy(out[n].last_report, slot->last_report, sizeof(out[n].last_report));
		out[n].last_report_at = slot->last_report_at;
		SpinLockRelease(&slot->mutex);
		n++;
	}
	return n;
}

/*
 * Holds
 */

static bool
DatabaseHeld(Oid dboid, TimestampTz now)
{
	for (int i = 0; i < MAX_HOLDS; i++)
	{
		EsHold	   *hold = &launcher_shared->holds[i];

		if (hold->dboid == dboid && hold->expires > now)
			return true;
	}
	return false;
}

/*
 * HoldDatabase
 *		Keeps the launcher from starting workers in dboid, stops those that
 *		run there and waits until they are gone (or LEAVE_TIMEOUT_MS pass:
 *		the command then says itself that the database is in use).
 */
static void
HoldDatabase(Oid dboid)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz deadline = TimestampTzPlusMilliseconds(now, LEAVE_TIMEOUT_MS);
	int			free_hold = -1;

	LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_HOLDS; i++)
	{
		EsHold	   *hold = &launcher_shared->holds[i];

		if ((hold->dboid == InvalidOid || hold->expires <= now) && free_hold < 0)
			free_hold = i;
	}
	if (free_hold >= 0)
	{
		launcher_shared->holds[free_hold].dboid = dboid;
		launcher_shared->holds[free_hold].pid = MyProcPid;
		launcher_shared->holds[free_hold].expires =
			TimestampTzPlusMilliseconds(now, HOLD_EXPIRY_MS);
	}
	LWLockRelease(launcher_shared->lock);

	/*
	 * A worker that has not connected yet sees the hold and leaves
	 * (EsWorkerMayConnect); one that has is asked to leave.
	 */
	for (;;)
	{
		bool		waiting = false;

		LWLockAcquire(launcher_shared->lock, LW_SHARED);
		for (int i = 0; i < launcher_shared->nslots; i++)
		{
			EsWorkerSlot *slot = &launcher_shared->slots[i];

			if (!slot->in_use || slot->dboid != dboid || slot->exited)
				continue;
			waiting = true;
			if (slot->pid != 0)
				(void) kill(slot->pid, SIGTERM);
		}
		LWLockRelease(launcher_shared->lock);
		if (!waiting || GetCurrentTimestamp() >= deadline)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * EsWorkerMayConnect
 *		For a worker about to connect: records its pid and says whether its
 *		database is free of holds.
 */
bool
EsWorkerMayConnect(EsWorkerSlot *slot)
{
	bool		held;

	LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
	slot->pid = MyProcPid;
	held = DatabaseHeld(slot->dboid, GetCurrentTimestamp());
	LWLockRelease(launcher_shared->lock);
	return !held;
}

static void
ReleaseHolds(void)
{
	LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MAX_HOLDS; i++)
	{
		EsHold	   *hold = &launcher_shared->holds[i];

		if (hold->pid == MyProcPid)
		{
			hold->dboid = InvalidOid;
			hold->pid = 0;
		}
	}
	launcher_shared->rescan_all = true;
	LWLockRelease(launcher_shared->lock);
	if (launcher_shared->launcher_latch)
		SetLatch(launcher_shared->launcher_latch);
}

/*
 * The database a statement needs to itself, or InvalidOid.
 */
static Oid
DatabaseNeededAlone(Node *parsetree)
{
	const char *name = NULL;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			name = ((DropdbStmt *) parsetree)->dbname;
			break;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				name = ((RenameStmt *) parsetree)->subname;
			break;
		case T_CreatedbStmt:
			{
				ListCell   *lc;

				name = "template1";
				foreach(lc, ((CreatedbStmt *) parsetree)->options)
				{
					DefElem    *def = lfirst_node(DefElem, lc);

					if (strcmp(def->defname, "template") == 0 && def->arg != NULL)
						name = defGetString(def);
				}
			}
			break;
		default:
			break;
	}
	if (name == NULL)
		return InvalidOid;
	return get_database_oid(name, true);
}

static bool
NamesEs(List *objects)
{
	ListCell   *lc;

	foreach(lc, objects)
	{
		Node	   *object = lfirst(lc);

		if (IsA(object, String) && strcmp(strVal(object), "es") == 0)
			return true;
	}
	return false;
}

static void
EsProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				 ProcessUtilityContext context, ParamListInfo params,
				 QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	volatile Oid alone = InvalidOid;

	if (launcher_shared != NULL)
	{
		alone = DatabaseNeededAlone(parsetree);
		if (IsA(parsetree, CreateExtensionStmt) &&
			strcmp(((CreateExtensionStmt *) parsetree)->extname, "es") == 0)
		{
			RegisterLauncherXactCallback();
			extension_created = true;
		}
		if (IsA(parsetree, DropStmt) &&
			((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION &&
			NamesEs(((DropStmt *) parsetree)->objects))
		{
			RegisterLauncherXactCallback();
			extension_dropped = true;
		}
	}

	if (OidIsValid(alone))
		HoldDatabase(alone);

	PG_TRY();
	{
		if (prev_process_utility_hook)
			prev_process_utility_hook(pstmt, queryString, readOnlyTree, context,
									  params, queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context,
									params, queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (OidIsValid(alone))
			ReleaseHolds();
	}
	PG_END_TRY();
}

/*
 * EsLauncherInit
 *		From _PG_init while preloading: shared memory, the utility hook and
 *		the launcher itself.
 */
void
EsLauncherInit(void)
{
	BackgroundWorker worker;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = LauncherShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = LauncherShmemStartup;
	prev_process_utility_hook = ProcessUtility_hook;
	ProcessUtility_hook = EsProcessUtility;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "es");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "es_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "es launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "es launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * The launcher
 */

typedef enum DbState
{
	DB_UNKNOWN,					/* not looked at yet: start a worker */
	DB_RUNNING,					/* a worker runs (or is starting) there */
	DB_WITHOUT_ES,				/* its worker found no es */
	DB_RETRY					/* start again at retry_at */
} DbState;

typedef struct LauncherDb
{
	Oid			dboid;
	char		name[NAMEDATALEN];
	DbState		state;
	int			slot;			/* while DB_RUNNING */
	BackgroundWorkerHandle *handle; /* of the worker we started, or NULL */
	TimestampTz retry_at;
	bool		requested;		/* CREATE EXTENSION since the worker started */
	bool		seen;			/* in pg_database at the last scan */
	bool		told_no_slot;	/* logged that no worker could be started */
} LauncherDb;

static LauncherDb *dbs = NULL;
static int	ndbs = 0;
static int	maxdbs = 0;

static LauncherDb *
FindDb(Oid dboid)
{
	for (int i = 0; i < ndbs; i++)
		if (dbs[i].dboid == dboid)
			return &dbs[i];
	return NULL;
}

/*
 * ScanDatabases
 *		Adds the connectable non-template databases not known yet, forgets
 *		those that are gone.
 */
static void
ScanDatabases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	for (int i = 0; i < ndbs; i++)
		dbs[i].seen = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);
		LauncherDb *known;

		if (!db->datallowconn || db->datistemplate)
			continue;
		known = FindDb(db->oid);
		if (known == NULL)
		{
			if (ndbs == maxdbs)
			{
				maxdbs = Max(16, maxdbs * 2);
				dbs = dbs ? repalloc(dbs, sizeof(LauncherDb) * maxdbs)
					: MemoryContextAlloc(TopMemoryContext, sizeof(LauncherDb) * maxdbs);
			}
			known = &dbs[ndbs++];
			memset(known, 0, sizeof(LauncherDb));
			known->dboid = db->oid;
			known->state = DB_UNKNOWN;
			known->slot = -1;
		}
		strlcpy(known->name, NameStr(db->datname), NAMEDATALEN);
		known->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	/* Forget the dropped ones (their workers have left: DROP DATABASE waits). */
	for (int i = 0; i < ndbs;)
	{
		if (!dbs[i].seen && dbs[i].state != DB_RUNNING)
			dbs[i] = dbs[--ndbs];
		else
			i++;
	}
}

/*
 * StartWorker
 *		A worker for db, in a free slot, unless the database is held.
 */
static void
StartWorker(LauncherDb *db, TimestampTz now)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	int			index = -1;

	LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
	if (DatabaseHeld(db->dboid, now))
	{
		LWLockRelease(launcher_shared->lock);
		db->state = DB_RETRY;
		db->retry_at = TimestampTzPlusMilliseconds(now, RESTART_DELAY_MS);
		return;
	}
	for (int i = 0; i < launcher_shared->nslots; i++)
	{
		if (!launcher_shared->slots[i].in_use)
		{
			index = i;
			break;
		}
	}

	if (index >= 0)
	{
		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = BGW_NEVER_RESTART;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "es");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "es_worker_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "es worker for database %s", db->name);
		snprintf(worker.bgw_type, BGW_MAXLEN, "es worker");
		worker.bgw_main_arg = Int32GetDatum(index);
		worker.bgw_notify_pid = MyProcPid;
		memcpy(worker.bgw_extra, &db->dboid, sizeof(Oid));

		if (RegisterDynamicBackgroundWorker(&worker, &handle))
		{
			EsWorkerSlot *slot = &launcher_shared->slots[index];

			slot->in_use = true;
			slot->dboid = db->dboid;
			slot->serving = false;
			slot->exited = false;
			slot->pid = 0;
			slot->latch = NULL;
			slot->exit_reason = ES_WORKER_EXIT_UNKNOWN;
			slot->check_extension = false;
			LWLockRelease(launcher_shared->lock);
			db->handle = handle;
			db->state = DB_RUNNING;
			db->slot = index;
			db->requested = false;
			if (db->told_no_slot)
				ereport(LOG,
						(errmsg("es launcher started a worker for database \"%s\"", db->name)));
			db->told_no_slot = false;
			return;
		}
	}
	LWLockRelease(launcher_shared->lock);

	if (!db->told_no_slot)
		ereport(LOG,
				(errmsg("es launcher could not start a worker for database \"%s\"", db->name),
				 errdetail("All background worker slots are in use."),
				 errhint("Raise max_worker_processes.  Until a worker runs there, appends in that database send their own notifications, and async projections and automatic snapshots wait.")));
	db->told_no_slot = true;
	db->state = DB_RETRY;
	db->retry_at = TimestampTzPlusMilliseconds(now, NO_SLOT_RETRY_MS);
}

/*
 * A worker we started has stopped: free its slot and decide what next.
 */
static void
WorkerStopped(LauncherDb *db, TimestampTz now)
{
	EsWorkerSlot *slot = &launcher_shared->slots[db->slot];
	EsWorkerExit reason;

	LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
	reason = slot->exit_reason;
	slot->in_use = false;
	slot->serving = false;
	slot->latch = NULL;
	slot->pid = 0;
	slot->dboid = InvalidOid;
	LWLockRelease(launcher_shared->lock);
	db->slot = -1;
	if (db->handle)
		pfree(db->handle);
	db->handle = NULL;

	if (reason == ES_WORKER_EXIT_NO_EXTENSION && !db->requested)
		db->state = DB_WITHOUT_ES;
	else
	{
		db->state = DB_RETRY;
		db->retry_at = TimestampTzPlusMilliseconds(now, db->requested ? 0 : RESTART_DELAY_MS);
	}
}

/*
 * A previous launcher's workers go on running: adopt them.
 */
static void
AdoptWorkers(void)
{
	ScanDatabases();
	LWLockAcquire(launcher_shared->lock, LW_SHARED);
	for (int i = 0; i < launcher_shared->nslots; i++)
	{
		EsWorkerSlot *slot = &launcher_shared->slots[i];
		LauncherDb *db;

		if (!slot->in_use)
			continue;
		db = FindDb(slot->dboid);
		if (db != NULL)
		{
			db->state = DB_RUNNING;
			db->slot = i;
		}
	}
	LWLockRelease(launcher_shared->lock);
}

void
es_launcher_main(Datum main_arg)
{
	TimestampTz last_scan = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	launcher_shared->launcher_latch = MyLatch;
	AdoptWorkers();
	last_scan = GetCurrentTimestamp();

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		long		sleep_ms = LAUNCHER_NAPTIME_MS;
		bool		rescan;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* What backends asked for. */
		LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
		rescan = launcher_shared->rescan_all || launcher_shared->nrequests > 0;
		launcher_shared->rescan_all = false;
		LWLockRelease(launcher_shared->lock);

		if (rescan || TimestampDifferenceExceeds(last_scan, now, LAUNCHER_NAPTIME_MS))
		{
			ScanDatabases();
			last_scan = now;
		}

		LWLockAcquire(launcher_shared->lock, LW_EXCLUSIVE);
		for (int i = 0; i < launcher_shared->nrequests; i++)
		{
			LauncherDb *db = FindDb(launcher_shared->requests[i]);

			if (db == NULL)
				continue;
			db->requested = true;
			if (db->state == DB_WITHOUT_ES || db->state == DB_RETRY)
			{
				db->state = DB_RETRY;
				db->retry_at = 0;
			}
		}
		launcher_shared->nrequests = 0;
		LWLockRelease(launcher_shared->lock);

		for (int i = 0; i < ndbs; i++)
		{
			LauncherDb *db = &dbs[i];

			if (db->state == DB_RUNNING)
			{
				EsWorkerSlot *slot = &launcher_shared->slots[db->slot];
				pid_t		pid;

				if (db->handle != NULL
					? GetBackgroundWorkerPid(db->handle, &pid) == BGWH_STOPPED
					: slot->exited)
					WorkerStopped(db, now);
			}
			if (db->state == DB_UNKNOWN ||
				(db->state == DB_RETRY && db->retry_at <= now))
				StartWorker(db, now);
			if (db->state == DB_RETRY)
				sleep_ms = Min(sleep_ms,
							   Max(1, TimestampDifferenceMilliseconds(now, db->retry_at)));
		}

		/* Forget databases that are gone for good. */
		for (int i = 0; i < ndbs;)
		{
			if (!dbs[i].seen && dbs[i].state != DB_RUNNING)
				dbs[i] = dbs[--ndbs];
			else
				i++;
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
