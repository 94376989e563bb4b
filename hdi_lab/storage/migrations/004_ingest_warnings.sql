-- hdi_lab schema, version 4: the vendor's warnings for each chunk (e.g. symbols not found) are kept
-- in the ingest log, not only shown once.
ALTER TABLE {s}.ingest_log ADD COLUMN warnings text[] NOT NULL DEFAULT '{}';
