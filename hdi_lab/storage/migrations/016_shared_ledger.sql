-- hdi_lab schema, version 16: what the processes of a cluster run share about one vendor account (IB).
--
-- pacing_ledger: the requests sent lately to a scope (a gateway, e.g. 'ib:127.0.0.1:4002'), one row each, by every
-- process: a process books its next request under the scope's advisory lock (pg_advisory_xact_lock), reading the
-- rows of the last pacing window, so workers on different machines obey one set of pacing rules. sent_at is the
-- database's clock (epoch seconds), the one clock every machine shares. Rows older than the longest rule are
-- deleted by the next booking: the table stays small.
-- client_leases: which process holds which connection id of a scope (IB: one connection per client id). The lease
-- itself is a session-level advisory lock of the holder's ledger connection, which PostgreSQL releases when that
-- connection or its process dies; the row says who took it (host, pid, backend) and may outlive a dead holder.
CREATE TABLE {s}.pacing_ledger (
    scope text NOT NULL,
    sent_at double precision NOT NULL,
    weight integer NOT NULL,
    identity text NOT NULL,
    grp text NOT NULL
);
CREATE INDEX pacing_ledger_scope_sent_idx ON {s}.pacing_ledger (scope, sent_at);

CREATE TABLE {s}.client_leases (
    scope text NOT NULL,
    client_id integer NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    backend_pid integer NOT NULL,
    taken_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, client_id)
);
