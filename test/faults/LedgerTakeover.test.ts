/**
 * A client process killed with SIGKILL while it holds a target lock: its lease is taken over once it
 * expires, and not before.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { randomBytes } from "node:crypto"
import { Backend, mysqlBackend, sqliteBackend } from "../support/backends.js"
import { spawnTs } from "../support/process.js"

interface LockRow {
  readonly owner: string | null
  readonly expires_at: unknown
}

for (const [name, backendLayer] of [["mysql", mysqlBackend], ["sqlite", sqliteBackend]] as const) {
  describe(`Ledger lease takeover (${name})`, () => {
    layer(backendLayer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
      it.scoped("a holder killed with SIGKILL is taken over after its lease expires", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const query = backend.query!
          const target = `target-${randomBytes(5).toString("hex")}`
          const nowSql = name === "mysql" ? "SELECT UTC_TIMESTAMP(3) AS now" : "SELECT strftime('%Y-%m-%d %H:%M:%f','now') AS now"
          const asTime = (v: unknown) => (v instanceof Date ? v.getTime() : new Date(`${String(v).replace(" ", "T")}Z`).getTime())
          const child = yield* spawnTs("test/support/lockWorker.ts", [
            JSON.stringify({ url: backend.url, target, host: "compute-01", mode: "hold", leaseMs: 2000 })
          ])
          yield* child.waitFor("held")
          yield* child.kill("SIGKILL")
          assert.strictEqual(yield* child.exited, "SIGKILL")
          const [dead] = yield* query<Array<LockRow>>(
            "SELECT owner, expires_at FROM backup_target_mount_lock WHERE backup_target_id = ?",
            [target]
          )
          assert.isNotNull(dead?.owner, "the killed process still owns the lock row")
          const deadUntil = asTime(dead!.expires_at)

          const ledger = yield* backend.build()
          const takenAt = yield* ledger.withTargetLock(target, "compute-01", () =>
            query<Array<{ now: unknown }>>(nowSql).pipe(Effect.map((rows) => asTime(rows[0]!.now))), { timeout: "30 seconds" })
          // On the database's own clock: not before the dead holder's lease ran out.
          assert.isAtLeast(takenAt, deadUntil)
          const [after] = yield* query<Array<LockRow>>(
            "SELECT owner, expires_at FROM backup_target_mount_lock WHERE backup_target_id = ?",
            [target]
          )
          assert.isNull(after!.owner, "released after the takeover")
        }))
    })
  })
}
