/*-------------------------------------------------------------------------
 *
 * order.c
 *	  Global positions and the gap-free global order.
 *
 * Positions come from the sequence es_events_global_position_seq, taken by
 * es_append in C.  They are handed out in one order and committed in
 * another, so "every event up to the highest visible position" is not a safe
 * place for a catch-up reader to continue from: a transaction holding a
 * lower position may still commit.  The horizon is the highest position
 * below which nothing can commit any more; es_read_all and
 * es_read_category return only events at or below it.
 *
 * With shared_preload_libraries = 'es', a registry in shared memory holds,
 * for each backend, the first position its current transaction took (or 0):
 *
 *	- An appending transaction takes its first position and publishes it in
 *	  its slot while holding the registry lock exclusively; the exclusive
 *	  section is a nextval and a store.  Its later positions are higher and
 *	  need no lock: its slot already holds readers below them.
 *	- The slot is cleared when the transaction ends: by the commit callback,
 *	  which runs after ProcArrayEndTransaction (so the commit is visible to
 *	  every snapshot taken afterwards), by the abort callback, and at backend
 *	  exit.  A backend crash reinitialises shared memory.
 *	- A reader holds the lock shared and computes the horizon: one less than
 *	  the smallest published position of its database or, when none is
 *	  published, the sequence's last value, read under the same lock.  Only
 *	  then does it take a fresh snapshot to read with.
 *
 * Why that is enough: let event e at position p <= h come from transaction
 * T, whose first position is f <= p.  If T was published when h was
 * computed, h <= f - 1 < p.  If T published later, it took f after the
 * reader read the sequence (or the published minimum, which is lower), so
 * f > h.  Hence T had already ended, and if it committed, the snapshot the
 * reader takes afterwards sees e.  Transactions that never append are not
 * in the registry and never hold readers back.  This relies on positions
 * being taken one at a time from the shared sequence (CACHE 1).
 *
 * Without preloading there is no shared memory of ours.  Appenders then
 * hold a transaction-level advisory lock in share mode from before their
 * first position to their end.  A reader reads the sequence's last value
 * and then waits for the transactions holding that lock at that moment to
 * end (WaitForLockers, as CREATE INDEX CONCURRENTLY does): every position up
 * to that value belongs to one of them or to a transaction already over.
 * Correct, and appenders never wait for readers, but a reader waits for the
 * slowest appending transaction in flight.
 *
 * The commit callback also wakes es_wait sleepers (a condition variable,
 * signalled only when someone waits) and the database's background worker
 * (launcher.c), which sends the coalesced notifications.
 *
 * PREPARE TRANSACTION after an append is refused: a prepared transaction
 * outlives its backend's slot.
 *
 * Locks: the registry LWLock (exclusive for a moment per appending
 * transaction, shared per read), the sequence's buffer lock, and without
 * preloading the advisory lock described above.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xlog.h"
#include "access/xact.h"
#include "commands/async.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "storage/bufmgr.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "es.h"

typedef struct EsInFlight
{
	pg_atomic_uint64 first_position;	/* 0: no append in flight */
	Oid			dboid;
} EsInFlight;

typedef struct EsOrderShared
{
	LWLock	   *lock;
	ConditionVariable committed;	/* es_wait sleeps on this */
	pg_atomic_uint32 waiters;	/* sessions in es_wait */
	int			nslots;
	EsInFlight	slots[FLEXIBLE_ARRAY_MEMBER];
} EsOrderShared;

static EsOrderShared *order_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* This backend's transaction. */
static bool appended_in_xact = false;	/* took a position */
static bool published = false;	/* holds its slot */
static int64 last_position_taken = 0;
static bool callbacks_registered = false;

/* Without preloading: the advisory lock appenders share and readers take. */
#define ES_ORDER_LOCK_KEY1 0x45534f52	/* "ESOR" */
#define ES_ORDER_LOCK_KEY2 1

static int
RegistrySlots(void)
{
	return ES_REGISTRY_SLOTS;
}

static Size
RegistrySize(void)
{
	return add_size(offsetof(EsOrderShared, slots),
					mul_size(sizeof(EsInFlight), RegistrySlots()));
}

static void
OrderShmemRequest(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(RegistrySize());
	RequestNamedLWLockTranche("es", 1);
}

static void
OrderShmemStartup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	order_shared = ShmemInitStruct("es order registry", RegistrySize(), &found);
	if (!found)
	{
		order_shared->lock = &(GetNamedLWLockTranche("es"))->lock;
		ConditionVariableInit(&order_shared->committed);
		pg_atomic_init_u32(&order_shared->waiters, 0);
		order_shared->nslots = RegistrySlots();
		for (int i = 0; i < order_shared->nslots; i++)
		{
			pg_atomic_init_u64(&order_shared->slots[i].first_position, 0);
			order_shared->slots[i].dboid = InvalidOid;
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * EsOrderInit
 *		From _PG_init while preloading: ask for the registry.
 */
void
EsOrderInit(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = OrderShmemRequest;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = OrderShmemStartup;
}

bool
EsOrderRegistryAvailable(void)
{
	return order_shared != NULL;
}

static EsInFlight *
MySlot(void)
{
	int			slot = ES_MY_REGISTRY_SLOT;

	if (slot < 0 || slot >= order_shared->nslots)
		elog(ERROR, "es: backend slot %d out of range", slot);
	return &order_shared->slots[slot];
}

static void
ClearSlot(void)
{
	if (published)
	{
		pg_atomic_write_u64(&MySlot()->first_position, 0);
		published = false;
	}
}

static void
ClearSlotAtExit(int code, Datum arg)
{
	ClearSlot();
}

/*
 * Tell es_wait sleepers and the worker that the horizon may have moved: an
 * appending transaction committed, or one that held a slot aborted (which
 * can make higher, already committed events readable).  The barrier pairs
 * with the one in EsWaitForHorizon: either we see its waiter count, or it
 * sees our cleared slot.
 */
static void
AnnounceHorizonMove(void)
{
	pg_memory_barrier();
	if (pg_atomic_read_u32(&order_shared->waiters) > 0)
		ConditionVariableBroadcast(&order_shared->committed);
	(void) EsWorkerCommitted();
}

static void
OrderXactCallback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_PREPARE:
			if (appended_in_xact)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that has appended events"),
						 errdetail("The gap-free global order must know when the transaction that took a global position ends."),
						 errhint("Commit the append directly, or append in a transaction that is not prepared.")));
			break;
		case XACT_EVENT_PRE_COMMIT:
			/* Without the worker, the appending transaction notifies itself. */
			if (appended_in_xact && es_notify && !EsWorkerNotifies())
			{
				char		payload[32];

				snprintf(payload, sizeof(payload), INT64_FORMAT, last_position_taken);
				Async_Notify(ES_NOTIFY_CHANNEL, payload);
			}
			break;
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			{
				bool		held_slot = published;

				ClearSlot();
				if (order_shared != NULL && (held_slot || appended_in_xact))
					AnnounceHorizonMove();
				appended_in_xact = false;
			}
			break;
		default:
			break;
	}
}

static void
RegisterCallbacks(void)
{
	if (callbacks_registered)
		return;
	RegisterXactCallback(OrderXactCallback, NULL);
	if (order_shared != NULL)
		before_shmem_exit(ClearSlotAtExit, (Datum) 0);
	callbacks_registered = true;
}

static void
SetOrderLockTag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, ES_ORDER_LOCK_KEY1, ES_ORDER_LOCK_KEY2, 2);
}

/*
 * EsTakeGlobalPosition
 *		The next global position, for an event this transaction appends.
 */
int64
EsTakeGlobalPosition(const EsCatalog *cat)
{
	int64		position;

	RegisterCallbacks();

	if (order_shared == NULL)
	{
		if (!appended_in_xact)
		{
			LOCKTAG		tag;

			SetOrderLockTag(&tag);
			(void) LockAcquire(&tag, ShareLock, false, false);
		}
		position = nextval_internal(cat->position_seqid, false);
	}
	else if (!published)
	{
		EsInFlight *slot = MySlot();

		/*
		 * Lock the sequence first, so that we never wait for a heavyweight
		 * lock while holding the registry.
		 */
		LockRelationOid(cat->position_seqid, RowExclusiveLock);

		LWLockAcquire(order_shared->lock, LW_EXCLUSIVE);
		PG_TRY();
		{
			position = nextval_internal(cat->position_seqid, false);
		}
		PG_CATCH();
		{
			LWLockRelease(order_shared->lock);
			PG_RE_THROW();
		}
		PG_END_TRY();
		slot->dboid = MyDatabaseId;
		pg_atomic_write_u64(&slot->first_position, (uint64) position);
		published = true;
		LWLockRelease(order_shared->lock);
	}
	else
		position = nextval_internal(cat->position_seqid, false);

	appended_in_xact = true;
	last_position_taken = position;
	return position;
}

/*
 * SequenceLastValue
 *		The last position handed out (0 when none was), read from the
 *		sequence's page.  The caller has the relation open and locked.
 */
static int64
SequenceLastValue(Relation seqrel)
{
	Buffer		buf;
	Page		page;
	ItemId		lp;
	HeapTupleData tuple;
	Form_pg_sequence_data seq;
	int64		last;

	buf = ReadBuffer(seqrel, 0);
	LockBuffer(buf, BUFFER_LOCK_SHARE);
	page = BufferGetPage(buf);
	lp = PageGetItemId(page, FirstOffsetNumber);
	Assert(ItemIdIsNormal(lp));
	tuple.t_data = (HeapTupleHeader) PageGetItem(page, lp);
	tuple.t_len = ItemIdGetLength(lp);
	seq = (Form_pg_sequence_data) GETSTRUCT(&tuple);
	last = seq->is_called ? seq->last_value : seq->last_value - 1;
	UnlockReleaseBuffer(buf);
	return last;
}

/*
 * EsReadHorizon
 *		The highest global position below which no event can commit any
 *		more.  Take the snapshot to read with after this returns.
 */
int64
EsReadHorizon(const EsCatalog *cat)
{
	Relation	seqrel;
	int64		horizon;

	seqrel = relation_open(cat->position_seqid, AccessShareLock);

	if (order_shared == NULL)
	{
		LOCKTAG		tag;

		/*
		 * Every position up to the sequence's last value was taken by a
		 * transaction that held the lock before it took the position, so
		 * waiting for the lock's current holders to end is enough; those
		 * that take it later take higher positions.
		 */
		horizon = SequenceLastValue(seqrel);
		SetOrderLockTag(&tag);
		WaitForLockers(tag, ExclusiveLock, false);
	}
	else
	{
		uint64		lowest = PG_UINT64_MAX;

		LWLockAcquire(order_shared->lock, LW_SHARED);
		for (int i = 0; i < order_shared->nslots; i++)
		{
			EsInFlight *slot = &order_shared->slots[i];
			uint64		first = pg_atomic_read_u64(&slot->first_position);

			if (first != 0 && first < lowest && slot->dboid == MyDatabaseId)
				lowest = first;
		}
		if (lowest != PG_UINT64_MAX)
			horizon = (int64) lowest - 1;
		else
			horizon = SequenceLastValue(seqrel);
		LWLockRelease(order_shared->lock);
	}

	relation_close(seqrel, AccessShareLock);
	return horizon;
}

/*
 * NewestReadable
 *		The newest event es_read_all can return after after_position, or
 *		after_position when there is none yet.  The horizon alone is not
 *		enough: positions of rolled-back appends move it without an event.
 *		Must be called while connected to SPI.
 */
static int64
NewestReadable(const EsCatalog *cat, int64 after_position)
{
	int64		horizon = EsReadHorizon(cat);

	if (horizon <= after_position)
		return after_position;
	return EsNewestEventUpTo(cat, after_position, horizon);
}

/*
 * EsWaitForHorizon
 *		Waits until es_read_all can return an event after after_position, or
 *		timeout_ms pass; returns the newest readable position, or
 *		after_position on timeout.  Woken by appending transactions as they
 *		end; without preloading, and on a standby, it polls (every 10 ms).
 *		Must be called while connected to SPI.
 */
int64
EsWaitForHorizon(const EsCatalog *cat, int64 after_position, int timeout_ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	int64		newest;

	/*
	 * Without the registry nobody signals us; on a standby the appenders
	 * are on the primary.  Poll.
	 */
	if (order_shared == NULL || RecoveryInProgress())
	{
		for (;;)
		{
			long		remaining;

			newest = NewestReadable(cat, after_position);
			if (newest > after_position)
				return newest;
			remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
			if (remaining <= 0)
				return after_position;
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 Min(remaining, 10), PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}

	pg_atomic_fetch_add_u32(&order_shared->waiters, 1);
	pg_memory_barrier();
	PG_TRY();
	{
		ConditionVariablePrepareToSleep(&order_shared->committed);
		for (;;)
		{
			long		remaining;

			newest = NewestReadable(cat, after_position);
			if (newest > after_position)
				break;
			remaining = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
			if (remaining <= 0)
				break;
			(void) ConditionVariableTimedSleep(&order_shared->committed, remaining,
											   PG_WAIT_EXTENSION);
		}
		ConditionVariableCancelSleep();
	}
	PG_FINALLY();
	{
		pg_atomic_fetch_sub_u32(&order_shared->waiters, 1);
	}
	PG_END_TRY();
	return newest;
}
