-- Nodes of the cluster. A node heartbeats every heartbeat_interval_ms; one whose heartbeat is
-- older than its own lease_ms is dead. Times come from the database clock, so hosts with skewed
-- clocks agree on who is alive.
CREATE TABLE kernel.nodes (
    node_id      text        PRIMARY KEY CHECK (length(node_id) BETWEEN 1 AND 128),
    hostname     text        NOT NULL,
    pid          integer     NOT NULL CHECK (pid > 0),
    version      text        NOT NULL,
    data_dir     text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    -- running: claims and runs work; draining: finishing its tasks after a stop signal;
    -- stopped: left cleanly; dead: known to be gone (its process vanished, seen by a successor
    -- on the same host), whatever its heartbeat says.
    state        text        NOT NULL DEFAULT 'running'
                 CHECK (state IN ('running', 'draining', 'stopped', 'dead')),
    slots        integer     NOT NULL CHECK (slots > 0),
    labels       jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(labels) = 'object'),
    lease_ms     bigint      NOT NULL CHECK (lease_ms > 0),
    CHECK ((state IN ('stopped', 'dead')) = (stopped_at IS NOT NULL))
);

-- Serves the search for dead nodes (kernel::node::dead_nodes) and a successor's search for the
-- previous incarnation on its host.
CREATE INDEX nodes_live_idx ON kernel.nodes (heartbeat_at) WHERE state IN ('running', 'draining');
CREATE INDEX nodes_host_idx ON kernel.nodes (hostname, data_dir) WHERE state IN ('running', 'draining');
