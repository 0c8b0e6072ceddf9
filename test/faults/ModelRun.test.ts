/**
 * The randomized model test under faults (issues #8, #12): while random scripts run from fibers of this
 * process and from two client processes (the scripts of test/ModelRun.test.ts: repeated mounts,
 * overlapping scopes, two clients per process, a DMSClient closed and used again; and retries), faults
 * are injected: our clients' RabbitMQ connections closed by name, a model server SIGKILLed mid-request
 * and restarted, the MariaDB connections to the run's database killed, a client process SIGKILLed while
 * it holds a target's lease (mid-request), and replies delayed past the client's timeout. Then, with the operations stopped, drift
 * that only reconcile repairs: a host reboot under held targets (stale), a last release and a mount whose
 * replies come too late (pending), mounts that complete after their clients gave up (orphans).
 * Recovery's reconcile must repair each of them, and after it the invariants hold.
 * `DMS_MODEL_FAULT_OPS` and `DMS_MODEL_SEED` size and replay it (`npm run soak` runs it longer).
 */
import { assert, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Model from "../support/model.js"
import { TestDatabaseLive } from "../support/mysql.js"

const seed = Model.envNumber("SEED", Math.floor(Math.random() * 2 ** 31))
const ops = Model.envNumber("FAULT_OPS", 2_000)

layer(TestDatabaseLive, { excludeTestServices: true, timeout: "60 seconds" })("model run under faults", (it) => {
  it.scoped(`${ops} random operations under injected faults: invariants hold after recovery (seed ${seed})`, () =>
    Effect.gen(function*() {
      const summary = yield* Model.run({ seed, ops, faults: true })
      console.log(Model.summaryLine(summary))
      assert.strictEqual(
        summary.violations.length,
        0,
        `seed ${seed}: replay with DMS_MODEL_SEED=${seed} DMS_MODEL_FAULT_OPS=${ops}\n${summary.violations.slice(0, 20).join("\n")}`
      )
      assert.isAtLeast(summary.ops, ops)
      // Reconcile found the drift, and repaired all it found: every stale target remounted, every orphan
      // unmounted, every pending mark resolved (which target was which: among the violations).
      const drift = summary.drift!
      const r = summary.reconciled
      assert.isDefined(summary.drift)
      assert.isAtLeast(drift.rebootLost, 2)
      assert.isAtLeast(r.stale, drift.stale.length)
      assert.strictEqual(r.remounted, r.stale, `every stale target remounted: ${JSON.stringify(r)}`)
      assert.isAtLeast(r.orphans, drift.orphans.length)
      assert.strictEqual(r.unmounted, r.orphans, `every orphan unmounted: ${JSON.stringify(r)}`)
      assert.isAtLeast(r.pending, drift.pending.length)
      assert.strictEqual(r.resolved, r.pending, `every pending mark resolved: ${JSON.stringify(r)}`)
      // Every kind of fault was injected at least once.
      for (const kind of Model.FAULT_KINDS) {
        assert.isTrue(Object.keys(summary.faults).some((k) => k.startsWith(kind)), `no ${kind} fault was injected: ${JSON.stringify(summary.faults)}`)
      }
    }), { timeout: Math.max(240_000, ops * 300) })
})
