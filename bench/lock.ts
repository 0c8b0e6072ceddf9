/**
 * What the (target, host) lease costs, against the floor of the same machine in the same run.
 *   npx tsx bench/lock.ts            (needs MariaDB on 127.0.0.1:3306, root without password)
 *
 * Scenarios, per backend (MySQL, SQLite, memory):
 * - floor (MySQL only): one committed single-row UPDATE through mysql2, the cheapest write possible;
 * - cycle: take the lease, read the target state, one fenced write that also releases (the shape of a
 *   mount's ledger work), sequentially;
 * - queue: 8 fibers of one process on one (target, host): the in-process FIFO hands over, no polling;
 * - two clients: 2 Ledger instances (as two processes) × 4 fibers on one pair: handover through the
 *   database lease with jittered polling.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import mysql from "mysql2/promise"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Ledger from "../src/Ledger.js"
import { createDatabase } from "./common.js"

const percentile = (sorted: ReadonlyArray<number>, p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!
const summary = (samples: Array<number>) => {
  const s = [...samples].sort((a, b) => a - b)
  return { p50: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99) }
}
const time = async (f: () => Promise<unknown>) => {
  const t = performance.now()
  await f()
  return performance.now() - t
}

const rows: Array<Record<string, string | number>> = []
const fmt = (n: number) => n.toFixed(3)

const run = async (backend: string, layer: () => Layer.Layer<Ledger.Ledger, unknown>, n: number) =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function*() {
        const a = Context.get(yield* Layer.build(layer()), Ledger.Ledger)
        const b = Context.get(yield* Layer.build(layer()), Ledger.Ledger)
        // Iteration i mounts job ⌈i/2⌉ when i is odd and unmounts it when even, as jobs come and go.
        const cycle = (ledger: Ledger.Service, target: string, i: number) =>
          ledger.withTargetLock(target, "bench-host", (lease) =>
            Effect.zipRight(
              lease.read(Math.ceil(i / 2)),
              lease.write({ job: { jobId: Math.ceil(i / 2), mounted: i % 2 === 1 }, release: true })
            ))
        for (let i = 0; i < 50; i++) yield* cycle(a, "warm", i + 1)
        const samples: Array<number> = []
        for (let i = 0; i < n; i++) {
          const t = performance.now()
          yield* cycle(a, "seq", i + 1)
          samples.push(performance.now() - t)
        }
        rows.push({ backend, scenario: "cycle (lease+read+write)", ...Object.fromEntries(Object.entries(summary(samples)).map(([k, v]) => [k, fmt(v)])), "ops/s": Math.round(1000 / (samples.reduce((x, y) => x + y, 0) / n)) })
        const contended = (ledgers: ReadonlyArray<Ledger.Service>, fibers: number, label: string) =>
          Effect.gen(function*() {
            const per = Math.ceil(n / fibers)
            const t = performance.now()
            yield* Effect.forEach(
              Array.from({ length: fibers }, (_, i) => i),
              (i) => Effect.repeatN(cycle(ledgers[i % ledgers.length]!, `c-${label}`, 2 * i + 1), per - 1),
              { concurrency: "unbounded", discard: true }
            )
            const ms = performance.now() - t
            rows.push({ backend, scenario: label, p50: "", p90: "", p99: "", "ops/s": Math.round((per * fibers * 1000) / ms) })
          })
        yield* contended([a], 8, "queue: 8 fibers, 1 client, 1 pair")
        yield* contended([a, b], 8, "2 clients x 4 fibers, 1 pair")
      })
    )
  )

const main = async () => {
  const n = Number(process.argv[2] ?? 1000)
  const admin = await mysql.createConnection({ host: "127.0.0.1", user: "root" })
  const db = `dms_bench_${process.pid}`
  await createDatabase(admin, db)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dms-bench-"))
  try {
    const conn = await mysql.createConnection({ host: "127.0.0.1", user: "root", database: db })
    await conn.query("CREATE TABLE floor_t (id INT PRIMARY KEY, v INT)")
    await conn.query("INSERT INTO floor_t VALUES (1, 0)")
    const floor: Array<number> = []
    for (let i = 0; i < n; i++) floor.push(await time(() => conn.execute("UPDATE floor_t SET v = ? WHERE id = 1", [i])))
    rows.push({ backend: "mysql", scenario: "floor: one UPDATE (mysql2)", ...Object.fromEntries(Object.entries(summary(floor)).map(([k, v]) => [k, fmt(v)])), "ops/s": Math.round(1000 / (floor.reduce((x, y) => x + y, 0) / n)) })
    await conn.end()
    await run("mysql", () => Ledger.layerMysql({ url: `mysql://root@127.0.0.1:3306/${db}` }), n)
    await run("sqlite", () => Ledger.layerSqlite({ filename: path.join(dir, "bench.db") }), n)
    const state = Ledger.makeMemoryState()
    await run("memory", () => Ledger.layerMemory({ state }), n)
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${db}`)
    await admin.end()
    fs.rmSync(dir, { recursive: true, force: true })
  }
  console.table(rows)
  console.log(JSON.stringify({ n, node: process.version, cpus: os.cpus().length, rows }))
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
