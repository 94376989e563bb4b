-- hdi_lab schema, version 6: one quarantine entry per rejected record, identified for good.
--
-- Version 1 kept one OPEN entry per (schema, rule, record body): two byte-identical rejected trades
-- (told apart only by dup_idx) became one entry, and a forced re-ingest re-opened entries already
-- fixed and resolved. An entry is now identified by a fingerprint of the ORIGINAL record taken when it
-- is inserted (dataset, schema, dup_idx, record): the user edits `record` to fix it, the fingerprint
-- stays. It is unique over every status, so a re-run never duplicates an entry nor re-opens one.
CREATE FUNCTION {s}.quarantine_fingerprint(dataset text, schema text, dup_idx integer, record jsonb)
RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT md5(concat_ws('|', $1, $2, $3::text, $4::text)) $$;

ALTER TABLE {s}.quarantine ADD COLUMN fingerprint text;

-- Existing entries: the fingerprint of their record as it is now (a record fixed before this version
-- is all there is). Where several entries share one (an entry re-opened by a forced re-ingest, or one
-- record under two rules), the first keeps it, a resolved one first, and the others are told apart by
-- their id: every row is kept.
WITH f AS (
    SELECT id, {s}.quarantine_fingerprint(dataset, schema, dup_idx, record) AS fp,
           row_number() OVER (PARTITION BY {s}.quarantine_fingerprint(dataset, schema, dup_idx, record)
                              ORDER BY status = 'resolved' DESC, id) AS n
    FROM {s}.quarantine
)
UPDATE {s}.quarantine q SET fingerprint = CASE WHEN f.n = 1 THEN f.fp ELSE f.fp || ':' || q.id END
FROM f WHERE q.id = f.id;

ALTER TABLE {s}.quarantine ALTER COLUMN fingerprint SET NOT NULL;
DROP INDEX {s}.quarantine_open_uniq;
CREATE UNIQUE INDEX quarantine_fingerprint_uniq ON {s}.quarantine (fingerprint);
