-- hdi_lab core schema, version 1.
-- Prices are int64 fixed-point (1e-9), NULL where the vendor sends UNDEF_PRICE.
-- Bars are second-aligned (timestamptz is exact); ticks keep the exact nanoseconds in *_ns columns.
-- {s} is the hdi_lab schema (a quoted identifier).

CREATE TABLE {s}.publishers (
    publisher_id smallint PRIMARY KEY,
    dataset      text NOT NULL,
    venue        text NOT NULL
);

CREATE TABLE {s}.instruments (
    publisher_id     smallint    NOT NULL,
    instrument_id    bigint      NOT NULL,
    ts_recv_ns       bigint      NOT NULL,
    ts_recv          timestamptz NOT NULL,
    ts_event_ns      bigint      NOT NULL,
    dataset          text        NOT NULL,
    raw_symbol       text        NOT NULL,
    instrument_class "char",
    security_type    text,
    asset            text,
    exchange         text,
    currency         text,
    underlying       text,
    expiration       timestamptz,
    activation       timestamptz,
    min_price_increment bigint,
    display_factor   bigint,
    contract_multiplier integer,
    record           jsonb       NOT NULL,  -- the whole definition record, lossless
    PRIMARY KEY (publisher_id, instrument_id, ts_recv_ns)
);
CREATE INDEX instruments_raw_symbol_idx ON {s}.instruments (raw_symbol);

CREATE TABLE {s}.symbology (
    dataset       text   NOT NULL,
    stype         text   NOT NULL,   -- raw_symbol | parent | continuous
    symbol        text   NOT NULL,
    d0            date   NOT NULL,   -- valid [d0, d1)
    d1            date   NOT NULL,
    instrument_id bigint NOT NULL,
    PRIMARY KEY (dataset, stype, symbol, d0, instrument_id),
    CHECK (d0 < d1)
);
CREATE INDEX symbology_symbol_idx ON {s}.symbology (symbol, d0, d1);

CREATE TABLE {s}.ohlcv_1s (
    instrument_id bigint NOT NULL, publisher_id smallint NOT NULL, ts_event timestamptz NOT NULL,
    open bigint NOT NULL, high bigint NOT NULL, low bigint NOT NULL, close bigint NOT NULL, volume bigint NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, publisher_id)
);
CREATE TABLE {s}.ohlcv_1m (LIKE {s}.ohlcv_1s INCLUDING ALL);
CREATE TABLE {s}.ohlcv_1h (LIKE {s}.ohlcv_1s INCLUDING ALL);
CREATE TABLE {s}.ohlcv_1d (LIKE {s}.ohlcv_1s INCLUDING ALL);

CREATE TABLE {s}.trades (
    instrument_id bigint      NOT NULL,
    publisher_id  smallint    NOT NULL,
    ts_event      timestamptz NOT NULL,   -- microseconds, for SQL
    ts_event_ns   bigint      NOT NULL,   -- exact
    dup_idx       integer     NOT NULL,   -- numbers records sharing (instrument, publisher, ts_event_ns), vendor order
    ts_recv_ns    bigint      NOT NULL,
    price         bigint,
    size          bigint      NOT NULL,
    action        "char"      NOT NULL,
    side          "char"      NOT NULL,
    flags         smallint    NOT NULL,
    depth         smallint    NOT NULL,
    ts_in_delta   integer     NOT NULL,
    sequence      bigint      NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, ts_event_ns, dup_idx, publisher_id)
);

CREATE TABLE {s}.tbbo (
    LIKE {s}.trades INCLUDING ALL,
    bid_px_00 bigint, ask_px_00 bigint,
    bid_sz_00 bigint NOT NULL, ask_sz_00 bigint NOT NULL,
    bid_ct_00 bigint NOT NULL, ask_ct_00 bigint NOT NULL
);

CREATE TABLE {s}.statistics (
    instrument_id bigint      NOT NULL,
    publisher_id  smallint    NOT NULL,
    ts_event      timestamptz NOT NULL,
    ts_event_ns   bigint      NOT NULL,
    dup_idx       integer     NOT NULL,
    ts_recv_ns    bigint      NOT NULL,
    ts_ref_ns     bigint,
    price         bigint,
    quantity      bigint,
    sequence      bigint      NOT NULL,
    ts_in_delta   integer     NOT NULL,
    stat_type     smallint    NOT NULL,
    channel_id    integer     NOT NULL,
    update_action smallint    NOT NULL,
    stat_flags    smallint    NOT NULL,
    PRIMARY KEY (instrument_id, ts_event, ts_event_ns, dup_idx, stat_type, publisher_id)
);

CREATE TABLE {s}.ingest_log (
    id          bigserial PRIMARY KEY,
    chunk_key   text        NOT NULL,
    provider    text        NOT NULL,
    dataset     text        NOT NULL,
    schema      text        NOT NULL,
    stype_in    text        NOT NULL,
    symbols     text[]      NOT NULL,
    start_ts    timestamptz NOT NULL,
    end_ts      timestamptz NOT NULL,
    source      text,
    fetched     bigint      NOT NULL,
    inserted    bigint      NOT NULL,
    updated     bigint      NOT NULL,
    duplicates  bigint      NOT NULL,
    quarantined bigint      NOT NULL,
    seconds     double precision NOT NULL,
    forced      boolean     NOT NULL DEFAULT false,
    finished_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_log_chunk_key_idx ON {s}.ingest_log (chunk_key);

CREATE TABLE {s}.quarantine (
    id          bigserial PRIMARY KEY,
    ingest_id   bigint      REFERENCES {s}.ingest_log (id),
    chunk_key   text        NOT NULL,
    dataset     text        NOT NULL,
    schema      text        NOT NULL,
    rule        text        NOT NULL,
    reason      text        NOT NULL,
    record      jsonb       NOT NULL,   -- the original DBN record, integer fields exact
    dup_idx     integer     NOT NULL DEFAULT 0,  -- its number among records sharing its key
    req_start   timestamptz NOT NULL,
    req_end     timestamptz NOT NULL,
    status      text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
CREATE UNIQUE INDEX quarantine_open_uniq ON {s}.quarantine (schema, rule, md5(record::text)) WHERE status = 'open';
