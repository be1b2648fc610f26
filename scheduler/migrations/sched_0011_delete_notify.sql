-- A workflow deleted while it is queued or running (by `dbos wf delete`, DBOS's tools, any SQL)
-- notifies its ID on dbos_workflow_cancel at commit, as a cancel does: the node running it
-- finds it no longer owns the workflow and stops it at once (its waits end, its command's
-- process group is stopped), instead of at its waiters' next re-check. Ended workflows, which
-- retention deletes in bulk, notify nothing.
CREATE FUNCTION sched.notify_delete() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('dbos_workflow_cancel', OLD.workflow_uuid);
    RETURN NULL;
END
$$;

CREATE TRIGGER sched_notify_delete
    AFTER DELETE ON dbos.workflow_status
    FOR EACH ROW
    WHEN (OLD.status IN ('PENDING', 'ENQUEUED', 'DELAYED'))
    EXECUTE FUNCTION sched.notify_delete();
