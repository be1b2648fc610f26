-- How long ended workflows are kept: one row. The nodes' retention sweep deletes an ended
-- workflow (SUCCESS, ERROR, CANCELLED, MAX_RECOVERY_ATTEMPTS_EXCEEDED), with its inputs,
-- outputs, steps, messages, events and streams, once it is older than `max_age` or once
-- `max_rows` workflows newer than it exist. Workflows still queued, delayed or running stay,
-- and so do their children. Both NULL (the default) keeps every workflow, as DBOS does.
CREATE TABLE sched.workflow_retention (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    max_age interval CHECK (max_age > interval '0'),
    max_rows bigint CHECK (max_rows > 0)
);
INSERT INTO sched.workflow_retention DEFAULT VALUES;
