/*-------------------------------------------------------------------------
 *
 * immutable.c
 *	  The trigger that keeps stored events immutable.
 *
 * es_events carries statement-level BEFORE UPDATE OR DELETE and BEFORE
 * TRUNCATE triggers that call es_events_immutable(), enabled ALWAYS so that
 * session_replication_role = replica does not skip them.  Whoever runs the
 * statement, the table owner and superusers included, gets SE405.  The only
 * way around is an explicit ALTER TABLE es_events DISABLE TRIGGER by the
 * table's owner (README.md, "Immutability").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/trigger.h"

#include "es.h"

PG_FUNCTION_INFO_V1(es_events_immutable);

Datum
es_events_immutable(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	const char *operation;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("es_events_immutable() must be called as a trigger")));

	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		operation = "UPDATE";
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
		operation = "DELETE";
	else if (TRIGGER_FIRED_BY_TRUNCATE(trigdata->tg_event))
		operation = "TRUNCATE";
	else
		operation = "INSERT";

	ereport(ERROR,
			(errcode(ERRCODE_ES_IMMUTABLE_EVENT),
			 errmsg("stored events are immutable"),
			 errdetail("%s on table \"%s\" is not allowed.", operation,
					   RelationGetRelationName(trigdata->tg_relation)),
			 errhint("Append a new event that corrects or compensates for the old one.")));

	PG_RETURN_NULL();
}
