-- hdi_lab schema, version 15: change versions of the market data, so that a local cache of query results can tell
-- in one small SELECT whether what it holds is still what the tables hold (see hdi_lab/storage/versions.py).
--
-- market_versions: one row per market-data table, instrument and UTC day that was ever written through the loader
-- (ingest, update, live, quarantine retries): the loader sets `version` to a new value of market_version_seq in the
-- transaction that writes (inserts, updates or deletes) rows of that day, so the new version commits with the rows.
CREATE SEQUENCE {s}.market_version_seq;

CREATE TABLE {s}.market_versions (
    table_name    text   NOT NULL,
    instrument_id bigint NOT NULL,
    day           date   NOT NULL,
    version       bigint NOT NULL,
    PRIMARY KEY (table_name, instrument_id, day)
);

-- market_epochs: one row per market-data table. `epoch` takes a new value of the sequence whenever the table is
-- written outside the loader (a hand-written INSERT, UPDATE, DELETE or TRUNCATE: the statement trigger below; the
-- loader says it keeps the versions itself through the transaction-local setting hdi_lab.market_versions) or when
-- a TimescaleDB retention policy is removed or changed; `retention` is the drop_after of the retention policy
-- hdi_lab keeps on the table (rows older than now() - retention may be dropped without any trigger). `identity`
-- is random, the same on every row: cached entries of another database or of an earlier incarnation of this
-- schema never match. The rows and the triggers of the market-data tables are made after every migration that
-- ran (hdi_lab.storage.versions.cover, from hdi_lab.storage.tables.TABLES): a market table added later has them
-- too.
CREATE TABLE {s}.market_epochs (
    table_name text PRIMARY KEY,
    epoch      bigint NOT NULL,
    retention  interval,
    identity   uuid NOT NULL
);

CREATE FUNCTION {s}.market_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('hdi_lab.market_versions', true), '') <> 'kept' THEN
        UPDATE {s}.market_epochs SET epoch = nextval(pg_catalog.format('%I.market_version_seq', TG_TABLE_SCHEMA))
        WHERE table_name = TG_TABLE_NAME;
    END IF;
    RETURN NULL;
END
$$;
