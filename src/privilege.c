/*-------------------------------------------------------------------------
 *
 * privilege.c
 *	  Whose rights es's own statements, and the user code es calls, run
 *	  with.
 *
 * es writes its tables itself: es_append checks that its caller may call it
 * (EXECUTE, which PUBLIC does not have), then runs its internal statements
 * as the owner of es_events, the way PostgreSQL runs maintenance commands
 * as a table's owner (SetUserIdAndSecContext with
 * SECURITY_LOCAL_USERID_CHANGE, so that nothing inside can SET ROLE its way
 * further).  Other roles cannot write the tables directly whatever they are
 * granted: row-level security is enabled on them with policies that let
 * nobody but the owner insert or update (sql/es.sql).
 *
 * User code never gains rights through es.  Code es calls on behalf of a
 * session (upcasters while reading, inline projection handlers while
 * appending, apply functions in es_load) runs as the role that caused the
 * call: EsInvokingUserId() is that role even while es is running as the
 * owner.  Code es calls in the background worker runs as the role that
 * registered it (EsBecomeUser), never as the worker's superuser.
 *
 * Locks: none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "es.h"

/* The role es_append was called by, while es runs as the owner. */
static Oid	invoking_user = InvalidOid;

/*
 * EsBecomeOwner
 *		Run as the owner of es's tables until EsRestoreUser(sw).  Remembers
 *		the current role as the invoking one.  On error the transaction's
 *		abort restores the user; the caller restores the invoking user with
 *		EsRestoreUser in a PG_FINALLY.
 */
void
EsBecomeOwner(const EsCatalog *cat, EsUserSwitch *sw)
{
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	sw->save_invoking_user = invoking_user;
	if (!OidIsValid(invoking_user))
		invoking_user = sw->save_userid;
	SetUserIdAndSecContext(cat->owner_oid,
						   sw->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

/*
 * EsBecomeUser
 *		Run user code as roleid until EsRestoreUser(sw): the invoking role of
 *		a call made while es runs as the owner, or the registering role of
 *		background work.  SET ROLE and SET SESSION AUTHORIZATION are refused
 *		inside, as in a SECURITY DEFINER function.
 */
void
EsBecomeUser(Oid roleid, EsUserSwitch *sw)
{
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	sw->save_invoking_user = invoking_user;
	invoking_user = InvalidOid;
	SetUserIdAndSecContext(roleid,
						   sw->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
EsRestoreUser(EsUserSwitch *sw)
{
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
	invoking_user = sw->save_invoking_user;
}

/*
 * EsResetInvokingUser
 *		After an error escaped es while it ran as the owner (the abort has
 *		restored the user itself).
 */
void
EsResetInvokingUser(EsUserSwitch *sw)
{
	invoking_user = sw->save_invoking_user;
}

/*
 * EsInvokingUserId
 *		The role user code called now must run as: the one that called es,
 *		not the owner es may be running as.
 */
Oid
EsInvokingUserId(void)
{
	return OidIsValid(invoking_user) ? invoking_user : GetUserId();
}

/*
 * EsExecuteAsOwner
 *		Runs one kept statement as the tables' owner (es's own reads and
 *		writes of its tables) and returns SPI_execute_plan's result.  Must be
 *		called while connected to SPI.
 */
int
EsExecuteAsOwner(const EsCatalog *cat, EsPlan *plan, Datum *args, const char *nulls,
				 bool read_only, long tcount)
{
	EsUserSwitch sw;
	int			ret;

	EsBecomeOwner(cat, &sw);
	PG_TRY();
	{
		ret = SPI_execute_plan(EsPlanGet(plan, cat), args, nulls, read_only, tcount);
	}
	PG_CATCH();
	{
		EsResetInvokingUser(&sw);
		PG_RE_THROW();
	}
	PG_END_TRY();
	EsRestoreUser(&sw);
	return ret;
}
