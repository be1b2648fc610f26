// The peer of the `queue` suite: graphile-worker draining N no-op jobs with one worker, in its
// documented high-throughput configuration (local queue, batched completion). The clock runs
// from the first enqueue (batches of 1,000 through `addJobs`) until the jobs table is empty
// again, as our drain is timed from the enqueue to the last outcome.
// `node graphile_peer.mjs URL N` prints {"jobs": N, "seconds": S}.
import { Logger, run, makeWorkerUtils } from "graphile-worker";

// Logging each job would cost more than running it.
const logger = new Logger(() => () => {});

const [connectionString, nArg] = process.argv.slice(2);
const n = Number(nArg);
const preset = {
  worker: {
    connectionString,
    concurrentJobs: 24,
    maxPoolSize: 25,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};
const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();
await utils.withPgClient((c) => c.query("DELETE FROM graphile_worker._private_jobs"));
let ran = 0;
const runner = await run({
  preset,
  noHandleSignals: true,
  logger,
  taskList: {
    noop: async () => {
      ran += 1;
    },
  },
});
const start = performance.now();
for (let done = 0; done < n; done += 1000) {
  const k = Math.min(1000, n - done);
  await utils.addJobs(Array.from({ length: k }, () => ({ identifier: "noop", payload: {} })));
}
for (;;) {
  const { rows } = await utils.withPgClient((c) =>
    c.query("SELECT count(*)::int AS left FROM graphile_worker._private_jobs"),
  );
  if (rows[0].left === 0 && ran >= n) break;
  await new Promise((r) => setTimeout(r, 5));
}
const seconds = (performance.now() - start) / 1000;
await runner.stop();
await utils.release();
console.log(JSON.stringify({ jobs: n, seconds }));
