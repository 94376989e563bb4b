-- hdi_lab schema, version 17: 5-second bars (schema ohlcv-5s), the bars of Interactive Brokers' real-time feed
-- (reqRealTimeBars delivers only 5-second bars) and of its historical "5 secs" requests. The same columns, key and
-- conventions as the other bar tables (001_core.sql); on TimescaleDB it becomes a hypertable like them
-- (hdi_lab.storage.timescale); its bars are counted for gaps like theirs (010_bar_counts.sql).
CREATE TABLE {s}.ohlcv_5s (
    instrument_id bigint NOT NULL, publisher_id smallint NOT NULL, ts_event timestamptz NOT NULL,
    open bigint NOT NULL, high bigint NOT NULL, low bigint NOT NULL, close bigint NOT NULL, volume bigint NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, publisher_id)
);

CREATE TRIGGER bar_counts_touched AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {s}.ohlcv_5s
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.bar_counts_touched();
