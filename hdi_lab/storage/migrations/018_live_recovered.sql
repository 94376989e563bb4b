-- hdi_lab schema, version 18: live sessions count the quarantined records they retried automatically.
--
-- recovered: records quarantined as of an unknown instrument (received before the stream's symbol mapping or
-- definition made their instrument known) that the session retried through the quarantine's retry path and
-- loaded (or found stored) once it knew the instrument, in the transaction of the batch that made it known, or
-- at the session's end. The entries themselves are resolved with that reason.
ALTER TABLE {s}.live_sessions ADD COLUMN recovered bigint NOT NULL DEFAULT 0;

-- The session's last retry finds its open entries by their chunk key (live-<session id>-<schema>) without reading
-- the resolved ones.
CREATE INDEX quarantine_open_chunk_key ON {s}.quarantine (chunk_key) WHERE status = 'open';
