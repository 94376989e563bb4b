-- Feature sets (hdi_lab.features): the registry of computed sets. Each (set, interval) has its own
-- wide table, created on first compute as {s}.features_<set>_<interval> with
-- (instrument_id bigint, event_timestamp timestamptz, created timestamptz, symbol text, <features> double precision),
-- PRIMARY KEY (instrument_id, event_timestamp) and an index (instrument_id, event_timestamp DESC, created DESC).
-- event_timestamp is the bar's close (when the value became knowable); created is the time of the
-- computation that last changed the row.

CREATE TABLE {s}.feature_sets (
    name       text        NOT NULL,
    version    integer     NOT NULL,
    interval   text        NOT NULL,
    columns    text[]      NOT NULL,   -- feature columns, in table order
    definition jsonb       NOT NULL,   -- indicators, parameters and warm-ups of every column
    table_name text        NOT NULL,
    created    timestamptz NOT NULL DEFAULT now(),
    updated    timestamptz NOT NULL DEFAULT now(),  -- last computation
    PRIMARY KEY (name, interval),
    UNIQUE (table_name)
);
