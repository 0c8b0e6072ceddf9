/**
 * The ledger's connection budget on MySQL: a client process opens at most `Ledger.DEFAULT_MAX_CONNECTIONS`
 * connections to a node (or the URL's `pool_size`), however many operations run at once. Forced with a
 * table lock: every operation's statement waits on it, holding its connection, so the connections the
 * server sees are all the pool would open.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import { ValidationError } from "../src/DmsError.js"
import * as Ledger from "../src/Ledger.js"
import { adminConnection, TestDatabase, TestDatabaseLive } from "./support/mysql.js"

const build = (url: string) => Layer.build(Ledger.layerMysql({ url })).pipe(Effect.map(Context.get(Ledger.Ledger)))

/**
 * Runs `operations` lease operations at once on targets of their own while the lock table is locked, and
 * returns the most client connections seen at the server while they wait (every operation done after).
 */
const connectionsUnderLoad = (suffix: string, operations: number, expected: number) =>
  Effect.gen(function*() {
    const db = yield* TestDatabase
    const ledger = yield* build(db.url + suffix)
    const admin = yield* adminConnection()
    const ownId = (yield* db.query<Array<{ id: number }>>("SELECT CONNECTION_ID() AS id"))[0]!.id
    const clientConnections = Effect.promise(() =>
      admin.query("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> ?", [db.name, ownId])
    ).pipe(Effect.map(([rows]) => Number((rows as Array<{ n: number }>)[0]!.n)))
    const waiting = Effect.promise(() =>
      admin.query(
        "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> ? AND STATE LIKE '%lock%'",
        [db.name, ownId]
      )
    ).pipe(Effect.map(([rows]) => Number((rows as Array<{ n: number }>)[0]!.n)))

    yield* db.query("LOCK TABLES backup_target_mount_lock WRITE, backup_target_mount_ledger WRITE")
    const fibers = yield* Effect.forEach(
      Array.from({ length: operations }, (_, i) => i),
      (i) => Effect.fork(ledger.withTargetLock(`budget-${i}`, "budget-host", () => Effect.void)),
      { concurrency: "unbounded" }
    )
    // Until the expected connections all wait on the table lock, then a few more looks: a pool without
    // that bound would show the other operations' connections arrive.
    yield* waiting.pipe(Effect.repeat({ until: (n) => n >= expected, schedule: Schedule.spaced("20 millis") }))
    let most = 0
    for (let i = 0; i < 25; i++) {
      most = Math.max(most, yield* clientConnections)
      yield* Effect.sleep("20 millis")
    }
    yield* db.query("UNLOCK TABLES")
    const exits = yield* Effect.forEach(fibers, Fiber.await)
    assert.isTrue(exits.every(Exit.isSuccess), "every operation completes once the tables are unlocked")
    return most
  }).pipe(Effect.scoped)

describe("connection budget (MariaDB)", () => {
  it.scopedLive("by default a client opens at most DEFAULT_MAX_CONNECTIONS connections, with 12 operations at once", () =>
    Effect.gen(function*() {
      assert.strictEqual(Ledger.DEFAULT_MAX_CONNECTIONS, 4)
      assert.strictEqual(yield* connectionsUnderLoad("", 12, Ledger.DEFAULT_MAX_CONNECTIONS), Ledger.DEFAULT_MAX_CONNECTIONS)
    }).pipe(Effect.provide(TestDatabaseLive)), { timeout: 60_000 })

  it.scopedLive("the URL's pool_size sets it: 2", () =>
    Effect.gen(function*() {
      assert.strictEqual(yield* connectionsUnderLoad("?pool_size=2", 12, 2), 2)
    }).pipe(Effect.provide(TestDatabaseLive)), { timeout: 60_000 })

  it.effect("a bad pool_size is a ValidationError naming it, before any connection", () =>
    Effect.gen(function*() {
      for (const value of ["0", "101", "four", "-1", "2.5"]) {
        const error = yield* Effect.flip(build(`mysql://u:p@127.0.0.1:1/db?pool_size=${value}`)).pipe(Effect.scoped)
        assert.instanceOf(error, ValidationError)
        assert.include(error.message, "pool_size must be a whole number of connections from 1 to 100")
      }
    }))
})
