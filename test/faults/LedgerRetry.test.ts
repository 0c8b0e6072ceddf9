/**
 * Ledger statements whose connection is lost after the server answered them (the MySQL proxy swallows
 * the answer and closes the connection: the client cannot know whether they committed), against the
 * real MariaDB, a database per test. A retried take finds the lease its own; a fenced write checks its
 * token and is not applied twice; each retry is counted by kind.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Ledger from "../../src/Ledger.js"
import { retriesTotal } from "../../src/internal/storeRetry.js"
import { Backend, mysqlBackend } from "../support/backends.js"
import { mysqlProxy } from "../support/mysqlProxy.js"
import { urlOnPort } from "../support/tcp.js"

/** A database of the test's own, dropped with its scope. */
const freshDatabase = Layer.build(Layer.fresh(mysqlBackend)).pipe(Effect.map(Context.get(Backend)))

const connectionRetries = Metric.value(retriesTotal.pipe(Metric.tagged("error", "connection"))).pipe(
  Effect.map((state) => state.count)
)

/** A Ledger whose connections go through the proxy on `port`. */
const ledgerVia = (url: string, port: number, options: Ledger.LeaseOptions = {}) =>
  Layer.build(Ledger.layerMysql({ url: urlOnPort(url, port), ...options })).pipe(Effect.map(Context.get(Ledger.Ledger)))

const HOST = "compute-retry"

describe("Ledger retries after a lost connection (MariaDB through a proxy)", () => {
  it.scopedLive("a take whose answer is lost after it committed: the retry finds the lease its own, long before it would expire", () =>
    Effect.gen(function*() {
      const backend = yield* freshDatabase
      const proxy = yield* mysqlProxy
      // A lease that outlives the lock timeout: had the retry not recognised the lease as its own, the
      // operation would wait for its expiry and fail with TimeoutError { phase: "lock" }.
      const ledger = yield* ledgerVia(backend.url!, proxy.port, { leaseDuration: Duration.minutes(5), lockTimeout: Duration.seconds(10) })
      yield* ledger.ping // the tables exist before the rule is armed
      const before = yield* connectionRetries
      const dropped = yield* proxy.dropAfter("UPDATE backup_target_mount_lock SET owner = ")
      // The pair's first take inserts the lock row; take it once and give it back so the next take is an UPDATE.
      yield* ledger.withTargetLock("t-take", HOST, () => Effect.void).pipe(Effect.exit)
      const ran = yield* ledger.withTargetLock("t-take", HOST, (lease) =>
        Effect.zipRight(lease.write({ job: { jobId: 7, mounted: true } }), Effect.succeed("ran")))
      assert.strictEqual(ran, "ran")
      assert.isTrue(yield* Deferred.isDone(dropped), "the take's answer was swallowed and its connection closed")
      assert.isAbove((yield* connectionRetries) - before, 0, "the lost connection was retried and counted")
      const rows = yield* backend.query!<Array<{ owner: string | null }>>("SELECT owner FROM backup_target_mount_lock")
      assert.deepStrictEqual(rows.map((r) => r.owner), [null], "released after the body")
    }), { timeout: 60_000 })

  it.scopedLive("a fenced insert whose answer is lost after it committed is not applied twice: one row for the job", () =>
    Effect.gen(function*() {
      const backend = yield* freshDatabase
      const proxy = yield* mysqlProxy
      const ledger = yield* ledgerVia(backend.url!, proxy.port)
      const dropped = yield* proxy.dropAfter("INSERT INTO backup_target_mount_ledger")
      yield* ledger.withTargetLock("t-insert", HOST, (lease) =>
        lease.write({ job: { jobId: 8, mounted: true, entryId: null }, mountPath: "/m/insert", targetType: "nfs" }))
      assert.isTrue(yield* Deferred.isDone(dropped))
      const rows = yield* backend.query!<Array<{ jobid: number; mounted: number }>>(
        "SELECT jobid, mounted FROM backup_target_mount_ledger WHERE deleted = 0"
      )
      assert.deepStrictEqual(rows.map((r) => [r.jobid, r.mounted]), [[8, 1]])
      const status = yield* ledger.getMountStatus(8, "t-insert", HOST)
      assert.isTrue(Option.isSome(status) && status.value.mounted)
    }), { timeout: 60_000 })

  it.scopedLive("a fenced update whose answer is lost: the write token says it landed, and the operation goes on", () =>
    Effect.gen(function*() {
      const backend = yield* freshDatabase
      const proxy = yield* mysqlProxy
      const ledger = yield* ledgerVia(backend.url!, proxy.port)
      yield* ledger.withTargetLock("t-update", HOST, (lease) => lease.write({ job: { jobId: 9, mounted: true } }))
      const dropped = yield* proxy.dropAfter("UPDATE backup_target_mount_ledger e JOIN backup_target_mount_lock l")
      // The release travels with the write: re-applied blindly it would find the lease gone and report
      // it lost; the token tells that it landed.
      const result = yield* ledger.withTargetLock("t-update", HOST, (lease) =>
        Effect.gen(function*() {
          const state = yield* lease.read(9)
          const entryId = Option.getOrThrow(state.job).id
          yield* lease.write({ job: { jobId: 9, mounted: false, entryId }, release: true })
          return "released"
        }))
      assert.strictEqual(result, "released")
      assert.isTrue(yield* Deferred.isDone(dropped))
      const rows = yield* backend.query!<Array<{ mounted: number }>>("SELECT mounted FROM backup_target_mount_ledger")
      assert.deepStrictEqual(rows.map((r) => r.mounted), [0])
      const locks = yield* backend.query!<Array<{ owner: string | null }>>("SELECT owner FROM backup_target_mount_lock")
      assert.deepStrictEqual(locks.map((r) => r.owner), [null])
    }), { timeout: 60_000 })

  it.scopedLive("a soft delete of a mounted row whose fence's answer is lost reports false: the row is neither deleted nor said to be", () =>
    Effect.gen(function*() {
      const backend = yield* freshDatabase
      const proxy = yield* mysqlProxy
      const ledger = yield* ledgerVia(backend.url!, proxy.port)
      yield* ledger.withTargetLock("t-soft", HOST, (lease) => lease.write({ job: { jobId: 11, mounted: true } }))
      // The delete matches nothing (the row is mounted); the fence that tells a mounted row from a lost
      // lease commits, and its answer is lost.
      const dropped = yield* proxy.dropAfter("UPDATE backup_target_mount_lock SET updated_at")
      const deleted = yield* ledger.softDeleteEntry(11, "t-soft", { host: HOST })
      assert.isTrue(yield* Deferred.isDone(dropped))
      assert.isFalse(deleted)
      const rows = yield* backend.query!<Array<{ mounted: number; deleted: number }>>("SELECT mounted, deleted FROM backup_target_mount_ledger")
      assert.deepStrictEqual(rows.map((r) => [r.mounted, r.deleted]), [[1, 0]])
    }), { timeout: 60_000 })
})
