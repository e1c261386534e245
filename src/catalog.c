/*-------------------------------------------------------------------------
 *
 * catalog.c
 *	  Where the extension's objects live, and the SPI plans kept over them.
 *
 * Every SQL statement es runs names our objects schema-qualified, so that a
 * caller's search_path can neither break nor hijack it.  The schema is the
 * one the called function lives in (the extension is not relocatable, so
 * all of its objects share it).  The lookup is cached per backend in
 * TopMemoryContext and forgotten when a relcache invalidation names one of
 * our relations or a namespace changes; kept plans notice through the
 * catalog's generation number and are prepared again.
 *
 * Locks: none beyond the catalog lookups themselves.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_namespace.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "es.h"

static EsCatalog catalog;
static bool catalog_valid = false;
static bool callbacks_registered = false;

/*
 * A relcache invalidation: forget the catalog when it names one of our
 * relations, the upcaster cache when it names es_upcasters (whose
 * statement trigger sends one on every change), and the aggregate cache
 * when it names es_upcasters or es_aggregates.  InvalidOid means "all".
 */
static void
InvalidateCatalogForRelation(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == catalog.upcasters_relid)
		EsUpcastInvalidate();
	if (relid == InvalidOid || relid == catalog.upcasters_relid ||
		(relid == catalog.aggregates_relid && OidIsValid(relid)))
		EsAggregateInvalidate();
	if (!catalog_valid)
		return;
	if (relid == InvalidOid ||
		relid == catalog.events_relid ||
		relid == catalog.streams_relid ||
		relid == catalog.position_seqid ||
		relid == catalog.upcasters_relid)
		catalog_valid = false;
}

static void
InvalidateCatalogForNamespace(Datum arg, int cacheid, uint32 hashvalue)
{
	catalog_valid = false;
}

static Oid
LookupRelation(const char *relname, Oid schema_oid)
{
	Oid			relid = get_relname_relid(relname, schema_oid);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"%s.%s\" of extension \"es\" does not exist",
						get_namespace_name(schema_oid), relname),
				 errhint("Reinstall the extension with DROP EXTENSION es and CREATE EXTENSION es.")));
	return relid;
}

static Oid
RelationOwner(Oid relid, bool *rowsecurity)
{
	HeapTuple	tuple;
	Oid			owner;

	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	*rowsecurity = ((Form_pg_class) GETSTRUCT(tuple))->relrowsecurity;
	ReleaseSysCache(tuple);
	return owner;
}

/*
 * EsCatalogGet
 *		The extension's schema and relations, as seen from the function that
 *		fcinfo describes (which must be one of ours: the extension is not
 *		relocatable, so its functions live in its schema).
 */
const EsCatalog *
EsCatalogGet(FunctionCallInfo fcinfo)
{
	if (catalog_valid)
		return &catalog;
	return EsCatalogForSchema(get_func_namespace(fcinfo->flinfo->fn_oid));
}

/*
 * EsCatalogForSchema
 *		The extension's objects in the given schema (the one it is installed
 *		in), for callers that are not one of its functions (the worker).
 */
const EsCatalog *
EsCatalogForSchema(Oid schema_oid)
{
	char	   *schema_name;

	if (catalog_valid && catalog.schema_oid == schema_oid)
		return &catalog;

	if (!callbacks_registered)
	{
		CacheRegisterRelcacheCallback(InvalidateCatalogForRelation, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, InvalidateCatalogForNamespace,
									  (Datum) 0);
		callbacks_registered = true;
	}

	schema_name = get_namespace_name(schema_oid);
	if (schema_name == NULL)
		elog(ERROR, "cache lookup failed for namespace %u", schema_oid);

	if (catalog.schema_quoted)
		pfree(catalog.schema_quoted);
	catalog.schema_oid = schema_oid;
	catalog.schema_quoted = MemoryContextStrdup(TopMemoryContext,
												quote_identifier(schema_name));
	catalog.events_relid = LookupRelation("es_events", schema_oid);
	catalog.streams_relid = LookupRelation("es_streams", schema_oid);
	catalog.position_seqid = LookupRelation("es_events_global_position_seq",
											schema_oid);
	catalog.upcasters_relid = LookupRelation("es_upcasters", schema_oid);
	catalog.aggregates_relid = get_relname_relid("es_aggregates", schema_oid);
	/*
	 * 0.2.0's SQL objects keep every other role from writing es_events with
	 * row-level security.  Without it, this is a database whose es is still
	 * 0.1.0 (the library was installed, ALTER EXTENSION es UPDATE not yet
	 * run): its privileges are 0.1.0's (table grants), which es_append must
	 * keep checking until the update (append.c).  ALTER TABLE ... ENABLE ROW
	 * LEVEL SECURITY invalidates this lookup.
	 */
	catalog.owner_oid = RelationOwner(catalog.events_relid,
									  &catalog.legacy_privileges);
	catalog.legacy_privileges = !catalog.legacy_privileges;
	catalog.generation++;
	EsUpcastInvalidate();
	EsAggregateInvalidate();

	/*
	 * An invalidation that arrived during the lookups above was about the
	 * old state; what we just read is current.
	 */
	catalog_valid = true;
	return &catalog;
}

/*
 * ExpandSchema
 *		The statement text with every @extschema@ replaced by our schema.
 */
static char *
ExpandSchema(const char *sql, const char *schema_quoted)
{
	StringInfoData buf;
	const char *p = sql;
	const char *hit;

	initStringInfo(&buf);
	while ((hit = strstr(p, "@extschema@")) != NULL)
	{
		appendBinaryStringInfo(&buf, p, hit - p);
		appendStringInfoString(&buf, schema_quoted);
		p = hit + strlen("@extschema@");
	}
	appendStringInfoString(&buf, p);
	return buf.data;
}

/*
 * EsPlanGet
 *		The kept SPI plan of a statement, prepared on first use and again
 *		whenever the catalog changed or PostgreSQL says it is no longer valid.
 *		Must be called while connected to SPI.
 */
SPIPlanPtr
EsPlanGet(EsPlan *plan, const EsCatalog *cat)
{
	if (plan->plan != NULL &&
		plan->generation == cat->generation &&
		SPI_plan_is_valid(plan->plan))
		return plan->plan;

	if (plan->plan != NULL)
	{
		SPI_freeplan(plan->plan);
		plan->plan = NULL;
	}

	{
		char	   *sql = ExpandSchema(plan->sql, cat->schema_quoted);
		SPIPlanPtr	prepared;

		prepared = SPI_prepare_cursor(sql, plan->nargs, plan->argtypes,
									  plan->cursor_options);
		if (prepared == NULL)
			elog(ERROR, "SPI_prepare failed for \"%s\": %s",
				 sql, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(prepared) != 0)
			elog(ERROR, "SPI_keepplan failed");
		pfree(sql);
		plan->plan = prepared;
		plan->generation = cat->generation;
	}
	return plan->plan;
}
