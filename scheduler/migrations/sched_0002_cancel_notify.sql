-- A cancel written by any client — our own statements, DBOS's tools (a plain UPDATE of the
-- status), any SQL — notifies the workflow's ID at commit on dbos_workflow_cancel, so the node
-- running it stops before its next step and ends its waits and commands at once. The trigger
-- function is ours (schema sched); the trigger only fires for a change to CANCELLED.
CREATE FUNCTION sched.notify_cancel() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM pg_notify('dbos_workflow_cancel', NEW.workflow_uuid);
    RETURN NULL;
END
$$;

CREATE TRIGGER sched_notify_cancel
    AFTER UPDATE OF status ON dbos.workflow_status
    FOR EACH ROW
    WHEN (NEW.status = 'CANCELLED' AND OLD.status IS DISTINCT FROM 'CANCELLED')
    EXECUTE FUNCTION sched.notify_cancel();
