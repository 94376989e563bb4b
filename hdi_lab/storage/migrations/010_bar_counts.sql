-- hdi_lab schema, version 10: bar counts kept at ingest, so that gaps reads a few rows per instrument and day
-- instead of counting the bars themselves (see hdi_lab/storage/counts.py).
--
-- One row per bar table, instrument and UTC day: the bars stored in each 15-minute bucket of the day, 96
-- big-endian int4 (384 bytes). The loader adds the rows it inserts and subtracts the rows it deletes, in the
-- transaction that writes them; the rows already stored are counted once, right after this migration, by the
-- same code that repairs counts (hdi_lab.storage.counts.repair).
CREATE TABLE {s}.bar_counts (
    bar_table     text   NOT NULL,
    instrument_id bigint NOT NULL,
    day           date   NOT NULL,
    counts        bytea  NOT NULL CHECK (length(counts) = 384),
    PRIMARY KEY (bar_table, instrument_id, day)
);

-- Element-wise sum of two count rows (the loader's deltas are negative for deleted rows).
CREATE FUNCTION {s}.bar_counts_add(a bytea, b bytea) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT string_agg(int4send(('x' || encode(substring(a FROM i FOR 4), 'hex'))::bit(32)::int4
                               + ('x' || encode(substring(b FROM i FOR 4), 'hex'))::bit(32)::int4), ''::bytea ORDER BY i)
    FROM generate_series(1, length(a), 4) AS i
$$;

-- Bar tables written outside the loader since their counts were last rebuilt: a hand-written INSERT, UPDATE,
-- DELETE or TRUNCATE (the loader says it keeps the counts itself through the transaction-local setting
-- hdi_lab.bar_counts), or a TimescaleDB retention policy removed or changed (it dropped rows without the
-- loader). Gaps counts the rows themselves for such a table until hdi_lab.storage.counts.repair rebuilds it.
CREATE TABLE {s}.bar_counts_stale (
    bar_table text PRIMARY KEY,
    since     timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION {s}.bar_counts_touched() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('hdi_lab.bar_counts', true), '') <> 'kept' THEN
        INSERT INTO {s}.bar_counts_stale (bar_table) VALUES (TG_TABLE_NAME) ON CONFLICT (bar_table) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER bar_counts_touched AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.ohlcv_1s
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bar_counts_touched();
CREATE TRIGGER bar_counts_touched AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.ohlcv_1m
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bar_counts_touched();
CREATE TRIGGER bar_counts_touched AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.ohlcv_1h
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bar_counts_touched();
CREATE TRIGGER bar_counts_touched AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.ohlcv_1d
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bar_counts_touched();
