/*-------------------------------------------------------------------------
 *
 * event_rows.c
 *	  Inserting an append's events into es_events through the table access
 *	  method instead of an INSERT statement.
 *
 * As with the stream's row (stream_row.c), an INSERT statement of one event
 * costs more in being a statement than the heap and index inserts do, and
 * its inline-projection trigger parses its WHEN clause again for every
 * statement.  EsInsertEventRows does what the executor does for
 *
 *		INSERT INTO es_events VALUES (...), ...
 *
 * as the tables' owner: the heap insert, the index entries (with their
 * unique checks: a duplicate event id fails with 23505 as before), and the
 * work of the one trigger es puts on INSERT, the inline-projection dispatch
 * (EsDispatchAppended), for each row once all are inserted, as AFTER ROW
 * triggers fire at the end of the statement.
 *
 * Only where that is all an INSERT would do: when no other INSERT trigger
 * of es_events would fire, it has no forced row-level security, no check constraint and no
 * generated column, and its columns are the ones es created; otherwise it
 * leaves the insert to the statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "es.h"

/* es_events' columns, as the install script creates them. */
static const Oid event_column_types[ES_EVENT_ROW_NATTS] = {
	INT8OID,					/* global_position */
	TEXTOID,					/* stream_id */
	INT8OID,					/* version */
	UUIDOID,					/* event_id */
	TEXTOID,					/* event_type */
	INT4OID,					/* schema_version */
	JSONBOID,					/* data */
	JSONBOID,					/* metadata */
	TIMESTAMPTZOID				/* recorded_at */
};

#define DISPATCH_TRIGGER "es_projection_dispatch"

/* Whether the trigger would fire for a row es_append writes now. */
static bool
TriggerWouldFire(const Trigger *trigger)
{
	switch (trigger->tgenabled)
	{
		case TRIGGER_FIRES_ALWAYS:
			return true;
		case TRIGGER_FIRES_ON_ORIGIN:
			return SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA;
		case TRIGGER_FIRES_ON_REPLICA:
			return SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA;
		default:
			return false;		/* disabled */
	}
}

/*
 * EsOtherTriggersFire
 *		Whether a trigger on rel for the event (TRIGGER_TYPE_INSERT, ...)
 *		would fire now, other than the one named except (NULL: none), and
 *		whether that one would (*except_fires, if not NULL).  Triggers that
 *		are disabled, or enabled only for the other session_replication_role,
 *		would not fire for a statement either.
 */
bool
EsOtherTriggersFire(Relation rel, int16 event, const char *except,
					bool *except_fires)
{
	TriggerDesc *trig = rel->trigdesc;
	bool		others = false;

	if (except_fires)
		*except_fires = false;
	if (trig == NULL)
		return false;
	for (int t = 0; t < trig->numtriggers; t++)
	{
		const Trigger *trigger = &trig->triggers[t];

		if ((trigger->tgtype & event) == 0 || !TriggerWouldFire(trigger))
			continue;
		if (except && strcmp(trigger->tgname, except) == 0)
		{
			if (except_fires)
				*except_fires = true;
		}
		else
			others = true;
	}
	return others;
}

/*
 * Whether es_events is as es created it, so that inserting directly does
 * all an INSERT statement would; *dispatch says whether the dispatch
 * trigger would fire.
 */
static bool
EventsTableIsPlain(Relation rel, bool *dispatch)
{
	TupleDesc	desc = RelationGetDescr(rel);

	*dispatch = false;
	if (rel->rd_rel->relforcerowsecurity)
		return false;
	if (desc->constr && (desc->constr->num_check > 0 ||
						 desc->constr->has_generated_stored))
		return false;
	if (desc->natts != ES_EVENT_ROW_NATTS)
		return false;
	for (int a = 0; a < ES_EVENT_ROW_NATTS; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (att->attisdropped || att->atttypid != event_column_types[a])
			return false;
	}
	return !EsOtherTriggersFire(rel, TRIGGER_TYPE_INSERT, DISPATCH_TRIGGER, dispatch);
}

/*
 * EsInsertEventRows
 *		Inserts count rows of es_events (values and nulls in its attribute
 *		order, count * ES_EVENT_ROW_NATTS of each; recorded_at is set here),
 *		and dispatches them to inline projections.  Returns false, having
 *		done nothing, when only the INSERT statement would do all that is
 *		needed.  Runs as the tables' owner (es_append's statements do).
 */
bool
EsInsertEventRows(const EsCatalog *cat, Datum *values, bool *nulls, int count)
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot *slot;
	CommandId	cid;
	bool		dispatch;
	Datum		now = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());

	rel = table_open(cat->events_relid, RowExclusiveLock);
	if (!EventsTableIsPlain(rel, &dispatch))
	{
		table_close(rel, NoLock);
		return false;
	}

	/*
	 * What SPI does before a statement that writes: a snapshot taken after
	 * the table's lock is held, so that the dispatch sees a change of the
	 * inline projections committed while we waited for that lock
	 * (es_projections_changed holds ShareLock on es_events until commit).
	 */
	CommandCounterIncrement();
	PushActiveSnapshot(GetTransactionSnapshot());
	cid = GetCurrentCommandId(true);

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);
	slot = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);

	for (int i = 0; i < count; i++)
	{
		Datum	   *row_values = values + i * ES_EVENT_ROW_NATTS;
		bool	   *row_nulls = nulls + i * ES_EVENT_ROW_NATTS;

		row_values[ES_EVENT_ROW_NATTS - 1] = now;
		row_nulls[ES_EVENT_ROW_NATTS - 1] = false;

		ExecClearTuple(slot);
		memcpy(slot->tts_values, row_values, sizeof(Datum) * ES_EVENT_ROW_NATTS);
		memcpy(slot->tts_isnull, row_nulls, sizeof(bool) * ES_EVENT_ROW_NATTS);
		ExecStoreVirtualTuple(slot);

		table_tuple_insert(rel, slot, cid, 0, NULL);
		if (rri->ri_NumIndices > 0)
			ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
		ResetPerTupleExprContext(estate);
	}

	ExecDropSingleTupleTableSlot(slot);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);

	/* Later statements, and the handlers, see the events. */
	CommandCounterIncrement();
	UpdateActiveSnapshotCommandId();

	if (dispatch)
		for (int i = 0; i < count; i++)
			EsDispatchAppended(cat, values + i * ES_EVENT_ROW_NATTS,
							   nulls + i * ES_EVENT_ROW_NATTS,
							   ES_EVENT_ROW_TYPE_ATTNUM);
	PopActiveSnapshot();
	return true;
}
