-- hdi_lab schema, version 13: live sessions (issue 18), the registry of `hdi live start` / `hdi_lab.live()`.
--
-- One row per live session: what it streams, where it runs (host, pid), its progress (records received and
-- stored, reconnects, the last ts_event stored) and its end. A running session writes its row with every commit
-- (heartbeat_at); `hdi live stop` sets stop_requested, which the session reads there and then stops gracefully.
-- A row left 'running' by a killed process is recognised by its old heartbeat_at.
CREATE TABLE {s}.live_sessions (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider text NOT NULL,
    dataset text NOT NULL,
    schemas text[] NOT NULL CHECK (cardinality(schemas) > 0),
    stype_in text NOT NULL,
    symbols text[] NOT NULL CHECK (cardinality(symbols) > 0),
    replay_start timestamptz,
    status text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'stopped', 'failed')),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    host text NOT NULL DEFAULT '',
    pid integer,
    records bigint NOT NULL DEFAULT 0,
    inserted bigint NOT NULL DEFAULT 0,
    updated bigint NOT NULL DEFAULT 0,
    duplicates bigint NOT NULL DEFAULT 0,
    quarantined bigint NOT NULL DEFAULT 0,
    replayed bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    reconnects integer NOT NULL DEFAULT 0,
    last_ts_event timestamptz,
    stop_requested boolean NOT NULL DEFAULT false,
    error text
);
CREATE INDEX live_sessions_running ON {s}.live_sessions (id) WHERE status = 'running';
