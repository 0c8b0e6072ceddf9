/**
 * What a mount + unmount cycle costs through the public API, against the real MariaDB and RabbitMQ,
 * with a responder process that answers at once, next to the floor measured in the same run:
 * a raw amqplib round trip to the same responder with the client's publish options, and one committed
 * single-row UPDATE through mysql2.
 *   npx tsx bench/cycle.ts [cycles=1000]
 */
import amqp from "amqplib"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import mysql from "mysql2/promise"
import { randomUUID } from "node:crypto"
import * as os from "node:os"
import * as Dms from "../src/Dms.js"
import * as Mount from "../src/Mount.js"
import { RABBIT_URL, uniqueHost } from "../test/support/rabbit.js"
import { spawnResponder } from "../test/support/responder.js"

const n = Number(process.argv[2] ?? 1000)
const stats = (samples: Array<number>) => {
  const s = [...samples].sort((a, b) => a - b)
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / s.length }
}
const fmt = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number(v.toFixed(3))]))

const rawRpcFloor = async (host: string) => {
  const conn = await amqp.connect(RABBIT_URL, { noDelay: true })
  const ch = await conn.createConfirmChannel()
  const pending = new Map<string, () => void>()
  await ch.consume("amq.rabbitmq.reply-to", (m) => {
    const id = m?.properties.correlationId as string
    pending.get(id)?.()
    pending.delete(id)
  }, { noAck: true })
  const one = () =>
    new Promise<void>((resolve) => {
      const id = randomUUID()
      pending.set(id, resolve)
      const deadline = Date.now() + 30_000
      ch.publish("", `dms.${host}`, Buffer.from(JSON.stringify({ action: "mount" })), {
        contentType: "application/json",
        correlationId: id,
        replyTo: "amq.rabbitmq.reply-to",
        deliveryMode: 1,
        mandatory: true,
        expiration: String(30_000),
        headers: { "x-dms-deadline": deadline }
      })
    })
  for (let i = 0; i < 50; i++) await one()
  const samples: Array<number> = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await one()
    samples.push(performance.now() - t)
  }
  await conn.close()
  return stats(samples)
}

const main = Effect.gen(function*() {
  const admin = yield* Effect.acquireRelease(
    Effect.promise(() => mysql.createConnection({ host: "127.0.0.1", user: "root" })),
    (c) => Effect.promise(() => c.end())
  )
  const db = `dms_bench_${process.pid}`
  yield* Effect.acquireRelease(
    Effect.promise(() => admin.query(`CREATE DATABASE ${db}`)),
    () => Effect.promise(() => admin.query(`DROP DATABASE IF EXISTS ${db}`))
  )
  const host = uniqueHost("bench")
  yield* spawnResponder({ url: RABBIT_URL, host })

  const sqlFloor = yield* Effect.promise(async () => {
    const c = await mysql.createConnection({ host: "127.0.0.1", user: "root", database: db })
    await c.query("CREATE TABLE floor_t (id INT PRIMARY KEY, v INT)")
    await c.query("INSERT INTO floor_t VALUES (1, 0)")
    const samples: Array<number> = []
    for (let i = 0; i < n; i++) {
      const t = performance.now()
      await c.execute("UPDATE floor_t SET v = ? WHERE id = 1", [i])
      samples.push(performance.now() - t)
    }
    await c.end()
    return stats(samples)
  })
  const rpcFloor = yield* Effect.promise(() => rawRpcFloor(host))

  const layer = Dms.layer({ dbUrl: `mysql://root@127.0.0.1:3306/${db}`, rabbitmqUrl: RABBIT_URL, timeout: 30 })
  const cycle = yield* Effect.gen(function*() {
    const request = (jobid: number) => ({
      job: { jobid },
      host,
      backup_target: { id: "bench-target", type: "nfs", filesystem_export: "10.0.0.1:/b", filesystem_export_mount_path: "/m/bench" }
    })
    for (let i = 1; i <= 50; i++) {
      yield* Mount.mount(request(i))
      yield* Mount.unmount(request(i))
    }
    const samples: Array<number> = []
    for (let i = 1; i <= n; i++) {
      const t = performance.now()
      yield* Mount.mount(request(1000 + i))
      yield* Mount.unmount(request(1000 + i))
      samples.push(performance.now() - t)
    }
    return stats(samples)
  }).pipe(Effect.provide(Layer.orDie(layer)))

  const result = {
    cycles: n,
    node: process.version,
    cpus: os.cpus().length,
    floor: { rpc: fmt(rpcFloor), update: fmt(sqlFloor) },
    cycle: fmt(cycle),
    ratio: {
      "cycle p50 / (2 × rpc p50)": Number((cycle.p50 / (2 * rpcFloor.p50)).toFixed(2))
    }
  }
  console.log(JSON.stringify(result, null, 2))
})

Effect.runPromise(Effect.scoped(main)).then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
