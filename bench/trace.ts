/**
 * Where a mount + unmount cycle's time goes, from the client's own spans (dms.mount/unmount,
 * Ledger.withTargetLock, Broker.request, and @effect/sql's sql.execute), against MariaDB, RabbitMQ and a
 * responder process:
 *   npm run bench:trace        (compiled; prints three timelines and the mean of each span per cycle)
 * The time outside sql.execute and Broker.request spans is the client's own work between round trips.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Tracer from "effect/Tracer"
import mysql from "mysql2/promise"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as readline from "node:readline"
import * as Dms from "../src/Dms.js"
import * as Mount from "../src/Mount.js"
import { RABBIT_URL } from "../test/support/rabbit.js"
import { createDatabase, deleteQueue, request } from "./common.js"

const events: Array<[string, number, number]> = []
const native = await Effect.runPromise(Effect.tracer)
// The native tracer, recording each span's name, start and end (ms, on the span clock).
const tracer = Tracer.make({
  span: (name, parent, context, links, startTime, kind, options) => {
    const span = native.span(name, parent, context, links, startTime, kind, options)
    const end = span.end.bind(span)
    Object.assign(span, {
      end: (endTime: bigint, exit: Parameters<typeof end>[1]) => {
        events.push([name, Number(startTime) / 1e6, Number(endTime) / 1e6])
        end(endTime, exit)
      }
    })
    return span
  },
  context: native.context
})

const db = `dms_trace_${process.pid}`
const host = `trace-${process.pid}`
const admin = await mysql.createConnection({ host: "127.0.0.1", user: "root" })
await createDatabase(admin, db)
const responder = spawn(process.execPath, [fileURLToPath(new URL("./responder.js", import.meta.url)), JSON.stringify({ url: RABBIT_URL, hosts: [host] })], {
  detached: true,
  stdio: ["ignore", "pipe", "inherit"]
})
await new Promise<void>((resolve) => readline.createInterface({ input: responder.stdout! }).on("line", (l) => l === "ready" && resolve()))
const rt = ManagedRuntime.make(
  Layer.merge(Dms.layer({ dbUrl: `mysql://root@127.0.0.1:3306/${db}`, rabbitmqUrl: RABBIT_URL, timeout: 30 }), Layer.setTracer(tracer))
)
const cycle = (job: number) => rt.runPromise(Effect.zipRight(Mount.mount(request(job, "t", host)), Mount.unmount(request(job, "t", host))))
try {
  for (let i = 0; i < 300; i++) await cycle(i + 1)
  const n = 1000
  const byName = new Map<string, Array<number>>()
  let total = 0
  for (let i = 0; i < n; i++) {
    events.length = 0
    const t = performance.now()
    await cycle(1000 + i)
    total += performance.now() - t
    const first = Math.min(...events.map((e) => e[1]))
    if (i < 3) {
      console.log(events.sort((a, b) => a[1] - b[1]).map(([name, s, e]) => `  ${name.padEnd(24)} ${(s - first).toFixed(2)} .. ${(e - first).toFixed(2)} ms`).join("\n"), "\n")
    }
    for (const [name, s, e] of events) byName.set(name, [...(byName.get(name) ?? []), e - s])
  }
  console.log(`mean cycle ${(total / n).toFixed(3)} ms`)
  for (const [name, d] of byName) {
    console.log(`  ${name.padEnd(24)} ${(d.length / n).toFixed(1)} per cycle, mean ${(d.reduce((a, b) => a + b, 0) / d.length).toFixed(3)} ms`)
  }
} finally {
  await rt.dispose()
  process.kill(-responder.pid!, "SIGKILL")
  await deleteQueue(host)
  await admin.query(`DROP DATABASE ${db}`)
  await admin.end()
}
process.exit(0)
