/**
 * The ledger on the 3-node Galera cluster: clients writing through different nodes (certification
 * conflicts, reported as 1213 at commit) never see them as failures; a client with the node list in
 * its URL goes on when the node it uses is SIGKILLed (the node is restarted and rejoins); a client
 * waiting for a lease does not replicate a write-set on every poll.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Deferred from "effect/Deferred"
import * as Ledger from "../../src/Ledger.js"
import { retriesTotal, type RetryKind } from "../../src/internal/storeRetry.js"
import { galera, galeraDatabase, nodeStatus } from "../support/galera.js"
import { haproxy } from "../support/haproxy.js"

const retries = (kind: RetryKind) => Effect.map(Metric.value(retriesTotal.pipe(Metric.tagged("error", kind))), (s) => s.count)

const ledgerAt = (url: string, options: Omit<Ledger.MysqlOptions, "url"> = {}) =>
  Layer.build(Ledger.layerMysql({ url, ...options })).pipe(Effect.map(Context.get(Ledger.Ledger)))

/** A database of the test's own with the tables, made as an operator would: `migrate` through the node list. */
const withTables = Effect.gen(function*() {
  const db = yield* galeraDatabase
  yield* Ledger.migrate({ url: db.url(1, 2, 3) })
  return db
})

/** One job's mount-like cycle under the pair's lease: read, mark it mounted, then unmounted. */
const cycle = (ledger: Ledger.Service, target: string, host: string, jobId: number) =>
  ledger.withTargetLock(target, host, (lease) =>
    Effect.gen(function*() {
      const state = yield* lease.read(jobId)
      yield* lease.write({ job: { jobId, mounted: true, entryId: Option.getOrNull(Option.map(state.job, (j) => j.id)) } })
      yield* lease.write({ job: { jobId, mounted: false }, release: true })
    }), { readJobId: jobId })

describe("Ledger on a 3-node Galera cluster", () => {
  it.scopedLive("two clients writing one pair through two nodes: every operation succeeds; certification conflicts are retried and counted", () =>
    Effect.gen(function*() {
      const db = yield* withTables
      const [a, b] = [yield* ledgerAt(db.url(1)), yield* ledgerAt(db.url(2))]
      const deadlocksBefore = yield* retries("deadlock")
      const rounds = 40
      // Two fibers per client, each on its own job, all on one (target, host).
      const loops = [[a, 1], [a, 2], [b, 3], [b, 4]] as const
      const outcomes = yield* Effect.forEach(
        loops,
        ([ledger, job]) => Effect.either(Effect.repeatN(cycle(ledger, "t-contended", "compute-g", job), rounds - 1)),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(outcomes.map((o) => o._tag), ["Right", "Right", "Right", "Right"], String(outcomes.find((o) => o._tag === "Left")))
      const deadlocks = (yield* retries("deadlock")) - deadlocksBefore
      assert.isAbove(deadlocks, 0, "the two nodes' writes conflicted (the scenario the retries are for)")
      // Nothing doubled or lost: one row per job, none mounted, the lease free.
      const history = yield* a.getLedgerHistory("t-contended", 100)
      assert.deepStrictEqual(history.map((e) => [e.jobId, e.mounted]).sort(), [[1, false], [2, false], [3, false], [4, false]])
      yield* Effect.logInfo(`${loops.length * rounds} cycles through two nodes: ${deadlocks} certification conflicts retried`)
    }), { timeout: 240_000 })

  it.scopedLive("the node a client uses is SIGKILLed: with the node list in its URL it goes on through the next; the node rejoins", () =>
    Effect.gen(function*() {
      const db = yield* withTables
      const ledger = yield* ledgerAt(db.url(1, 2, 3))
      yield* Effect.addFinalizer(() => galera("restart", "1").pipe(Effect.zipRight(galera("start")), Effect.orDie))
      yield* cycle(ledger, "t-failover", "compute-g", 1)
      // Operations run while the node goes, and go on for 10 more once it is gone: each must succeed,
      // through node 2 once node 1 is gone (a pooled connection to it is lost mid-use, or refused).
      const killed = yield* Ref.make(false)
      const worker = yield* Effect.fork(Effect.gen(function*() {
        const outcomes: Array<string> = []
        let after = 0
        for (let i = 0; after < 10; i++) {
          const done = yield* Ref.get(killed)
          const outcome = yield* Effect.either(cycle(ledger, "t-failover", "compute-g", 2 + (i % 3)))
          outcomes.push(outcome._tag === "Left" ? String(outcome.left) : done ? "after" : "before")
          if (done) after++
        }
        return outcomes
      }))
      yield* galera("kill", "1")
      yield* Ref.set(killed, true)
      const outcomes = yield* Fiber.join(worker)
      assert.deepStrictEqual(outcomes.filter((o) => o !== "before" && o !== "after"), [], "no operation failed")
      assert.isAtLeast(outcomes.filter((o) => o === "after").length, 10)
      yield* cycle(ledger, "t-failover", "compute-g", 9) // after the kill: served by another node
      const status = yield* galera("status")
      assert.match(status, /node1 .* down/)
      yield* galera("restart", "1")
      assert.strictEqual(yield* nodeStatus(1, "wsrep_cluster_size"), 3, "node 1 rejoined the cluster")
      const active = yield* ledger.getActiveMounts({ host: "compute-g" })
      assert.deepStrictEqual(active, [])
    }), { timeout: 240_000 })

  it.scopedLive("a client waiting for a held lease polls without replicating a write-set per poll", () =>
    Effect.gen(function*() {
      const db = yield* withTables
      const [holder, waiter] = [yield* ledgerAt(db.url(1)), yield* ledgerAt(db.url(2))]
      const statementsBefore = yield* nodeStatus(2, "Com_update")
      const replicatedBefore = yield* nodeStatus(2, "wsrep_replicated")
      // The holder keeps the lease until the waiter has polled many times (observed on node 2's
      // statement counter), then gives it back; the waiter then takes it.
      const taken = yield* Deferred.make<void>()
      const held = yield* Effect.fork(holder.withTargetLock("t-wait", "compute-g", () =>
        Effect.gen(function*() {
          yield* Deferred.succeed(taken, undefined)
          while ((yield* nodeStatus(2, "Com_update")) - statementsBefore < 60) yield* Effect.sleep(Duration.millis(20))
        })))
      yield* Deferred.await(taken)
      yield* waiter.withTargetLock("t-wait", "compute-g", () => Effect.void)
      yield* Fiber.join(held)
      const polls = (yield* nodeStatus(2, "Com_update")) - statementsBefore
      const writeSets = (yield* nodeStatus(2, "wsrep_replicated")) - replicatedBefore
      yield* Effect.logInfo(`waiter: ${polls} UPDATE statements, ${writeSets} replicated write-sets`)
      assert.isAtLeast(polls, 60)
      // Its reservation (a write or two), the take and the release; never one per poll.
      assert.isBelow(writeSets, polls / 5, `${writeSets} write-sets for ${polls} polls`)
    }), { timeout: 120_000 })

  it.scopedLive("through HAProxy balancing round robin over the nodes: a read right after a write sees it, from any client", () =>
    Effect.gen(function*() {
      const db = yield* withTables
      const port = yield* haproxy
      const url = db.url(1).replace("127.0.0.1:3307", `127.0.0.1:${port}`)
      // Each client's connections are spread over the three nodes by the proxy.
      const [a, b] = [yield* ledgerAt(url, { maxConnections: 3 }), yield* ledgerAt(url, { maxConnections: 3 })]
      for (let job = 1; job <= 30; job++) {
        const writer = job % 2 === 0 ? a : b
        const reader = job % 2 === 0 ? b : a
        yield* writer.withTargetLock(`t-proxy-${job % 3}`, "compute-p", (lease) =>
          lease.write({ job: { jobId: job, mounted: true }, mountPath: "/m/p", targetType: "nfs" }))
        const status = yield* reader.getMountStatus(job, `t-proxy-${job % 3}`, "compute-p")
        assert.isTrue(Option.isSome(status) && status.value.mounted, `job ${job}: the read saw the write before it`)
      }
      assert.lengthOf(yield* a.getActiveMounts({ host: "compute-p" }), 30)
    }), { timeout: 120_000 })
})
