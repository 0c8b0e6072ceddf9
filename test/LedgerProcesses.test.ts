/**
 * Two separate OS processes contend for one (target, host) on the shared ledger (MySQL, SQLite) and
 * never hold it at once.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { randomBytes } from "node:crypto"
import { Backend, mysqlBackend, sqliteBackend, tempDir } from "./support/backends.js"
import { spawnTs } from "./support/process.js"

const ROUNDS = 25

/** Reads the enter/exit log (appends by both processes, ordered by the kernel) and checks it. */
const analyse = (log: string) => {
  const events = fs.readFileSync(log, "utf8").trim().split("\n").map((l) => l.split(" ") as [string, string])
  let holder: string | undefined
  let handovers = 0
  let last: string | undefined
  for (const [event, pid] of events) {
    if (event === "enter") {
      assert.isUndefined(holder, `process ${pid} entered while ${holder} held the lock`)
      holder = pid
      if (last !== undefined && last !== pid) handovers++
      last = pid
    } else {
      assert.strictEqual(holder, pid)
      holder = undefined
    }
  }
  return { events: events.length, handovers }
}

for (const [name, backendLayer] of [["mysql", mysqlBackend], ["sqlite", sqliteBackend]] as const) {
  describe(`Ledger across processes (${name})`, () => {
    layer(backendLayer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
      it.scoped("two processes never hold one (target, host) at once", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const dir = yield* tempDir
          const log = path.join(dir, "events.log")
          const target = `target-${randomBytes(5).toString("hex")}`
          const args = JSON.stringify({ url: backend.url, target, host: "compute-01", mode: "contend", rounds: ROUNDS, log })
          const children = yield* Effect.all([spawnTs("test/support/lockWorker.ts", [args]), spawnTs("test/support/lockWorker.ts", [args])])
          // Both are connected before either starts, so they really contend.
          yield* Effect.forEach(children, (c) => c.waitFor("ready"), { concurrency: "unbounded" })
          yield* Effect.forEach(children, (c) => c.send("go"))
          yield* Effect.forEach(children, (c) => c.waitFor("done"), { concurrency: "unbounded" })
          const codes = yield* Effect.forEach(children, (c) => c.exited)
          assert.deepStrictEqual(codes, [0, 0], children.map((c) => c.stderr()).join("\n"))
          const { events, handovers } = analyse(log)
          assert.strictEqual(events, 2 * 2 * ROUNDS)
          // The lock passed between the processes: they contended rather than ran one after the other.
          assert.isAbove(handovers, 0)
        }))
    })
  })
}
