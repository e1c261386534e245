/*-------------------------------------------------------------------------
 *
 * compat.h
 *	  Every PG_VERSION_NUM shim of the es extension, in one place.
 *
 * es targets PostgreSQL 15 and compiles against 13 to 17 where that is
 * cheap.  Code elsewhere uses the names defined here, never PG_VERSION_NUM.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_COMPAT_H
#define ES_COMPAT_H

#if PG_VERSION_NUM < 130000
#error "es requires PostgreSQL 13 or later"
#endif

/* 15 renamed EmitWarningsOnPlaceholders. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

#endif							/* ES_COMPAT_H */
