/*-------------------------------------------------------------------------
 *
 * stream_row.c
 *	  Moving a stream's row in es_streams on, through the table access
 *	  method instead of an UPDATE statement.
 *
 * Every append moves one es_streams row on, and an UPDATE statement spends
 * more on being a statement (plan revalidation, executor start and end, a
 * scan node, projection) than on the update itself: perf had 17.6 of the
 * append's 43 us of CPU in that statement, 7 of them in the index probe and
 * the heap update.  EsAdvanceStreamRow does what the executor does for
 *
 *		UPDATE es_streams SET version = version + n, updated_at = now()
 *		 WHERE stream_id = $1 [AND version = $expected]
 *
 * in READ COMMITTED, and nothing more: it finds the row visible to a new
 * snapshot through the primary key, checks the expected version there, and
 * updates it; when a concurrent transaction updated the row first, it waits
 * for that transaction (the heap update does), locks the newest version and
 * checks again, as the executor's EvalPlanQual recheck would.  So appenders
 * to one stream serialise on its row exactly as with the statement, and a
 * loser sees the winner's version and reports SE409.
 *
 * Only where that is all an UPDATE would do: in REPEATABLE READ and
 * SERIALIZABLE (which raise serialization failures and take predicate
 * locks), when es_streams has UPDATE triggers or forced row-level security,
 * or when its columns are not the ones es created, it leaves the update to
 * the statement.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"

#include "es.h"

/* es_streams' columns, as the install script creates them. */
#define STREAM_ATT_STREAM_ID	1
#define STREAM_ATT_VERSION		2
#define STREAM_ATT_UPDATED_AT	4
#define STREAM_NATTS			4

/*
 * Whether es_streams is as es created it, so that updating its row directly
 * does all an UPDATE statement would: no UPDATE trigger that would fire, no forced
 * row-level security (the owner, which es runs as, is otherwise exempt),
 * no generated columns, our four columns with their types.
 */
static bool
StreamsTableIsPlain(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	if (rel->rd_rel->relforcerowsecurity)
		return false;
	if (EsOtherTriggersFire(rel, TRIGGER_TYPE_UPDATE, NULL, NULL))
		return false;
	if (desc->constr && desc->constr->has_generated_stored)
		return false;
	if (desc->natts != STREAM_NATTS)
		return false;
	return TupleDescAttr(desc, STREAM_ATT_STREAM_ID - 1)->atttypid == TEXTOID &&
		TupleDescAttr(desc, STREAM_ATT_VERSION - 1)->atttypid == INT8OID &&
		TupleDescAttr(desc, STREAM_ATT_UPDATED_AT - 1)->atttypid == TIMESTAMPTZOID &&
		!TupleDescAttr(desc, STREAM_ATT_STREAM_ID - 1)->attisdropped &&
		!TupleDescAttr(desc, STREAM_ATT_VERSION - 1)->attisdropped &&
		!TupleDescAttr(desc, STREAM_ATT_UPDATED_AT - 1)->attisdropped &&
		OidIsValid(RelationGetPrimaryKeyIndex(rel));
}

/* Whether a stream at this version may be moved on. */
static inline bool
ExpectedVersionMatches(TupleTableSlot *row, bool expected_is_null,
					   int64 expected_version)
{
	bool		isnull;
	int64		version;

	if (expected_is_null || expected_version == -1)
		return true;
	version = DatumGetInt64(slot_getattr(row, STREAM_ATT_VERSION, &isnull));
	return version == expected_version;
}

/*
 * Inserts index entries for a new row version that was not a HOT update
 * (rare: the table's fillfactor leaves room on each page), as ExecUpdate
 * would.
 */
static void
InsertIndexEntries(Relation rel, TupleTableSlot *slot)
{
	EState	   *estate = CreateExecutorState();
	ResultRelInfo *rri = makeNode(ResultRelInfo);

	InitResultRelInfo(rri, rel, 0, NULL, 0);
	ExecOpenIndices(rri, false);

	/*
	 * update = false: "true" only adds a hint that the key did not change,
	 * and working out which columns an UPDATE changed needs a range table,
	 * which this executor state has not got.
	 */
	ExecInsertIndexTuples(rri, slot, estate, false, false, NULL, NIL);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
}

/*
 * EsAdvanceStreamRow
 *		Moves the stream's row count versions on if the stream is at the
 *		expected version (expected_is_null: any; -1: it exists), and sets
 *		*new_version.  Says ES_STREAM_ROW_USE_STATEMENT, having done nothing,
 *		when only the UPDATE statement would do all that is needed here.
 *		Runs as the tables' owner (es_append's statements do).
 */
EsStreamRowResult
EsAdvanceStreamRow(const EsCatalog *cat, text *stream_id, bool expected_is_null,
				   int64 expected_version, int count, int64 *new_version)
{
	Relation	rel;
	Relation	index;
	IndexScanDesc scan;
	ScanKeyData key;
	TupleTableSlot *row;
	TupleTableSlot *new_row;
	Snapshot	snapshot;
	CommandId	cid;
	EsStreamRowResult outcome;
	bool		found;

	if (IsolationUsesXactSnapshot())
		return ES_STREAM_ROW_USE_STATEMENT;
	rel = table_open(cat->streams_relid, RowExclusiveLock);
	if (!StreamsTableIsPlain(rel))
	{
		table_close(rel, NoLock);
		return ES_STREAM_ROW_USE_STATEMENT;
	}
	CheckCmdReplicaIdentity(rel, CMD_UPDATE);

	/* What SPI does before a statement that writes. */
	CommandCounterIncrement();
	snapshot = RegisterSnapshot(GetTransactionSnapshot());
	cid = GetCurrentCommandId(true);

	index = index_open(RelationGetPrimaryKeyIndex(rel), RowExclusiveLock);
	row = table_slot_create(rel, NULL);
	new_row = MakeSingleTupleTableSlot(RelationGetDescr(rel), &TTSOpsVirtual);

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_TEXTEQ,
				PointerGetDatum(stream_id));
	key.sk_collation = index->rd_indcollation[0];
	scan = index_beginscan(rel, index, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	found = index_getnext_slot(scan, ForwardScanDirection, row);
	index_endscan(scan);

	if (!found)
		outcome = ES_STREAM_ROW_MISSING;
	else if (!ExpectedVersionMatches(row, expected_is_null, expected_version))
		outcome = ES_STREAM_ROW_AT_OTHER_VERSION;
	else
	{
		outcome = ES_STREAM_ROW_MOVED;
		for (;;)
		{
			TM_FailureData tmfd;
			LockTupleMode lockmode;
			bool		update_indexes;
			ItemPointerData tid = row->tts_tid;
			TM_Result	result;
			bool		isnull;

			slot_getallattrs(row);
			ExecClearTuple(new_row);
			memcpy(new_row->tts_values, row->tts_values, sizeof(Datum) * STREAM_NATTS);
			memcpy(new_row->tts_isnull, row->tts_isnull, sizeof(bool) * STREAM_NATTS);
			*new_version = DatumGetInt64(slot_getattr(row, STREAM_ATT_VERSION, &isnull)) + count;
			new_row->tts_values[STREAM_ATT_VERSION - 1] = Int64GetDatum(*new_version);
			new_row->tts_values[STREAM_ATT_UPDATED_AT - 1] =
				TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
			ExecStoreVirtualTuple(new_row);

			result = table_tuple_update(rel, &tid, new_row, cid, snapshot,
										InvalidSnapshot, true, &tmfd, &lockmode,
										&update_indexes);
			if (result == TM_Ok)
			{
				if (update_indexes)
					InsertIndexEntries(rel, new_row);
				break;
			}
			if (result == TM_SelfModified)
				ereport(ERROR,
						(errcode(ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION),
						 errmsg("stream \"%s\" was already moved on by an operation triggered by this append",
								text_to_cstring(stream_id))));
			if (result != TM_Updated)
				elog(ERROR, "unexpected result %d updating stream \"%s\"",
					 (int) result, text_to_cstring(stream_id));

			/*
			 * A concurrent append moved the row on and committed (the update
			 * waited for it): lock the newest version and check it again.
			 */
			result = table_tuple_lock(rel, &tid, snapshot, row, cid,
									  lockmode, LockWaitBlock,
									  TUPLE_LOCK_FLAG_FIND_LAST_VERSION, &tmfd);
			if (result != TM_Ok)
				elog(ERROR, "unexpected result %d locking stream \"%s\"",
					 (int) result, text_to_cstring(stream_id));
			if (!ExpectedVersionMatches(row, expected_is_null, expected_version))
			{
				outcome = ES_STREAM_ROW_AT_OTHER_VERSION;
				break;
			}
		}
	}

	ExecDropSingleTupleTableSlot(new_row);
	ExecDropSingleTupleTableSlot(row);
	index_close(index, NoLock);
	table_close(rel, NoLock);
	UnregisterSnapshot(snapshot);
	/* Later statements of the transaction see the new version. */
	CommandCounterIncrement();
	return outcome;
}
