-- hdi_lab schema, version 8: a re-ingested chunk replaces its range, so the ingest log counts the rows it deleted
-- (stored rows of the chunk's range that its revised data no longer has, or that now fail validation).
ALTER TABLE {s}.ingest_log ADD COLUMN deleted bigint NOT NULL DEFAULT 0;
