-- hdi_lab schema, version 8: a re-ingested chunk replaces its range, so the ingest log counts the rows it deleted
-- (stored rows of the chunk's range that its revised data no longer has, or that now fail validation).
ALTER TABLE {s}.ingest_log ADD COLUMN deleted bigint NOT NULL DEFAULT 0;

-- An open quarantine entry whose chunk range was re-ingested with data that no longer holds its record (the
-- vendor corrected or removed it) is 'superseded': a retry must not load the old record over the new data.
ALTER TABLE {s}.quarantine DROP CONSTRAINT quarantine_status_check;
ALTER TABLE {s}.quarantine ADD CONSTRAINT quarantine_status_check
    CHECK (status IN ('open', 'resolved', 'superseded'));
