/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PG_VERSION_NUM shim of the es extension, in one place.
 *
 * es targets PostgreSQL 15 and aims to compile against 14 to 17.  Code elsewhere uses the names defined here, never PG_VERSION_NUM.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_COMPAT_H
#define ES_COMPAT_H

/* SPI_execute_plan_extended with a DestReceiver (read.c) arrived in 14. */
#if PG_VERSION_NUM < 140000
#error "es requires PostgreSQL 14 or later"
#endif

/* 15 renamed EmitWarningsOnPlaceholders. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * The registry of in-flight appends (order.c) has one slot per process that
 * can run a transaction.  17 numbers every PGPROC (MyProcNumber, 0-based);
 * before, regular backends and background workers have a BackendId from 1
 * to MaxBackends.
 */
#if PG_VERSION_NUM >= 170000
#define ES_REGISTRY_SLOTS (MaxBackends + NUM_AUXILIARY_PROCS + max_prepared_xacts)
#define ES_MY_REGISTRY_SLOT (MyProcNumber)
#else
#define ES_REGISTRY_SLOTS (MaxBackends)
#define ES_MY_REGISTRY_SLOT (MyBackendId - 1)
#endif

/*
 * EXECUTE on a function es calls through fmgr (upcasters, apply): 16
 * renamed pg_proc_aclcheck object_aclcheck.  Needs utils/acl.h and
 * catalog/pg_proc.h.
 */
#if PG_VERSION_NUM >= 160000
#define object_aclcheck_compat(oid, role) object_aclcheck(ProcedureRelationId, oid, role, ACL_EXECUTE)
#else
#define object_aclcheck_compat(oid, role) pg_proc_aclcheck(oid, role, ACL_EXECUTE)
#endif

#endif							/* ES_COMPAT_H */
