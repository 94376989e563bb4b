-- hdi_lab schema, version 11: what each chunk cost and what it left stored.
--
-- cost_usd: the vendor's estimated cost of fetching the chunk (Databento: its records' bytes at the dataset's
-- unit price), NULL when the provider gives none (sample, file, IB) or the estimate could not be had. The daily
-- report sums it per provider and subscription.
ALTER TABLE {s}.ingest_log ADD COLUMN cost_usd double precision CHECK (cost_usd IS NULL OR cost_usd >= 0);

-- held: the rows the chunk's time range held per instrument right after the chunk committed, as a JSON object
-- {"instrument_id": rows} over the instruments of its data and those its symbols mapped to (0 when none).
-- An update compares it with what the range holds now to tell a session the vendor has no data for (nothing
-- changed since the ingest: it is settled, not fetched again) from one whose rows were removed since.
-- NULL for ingests logged before this version: their sessions are judged as before (fetched again).
ALTER TABLE {s}.ingest_log ADD COLUMN held jsonb CHECK (held IS NULL OR jsonb_typeof(held) = 'object');
