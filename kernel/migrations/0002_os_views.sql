-- Schema os: read-only views of the whole system, for people with SQL.
CREATE SCHEMA IF NOT EXISTS os;

CREATE VIEW os.nodes AS
SELECT node_id,
       hostname,
       pid,
       version,
       state,
       state IN ('running', 'draining')
           AND heartbeat_at > now() - lease_ms * interval '1 millisecond' AS alive,
       slots,
       labels,
       started_at,
       heartbeat_at,
       stopped_at,
       now() - heartbeat_at AS silent_for,
       lease_ms,
       data_dir
FROM kernel.nodes;

COMMENT ON VIEW os.nodes IS 'Every node that ever booted; alive = heartbeating within its lease';

CREATE VIEW os.migrations AS
SELECT service, version, name, checksum, applied_at FROM kernel.migrations;
