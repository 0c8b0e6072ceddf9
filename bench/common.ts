/**
 * What the benchmark programs share: statistics and the cycles they run.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as ManagedRuntime from "effect/ManagedRuntime"
import type * as Dms from "../src/Dms.js"
import amqp from "amqplib"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import type mysql from "mysql2/promise"
import * as Ledger from "../src/Ledger.js"
import * as Broker from "../src/Broker.js"
import * as Mount from "../src/Mount.js"
import { RABBIT_URL } from "../test/support/rabbit.js"

// The project root: two levels above the compiled bench/ (.bench-build/bench), one above the source.
const here = path.dirname(fileURLToPath(import.meta.url))
export const root = path.basename(path.dirname(here)) === ".bench-build" ? path.resolve(here, "../..") : path.resolve(here, "..")
/** A file beside this one (the compiled bench/ when run compiled). */
export const sibling = (name: string) => path.join(here, name)

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

const clockTicks = 100
/** The CPU seconds a process has used so far (user + system, from /proc); 0 once it is gone. */
export const cpuOf = (pid: number): number => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return (Number(fields[11]) + Number(fields[12])) / clockTicks // utime + stime, seconds
  } catch {
    return 0
  }
}
/** The processes whose command name is `name`. */
export const pidsOf = (name: string): Array<number> =>
  fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === name
    } catch {
      return false
    }
  })

export const request = (jobid: number, target: string, host: string) => ({
  job: { jobid },
  host,
  backup_target: { id: target, type: "nfs", filesystem_export: "10.0.0.1:/b", filesystem_export_mount_path: `/m/${target}` }
})

export type Runtime = ManagedRuntime.ManagedRuntime<Dms.Services, Dms.LayerError>

export const cycle = (rt: Runtime, jobid: number, target: string, host: string) =>
  rt.runPromise(Effect.zipRight(Mount.mount(request(jobid, target, host)), Mount.unmount(request(jobid, target, host))))

/**
 * Failures by kind ("DatabaseError 1213 ER_LOCK_DEADLOCK", "TimeoutError lock", …), for the scenarios
 * that count them instead of stopping at the first (the Galera multi-writer fan-out).
 */
export type Errors = Map<string, number>

/**
 * A failure's kind: its tag, and for a DatabaseError the MySQL errno and code of its cause (or its
 * reason) and the ledger operation, else its phase or reason.
 */
export const errorKind = (e: unknown): string => {
  const tagged = e as { _tag?: string; phase?: string; reason?: string; message?: string; operation?: string } | null
  if (typeof tagged?._tag !== "string") return `defect: ${String(tagged?.message ?? e).slice(0, 80)}`
  if (tagged._tag === "DatabaseError") {
    for (let c = e as { errno?: unknown; code?: unknown; cause?: unknown } | undefined, i = 0; c != null && i < 8; c = c.cause as typeof c, i++) {
      if (typeof c.errno === "number") return `DatabaseError ${c.errno} ${String(c.code ?? "")} (${tagged.operation})`
    }
    return `DatabaseError (${tagged.operation}): ${String(tagged.reason ?? tagged.message).slice(0, 80)}`
  }
  return [tagged._tag, tagged.phase ?? tagged.reason].filter(Boolean).join(" ")
}

/**
 * One cycle, timed; without `errors` a failure throws, with it the failure is counted by kind, the job's
 * unmount is tried once more (so a failed unmount leaves no hold behind) and the cycle gives no sample.
 */
const timedCycle = async (rt: Runtime, jobid: number, target: string, host: string, errors?: Errors): Promise<number | undefined> => {
  const t = performance.now()
  if (errors === undefined) {
    await cycle(rt, jobid, target, host)
    return performance.now() - t
  }
  const exit = await rt.runPromiseExit(Effect.zipRight(Mount.mount(request(jobid, target, host)), Mount.unmount(request(jobid, target, host))))
  if (Exit.isSuccess(exit)) return performance.now() - t
  const kind = errorKind(Cause.squash(exit.cause))
  errors.set(kind, (errors.get(kind) ?? 0) + 1)
  await rt.runPromiseExit(Mount.unmount(request(jobid, target, host)))
  return undefined
}

/**
 * `n` sequential cycles of `target` on each client in turn (one cycle on each, then the next), so that
 * every client sees the same load of a shared machine; the figures of each, in order.
 */
export const alternating = async (
  clients: ReadonlyArray<{ readonly rt: Runtime; readonly host: string; readonly errors?: Errors | undefined }>,
  n: number,
  target: string,
  firstJob: number
): Promise<Array<Stats>> => {
  for (let i = 0; i < 50; i++) for (const c of clients) await timedCycle(c.rt, firstJob + i, target, c.host, c.errors)
  const samples = clients.map((): Array<number> => [])
  for (let i = 0; i < n; i++) {
    for (const [k, c] of clients.entries()) {
      const ms = await timedCycle(c.rt, firstJob + 100 + i, target, c.host, c.errors)
      if (ms !== undefined) samples[k]!.push(ms)
    }
  }
  return samples.map(stats)
}

export const sequential = async (rt: Runtime, n: number, target: string, host: string, firstJob: number) =>
  (await alternating([{ rt, host }], n, target, firstJob))[0]!

/**
 * `jobs` workers, each cycling its own job on its target (jobs % targets) and host, for `seconds`. Given
 * several runtimes (clients on different database nodes), each target's jobs are spread over them: job j
 * uses runtime floor(j / targets) % runtimes.
 */
export const fanOut = async (
  rts: Runtime | ReadonlyArray<Runtime>,
  jobs: number,
  targets: number,
  hosts: ReadonlyArray<string>,
  seconds: number,
  jobBase: number,
  errors?: Errors
) => {
  const runtimes = Array.isArray(rts) ? rts : [rts as Runtime]
  const start = performance.now()
  const until = start + seconds * 1000
  const latencies: Array<number> = []
  const perJob = new Array<number>(jobs).fill(0)
  await Promise.all(Array.from({ length: jobs }, async (_, j) => {
    const rt = runtimes[Math.floor(j / targets) % runtimes.length]!
    let i = 0
    while (performance.now() < until) {
      const ms = await timedCycle(rt, jobBase + j * 100_000 + i++, `fan-t${j % targets}`, hosts[j % hosts.length]!, errors)
      if (ms === undefined) continue
      latencies.push(ms)
      perJob[j]!++
    }
  }))
  const total = perJob.reduce((a, b) => a + b, 0)
  const mean = total / jobs
  return {
    cycles: total,
    // Over the time the last cycle took to finish (a cycle stalled past the end counts its stall).
    cyclesPerSecond: total / ((performance.now() - start) / 1000),
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


/** Deletes the durable queues a responder declared for `hosts`. */
export const deleteQueues = async (hosts: ReadonlyArray<string>, url = RABBIT_URL) => {
  const conn = await amqp.connect(url)
  const ch = await conn.createChannel()
  for (const h of hosts) await ch.deleteQueue(Broker.queueName(h)).catch(() => undefined)
  await conn.close()
}

/** Deletes the durable queue a responder declared for `host`. */
export const deleteQueue = (host: string) => deleteQueues([host])

/**
 * A responder process (responder.js) on the broker at `url`: answers every request for `hosts` at
 * once, as an idle DMS server would. Resolves once it consumes.
 */
export const startResponder = async (hosts: ReadonlyArray<string>, url = RABBIT_URL) => {
  const child = spawn(process.execPath, [sibling("responder.js"), JSON.stringify({ url, hosts })], {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "inherit"]
  })
  await new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on("line", (l) => l === "ready" && resolve())
    child.on("exit", (code) => reject(new Error(`responder exited ${code}`)))
  })
  return {
    pid: child.pid!,
    stop: () => {
      try {
        process.kill(-child.pid!, "SIGKILL")
      } catch {
        // gone
      }
    }
  }
}
