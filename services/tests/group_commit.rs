//! The group commit's batching. A test binary of its own: it reads the process's count of group
//! commits, which no other test may move meanwhile.

use dbos_kernel::testing;
use dbos_services::metrics::METRICS;
use dbos_services::testing::node_on;
use dbos_services::workflow::{self, Options, StartOptions};

const WORKFLOWS: usize = 16;
const STEPS: usize = 6;

/// One batch in flight, on one thread: whatever the interleaving, the callers a batch answers
/// run their next step before the slot frees, so each round of steps of all the workflows is one
/// batch. Freed at once, the slot went to the first caller alone and the rest waited for the
/// batch after it: about two batches a round.
#[tokio::test(flavor = "current_thread")]
async fn the_callers_a_batch_answers_share_the_next_batch() {
    let opts = Options {
        checkpoint_batches_in_flight_max: 1,
        ..Options::default()
    };
    let n = node_on(
        testing::database().await,
        |r| {
            r.register("steps", |ctx: workflow::Context, (x,): (i64,)| async move {
                let mut v = x;
                for _ in 0..STEPS {
                    v = ctx.step("add", || async move { Ok(v + 1) }).await?;
                }
                Ok(v)
            });
        },
        opts,
    )
    .await;
    let before = METRICS.commit_batch_size.count();
    let runs = (0..WORKFLOWS).map(|i| {
        let wf = n.wf.clone();
        async move {
            let opts = StartOptions {
                workflow_id: Some(format!("batched-{i}")),
                ..StartOptions::default()
            };
            wf.run::<_, i64>("steps", (i as i64,), opts).await
        }
    });
    for (i, out) in futures_util::future::join_all(runs)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(out.expect("run"), (i + STEPS) as i64);
    }
    let batches = METRICS.commit_batch_size.count() - before;
    // Rounds: the start, then each step's checkpoint (the last one with the outcome). The
    // first start is written alone, before the others are pushed, so its workflow runs one
    // round ahead: one batch more.
    let rounds = (1 + STEPS) as u64;
    assert!(
        batches <= rounds + 1,
        "{WORKFLOWS} workflows of {STEPS} steps took {batches} group commits; \
         {rounds} rounds need {} at most",
        rounds + 1
    );
    n.stop().await;
}
