-- tests/upgrade_describe.sql — used by tests/upgrade.sh: the extension's objects
-- as sorted text lines, to diff an updated database against a fresh install.
-- Every property of the extension's objects that an install fixes, one
-- line per object (or per column, constraint, ...), by name, sorted.
WITH ext AS (SELECT oid, extnamespace FROM pg_extension WHERE extname = 'es'),
member AS (
    SELECT d.classid, d.objid FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
rel AS (
    -- member relations, composite types' relations, and indexes of member tables
    SELECT c.oid FROM pg_class c
    WHERE c.oid IN (SELECT objid FROM member WHERE classid = 'pg_class'::regclass)
       OR c.reltype IN (SELECT objid FROM member WHERE classid = 'pg_type'::regclass)
       OR c.oid IN (SELECT i.indexrelid FROM pg_index i
                    WHERE i.indrelid IN (SELECT objid FROM member WHERE classid = 'pg_class'::regclass))),
lines(line) AS (
    SELECT 'extension es version=' || extversion || ' relocatable=' || extrelocatable
           || ' schema=' || extnamespace::regnamespace
    FROM pg_extension WHERE extname = 'es'
UNION ALL
    SELECT 'member ' || pg_describe_object(classid, objid, 0) FROM member
UNION ALL
    SELECT 'function ' || p.oid::regprocedure
        || ' kind=' || p.prokind::text || ' args=(' || pg_get_function_arguments(p.oid) || ')'
        || ' result=' || coalesce(pg_get_function_result(p.oid), '-')
        || ' language=' || l.lanname || ' volatility=' || p.provolatile::text
        || ' strict=' || p.proisstrict || ' security_definer=' || p.prosecdef
        || ' leakproof=' || p.proleakproof || ' parallel=' || p.proparallel::text
        || ' cost=' || p.procost || ' rows=' || p.prorows
        || ' config=' || coalesce(p.proconfig::text, '-')
        || ' owner=' || p.proowner::regrole || ' acl=' || coalesce(p.proacl::text, '-')
        || ' bin=' || coalesce(p.probin, '-') || ' src=' || md5(p.prosrc)
        || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '-')
    FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
    WHERE p.oid IN (SELECT objid FROM member WHERE classid = 'pg_proc'::regclass)
UNION ALL
    SELECT 'relation ' || c.oid::regclass || ' kind=' || c.relkind::text
        || ' persistence=' || c.relpersistence::text || ' options=' || coalesce(c.reloptions::text, '-')
        || ' rowsecurity=' || c.relrowsecurity || ' forcerowsecurity=' || c.relforcerowsecurity
        || ' replident=' || c.relreplident::text || ' owner=' || c.relowner::regrole
        || ' acl=' || coalesce(c.relacl::text, '-')
        || ' comment=' || coalesce(obj_description(c.oid, 'pg_class'), '-')
    FROM pg_class c WHERE c.oid IN (SELECT oid FROM rel)
UNION ALL
    SELECT 'column ' || c.oid::regclass || '.' || a.attname || ' attnum=' || a.attnum
        || ' type=' || format_type(a.atttypid, a.atttypmod) || ' notnull=' || a.attnotnull
        || ' default=' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '-')
        || ' identity=' || a.attidentity::text || ' generated=' || a.attgenerated::text
        || ' collation=' || coalesce(a.attcollation::regcollation::text, '-')
        || ' storage=' || a.attstorage::text || ' acl=' || coalesce(a.attacl::text, '-')
        || ' comment=' || coalesce(col_description(c.oid, a.attnum), '-')
    FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE c.oid IN (SELECT oid FROM rel) AND c.relkind::text <> 'i' AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
    SELECT 'index ' || pg_get_indexdef(i.indexrelid) || ' primary=' || i.indisprimary
        || ' unique=' || i.indisunique || ' valid=' || i.indisvalid
        || ' replident=' || i.indisreplident || ' clustered=' || i.indisclustered
    FROM pg_index i WHERE i.indexrelid IN (SELECT oid FROM rel)
UNION ALL
    SELECT 'constraint ' || co.conrelid::regclass || '.' || co.conname
        || ' type=' || co.contype::text || ' ' || pg_get_constraintdef(co.oid)
        || ' validated=' || co.convalidated
        || ' comment=' || coalesce(obj_description(co.oid, 'pg_constraint'), '-')
    FROM pg_constraint co WHERE co.conrelid IN (SELECT oid FROM rel)
UNION ALL
    SELECT 'trigger ' || t.tgrelid::regclass || '.' || t.tgname || ' enabled=' || t.tgenabled::text
        || ' ' || pg_get_triggerdef(t.oid)
        || ' comment=' || coalesce(obj_description(t.oid, 'pg_trigger'), '-')
    FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rel) AND NOT t.tgisinternal
UNION ALL
    SELECT 'policy ' || po.polrelid::regclass || '.' || po.polname || ' cmd=' || po.polcmd::text
        || ' permissive=' || po.polpermissive || ' roles=' || po.polroles::regrole[]::text
        || ' using=' || coalesce(pg_get_expr(po.polqual, po.polrelid), '-')
        || ' check=' || coalesce(pg_get_expr(po.polwithcheck, po.polrelid), '-')
        || ' comment=' || coalesce(obj_description(po.oid, 'pg_policy'), '-')
    FROM pg_policy po WHERE po.polrelid IN (SELECT oid FROM rel)
UNION ALL
    SELECT 'view ' || c.oid::regclass || ' ' || pg_get_viewdef(c.oid)
    FROM pg_class c WHERE c.oid IN (SELECT oid FROM rel) AND c.relkind::text IN ('v', 'm')
UNION ALL
    SELECT 'rule ' || r.ev_class::regclass || '.' || r.rulename || ' enabled=' || r.ev_enabled::text
    FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rel)
UNION ALL
    SELECT 'sequence ' || s.seqrelid::regclass || ' type=' || s.seqtypid::regtype
        || ' start=' || s.seqstart || ' increment=' || s.seqincrement || ' min=' || s.seqmin
        || ' max=' || s.seqmax || ' cache=' || s.seqcache || ' cycle=' || s.seqcycle
        || ' owned_by=' || coalesce((SELECT d.refobjid::regclass || '.' || a.attname
                                      FROM pg_depend d JOIN pg_attribute a
                                        ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                                     WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                                       AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'), '-')
    FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rel)
UNION ALL
    SELECT 'type ' || t.oid::regtype || ' type=' || t.typtype::text || ' owner=' || t.typowner::regrole
        || ' acl=' || coalesce(t.typacl::text, '-')
        || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '-')
    FROM pg_type t WHERE t.oid IN (SELECT objid FROM member WHERE classid = 'pg_type'::regclass)
UNION ALL
    SELECT 'dumped ' || cfg.rel::regclass || ' condition=' || coalesce(cfg.cond, '-')
    FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS cfg(rel, cond)
    WHERE e.extname = 'es'
UNION ALL
    -- what pg_dump takes as the extension's own privileges
    SELECT 'initprivs ' || pg_describe_object(ip.classoid, ip.objoid, ip.objsubid)
        || ' type=' || ip.privtype::text || ' ' || ip.initprivs::text
    FROM pg_init_privs ip
    WHERE (ip.classoid, ip.objoid) IN (SELECT classid, objid FROM member)
       OR (ip.classoid = 'pg_class'::regclass AND ip.objoid IN (SELECT oid FROM rel))
)
SELECT line FROM lines ORDER BY line COLLATE "C";
