-- A node's host is identified by its machine id and boot id (/etc/machine-id and
-- /proc/sys/kernel/random/boot_id), not its host name: two hosts named alike are different
-- machines, and a node of an earlier boot of this machine is gone whatever its pid.
ALTER TABLE kernel.nodes ADD COLUMN machine_id text, ADD COLUMN boot_id text;
-- Serves a successor's search for the previous incarnation on its machine.
CREATE INDEX nodes_machine_idx ON kernel.nodes (machine_id, data_dir)
    WHERE state IN ('running', 'draining');
