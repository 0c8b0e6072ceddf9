/**
 * What the benchmark programs share: statistics and the cycles they run.
 */
import * as Effect from "effect/Effect"
import type * as ManagedRuntime from "effect/ManagedRuntime"
import type * as Dms from "../src/Dms.js"
import amqp from "amqplib"
import type mysql from "mysql2/promise"
import * as Ledger from "../src/Ledger.js"
import * as Broker from "../src/Broker.js"
import * as Mount from "../src/Mount.js"
import { RABBIT_URL } from "../test/support/rabbit.js"

export interface Stats {
  readonly n: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly mean: number
}
export const stats = (samples: ReadonlyArray<number>): Stats => {
  const s = [...samples].sort((a, b) => a - b)
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN
  return { n: s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length) }
}
/** Creates the MariaDB database `db` and its tables, as an operator prepares one (`trilio-dms migrate`). */
export const createDatabase = async (admin: mysql.Connection, db: string): Promise<void> => {
  await admin.query(`CREATE DATABASE ${db}`)
  await Effect.runPromise(Ledger.migrate({ url: `mysql://root@127.0.0.1:3306/${db}` }))
}

export const round = (n: number, d = 3) => Number(n.toFixed(d))

export const request = (jobid: number, target: string, host: string) => ({
  job: { jobid },
  host,
  backup_target: { id: target, type: "nfs", filesystem_export: "10.0.0.1:/b", filesystem_export_mount_path: `/m/${target}` }
})

export type Runtime = ManagedRuntime.ManagedRuntime<Dms.Services, Dms.LayerError>

export const cycle = (rt: Runtime, jobid: number, target: string, host: string) =>
  rt.runPromise(Effect.zipRight(Mount.mount(request(jobid, target, host)), Mount.unmount(request(jobid, target, host))))

export const sequential = async (rt: Runtime, n: number, target: string, host: string, firstJob: number) => {
  for (let i = 0; i < 50; i++) await cycle(rt, firstJob + i, target, host)
  const samples: Array<number> = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await cycle(rt, firstJob + 100 + i, target, host)
    samples.push(performance.now() - t)
  }
  return stats(samples)
}

/** `jobs` workers, each cycling its own job on its target (jobs % targets) and host, for `seconds`. */
export const fanOut = async (rt: Runtime, jobs: number, targets: number, hosts: ReadonlyArray<string>, seconds: number, jobBase: number) => {
  const until = performance.now() + seconds * 1000
  const latencies: Array<number> = []
  const perJob = new Array<number>(jobs).fill(0)
  await Promise.all(Array.from({ length: jobs }, async (_, j) => {
    let i = 0
    while (performance.now() < until) {
      const t = performance.now()
      await cycle(rt, jobBase + j * 100_000 + i++, `fan-t${j % targets}`, hosts[j % hosts.length]!)
      latencies.push(performance.now() - t)
      perJob[j]!++
    }
  }))
  const total = perJob.reduce((a, b) => a + b, 0)
  const mean = total / jobs
  return {
    cyclesPerSecond: total / seconds,
    latency: stats(latencies),
    minShare: Math.min(...perJob) / mean,
    maxShare: Math.max(...perJob) / mean,
    latencies,
    perJob
  }
}

/**
 * Open-loop load: a new job's cycle starts every 1/`rate` s (on target i % `targets`), whether or not
 * earlier ones finished, for `seconds`. Latency is measured from the scheduled start, so a client that
 * falls behind shows it (`late` counts starts more than 5 ms behind schedule).
 */
export const paced = async (rt: Runtime, rate: number, targets: number, host: string, seconds: number, jobBase: number) => {
  const count = Math.round(rate * seconds)
  const start = performance.now() + 10
  const latencies: Array<number> = []
  const running: Array<Promise<void>> = []
  let late = 0
  for (let i = 0; i < count; i++) {
    const due = start + (i * 1000) / rate
    const wait = due - performance.now()
    if (wait > 1) await new Promise((resolve) => setTimeout(resolve, wait))
    if (performance.now() - due > 5) late++
    running.push(cycle(rt, jobBase + i, `paced-t${i % targets}`, host).then(() => void latencies.push(performance.now() - due)))
  }
  await Promise.all(running)
  const elapsed = (performance.now() - start) / 1000
  return { cyclesPerSecond: count / elapsed, latency: stats(latencies), late }
}


/** Deletes the durable queue a responder declared for `host`. */
export const deleteQueue = async (host: string) => {
  const conn = await amqp.connect(RABBIT_URL)
  const ch = await conn.createChannel()
  await ch.deleteQueue(Broker.queueName(host)).catch(() => undefined)
  await conn.close()
}
