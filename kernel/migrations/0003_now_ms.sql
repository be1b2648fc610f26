-- The database clock in milliseconds since the epoch: the one spelling of "now" in the
-- epoch-ms columns of schema dbos. Plain SQL functions, so the planner inlines them.
-- now_ms() reads now(), the transaction's start, like every other use in a transaction;
-- statement_ms() reads statement_timestamp(), for a statement that must be timed after what
-- committed before it ran, in a transaction that began earlier (a claim).
CREATE FUNCTION kernel.now_ms() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (EXTRACT(epoch FROM now()) * 1000)::bigint $$;
CREATE FUNCTION kernel.statement_ms() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (EXTRACT(epoch FROM statement_timestamp()) * 1000)::bigint $$;
