/*-------------------------------------------------------------------------
 *
 * append.c
 *	  es_append: validating new events, the expected-version check, the
 *	  idempotent retry and the insert into es_events.
 *
 * How an append stays correct under concurrency:
 *
 *	1. Everything the caller sent is validated first; bad input writes
 *	   nothing.
 *	2. When the caller chose event ids, they are looked up: if every one is
 *	   already stored in this stream right after the expected version, this
 *	   is a retry of an append that succeeded, and we return its result
 *	   without writing.
 *	3. The stream's row in es_streams is locked, checked against the
 *	   expected version and moved to the new version: by an INSERT for a
 *	   new stream, by the upsert for "any version" when the stream does not
 *	   exist yet, and otherwise as an UPDATE would, through the table access
 *	   method (stream_row.c; the UPDATE statement itself where that would do
 *	   less than the statement, e.g. in REPEATABLE READ).  A
 *	   concurrent appender to the same stream waits for our transaction on
 *	   that row lock; in READ COMMITTED it then sees our new version and
 *	   fails its own check, so it reports SE409 instead of running into a
 *	   unique violation.  Appenders to other streams lock other rows and
 *	   never wait for us.  An "any version" append with caller-chosen ids
 *	   first pins the version it sees, so that a concurrent original of a
 *	   retry makes the check fail and step 2 is done again.
 *	4. Only after the check succeeded are global positions taken, so failed
 *	   appends do not burn positions, and the events are inserted with one
 *	   statement.
 *
 * Locks: a row lock on the stream's es_streams row (until the end of the
 * transaction), RowExclusiveLock on es_streams and es_events, and the
 * sequence's buffer lock while taking positions.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/uuid.h"

#include "es.h"

PG_FUNCTION_INFO_V1(es_append);
PG_FUNCTION_INFO_V1(es_append_batch);

/* An event about to be appended, validated. */
typedef struct NewEvent
{
	text	   *event_type;
	Jsonb	   *data;
	Jsonb	   *metadata;		/* NULL when absent */
	pg_uuid_t	event_id;
	bool		event_id_given; /* false: we generated a random one */
	int32		schema_version;
} NewEvent;

/* True while es_append inserts into es_events (EsAppendInProgress). */
static bool append_in_progress = false;

/* What a batch element is called in messages, or -1 for the single form. */
#define SINGLE_EVENT (-1)

/*
 * Statements.  The stream statements return the stream's new version when
 * the expected version matched, and no row otherwise.
 */

/* expected_version = 0: the stream must not exist yet. */
static EsPlan create_stream_plan = {
	"INSERT INTO @extschema@.es_streams AS s (stream_id, version) "
	"VALUES ($1, $2) ON CONFLICT (stream_id) DO NOTHING RETURNING s.version",
	2, {TEXTOID, INT8OID}
};

/* expected_version = n > 0 ($3), or -1 ($3 IS NULL): the stream must exist. */
static EsPlan advance_stream_plan = {
	"UPDATE @extschema@.es_streams "
	"SET version = version OPERATOR(pg_catalog.+) $2, updated_at = pg_catalog.now() "
	"WHERE stream_id OPERATOR(pg_catalog.=) $1 "
	"AND ($3 IS NULL OR version OPERATOR(pg_catalog.=) $3) "
	"RETURNING version",
	3, {TEXTOID, INT8OID, INT8OID}
};

/* expected_version NULL: any version, create the stream if needed. */
static EsPlan upsert_stream_plan = {
	"INSERT INTO @extschema@.es_streams AS s (stream_id, version) "
	"VALUES ($1, $2) ON CONFLICT (stream_id) DO UPDATE "
	"SET version = s.version OPERATOR(pg_catalog.+) excluded.version, "
	"updated_at = pg_catalog.now() "
	"RETURNING s.version",
	2, {TEXTOID, INT8OID}
};

static EsPlan stored_ids_plan = {
	"SELECT event_id, stream_id, version FROM @extschema@.es_events "
	"WHERE event_id OPERATOR(pg_catalog.=) ANY ($1)",
	1, {UUIDARRAYOID}
};

/* One event: plain VALUES, cheaper than building one-element arrays. */
static EsPlan insert_one_plan = {
	"INSERT INTO @extschema@.es_events "
	"(global_position, stream_id, version, event_id, event_type, "
	"schema_version, data, metadata) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
	8, {INT8OID, TEXTOID, INT8OID, UUIDOID, TEXTOID, INT4OID, JSONBOID, JSONBOID}
};

/* A batch: one statement over arrays, versions $2 + 1, $2 + 2, ... */
static EsPlan insert_many_plan = {
	"INSERT INTO @extschema@.es_events "
	"(global_position, stream_id, version, event_id, event_type, "
	"schema_version, data, metadata) "
	"SELECT e.p, $1, $2 OPERATOR(pg_catalog.+) e.n, e.i, e.t, e.s, e.d, e.m "
	"FROM ROWS FROM (pg_catalog.unnest($3), pg_catalog.unnest($4), "
	"pg_catalog.unnest($5), pg_catalog.unnest($6), pg_catalog.unnest($7), "
	"pg_catalog.unnest($8)) WITH ORDINALITY "
	"AS e(p, i, t, s, d, m, n)",
	8, {TEXTOID, INT8OID, INT8ARRAYOID, UUIDARRAYOID, TEXTARRAYOID,
		INT4ARRAYOID, JSONBARRAYOID, JSONBARRAYOID}
};

/*
 * Input validation
 */

/* "batch element 3: " or "" for the single form, for messages. */
static const char *
WhereInBatch(int batch_index)
{
	if (batch_index == SINGLE_EVENT)
		return "";
	return psprintf("batch element %d: ", batch_index);
}

/*
 * How a part of an event is called in messages: the argument's name in the
 * single form, the member's name (and the element's index) in a batch.
 */
static const char *
ArgumentName(const char *argument, const char *member, int batch_index)
{
	if (batch_index == SINGLE_EVENT)
		return argument;
	return psprintf("batch element %d: \"%s\"", batch_index, member);
}

static void
RequireArgument(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
}

/*
 * The stream_id and expected_version arguments (0 and 1) of both forms.
 */
static void
ValidateTarget(FunctionCallInfo fcinfo)
{
	if (VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("stream_id must not be empty")));
	if (!PG_ARGISNULL(1) && PG_GETARG_INT64(1) < -1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid expected_version " INT64_FORMAT, PG_GETARG_INT64(1)),
				 errhint("Use a version n >= 0 (0: the stream must not exist yet), -1 (the stream must exist) or NULL (any version).")));
}

static void
ValidateEventType(text *event_type, int batch_index)
{
	if (VARSIZE_ANY_EXHDR(event_type) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", ArgumentName("event_type", "type", batch_index))));
}

static const char *
JsonbRootTypeName(Jsonb *jb)
{
	if (JB_ROOT_IS_SCALAR(jb))
	{
		JsonbValue	scalar;

		if (JsonbExtractScalar(&jb->root, &scalar))
			return JsonbTypeName(&scalar);
		return "scalar";
	}
	return JB_ROOT_IS_OBJECT(jb) ? "object" : "array";
}

static void
ValidateData(Jsonb *data, int batch_index)
{
	if (!JB_ROOT_IS_OBJECT(data) || JB_ROOT_IS_SCALAR(data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", ArgumentName("data", "data", batch_index)),
				 errdetail("The data is a JSON %s.", JsonbRootTypeName(data))));
}

static void
ValidateMetadata(Jsonb *metadata, int batch_index)
{
	if (!JB_ROOT_IS_OBJECT(metadata) || JB_ROOT_IS_SCALAR(metadata))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object or NULL",
						ArgumentName("metadata", "metadata", batch_index)),
				 errdetail("The metadata is a JSON %s.", JsonbRootTypeName(metadata))));
}

static void
CheckEventSize(const NewEvent *event, int batch_index)
{
	int64		size = VARSIZE(event->data);

	if (event->metadata)
		size += VARSIZE(event->metadata);
	if (size > es_max_event_size)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%sevent is too large", WhereInBatch(batch_index)),
				 errdetail("Its data and metadata take " INT64_FORMAT " bytes; es.max_event_size is %d bytes.",
						   size, es_max_event_size)));
}

/*
 * Random bytes for the event ids we generate, drawn from pg_strong_random a
 * block at a time: each call of it costs microseconds of fixed overhead,
 * whatever the length (perf: 8 us of a 178 us single-event append;
 * measured in one statement, 20,000 single appends took 0.93 s instead of
 * 1.12 s, 300 batches of 100 events 0.28 s instead of 0.32 s).  The pool
 * is this backend's own (it starts empty in every forked process), and
 * bytes are wiped as they are handed out, so no id can be derived from
 * what stays in memory.
 */
#define RANDOM_POOL_SIZE	(UUID_LEN * 256)

static uint8 random_pool[RANDOM_POOL_SIZE];
static int	random_pool_next = RANDOM_POOL_SIZE;	/* empty */

static void
RandomUuid(pg_uuid_t *uuid)
{
	if (random_pool_next > RANDOM_POOL_SIZE - UUID_LEN)
	{
		if (!pg_strong_random(random_pool, RANDOM_POOL_SIZE))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not generate random values")));
		random_pool_next = 0;
	}
	memcpy(uuid->data, random_pool + random_pool_next, UUID_LEN);
	explicit_bzero(random_pool + random_pool_next, UUID_LEN);
	random_pool_next += UUID_LEN;
	/* RFC 4122 version 4, variant 1, as gen_random_uuid() makes them */
	uuid->data[6] = (uuid->data[6] & 0x0f) | 0x40;
	uuid->data[8] = (uuid->data[8] & 0x3f) | 0x80;
}

/*
 * Text of a batch element's "id" to a UUID: 32 hex digits, hyphens allowed
 * between pairs, optionally in braces (what uuid_in accepts, and a little
 * more).  Parsed here so that the error names the batch element.
 */
static void
ParseUuid(const char *s, int len, pg_uuid_t *uuid, int batch_index)
{
	int			digits = 0;
	int			i = 0;
	bool		braces = (len > 0 && s[0] == '{');

	if (braces)
	{
		i = 1;
		len--;
		if (len < 1 || s[len] != '}')
			goto bad;
	}
	for (; i < len; i++)
	{
		int			nibble;
		char		c = s[i];

		if (c == '-' && digits > 0 && digits % 2 == 0 && digits < 32)
			continue;
		if (c >= '0' && c <= '9')
			nibble = c - '0';
		else if (c >= 'a' && c <= 'f')
			nibble = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			nibble = c - 'A' + 10;
		else
			goto bad;
		if (digits >= 32)
			goto bad;
		if (digits % 2 == 0)
			uuid->data[digits / 2] = nibble << 4;
		else
			uuid->data[digits / 2] |= nibble;
		digits++;
	}
	if (digits == 32)
		return;
bad:
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s\"id\" must be a UUID", WhereInBatch(batch_index)),
			 errdetail("The id is \"%s\".", pnstrdup(s, braces ? len + 1 : len))));
}

/*
 * Batch element "schema_version": a whole number >= 1.
 */
static int32
ParseSchemaVersion(JsonbValue *v, int batch_index)
{
	if (v->type == jbvNumeric)
	{
		char	   *s = DatumGetCString(DirectFunctionCall1(numeric_out,
															NumericGetDatum(v->val.numeric)));
		char	   *end;
		long		n;

		errno = 0;
		n = strtol(s, &end, 10);
		if (errno == 0 && *end == '\0' && n >= 1 && n <= PG_INT32_MAX)
			return (int32) n;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s\"schema_version\" must be a whole number of at least 1",
					WhereInBatch(batch_index))));
	pg_unreachable();
}

static Jsonb *
ObjectMember(JsonbValue *v)
{
	if (v->type != jbvBinary || !JsonContainerIsObject(v->val.binary.data))
		return NULL;
	return JsonbValueToJsonb(v);
}

static const char *
MemberTypeName(JsonbValue *v)
{
	if (v->type == jbvBinary)
		return JsonContainerIsObject(v->val.binary.data) ? "object" : "array";
	return JsonbTypeName(v);
}

/*
 * ParseBatchElement
 *		One element of the batch form's JSON array, as a NewEvent.
 */
static void
ParseBatchElement(JsonbValue *element, int index, NewEvent *event)
{
	JsonbIterator *it;
	JsonbIteratorToken token;
	JsonbValue	key;
	JsonbValue	value;
	bool		have_type = false;
	bool		have_data = false;

	if (element->type != jbvBinary || !JsonContainerIsObject(element->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch element %d is not a JSON object", index),
				 errdetail("It is a JSON %s.", MemberTypeName(element))));

	memset(event, 0, sizeof(NewEvent));

	it = JsonbIteratorInit(element->val.binary.data);
	while ((token = JsonbIteratorNext(&it, &key, true)) != WJB_DONE)
	{
		char	   *name;

		if (token != WJB_KEY)
			continue;
		name = pnstrdup(key.val.string.val, key.val.string.len);
		token = JsonbIteratorNext(&it, &value, true);
		Assert(token == WJB_VALUE);

		if (strcmp(name, "type") == 0)
		{
			if (value.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("batch element %d: \"type\" must be a string", index),
						 errdetail("It is a JSON %s.", MemberTypeName(&value))));
			event->event_type = cstring_to_text_with_len(value.val.string.val,
														 value.val.string.len);
			ValidateEventType(event->event_type, index);
			have_type = true;
		}
		else if (strcmp(name, "data") == 0)
		{
			event->data = ObjectMember(&value);
			if (event->data == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("batch element %d: \"data\" must be a JSON object", index),
						 errdetail("The data is a JSON %s.", MemberTypeName(&value))));
			have_data = true;
		}
		else if (strcmp(name, "metadata") == 0)
		{
			if (value.type == jbvNull)
				event->metadata = NULL;
			else if ((event->metadata = ObjectMember(&value)) == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("batch element %d: \"metadata\" must be a JSON object or NULL", index),
						 errdetail("The metadata is a JSON %s.", MemberTypeName(&value))));
		}
		else if (strcmp(name, "id") == 0)
		{
			if (value.type == jbvNull)
				continue;
			if (value.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("batch element %d: \"id\" must be a UUID", index),
						 errdetail("It is a JSON %s.", MemberTypeName(&value))));
			ParseUuid(value.val.string.val, value.val.string.len,
					  &event->event_id, index);
			event->event_id_given = true;
		}
		else if (strcmp(name, "schema_version") == 0)
		{
			if (value.type != jbvNull)
				event->schema_version = ParseSchemaVersion(&value, index);
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("batch element %d has an unknown member \"%s\"", index, name),
					 errhint("An event is {\"type\": text, \"data\": object, \"metadata\": object, \"id\": uuid, \"schema_version\": int}; only type and data are required.")));
	}

	if (!have_type)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch element %d has no \"type\"", index)));
	if (!have_data)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("batch element %d has no \"data\"", index)));
}

/*
 * Fills in what the caller left to us: random ids, the default schema
 * version.  Also checks the size and that no id is used twice in a batch.
 */
static void
CompleteEvents(const EsCatalog *cat, NewEvent *events, int count, bool is_batch)
{
	for (int i = 0; i < count; i++)
	{
		NewEvent   *event = &events[i];
		int			batch_index = is_batch ? i : SINGLE_EVENT;

		CheckEventSize(event, batch_index);
		if (!event->event_id_given)
			RandomUuid(&event->event_id);
		if (event->schema_version == 0)
			event->schema_version = EsNewestSchemaVersion(cat, event->event_type);
	}

	/* Quadratic, but only over the ids the caller chose, in one batch. */
	for (int i = 0; i < count; i++)
	{
		if (!events[i].event_id_given)
			continue;
		for (int j = i + 1; j < count; j++)
		{
			if (events[j].event_id_given &&
				memcmp(events[i].event_id.data, events[j].event_id.data, UUID_LEN) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("event id %s appears twice in the batch",
								DatumGetCString(DirectFunctionCall1(uuid_out,
																	UUIDPGetDatum(&events[i].event_id)))),
						 errdetail("Batch elements %d and %d have the same id.", i, j)));
		}
	}
}

/*
 * The idempotent retry
 */

static char *
UuidText(pg_uuid_t *uuid)
{
	return DatumGetCString(DirectFunctionCall1(uuid_out, UUIDPGetDatum(uuid)));
}

/*
 * CheckStoredIds
 *		Looks up the ids the caller chose.  Returns false when none is stored.
 *		Returns true, with *version set to what the original append returned,
 *		when all are stored in this stream at consecutive versions right after
 *		the expected version (any version when expected_version is NULL or -1):
 *		a retry of an append that succeeded.  Any other reuse of a stored id
 *		is an error.
 */
static bool
CheckStoredIds(const EsCatalog *cat, text *stream_id, bool expected_is_null,
			   int64 expected_version, NewEvent *events, int count,
			   int64 *version)
{
	Datum	   *ids;
	int			nids = 0;
	Datum		arg;
	int			ret;
	char	  **stored_stream;
	int64	   *stored_version;
	int			nstored = 0;
	int64		base = 0;
	char	   *stream = text_to_cstring(stream_id);

	ids = palloc(sizeof(Datum) * count);
	for (int i = 0; i < count; i++)
		if (events[i].event_id_given)
			ids[nids++] = UUIDPGetDatum(&events[i].event_id);
	if (nids == 0)
		return false;

	arg = PointerGetDatum(construct_array(ids, nids, UUIDOID, UUID_LEN, false,
										  TYPALIGN_CHAR));
	ret = SPI_execute_plan(EsPlanGet(&stored_ids_plan, cat), &arg, NULL, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "looking up event ids failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;

	/* Where each of our events is stored, if it is. */
	stored_stream = palloc0(sizeof(char *) * count);
	stored_version = palloc0(sizeof(int64) * count);
	for (uint64 row = 0; row < SPI_processed; row++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[row];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		pg_uuid_t  *id = DatumGetUUIDP(SPI_getbinval(tuple, desc, 1, &isnull));

		for (int i = 0; i < count; i++)
		{
			if (events[i].event_id_given &&
				memcmp(events[i].event_id.data, id->data, UUID_LEN) == 0)
			{
				stored_stream[i] = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
				stored_version[i] = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
				nstored++;
				break;
			}
		}
	}

	/*
	 * In batch order: the first stored event fixes the version the stream
	 * had before the original append (base); every event must then be
	 * stored right where the original append put it.
	 */
	for (int i = 0; i < count; i++)
	{
		if (stored_stream[i] == NULL)
			continue;
		if (i == 0 || nstored < count)
		{
			base = stored_version[i] - i - 1;
			if (nstored < count)
				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("event id %s is already stored", UuidText(&events[i].event_id)),
						 errdetail("It is version " INT64_FORMAT " of stream \"%s\", and %d of the %d events appended now are not stored: this is not a retry of an earlier append.",
								   stored_version[i], stored_stream[i], count - nstored, count)));
		}
		if (strcmp(stored_stream[i], stream) != 0 ||
			stored_version[i] != base + i + 1 ||
			!(expected_is_null || expected_version == -1 || base == expected_version))
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("event id %s is already stored", UuidText(&events[i].event_id)),
					 errdetail("It is version " INT64_FORMAT " of stream \"%s\". "
							   "An append is a retry only when all of its event ids are stored in its stream, in order, right after the expected version.",
							   stored_version[i], stored_stream[i])));
	}

	*version = base + count;
	return true;
}

/*
 * The expected-version check
 */

/*
 * AdvanceStream
 *		Locks the stream's row and moves it count versions on, if the stream
 *		is at the expected version.  Returns the new version, or -1 when the
 *		expected version did not match (and nothing was written).
 */
static int64
AdvanceStream(const EsCatalog *cat, text *stream_id, bool expected_is_null,
			  int64 expected_version, int count)
{
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	EsPlan	   *plan;
	int			ret;
	bool		isnull;
	bool		create_if_missing = false;

	/*
	 * An existing stream's row is moved on without a statement where that
	 * does all the statement would (stream_row.c).
	 */
	if (expected_is_null || expected_version != 0)
	{
		int64		new_version;

		switch (EsAdvanceStreamRow(cat, stream_id, expected_is_null,
								   expected_version, count, &new_version))
		{
			case ES_STREAM_ROW_MOVED:
				return new_version;
			case ES_STREAM_ROW_AT_OTHER_VERSION:
				return -1;
			case ES_STREAM_ROW_MISSING:
				if (!expected_is_null)
					return -1;
				create_if_missing = true;	/* any version: the upsert */
				break;
			case ES_STREAM_ROW_USE_STATEMENT:
				break;
		}
	}

	args[0] = PointerGetDatum(stream_id);
	args[1] = Int64GetDatum((int64) count);
	if (create_if_missing)
		plan = &upsert_stream_plan;
	else if (expected_is_null)
	{
		/*
		 * Any version: most appends go to a stream that exists, and a plain
		 * UPDATE moves it on for less than the upsert (no speculative
		 * insertion check, no separate tuple lock with its WAL record).
		 * When it finds no row, the upsert creates the stream, or moves it
		 * on if a concurrent append created it in the meantime.
		 */
		nulls[2] = 'n';
		ret = SPI_execute_plan(EsPlanGet(&advance_stream_plan, cat), args, nulls, false, 0);
		if (ret != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "updating the stream failed: %s", SPI_result_code_string(ret));
		if (SPI_processed > 0)
			return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
											   1, &isnull));
		plan = &upsert_stream_plan;
	}
	else if (expected_version == 0)
		plan = &create_stream_plan;
	else
	{
		plan = &advance_stream_plan;
		args[2] = Int64GetDatum(expected_version);
		if (expected_version == -1)
			nulls[2] = 'n';
	}

	ret = SPI_execute_plan(EsPlanGet(plan, cat), args, nulls, false, 0);
	if (ret != SPI_OK_INSERT_RETURNING && ret != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "updating the stream failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return -1;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

static void
ReportWrongExpectedVersion(text *stream_id, int64 expected_version, int64 actual)
{
	char	   *stream = text_to_cstring(stream_id);

	if (expected_version == -1)
		ereport(ERROR,
				(errcode(ERRCODE_ES_WRONG_EXPECTED_VERSION),
				 errmsg("wrong expected version for stream \"%s\"", stream),
				 errdetail("Expected an existing stream (version -1), actual version " INT64_FORMAT ".",
						   actual)));
	ereport(ERROR,
			(errcode(ERRCODE_ES_WRONG_EXPECTED_VERSION),
			 errmsg("wrong expected version for stream \"%s\"", stream),
			 errdetail("Expected version " INT64_FORMAT ", actual version " INT64_FORMAT ".",
					   expected_version, actual),
			 errhint("Read the stream again, decide again, and append with its current version.")));
}

/*
 * Insert
 */

static void
InsertEvents(const EsCatalog *cat, text *stream_id, int64 first_version,
			 NewEvent *events, int count)
{
	Datum	   *rows = palloc(sizeof(Datum) * ES_EVENT_ROW_NATTS * count);
	bool	   *row_nulls = palloc0(sizeof(bool) * ES_EVENT_ROW_NATTS * count);
	int			ret;

	/* es_events' columns in attribute order; recorded_at is set later */
	for (int i = 0; i < count; i++)
	{
		Datum	   *row = rows + i * ES_EVENT_ROW_NATTS;
		bool	   *nulls = row_nulls + i * ES_EVENT_ROW_NATTS;

		row[0] = Int64GetDatum(EsTakeGlobalPosition(cat));
		row[1] = PointerGetDatum(stream_id);
		row[2] = Int64GetDatum(first_version + i);
		row[3] = UUIDPGetDatum(&events[i].event_id);
		row[4] = PointerGetDatum(events[i].event_type);
		row[5] = Int32GetDatum(events[i].schema_version);
		row[6] = JsonbPGetDatum(events[i].data);
		row[7] = events[i].metadata ? JsonbPGetDatum(events[i].metadata) : (Datum) 0;
		nulls[7] = (events[i].metadata == NULL);
	}

	if (EsInsertEventRows(cat, rows, row_nulls, count))
		return;

	/* The INSERT statement, where only it does all that is needed. */
	if (count == 1)
	{
		Datum		args[8];
		char		nulls[8];

		for (int a = 0; a < 8; a++)
		{
			args[a] = rows[a];
			nulls[a] = row_nulls[a] ? 'n' : ' ';
		}
		ret = SPI_execute_plan(EsPlanGet(&insert_one_plan, cat), args, nulls, false, 0);
	}
	else
	{
		Datum	   *positions = palloc(sizeof(Datum) * count);
		Datum	   *ids = palloc(sizeof(Datum) * count);
		Datum	   *types = palloc(sizeof(Datum) * count);
		Datum	   *schema_versions = palloc(sizeof(Datum) * count);
		Datum	   *datas = palloc(sizeof(Datum) * count);
		Datum	   *metadatas = palloc(sizeof(Datum) * count);
		bool	   *metadata_nulls = palloc(sizeof(bool) * count);
		int			dims[1] = {count};
		int			lbs[1] = {1};
		Datum		args[8];

		for (int i = 0; i < count; i++)
		{
			Datum	   *row = rows + i * ES_EVENT_ROW_NATTS;

			positions[i] = row[0];
			ids[i] = row[3];
			types[i] = row[4];
			schema_versions[i] = row[5];
			datas[i] = row[6];
			metadatas[i] = row[7];
			metadata_nulls[i] = row_nulls[i * ES_EVENT_ROW_NATTS + 7];
		}

		args[0] = PointerGetDatum(stream_id);
		args[1] = Int64GetDatum(first_version - 1);
		args[2] = PointerGetDatum(construct_array(positions, count, INT8OID, 8,
												  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		args[3] = PointerGetDatum(construct_array(ids, count, UUIDOID, UUID_LEN,
												  false, TYPALIGN_CHAR));
		args[4] = PointerGetDatum(construct_array(types, count, TEXTOID, -1,
												  false, TYPALIGN_INT));
		args[5] = PointerGetDatum(construct_array(schema_versions, count, INT4OID, 4,
												  true, TYPALIGN_INT));
		args[6] = PointerGetDatum(construct_array(datas, count, JSONBOID, -1,
												  false, TYPALIGN_INT));
		args[7] = PointerGetDatum(construct_md_array(metadatas, metadata_nulls, 1,
													 dims, lbs, JSONBOID, -1,
													 false, TYPALIGN_INT));
		ret = SPI_execute_plan(EsPlanGet(&insert_many_plan, cat), args, NULL, false, 0);
	}

	if (ret != SPI_OK_INSERT)
		elog(ERROR, "inserting events failed: %s", SPI_result_code_string(ret));
	if (SPI_processed != (uint64) count)
		elog(ERROR, "inserted " UINT64_FORMAT " events instead of %d",
			 SPI_processed, count);
}

/*
 * AppendEvents
 *		The one append path behind both SQL forms, run as the owner of es's
 *		tables.  Returns the stream's new version.
 */
static int64
AppendEventsAsOwner(FunctionCallInfo fcinfo, const EsCatalog *cat,
					NewEvent *events, int count, bool is_batch)
{
	text	   *stream_id = PG_GETARG_TEXT_PP(0);
	bool		expected_is_null = PG_ARGISNULL(1);
	int64		expected_version = expected_is_null ? 0 : PG_GETARG_INT64(1);
	bool		ids_given = false;
	int64		new_version;

	for (int i = 0; i < count; i++)
		ids_given |= events[i].event_id_given;

	SPI_connect();
	CompleteEvents(cat, events, count, is_batch);

	if (ids_given &&
		CheckStoredIds(cat, stream_id, expected_is_null, expected_version,
					   events, count, &new_version))
	{
		SPI_finish();
		return new_version;
	}

	if (ids_given && (expected_is_null || expected_version == -1))
	{
		/*
		 * "Any version" with caller-chosen ids: pin the version we saw, so
		 * that if a concurrent append wins (possibly this retry's original,
		 * still in flight when we looked the ids up), the check below fails
		 * and we look again instead of running into its ids.  Each turn of
		 * the loop means another append to this stream committed.
		 */
		for (;;)
		{
			int64		seen = EsStreamVersion(cat, stream_id, false);

			if (seen == 0 && !expected_is_null)
				ReportWrongExpectedVersion(stream_id, expected_version, seen);
			new_version = AdvanceStream(cat, stream_id, false, seen, count);
			if (new_version >= 0)
				break;
			if (CheckStoredIds(cat, stream_id, expected_is_null, expected_version,
							   events, count, &new_version))
			{
				SPI_finish();
				return new_version;
			}
			CHECK_FOR_INTERRUPTS();
		}
	}
	else
	{
		new_version = AdvanceStream(cat, stream_id, expected_is_null,
									expected_version, count);
		if (new_version < 0)
		{
			/*
			 * The check failed.  If we waited for a concurrent append to
			 * this stream, it may have been the original of this retry: look
			 * again, now that it has committed.
			 */
			if (ids_given &&
				CheckStoredIds(cat, stream_id, expected_is_null, expected_version,
							   events, count, &new_version))
			{
				SPI_finish();
				return new_version;
			}
			ReportWrongExpectedVersion(stream_id, expected_version,
									   EsStreamVersion(cat, stream_id, false));
		}
	}

	/*
	 * Saved and restored, not cleared: an inline projection handler may
	 * append itself while the rows of an outer batch are still being
	 * dispatched.
	 */
	{
		bool		outer = append_in_progress;

		append_in_progress = true;
		InsertEvents(cat, stream_id, new_version - count + 1, events, count);
		append_in_progress = outer;
	}

	SPI_finish();
	return new_version;
}

/*
 * CheckLegacyPrivileges
 *		With 0.1.0's SQL objects (before ALTER EXTENSION es UPDATE), PUBLIC
 *		may execute es_append and appending is governed by table grants, as
 *		in 0.1.0: the caller needs INSERT on es_events and INSERT and UPDATE
 *		on es_streams.  Writing as the owner without this check would let any
 *		role append.
 */
static void
CheckLegacyPrivileges(const EsCatalog *cat)
{
	Oid			userid = GetUserId();

	if (pg_class_aclcheck(cat->events_relid, userid, ACL_INSERT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table es_events"),
				 errdetail("The SQL objects of extension \"es\" in this database are those of version 0.1.0, where appending needs INSERT on es_events."),
				 errhint("Run ALTER EXTENSION es UPDATE; then GRANT EXECUTE ON FUNCTION es_append to the roles that append.")));
	if ((pg_class_aclcheck(cat->streams_relid, userid, ACL_INSERT) != ACLCHECK_OK ||
		pg_class_aclcheck(cat->streams_relid, userid, ACL_UPDATE) != ACLCHECK_OK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table es_streams"),
				 errdetail("The SQL objects of extension \"es\" in this database are those of version 0.1.0, where appending needs INSERT and UPDATE on es_streams."),
				 errhint("Run ALTER EXTENSION es UPDATE; then GRANT EXECUTE ON FUNCTION es_append to the roles that append.")));
}

/*
 * AppendEvents
 *		Both SQL forms: the caller's EXECUTE privilege on es_append is all
 *		it needs; es's statements run as the tables' owner (privilege.c).
 */
static int64
AppendEvents(FunctionCallInfo fcinfo, NewEvent *events, int count, bool is_batch)
{
	const EsCatalog *cat;
	EsUserSwitch sw;
	int64		new_version;

	/* Say so in our own words, before any statement fails on it. */
	PreventCommandIfReadOnly("es_append()");
	PreventCommandDuringRecovery("es_append()");

	cat = EsCatalogGet(fcinfo);
	if (cat->legacy_privileges)
		CheckLegacyPrivileges(cat);
	EsBecomeOwner(cat, &sw);
	PG_TRY();
	{
		new_version = AppendEventsAsOwner(fcinfo, cat, events, count, is_batch);
	}
	PG_CATCH();
	{
		append_in_progress = false;
		EsResetInvokingUser(&sw);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EsRestoreUser(&sw);
	return new_version;
}

/*
 * EsAppendInProgress
 *		Whether es_append is inserting events right now: triggers on
 *		es_events tell its rows from those of a restore.
 */
bool
EsAppendInProgress(void)
{
	return append_in_progress;
}

/*
 * es_append(stream_id text, expected_version bigint, event_type text,
 *			 data jsonb, metadata jsonb DEFAULT NULL, event_id uuid DEFAULT NULL)
 *		RETURNS bigint
 */
Datum
es_append(PG_FUNCTION_ARGS)
{
	NewEvent	event;

	RequireArgument(fcinfo, 0, "stream_id");
	RequireArgument(fcinfo, 2, "event_type");
	RequireArgument(fcinfo, 3, "data");
	ValidateTarget(fcinfo);

	memset(&event, 0, sizeof(event));
	event.event_type = PG_GETARG_TEXT_PP(2);
	ValidateEventType(event.event_type, SINGLE_EVENT);
	event.data = PG_GETARG_JSONB_P(3);
	ValidateData(event.data, SINGLE_EVENT);
	if (!PG_ARGISNULL(4))
	{
		event.metadata = PG_GETARG_JSONB_P(4);
		ValidateMetadata(event.metadata, SINGLE_EVENT);
	}
	if (!PG_ARGISNULL(5))
	{
		memcpy(event.event_id.data, PG_GETARG_UUID_P(5)->data, UUID_LEN);
		event.event_id_given = true;
	}
	PG_RETURN_INT64(AppendEvents(fcinfo, &event, 1, false));
}

/*
 * es_append(stream_id text, expected_version bigint, events jsonb)
 *		RETURNS bigint
 */
Datum
es_append_batch(PG_FUNCTION_ARGS)
{
	Jsonb	   *batch;
	NewEvent   *events;
	int			count;
	JsonbIterator *it;
	JsonbIteratorToken token;
	JsonbValue	element;
	int			index = 0;

	RequireArgument(fcinfo, 0, "stream_id");
	RequireArgument(fcinfo, 2, "events");
	ValidateTarget(fcinfo);

	batch = PG_GETARG_JSONB_P(2);
	if (!JB_ROOT_IS_ARRAY(batch) || JB_ROOT_IS_SCALAR(batch))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must be a JSON array of event objects"),
				 errdetail("The events are a JSON %s.", JsonbRootTypeName(batch))));
	count = JB_ROOT_COUNT(batch);
	if (count == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must not be an empty array")));

	events = palloc(sizeof(NewEvent) * count);
	it = JsonbIteratorInit(&batch->root);
	while ((token = JsonbIteratorNext(&it, &element, true)) != WJB_DONE)
	{
		if (token != WJB_ELEM)
			continue;
		ParseBatchElement(&element, index, &events[index]);
		index++;
	}
	Assert(index == count);
	PG_RETURN_INT64(AppendEvents(fcinfo, events, count, true));
}
