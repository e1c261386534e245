/*-------------------------------------------------------------------------
 *
 * es_client.h
 *	  What the libpq test programs of es share (tests/stress/es_stress.c,
 *	  tests/follower/es_follower.c).
 *
 * This library owns the plumbing those programs have in common: memory and
 * growable strings, time and randomness, one-line error texts and failure
 * reports serialized between threads, connecting, statements that must
 * succeed, COPY FROM STDIN, setting up the extension, run tags and stream
 * names, the SQL checks run after a run, and option parsing helpers.  What
 * a program tests, records and checks stays in the program.
 *
 * Everything it prints starts with "<es_progname>: ", which each program
 * defines:
 *
 *		const char *const es_progname = "stress";
 *
 * tests/lib.sh's es_build_client compiles it into each program.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ES_CLIENT_H
#define ES_CLIENT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libpq-fe.h"

#define ES_PRINTF_FORMAT(fmt, first) __attribute__((format(printf, fmt, first)))

/* A run tag: 1 to ES_MAX_RUN_TAG characters of [0-9a-z]. */
#define ES_MAX_RUN_TAG 32

/* Room for an int64 as text, terminator included. */
#define ES_INT64_TEXT_SIZE 24

/* Violations printed per check; the rest are only counted. */
#define ES_MAX_REPORTED_PER_CHECK 20

/* The prefix of everything printed; defined by each program. */
extern const char *const es_progname;

/* Held while a thread prints, so that lines of threads do not mix. */
extern pthread_mutex_t es_output_lock;

/* A small growable string; {0} is an empty one.  Free data when done. */
typedef struct EsStrBuf
{
	char	   *data;
	size_t		len;
	size_t		size;
} EsStrBuf;

/*
 * A check after a run: a query returning one row, one text column, per
 * violation.  Its name is what VIOLATION lines and self-tests refer to.
 */
typedef struct EsCheck
{
	const char *name;
	const char *sql;
} EsCheck;


/* Memory and strings: out of memory prints and exits with status 1. */
extern void *EsMalloc(size_t size);
extern void *EsRealloc(void *p, size_t size);
extern char *EsStrdup(const char *s);
extern void *EsGrowArray(void *array, int count, int *max, size_t element_size);
extern void EsCopyString(char *dst, const char *src, size_t size);
extern void EsStrBufAppend(EsStrBuf *buf, const char *fmt,...) ES_PRINTF_FORMAT(2, 3);
extern bool EsParseInt64(const char *s, int64_t *value);

/* Time and randomness */
extern double EsNow(void);
extern bool EsReadUrandom(void *buf, size_t len);
extern bool EsSeedRandom(uint64_t *state);
extern int	EsRandomInt(uint64_t *state, int n);

/* Reporting */
extern const char *EsErrorText(PGconn *conn, const PGresult *res, char *buf, size_t size);
extern void EsVFail(int *failures, const char *who, const char *fmt, va_list args)
			ES_PRINTF_FORMAT(3, 0);

/* Connections and statements */
extern PGconn *EsConnect(const char *conninfo);
extern PGresult *EsQuery(PGconn *conn, const char *sql, int nparams,
						 const char *const *params, ExecStatusType expected_status);
extern bool EsCommand(PGconn *conn, const char *sql, int nparams, const char *const *params);
extern bool EsTryCommand(PGconn *conn, const char *sql, char *error, size_t size);
extern bool EsCopyIn(PGconn *conn, const char *sql, const EsStrBuf *rows);

/* The extension and the run */
extern PGresult *EsSetUpExtension(PGconn *conn, const char *sql);
extern bool EsRunPrefixUnused(PGconn *conn, const char *schema, const char *prefix);
extern char **EsMakeStreamNames(const char *prefix, int count);
extern void EsFreeStreamNames(char **names, int count);
extern long EsRunChecks(PGconn *conn, const EsCheck *checks, int nchecks, const char *param);

/* Options */
extern bool EsParseCount(const char *arg, const char *name, long min, long max, long *value);
extern bool EsParseRunTag(const char *arg, char *tag);
extern bool EsRandomRunTag(char *tag);
extern bool EsKnownSabotage(const char *arg, const char *const *kinds);

#endif							/* ES_CLIENT_H */
