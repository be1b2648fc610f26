-- The database clock in milliseconds since the epoch: the one spelling of "now" in the
-- epoch-ms columns of schema dbos. A plain SQL function, so the planner inlines it; it reads
-- now(), the transaction's start time, like every other use in a statement.
CREATE FUNCTION kernel.now_ms() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT (EXTRACT(epoch FROM now()) * 1000)::bigint $$;
