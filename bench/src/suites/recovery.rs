//! Suite `recovery`.

use super::*;

/// Recovery: N PENDING 3-step workflows left by a dead node (inserted as its crash leaves them,
/// one step already recorded), then the time until this node has recovered and finished all.
pub(crate) async fn recovery(env: &Env, plan: Plan) -> Result<Vec<Row>> {
    let sizes: &[i64] = if plan.quick {
        &[1_000]
    } else {
        &[1_000, 10_000]
    };
    let pb = bar((sizes.len() * plan.repeats) as u64, "recovery");
    let mut rows = Vec::new();
    for &n in sizes {
        let mut secs = Vec::new();
        let mut per_op = Vec::new();
        for rep in 0..plan.repeats {
            let dead = format!("bench-dead-{n}-{rep}-{}", std::process::id());
            // One transaction, as the dead node's commits would have left them.
            let mut tx = env.pool().begin().await?;
            sqlx::query(
                "INSERT INTO dbos.workflow_status (workflow_uuid, status, name, executor_id,
                     application_version, recovery_attempts, owner_xid, serialization)
                 SELECT $1 || '-' || i, 'PENDING', $2, $1, $3, 1, 'gone', 'portable_json'
                 FROM generate_series(1, $4) i",
            )
            .bind(&dead)
            .bind(STEPS)
            .bind(env.wf.app_version())
            .bind(n)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
                 SELECT $1 || '-' || i, '{\"namedArgs\":{},\"positionalArgs\":[3]}' FROM generate_series(1, $2) i",
            )
            .bind(&dead)
            .bind(n)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name, output, serialization)
                 SELECT $1 || '-' || i, 1, 'noop', '0', 'portable_json' FROM generate_series(1, $2) i",
            )
            .bind(&dead)
            .bind(n)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            let before = Counters::read(env, &[]).await?;
            let start = Instant::now();
            let recovered = env.wf.recover(std::slice::from_ref(&dead)).await?;
            anyhow::ensure!(recovered == n as u64, "recovered {recovered} of {n}");
            // Recovery puts them on the internal queue; their outcomes are counted once it
            // is empty.
            until_queue_empty(env.pool(), wf::INTERNAL_QUEUE, "recovery").await?;
            let secs_taken = start.elapsed().as_secs_f64();
            let ok: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM dbos.workflow_status
                 WHERE workflow_uuid LIKE $1 || '-%' AND status = 'SUCCESS'",
            )
            .bind(&dead)
            .fetch_one(env.pool())
            .await?;
            anyhow::ensure!(ok == n, "recovery ended with {ok} of {n} succeeded");
            let after = Counters::read(env, &[]).await?;
            per_op.push(before.per_op(&after, n as u64, env.pool()).await?);
            secs.push(secs_taken);
            pb.inc(1);
        }
        let mut row = Row::new(
            "recovery",
            format!("{n} pending 3-step workflows of a dead node, recovered and finished"),
            &secs,
            "s",
            plan.repeats,
        );
        row.extra
            .insert("workflows_per_s".into(), (n as f64 / row.ours).into());
        PerOp::budget(&per_op, "wf", &mut row.extra);
        if n == 10_000 {
            row.paper = Some("none published; plan B10 bar: 10K in ≤5 s".into());
        }
        rows.push(row);
    }
    pb.finish_and_clear();
    Ok(rows)
}
