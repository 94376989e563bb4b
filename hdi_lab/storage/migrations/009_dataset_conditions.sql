-- hdi_lab schema, version 9: the vendor's condition of each day a chunk covered, as seen when it was ingested.
--
-- Databento marks each day of a dataset available / degraded / pending / missing, with the date its data was
-- last generated or modified. A later update compares what the vendor says then with what was seen here, to
-- re-fetch days ingested while degraded or pending and days the vendor has revised since.
-- Kept per ingest (not per dataset and day only): two chunks of one day, of other symbols or schemas, ingested
-- at different times saw different conditions, and each must be judged by what it saw.
CREATE TABLE {s}.ingest_conditions (
    ingest_id          bigint NOT NULL REFERENCES {s}.ingest_log (id) ON DELETE CASCADE,
    day                date   NOT NULL,
    condition          text   NOT NULL CHECK (condition IN ('available', 'degraded', 'pending', 'missing')),
    last_modified_date date,
    PRIMARY KEY (ingest_id, day)
);
-- the ingests that covered a day, newest first, by dataset and schema (stale-day lookups)
CREATE INDEX ingest_log_coverage_idx ON {s}.ingest_log (dataset, schema, start_ts, end_ts);
