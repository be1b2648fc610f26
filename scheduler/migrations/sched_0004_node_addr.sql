-- os.nodes with each node's address as the server sees it (kernel migration 7).
CREATE OR REPLACE VIEW os.nodes AS
SELECT n.node_id,
       n.hostname,
       n.pid,
       n.version,
       n.state,
       n.state IN ('running', 'draining')
           AND NOT kernel.lease_expired(n.heartbeat_at, n.lease_ms) AS alive,
       n.slots,
       n.labels,
       n.started_at,
       n.heartbeat_at,
       n.stopped_at,
       now() - n.heartbeat_at AS silent_for,
       n.lease_ms,
       n.data_dir,
       (SELECT count(*) FROM dbos.workflow_status w
        WHERE w.status = 'PENDING' AND w.executor_id = n.node_id) AS running,
       n.addr
FROM kernel.nodes n;
