/*-------------------------------------------------------------------------
 *
 * errcodes.h
 *	  SQLSTATEs of the es extension.
 *
 * Our own codes live in class SE (classes beginning with A-H are reserved
 * by the SQL standard).  Everything else es raises uses PostgreSQL's codes:
 *
 *	SQLSTATE  when
 *	SE409     wrong expected version (optimistic concurrency conflict)
 *	SE405     UPDATE, DELETE or TRUNCATE of stored events
 *	22023     invalid argument (bad expected_version, malformed batch, ...)
 *	22004     NULL where a value is required
 *	23505     an event id reused outside an idempotent retry
 *	54000     event larger than es.max_event_size
 *	40001     conflict detected first by PostgreSQL in REPEATABLE READ or
 *	          SERIALIZABLE
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_ERRCODES_H
#define ES_ERRCODES_H

#include "utils/elog.h"

#define ERRCODE_ES_WRONG_EXPECTED_VERSION	MAKE_SQLSTATE('S','E','4','0','9')
#define ERRCODE_ES_IMMUTABLE_EVENT			MAKE_SQLSTATE('S','E','4','0','5')

#endif							/* ES_ERRCODES_H */
