/**
 * The randomized model test without faults (issues #8, #12): random scripts from fibers of this process
 * and from two client processes, over six targets on two hosts, against model DMS servers: plain mounts
 * (repeated by jobs that hold the target) and unmounts, overlapping scopes (mountScoped, MountContext),
 * each operation through one of two clients of its process (the Effect layer, a DMSClient that is
 * closed and used again). Afterwards the holds model's predictions must hold for every outcome, and the
 * host's transitions must match the first holders and last releases exactly.
 * `DMS_MODEL_OPS` and `DMS_MODEL_SEED` size and replay it (`npm run soak` runs it longer).
 */
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Model from "./support/model.js"
import { TestDatabaseLive } from "./support/mysql.js"

const seed = Model.envNumber("SEED", Math.floor(Math.random() * 2 ** 31))
const ops = Model.envNumber("OPS", 2_000)

layer(TestDatabaseLive, { excludeTestServices: true, timeout: "60 seconds" })("model run without faults", (it) => {
  it.scoped(`${ops} random operations (repeated mounts, scopes, two clients per process, close and reuse) from 3 fibers and 2 processes: every transition accounted for (seed ${seed})`, () =>
    Effect.gen(function*() {
      const summary = yield* Model.run({ seed, ops, faults: false })
      console.log(Model.summaryLine(summary))
      assert.strictEqual(
        summary.violations.length,
        0,
        `seed ${seed}: replay with DMS_MODEL_SEED=${seed} DMS_MODEL_OPS=${ops}\n${summary.violations.slice(0, 20).join("\n")}`
      )
      assert.isAtLeast(summary.ops, ops)
      assert.isAbove(summary.transitions.mounted, 0)
    }), { timeout: Math.max(60_000, ops * 100) })
})
