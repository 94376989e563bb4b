-- hdi_lab schema, version 7: subscriptions, the market data `hdi update` and a scheduler keep current.
--
-- Stored in the database (not in a user's settings) so that every user and the scheduler see one list.
-- One subscription per request: (provider, dataset, schema, stype_in, symbols), symbols sorted and the
-- dataset the provider planned with (also when the user left it to the provider's default).
-- A name is optional and unique; it is never all digits, so `hdi watch remove ID|NAME` is unambiguous.
CREATE TABLE {s}.subscriptions (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text UNIQUE CHECK (name <> '' AND name !~ '^[0-9]+$'),
    provider text NOT NULL,
    dataset text NOT NULL,
    schema text NOT NULL,
    stype_in text NOT NULL,
    symbols text[] NOT NULL CHECK (cardinality(symbols) > 0),
    since date NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    options jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(options) = 'object'),
    CONSTRAINT subscriptions_request_uniq UNIQUE (provider, dataset, schema, stype_in, symbols)
);
