/*-------------------------------------------------------------------------
 *
 * es_client.c
 *	  What the libpq test programs of es share: memory and strings, time
 *	  and randomness, reporting, connections and statements, the extension
 *	  and the run, options.  See es_client.h.
 *
 * Any thread may call any of these functions, on a connection no other
 * thread is using.  Messages go to stderr (errors, failures) or stdout
 * (violations), each line prefixed with es_progname.
 *
 *-------------------------------------------------------------------------
 */
#include "es_client.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

pthread_mutex_t es_output_lock = PTHREAD_MUTEX_INITIALIZER;


/*
 * Memory and strings
 */

/* malloc that never returns NULL: out of memory prints and exits 1. */
void *
EsMalloc(size_t size)
{
	void	   *p = malloc(size);

	if (p == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", es_progname);
		exit(1);
	}
	return p;
}

/* realloc that never returns NULL: out of memory prints and exits 1. */
void *
EsRealloc(void *p, size_t size)
{
	p = realloc(p, size);
	if (p == NULL)
	{
		fprintf(stderr, "%s: out of memory\n", es_progname);
		exit(1);
	}
	return p;
}

/* A malloc'd copy of s. */
char *
EsStrdup(const char *s)
{
	char	   *copy = EsMalloc(strlen(s) + 1);

	strcpy(copy, s);
	return copy;
}

/*
 * EsGrowArray
 *		Makes room for one more element in a growable array of count
 *		elements of element_size bytes, with room for *max: returns the
 *		array, moved and *max doubled if it was full.  Start with NULL, 0.
 */
void *
EsGrowArray(void *array, int count, int *max, size_t element_size)
{
	if (count < *max)
		return array;
	*max = *max > 0 ? *max * 2 : 64;
	return EsRealloc(array, (size_t) *max * element_size);
}

/*
 * Copies src into dst, of size bytes, cut to size - 1 characters.  (Unlike
 * snprintf "%s", it draws no -Wformat-truncation warning when gcc inlines a
 * caller and sees a longer source buffer.)
 */
void
EsCopyString(char *dst, const char *src, size_t size)
{
	size_t		len = strnlen(src, size - 1);

	memcpy(dst, src, len);
	dst[len] = '\0';
}

/* Appends printf-style text to buf, growing it as needed. */
void
EsStrBufAppend(EsStrBuf *buf, const char *fmt,...)
{
	va_list		args;
	int			n;

	va_start(args, fmt);
	n = vsnprintf(NULL, 0, fmt, args);
	va_end(args);
	if (n < 0)
	{
		fprintf(stderr, "%s: vsnprintf failed\n", es_progname);
		exit(1);
	}
	if (buf->len + n + 1 > buf->size)
	{
		while (buf->len + n + 1 > buf->size)
			buf->size = buf->size > 0 ? buf->size * 2 : 4096;
		buf->data = EsRealloc(buf->data, buf->size);
	}
	va_start(args, fmt);
	vsnprintf(buf->data + buf->len, buf->size - buf->len, fmt, args);
	va_end(args);
	buf->len += n;
}

/* Parses s, all of it, as a decimal int64; false if it is not one. */
bool
EsParseInt64(const char *s, int64_t *value)
{
	char	   *end;

	errno = 0;
	*value = strtoll(s, &end, 10);
	return errno == 0 && end != s && *end == '\0';
}


/*
 * Time and randomness
 */

/* Seconds on CLOCK_MONOTONIC: only differences mean anything. */
double
EsNow(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Fills buf with len bytes from /dev/urandom; false if it cannot. */
bool
EsReadUrandom(void *buf, size_t len)
{
	int			fd = open("/dev/urandom", O_RDONLY);
	size_t		done = 0;

	if (fd < 0)
		return false;
	while (done < len)
	{
		ssize_t		n = read(fd, (char *) buf + done, len - done);

		if (n <= 0)
		{
			close(fd);
			return false;
		}
		done += n;
	}
	close(fd);
	return true;
}

/*
 * Seeds a random state for EsRandomInt from /dev/urandom; if it cannot,
 * prints so and returns false.
 */
bool
EsSeedRandom(uint64_t *state)
{
	if (!EsReadUrandom(state, sizeof(*state)))
	{
		fprintf(stderr, "%s: could not read /dev/urandom\n", es_progname);
		return false;
	}
	return true;
}

/* splitmix64: small, fast, and good enough to pick streams and loop kinds. */
static uint64_t
NextRandom(uint64_t *state)
{
	uint64_t	z = (*state += UINT64_C(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* A pseudo-random number from 0 to n - 1 (n > 0), advancing *state. */
int
EsRandomInt(uint64_t *state, int n)
{
	return (int) (NextRandom(state) % (uint64_t) n);
}


/*
 * Reporting
 */

/*
 * EsErrorText
 *		The error of a failed statement (res; NULL or no message: the
 *		connection's), on one line, without the final newline, in buf.
 *		Returns buf.
 */
const char *
EsErrorText(PGconn *conn, const PGresult *res, char *buf, size_t size)
{
	const char *message = res ? PQresultErrorMessage(res) : "";
	size_t		len;

	if (message[0] == '\0')
		message = PQerrorMessage(conn);
	snprintf(buf, size, "%s", message);
	len = strlen(buf);
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == ' '))
		buf[--len] = '\0';
	for (char *p = buf; *p; p++)
		if (*p == '\n')
			*p = ' ';
	return buf;
}

/*
 * EsVFail
 *		Prints "<progname>: FAILURE: <who>: <message>" on stderr, as one
 *		line that no other thread's output splits, and counts it in
 *		*failures.  For the variadic failure functions of the programs.
 */
void
EsVFail(int *failures, const char *who, const char *fmt, va_list args)
{
	char		message[2048];

	vsnprintf(message, sizeof(message), fmt, args);

	pthread_mutex_lock(&es_output_lock);
	fprintf(stderr, "%s: FAILURE: %s: %s\n", es_progname, who, message);
	pthread_mutex_unlock(&es_output_lock);
	(*failures)++;
}


/*
 * Connections and statements
 */

/*
 * Connects to the server the PG* environment variables name, with conninfo
 * added; if it cannot, prints why and returns NULL.
 */
PGconn *
EsConnect(const char *conninfo)
{
	PGconn	   *conn = PQconnectdb(conninfo);

	if (PQstatus(conn) != CONNECTION_OK)
	{
		char		error[1024];

		fprintf(stderr, "%s: could not connect to the server (PGHOST=%s, PGPORT=%s, PGDATABASE=%s): %s\n",
				es_progname,
				getenv("PGHOST") ? getenv("PGHOST") : "",
				getenv("PGPORT") ? getenv("PGPORT") : "",
				getenv("PGDATABASE") ? getenv("PGDATABASE") : "",
				EsErrorText(conn, NULL, error, sizeof(error)));
		PQfinish(conn);
		return NULL;
	}
	return conn;
}

/*
 * EsQuery
 *		Runs one statement that must end in expected_status and returns its
 *		result (the caller PQclears it); otherwise prints its error and the
 *		query, and returns NULL.  Without parameters sql may hold several
 *		statements (PQexec).
 */
PGresult *
EsQuery(PGconn *conn, const char *sql, int nparams, const char *const *params,
		ExecStatusType expected_status)
{
	PGresult   *res;
	char		error[1024];

	if (nparams == 0)
		res = PQexec(conn, sql);
	else
		res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != expected_status)
	{
		fprintf(stderr, "%s: query failed: %s\n  query: %s\n", es_progname,
				EsErrorText(conn, res, error, sizeof(error)), sql);
		PQclear(res);
		return NULL;
	}
	return res;
}

/* EsQuery of a statement that returns no rows; true if it succeeded. */
bool
EsCommand(PGconn *conn, const char *sql, int nparams, const char *const *params)
{
	PGresult   *res = EsQuery(conn, sql, nparams, params, PGRES_COMMAND_OK);

	PQclear(res);
	return res != NULL;
}

/*
 * EsTryCommand
 *		Runs sql, a statement without parameters that returns no rows (BEGIN,
 *		COMMIT, ROLLBACK...), printing nothing.  Returns true if it succeeded;
 *		otherwise false, with the error on one line in error.  COMMIT succeeds
 *		only if it committed: the COMMIT of a failed transaction "succeeds" as
 *		ROLLBACK, and then error is "ROLLBACK".
 */
bool
EsTryCommand(PGconn *conn, const char *sql, char *error, size_t size)
{
	PGresult   *res = PQexec(conn, sql);
	bool		ok = false;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		EsErrorText(conn, res, error, size);
	else if (strcmp(sql, "COMMIT") == 0 && strcmp(PQcmdStatus(res), "COMMIT") != 0)
		snprintf(error, size, "%s", PQcmdStatus(res));
	else
		ok = true;
	PQclear(res);
	return ok;
}

/*
 * EsCopyIn
 *		Runs sql, a COPY ... FROM STDIN, sending rows (COPY text format).
 *		Returns true if all of it went in; otherwise prints the error.
 */
bool
EsCopyIn(PGconn *conn, const char *sql, const EsStrBuf *rows)
{
	PGresult   *res = PQexec(conn, sql);
	char		error[1024];
	bool		ok;

	if (PQresultStatus(res) != PGRES_COPY_IN)
	{
		fprintf(stderr, "%s: %s failed: %s\n", es_progname, sql,
				EsErrorText(conn, res, error, sizeof(error)));
		PQclear(res);
		return false;
	}
	PQclear(res);
	ok = (rows->len == 0 || PQputCopyData(conn, rows->data, (int) rows->len) == 1) &&
		PQputCopyEnd(conn, NULL) == 1;
	res = PQgetResult(conn);
	if (!ok || PQresultStatus(res) != PGRES_COMMAND_OK)
	{
		fprintf(stderr, "%s: %s failed: %s\n", es_progname, sql,
				EsErrorText(conn, res, error, sizeof(error)));
		ok = false;
	}
	PQclear(res);
	while ((res = PQgetResult(conn)) != NULL)
		PQclear(res);
	return ok;
}


/*
 * The extension and the run
 */

/*
 * EsSetUpExtension
 *		Creates the extension es if it is missing (with client_min_messages
 *		set to warning on conn, for good), then runs sql, a query about the
 *		installed extension that must return exactly one row (none: es is
 *		not there).  Returns that result (the caller PQclears it), or NULL
 *		after printing why.
 */
PGresult *
EsSetUpExtension(PGconn *conn, const char *sql)
{
	PGresult   *res;

	if (!EsCommand(conn, "SET client_min_messages = warning", 0, NULL) ||
		!EsCommand(conn, "CREATE EXTENSION IF NOT EXISTS es", 0, NULL))
		return NULL;
	res = EsQuery(conn, sql, 0, NULL, PGRES_TUPLES_OK);
	if (res == NULL)
		return NULL;
	if (PQntuples(res) != 1)
	{
		fprintf(stderr, "%s: extension es not found after CREATE EXTENSION\n", es_progname);
		PQclear(res);
		return NULL;
	}
	return res;
}

/*
 * EsRunPrefixUnused
 *		True if no stream id in es_streams or es_events (in schema, quoted)
 *		starts with prefix; otherwise prints that the run tag is taken (the
 *		checks would mix runs) and returns false, as on error.
 */
bool
EsRunPrefixUnused(PGconn *conn, const char *schema, const char *prefix)
{
	char		sql[512];
	const char *params[1] = {prefix};
	PGresult   *res;
	bool		unused;

	snprintf(sql, sizeof(sql),
			 "SELECT EXISTS (SELECT FROM %s.es_streams WHERE pg_catalog.starts_with(stream_id, $1)) "
			 "OR EXISTS (SELECT FROM %s.es_events WHERE pg_catalog.starts_with(stream_id, $1))",
			 schema, schema);
	res = EsQuery(conn, sql, 1, params, PGRES_TUPLES_OK);
	if (res == NULL)
		return false;
	unused = strcmp(PQgetvalue(res, 0, 0), "f") == 0;
	if (!unused)
		fprintf(stderr, "%s: streams named %s* already exist; choose another --tag\n",
				es_progname, prefix);
	PQclear(res);
	return unused;
}

/* The run's stream ids, "<prefix><n>" for n = 0 .. count - 1. */
char **
EsMakeStreamNames(const char *prefix, int count)
{
	char	  **names = EsMalloc(sizeof(char *) * count);
	size_t		size = strlen(prefix) + ES_INT64_TEXT_SIZE;

	for (int i = 0; i < count; i++)
	{
		names[i] = EsMalloc(size);
		snprintf(names[i], size, "%s%d", prefix, i);
	}
	return names;
}

/* Frees what EsMakeStreamNames returned (NULL: nothing). */
void
EsFreeStreamNames(char **names, int count)
{
	if (names == NULL)
		return;
	for (int i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

/*
 * EsRunChecks
 *		Runs every check and prints its violations on stdout, as
 *		"<progname>: VIOLATION (<check>): <row>", the first
 *		ES_MAX_REPORTED_PER_CHECK of each.  A check whose SQL has $1 gets
 *		param (if not NULL) as $1.  Returns how many violations there were,
 *		a check that could not run counting as one.
 */
long
EsRunChecks(PGconn *conn, const EsCheck *checks, int nchecks, const char *param)
{
	long		violations = 0;
	const char *params[1] = {param};

	for (int i = 0; i < nchecks; i++)
	{
		PGresult   *res;
		int			rows;
		bool		takes_param = param != NULL && strstr(checks[i].sql, "$1") != NULL;

		res = EsQuery(conn, checks[i].sql, takes_param ? 1 : 0, params, PGRES_TUPLES_OK);
		if (res == NULL)
		{
			fprintf(stderr, "%s: check \"%s\" could not run\n", es_progname, checks[i].name);
			violations++;
			continue;
		}
		rows = PQntuples(res);
		for (int r = 0; r < rows && r < ES_MAX_REPORTED_PER_CHECK; r++)
			printf("%s: VIOLATION (%s): %s\n", es_progname, checks[i].name,
				   PQgetvalue(res, r, 0));
		if (rows > ES_MAX_REPORTED_PER_CHECK)
			printf("%s: VIOLATION (%s): ... and %d more\n", es_progname, checks[i].name,
				   rows - ES_MAX_REPORTED_PER_CHECK);
		violations += rows;
		PQclear(res);
	}
	return violations;
}


/*
 * Options
 */

/*
 * Parses the value of --name, which must be a whole number from min to
 * max; otherwise prints so and returns false.
 */
bool
EsParseCount(const char *arg, const char *name, long min, long max, long *value)
{
	char	   *end;
	long		n;

	errno = 0;
	n = strtol(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || n < min || n > max)
	{
		fprintf(stderr, "%s: --%s must be a whole number from %ld to %ld\n",
				es_progname, name, min, max);
		return false;
	}
	*value = n;
	return true;
}

/*
 * Copies arg, the value of --tag, into tag (ES_MAX_RUN_TAG + 1 bytes), if
 * it is a run tag; otherwise prints so and returns false.
 */
bool
EsParseRunTag(const char *arg, char *tag)
{
	size_t		len = strlen(arg);

	if (len == 0 || len > ES_MAX_RUN_TAG ||
		strspn(arg, "0123456789abcdefghijklmnopqrstuvwxyz") != len)
	{
		fprintf(stderr, "%s: --tag must be 1 to %d characters of [0-9a-z]\n",
				es_progname, ES_MAX_RUN_TAG);
		return false;
	}
	strcpy(tag, arg);
	return true;
}

/*
 * A random run tag, 12 hex digits, in tag (ES_MAX_RUN_TAG + 1 bytes); if
 * /dev/urandom cannot be read, prints so and returns false.
 */
bool
EsRandomRunTag(char *tag)
{
	unsigned char b[6];

	if (!EsReadUrandom(b, sizeof(b)))
	{
		fprintf(stderr, "%s: could not read /dev/urandom\n", es_progname);
		return false;
	}
	snprintf(tag, ES_MAX_RUN_TAG + 1, "%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5]);
	return true;
}

/*
 * True if arg, the value of --sabotage, is one of kinds (NULL-terminated);
 * otherwise prints so and returns false.
 */
bool
EsKnownSabotage(const char *arg, const char *const *kinds)
{
	for (int i = 0; kinds[i] != NULL; i++)
		if (strcmp(arg, kinds[i]) == 0)
			return true;
	fprintf(stderr, "%s: unknown --sabotage kind \"%s\"\n", es_progname, arg);
	return false;
}
