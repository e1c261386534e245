/*-------------------------------------------------------------------------
 *
 * es.c
 *	  Module entry point of the es extension: the module magic, _PG_init
 *	  and the settings (GUCs).
 *
 * Settings:
 *	es.max_event_size	largest event es_append accepts, in bytes of data
 *						plus metadata (SQLSTATE 54000 beyond it)
 *	es.notify			send notifications on channel es_events
 *	es.notify_interval	at most one notification per interval (worker)
 *	es.worker_naptime	how long the idle worker sleeps between looks
 *
 * With shared_preload_libraries = 'es', _PG_init also asks for the shared
 * memory of the in-flight append registry (order.c) and registers the
 * launcher of the per-database background workers (launcher.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "es.h"

PG_MODULE_MAGIC;

/* Default: 1 MB, far above a typical event and far below the 1 GB varlena limit. */
int			es_max_event_size = 1024 * 1024;
bool		es_notify = true;
int			es_notify_interval = 10;
int			es_worker_naptime = 1000;

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomIntVariable("es.max_event_size",
							"Largest event es_append accepts.",
							"The size of an event is the stored size of its data plus "
							"its metadata.  Larger events are refused with SQLSTATE 54000.",
							&es_max_event_size,
							1024 * 1024,
							1,
							MaxAllocSize / 2,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("es.notify",
							 "Sends a notification on channel es_events when new events become readable.",
							 "The payload is the newest position es_read_all can return.",
							 &es_notify,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("es.notify_interval",
							"Shortest time between two notifications from the background worker.",
							"Commits within one interval are announced by one notification.",
							&es_notify_interval,
							10,
							1,
							60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("es.worker_naptime",
							"Longest time an idle es background worker sleeps; it also looks this often whether es is still installed.",
							NULL,
							&es_worker_naptime,
							1000,
							10,
							60 * 60 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("es");

	if (process_shared_preload_libraries_in_progress)
	{
		EsOrderInit();
		EsLauncherInit();
	}
}
