-- A queue's limits and placement, changed through the scheduler, bind every later start as its
-- pause does (`sched_0008_pause_lock.sql`): the pause lock now guards all three. A creation or
-- update of a queue's settings and a change of its placement rule take the lock exclusive
-- before they commit, as a pause does. A claim round already reads the settings and the rules
-- in its second statement, after the lock. An enqueue that would claim read them in its
-- statement's snapshot, taken before the lock; it now reads them again through
-- `sched.enqueue_may_claim`, after the lock is held. Before, an enqueue whose snapshot
-- predated an update that gave the queue a limit, or a rule, could still claim a workflow of
-- it for its own node after the update had returned.
--
-- Writes that only loosen (a resume, a queue's deletion) take no lock: a claim that misses
-- them claims in its next round. Writes to `dbos.queues` from outside the scheduler (DBOS's
-- own `register_queue`) take no lock either; a claim sees them from its next round.

-- Whether an enqueue may claim its workflow for its own node as far as the queue's state goes:
-- the queue is not paused, has no placement rule, and no limit. Read after the pause lock is
-- held shared until commit; VOLATILE, so its read takes a snapshot of its own though the
-- calling statement's was taken earlier.
CREATE FUNCTION sched.enqueue_may_claim(text) RETURNS boolean
    LANGUAGE plpgsql VOLATILE STRICT
    AS $may$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(sched.pause_lock_key());
    RETURN NOT EXISTS (SELECT 1 FROM sched.paused_queues WHERE queue_name = $1)
       AND NOT EXISTS (SELECT 1 FROM sched.queue_rules WHERE queue_name = $1)
       AND NOT EXISTS (
               SELECT 1 FROM dbos.queues q
               WHERE q.name = $1
                 AND (q.concurrency IS NOT NULL OR q.worker_concurrency IS NOT NULL
                      OR q.rate_limit_max IS NOT NULL OR COALESCE(q.partition_queue, false)
                      OR q.partition_concurrency IS NOT NULL
                      OR q.partition_worker_concurrency IS NOT NULL
                      OR q.partition_rate_limit_max IS NOT NULL));
END
$may$;

-- `sched.queue_paused` stays: nodes of the build before this one, still running beside one that
-- has migrated, call it.
