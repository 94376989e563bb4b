-- hdi_lab schema, version 10: feature sets computed over back-adjusted continuous futures (hdi_lab.features with
-- adjust=). Such a set is stored apart from the per-instrument table of its set and interval, in a table whose
-- name ends with its variant (``features_momentum_v1_1d_ratio_research``, ``..._ratio_as_of``, ``..._none``): the
-- adjustment and the view are part of the stored set's identity, so two views never share a table.
ALTER TABLE {s}.feature_sets DROP CONSTRAINT feature_sets_pkey;
ALTER TABLE {s}.feature_sets ADD COLUMN variant text NOT NULL DEFAULT '';  -- '' the per-instrument table
ALTER TABLE {s}.feature_sets ADD PRIMARY KEY (name, interval, variant);

-- One row per continuous series stored in a variant table: its rows carry ``series_id`` (a negative id derived
-- from dataset and symbol, never an instrument's) as instrument_id. ``rolls`` is the roll table the stored rows
-- were computed with; a research computation whose rolls differ (a new roll, a revised close) rewrites the
-- series, so the rows of one series always share one adjustment.
CREATE TABLE {s}.feature_series (
    table_name text        NOT NULL,
    series_id  bigint      NOT NULL,
    symbol     text        NOT NULL,
    dataset    text        NOT NULL,
    adjust     text        NOT NULL,
    view       text        NOT NULL,
    rolls      jsonb       NOT NULL,
    updated    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, series_id)
);
