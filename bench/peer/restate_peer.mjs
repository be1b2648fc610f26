// The peer of the `peer` suite on Restate: a service whose handler runs `n` durable no-op steps
// (`ctx.run`), as our 3-step benchmark workflow does. `node restate_peer.mjs PORT`.
import * as restate from "@restatedev/restate-sdk";

const bench = restate.service({
  name: "Bench",
  handlers: {
    run: async (ctx, n) => {
      const steps = typeof n === "number" ? n : 3;
      for (let i = 0; i < steps; i++) {
        await ctx.run(`step${i}`, async () => i);
      }
      return steps;
    },
  },
});

restate.endpoint().bind(bench).listen(Number(process.argv[2]));
