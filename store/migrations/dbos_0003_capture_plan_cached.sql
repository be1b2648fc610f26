-- prov.capture is asked by every messaging statement and every group commit that carries
-- provenance. As a SQL function whose body reads a table it cannot be inlined, and Postgres
-- parses and plans such a body anew in every statement that calls it. In PL/pgSQL its plan is
-- made once per session.
CREATE OR REPLACE FUNCTION prov.capture(p_name text, p_queue text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT c.enabled AND NOT (p_name = ANY (c.off_names))
                   AND NOT (coalesce(p_queue = ANY (c.off_queues), false))
            FROM prov.config c);
END
$$;
