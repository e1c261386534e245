/*-------------------------------------------------------------------------
 *
 * es.c
 *	  Module entry point of the es extension: the module magic, _PG_init
 *	  and the settings (GUCs).
 *
 * Settings:
 *	es.max_event_size	largest event es_append accepts, in bytes of data
 *						plus metadata (SQLSTATE 54000 beyond it)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "es.h"

PG_MODULE_MAGIC;

/* Default: 1 MB, far above a typical event and far below the 1 GB varlena limit. */
int			es_max_event_size = 1024 * 1024;

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

	MarkGUCPrefixReserved("es");
}
