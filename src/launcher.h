/*-------------------------------------------------------------------------
 *
 * launcher.h
 *	  The shared-memory slots through which the es launcher (launcher.c),
 *	  its per-database workers (worker.c) and appending backends meet.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_LAUNCHER_H
#define ES_LAUNCHER_H

#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

typedef enum EsWorkerExit
{
	ES_WORKER_EXIT_UNKNOWN = 0, /* crashed, terminated, or still running */
	ES_WORKER_EXIT_NO_EXTENSION /* es is not installed in its database */
} EsWorkerExit;

#define ES_STATUS_TEXT 256

typedef struct EsWorkerSlot
{
	/* Set by the launcher, under its lock. */
	bool		in_use;
	Oid			dboid;

	/* Set by the worker. */
	pid_t		pid;			/* set under the launcher lock */
	bool		exited;
	TimestampTz started_at;
	Latch	   *latch;
	bool		serving;		/* es is installed; it sends notifications */
	EsWorkerExit exit_reason;

	/* What wakes the worker. */
	pg_atomic_uint64 commits;	/* appending commits in its database */
	pg_atomic_uint64 registry_changes;
	bool		check_extension;	/* DROP EXTENSION es committed */

	/* Its report, for es_worker_status. */
	slock_t		mutex;
	char		state[64];
	char		last_task[64];
	char		last_report[ES_STATUS_TEXT];
	TimestampTz last_report_at;
} EsWorkerSlot;

typedef struct EsWorkerReportCopy
{
	pid_t		pid;			/* set under the launcher lock */
	bool		exited;
	TimestampTz started_at;
	char		state[64];
	char		last_task[64];
	char		last_report[ES_STATUS_TEXT];
	TimestampTz last_report_at;
} EsWorkerReportCopy;

extern EsWorkerSlot *EsWorkerSlotGet(int index);
extern EsWorkerSlot *EsWorkerSlotForDatabase(Oid dboid);
extern bool EsWorkerMayConnect(EsWorkerSlot *slot);
extern ConditionVariable *EsProjectionProgress(void);
extern int	EsWorkerSlotsForStatus(Oid dboid, EsWorkerReportCopy *out, int max);

#endif							/* ES_LAUNCHER_H */
