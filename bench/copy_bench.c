/*
 * bench/copy_bench.c — the COPY baseline for bench/run.sh.
 *
 *   copy_bench CLIENTS SECONDS ROWS RUN_TAG [STREAMS]
 *
 * Forks CLIENTS processes; each connects (libpq, connection settings from
 * the environment: PGHOST, PGPORT, PGUSER, PGDATABASE, PGOPTIONS) and, for
 * SECONDS, runs
 *
 *   COPY raw_events (stream_id, version, event_type, data) FROM STDIN
 *
 * with ROWS rows per COPY, each COPY its own (autocommit) transaction, to one
 * of the client's STREAMS (default 100) streams copy-<run>-<client>-<1..STREAMS>
 * picked at random.
 * Versions n * ROWS + 1 .. n * ROWS + ROWS with a per-client counter n, so
 * (stream_id, version) never collides; global_position, event_id and
 * recorded_at come from raw_events' column defaults, as es fills them in
 * itself.  Prints, like pgbench, transactions per second summed over the
 * clients, each measured from after its connection was made:
 *
 *   tps = 123.4
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libpq-fe.h>

static double
now_seconds(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

static void
die(PGconn *conn, const char *what)
{
	fprintf(stderr, "copy_bench: %s: %s", what, conn ? PQerrorMessage(conn) : "\n");
	exit(1);
}

/* One client: returns its transactions per second on fd. */
static void
run_client(int client, int seconds, int rows, int run, int streams, int fd)
{
	PGconn	   *conn = PQconnectdb("");
	size_t		cap = (size_t) rows * 128 + 1;
	char	   *buf = malloc(cap);
	long		n = 0;
	double		start, elapsed;
	char		result[64];

	if (PQstatus(conn) != CONNECTION_OK)
		die(conn, "connect");
	srandom(getpid());

	start = now_seconds();
	while ((elapsed = now_seconds() - start) < seconds)
	{
		PGresult   *res;
		size_t		len = 0;
		int			stream = 1 + random() % streams;

		res = PQexec(conn, "COPY raw_events (stream_id, version, event_type, data) FROM STDIN");
		if (PQresultStatus(res) != PGRES_COPY_IN)
			die(conn, "COPY");
		PQclear(res);
		for (int i = 1; i <= rows; i++)
			len += snprintf(buf + len, cap - len,
							"copy-%d-%d-%d\t%ld\tDeposited\t{\"amount\": 100, \"currency\": \"EUR\"}\n",
							run, client, stream, n * rows + i);
		if (PQputCopyData(conn, buf, (int) len) != 1 || PQputCopyEnd(conn, NULL) != 1)
			die(conn, "sending COPY data");
		while ((res = PQgetResult(conn)) != NULL)
		{
			if (PQresultStatus(res) != PGRES_COMMAND_OK)
				die(conn, "COPY end");
			PQclear(res);
		}
		n++;
	}
	PQfinish(conn);
	snprintf(result, sizeof(result), "%.6f\n", n / elapsed);
	if (write(fd, result, strlen(result)) < 0)
		exit(1);
	exit(0);
}

int
main(int argc, char **argv)
{
	int			clients, seconds, rows, run, streams = 100;
	int			fds[2];
	double		total = 0;
	int			failed = 0;
	FILE	   *in;
	char		line[64];

	if (argc != 5 && argc != 6)
	{
		fprintf(stderr, "usage: copy_bench CLIENTS SECONDS ROWS RUN_TAG [STREAMS]\n");
		return 2;
	}
	clients = atoi(argv[1]);
	seconds = atoi(argv[2]);
	rows = atoi(argv[3]);
	run = atoi(argv[4]);
	if (argc == 6)
		streams = atoi(argv[5]);
	if (clients < 1 || seconds < 1 || rows < 1 || streams < 1 || pipe(fds) != 0)
		return 2;

	for (int c = 1; c <= clients; c++)
	{
		pid_t		pid = fork();

		if (pid < 0)
			return 1;
		if (pid == 0)
		{
			close(fds[0]);
			run_client(c, seconds, rows, run, streams, fds[1]);
		}
	}
	close(fds[1]);
	in = fdopen(fds[0], "r");
	while (fgets(line, sizeof(line), in))
		total += atof(line);
	for (int c = 0; c < clients; c++)
	{
		int			status;

		if (wait(&status) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	}
	if (failed)
	{
		fprintf(stderr, "copy_bench: a client failed\n");
		return 1;
	}
	printf("tps = %.3f\n", total);
	return 0;
}
