-- A running workflow put back on a queue by a resume — DBOS's tools' (a plain UPDATE from
-- PENDING to ENQUEUED that resets recovery_attempts), or any SQL doing the same — notifies its
-- ID on dbos_workflow_cancel at commit: the node running it finds it no longer owns the
-- workflow and stops that execution at once, instead of running it beside the one the resume
-- starts until its next step or re-check. A node's own releases of workflows it no longer runs
-- (shutdown, lost lease, recovery of gone nodes) keep recovery_attempts and notify nothing.
CREATE TRIGGER sched_notify_resume
    AFTER UPDATE OF status ON dbos.workflow_status
    FOR EACH ROW
    WHEN (OLD.status = 'PENDING' AND NEW.status = 'ENQUEUED' AND NEW.recovery_attempts = 0)
    EXECUTE FUNCTION sched.notify_cancel();
