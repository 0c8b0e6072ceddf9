/**
 * The storm scenario of `npm run bench` (`--only=storm`): a nightly schedule fires on 1,000 hosts at
 * once (200 with `--quick`), each mounting 2 targets for 5 jobs, from 4 client processes that own a
 * quarter of the hosts each: 10,000 mounts started at the same moment, then as many unmounts. One
 * responder process consumes every host's queue. The same processes then offer the same load on one
 * host (2,000 targets × 5 jobs), the baseline of the storm's latency: what the storm adds is the cost of
 * many hosts (a queue check per host, many queues).
 *
 * Each phase has a database of its own (so both start from empty tables) and client processes of its
 * own (so neither finds a host's queue check cached, nor a JIT warmed by the other's waves). Per wave: completion time, latency per call from the fire
 * moment and from its own start, per host completion (fairness), the CPU of MariaDB, of the clients and
 * of the broker, the MySQL connections in use (sampled every 100 ms: the database's PROCESSLIST, and each
 * client's TCP connections to port 3306 from /proc), the channels the clients opened, the queue checks'
 * cached answers after it, and the clients' RSS.
 */
import mysql from "mysql2/promise"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as readline from "node:readline"
import { RABBIT_URL } from "../test/support/rabbit.js"
import { cpuOf, createDatabase, deleteQueues, pidsOf, root, round, sibling, type Stats, startResponder, stats } from "./common.js"
import type { Phase, Wave } from "./stormWorker.js"

/** Options of {@link storm}. */
export interface StormOptions {
  readonly hosts: number
  readonly processes: number
  readonly hostPrefix: string
}

const TARGETS = 2
const JOBS = 5
const now = () => performance.timeOrigin + performance.now()

/** The TCP connections to MariaDB (port 3306) of each process, from /proc. */
const mysqlConnections = (pids: ReadonlyArray<number>): Array<number> => {
  const inodes = new Set<string>()
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = ""
    try {
      text = fs.readFileSync(table, "utf8")
    } catch {
      continue
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/)
      if (f[2]?.endsWith(":0CEA") && f[3] === "01") inodes.add(f[9]!)
    }
  }
  return pids.map((pid) => {
    let n = 0
    try {
      for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
        const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`, { encoding: "utf8" }) as string
        if (link.startsWith("socket:[") && inodes.has(link.slice(8, -1))) n++
      }
    } catch {
      // exited, or an fd closed while read
    }
    return n
  })
}

interface Worker {
  readonly child: ChildProcess
  readonly next: () => Promise<any>
  /** Ends its stdin and waits for it to close its clients and exit. */
  readonly stop: () => Promise<void>
}

const startWorker = (args: object): Worker => {
  const child = spawn(process.execPath, ["--expose-gc", sibling("stormWorker.js"), JSON.stringify(args)], {
    cwd: root,
    stdio: ["pipe", "pipe", "inherit"]
  })
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]()
  const exit = new Promise<number | null>((resolve) => child.on("exit", resolve))
  const exited = exit.then((code) => Promise.reject(new Error(`storm worker exited ${code}`)))
  exited.catch(() => undefined)
  return {
    child,
    next: async () => {
      const line = await Promise.race([lines.next(), exited])
      return JSON.parse(String(line.value))
    },
    stop: async () => {
      child.stdin!.end()
      await exit
    }
  }
}

const cpuMs = (pids: { readonly workers: ReadonlyArray<number>; readonly responder: number }) => ({
  mariadb: pidsOf("mariadbd").reduce((a, p) => a + cpuOf(p), 0) * 1000,
  clients: pids.workers.reduce((a, p) => a + cpuOf(p), 0) * 1000,
  rabbitmq: pidsOf("beam.smp").reduce((a, p) => a + cpuOf(p), 0) * 1000,
  responder: cpuOf(pids.responder) * 1000
})

/** Fires one wave in every worker at once and gathers its figures, sampling connections meanwhile. */
const fire = async (admin: mysql.Connection, db: string, workers: ReadonlyArray<Worker>, responder: number) => {
  const pids = { workers: workers.map((w) => w.child.pid!), responder }
  const before = cpuMs(pids)
  let sampling = true
  const connections = { max: 0, perProcessMax: pids.workers.map(() => 0) }
  const sampler = (async () => {
    while (sampling) {
      const [rows] = await admin.query("SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE DB = ?", [db])
      connections.max = Math.max(connections.max, Number((rows as Array<{ n: number }>)[0]!.n))
      mysqlConnections(pids.workers).forEach((n, k) => (connections.perProcessMax[k] = Math.max(connections.perProcessMax[k]!, n)))
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  })()
  const firedAt = now()
  for (const w of workers) w.child.stdin!.write(`fire ${firedAt}\n`)
  const waves: Array<Wave> = await Promise.all(workers.map((w) => w.next()))
  const seconds = (now() - firedAt) / 1000
  sampling = false
  await sampler
  const after = cpuMs(pids)
  const calls = waves.reduce((a, w) => a + w.fromFire.length + Object.values(w.failures).reduce((x, y) => x + y, 0), 0)
  const hostDone = waves.flatMap((w) => Object.values(w.hostDone)).sort((a, b) => a - b)
  const hosts = waves.reduce((a, w) => a + Object.keys(w.hostDone).length, 0)
  const median = hostDone[Math.floor(hostDone.length / 2)] ?? Number.NaN
  const failures: Record<string, number> = {}
  for (const w of waves) for (const [k, v] of Object.entries(w.failures)) failures[k] = (failures[k] ?? 0) + v
  const channelsOpened = waves.reduce((a, w) => a + w.channelsOpened, 0)
  return {
    calls,
    seconds: round(seconds, 2),
    firedLateMs: round(Math.max(...waves.map((w) => w.firedLateMs)), 1),
    fromFire: stats(waves.flatMap((w) => w.fromFire)),
    fromStart: stats(waves.flatMap((w) => w.fromStart)),
    failures,
    hosts: {
      finished: hosts,
      fastestMs: round(hostDone[0] ?? Number.NaN, 1),
      medianMs: round(median, 1),
      slowestMs: round(hostDone[hostDone.length - 1] ?? Number.NaN, 1),
      slowestToMedian: round((hostDone[hostDone.length - 1] ?? Number.NaN) / median, 2)
    },
    cpuMsPerCall: Object.fromEntries(
      Object.entries(after).map(([k, v]) => [k, round((v - before[k as keyof typeof before]) / calls, 3)])
    ) as Record<keyof typeof before, number>,
    connections,
    queueChecks: waves.reduce((a, w) => a + w.queueChecks, 0),
    channels: {
      opened: channelsOpened,
      perSecond: round(channelsOpened / seconds, 1),
      maxOpenPerProcess: Math.max(...waves.map((w) => w.maxOpenChannels))
    },
    cachedQueues: waves.map((w) => w.cachedQueues),
    rssMiB: waves.map((w) => round(w.rssMiB, 0)),
    peakRssMiB: waves.map((w) => round(w.peakRssMiB, 0))
  }
}

type WaveFigures = Awaited<ReturnType<typeof fire>>

/** Runs the storm and its one-host baseline; see the module's comment. */
export const storm = async (options: StormOptions) => {
  const { hostPrefix, processes } = options
  const admin = await mysql.createConnection({ host: "127.0.0.1", user: "root" })
  const dbs = { storm: `dms_bench_${process.pid}_storm`, single: `dms_bench_${process.pid}_single` }
  const hosts = Array.from({ length: options.hosts }, (_, i) => `${hostPrefix}-s${i}`)
  const single = `${hostPrefix}-single`
  const warm = Array.from({ length: processes }, (_, k) => `${hostPrefix}-warm${k}`)
  const queues = [...hosts, single, ...warm]
  let responder: Awaited<ReturnType<typeof startResponder>> | undefined
  let workers: Array<Worker> = []
  try {
    for (const db of Object.values(dbs)) await createDatabase(admin, db)
    responder = await startResponder(queues)
    const share = <A>(all: ReadonlyArray<A>, k: number) => all.filter((_, i) => i % processes === k)
    // Process k's part of the phase: its hosts and the targets it mounts on each.
    const run = async (phase: (k: number) => Omit<Phase, "db" | "jobs" | "jobBase">, db: string) => {
      workers = Array.from({ length: processes }, (_, k) =>
        startWorker({ url: RABBIT_URL, warmHost: warm[k], phase: { ...phase(k), db, jobs: JOBS, jobBase: (k + 1) * 1_000_000 } }))
      await Promise.all(workers.map((w) => w.next())) // ready: connected and warm
      const mount = await fire(admin, db, workers, responder!.pid)
      const unmount = await fire(admin, db, workers, responder!.pid)
      await Promise.all(workers.map((w) => w.stop()))
      const cpuMsPerCycle = Object.fromEntries(
        Object.entries(mount.cpuMsPerCall).map(([k, v]) => [k, round(v + unmount.cpuMsPerCall[k as keyof typeof mount.cpuMsPerCall], 3)])
      )
      return { mount, unmount, cpuMsPerCycle }
    }
    const stormed = await run((k) => ({ name: "storm", hosts: share(hosts, k), targets: ["storm-t0", "storm-t1"] }), dbs.storm)
    const singleTargets = Array.from({ length: options.hosts * TARGETS }, (_, i) => `single-t${i}`)
    const oneHost = await run((k) => ({ name: "single", hosts: [single], targets: share(singleTargets, k) }), dbs.single)
    return {
      hosts: options.hosts,
      processes,
      targetsPerHost: TARGETS,
      jobsPerTarget: JOBS,
      storm: stormed,
      singleHost: oneHost,
      p99Ratio: {
        mount: round(stormed.mount.fromFire.p99 / oneHost.mount.fromFire.p99, 2),
        unmount: round(stormed.unmount.fromFire.p99 / oneHost.unmount.fromFire.p99, 2)
      }
    }
  } finally {
    for (const w of workers) w.child.kill("SIGKILL")
    responder?.stop()
    for (const db of Object.values(dbs)) await admin.query(`DROP DATABASE IF EXISTS ${db}`)
    await admin.end()
    await deleteQueues(queues)
  }
}

/** The scenario's lines of results.md. */
export const stormMarkdown = (s: Awaited<ReturnType<typeof storm>> | undefined): Array<string> => {
  if (s === undefined) return []
  const ms = (x: Stats) => `${round(x.p50, 1)} / ${round(x.p90, 1)} / ${round(x.p99, 1)}`
  const list = (counts: Record<string, number>) => Object.entries(counts).map(([k, v]) => `${v} × ${k}`).join(", ") || "none"
  const row = (what: string, w: WaveFigures) =>
    `| ${what} | ${ms(w.fromFire)} | ${ms(w.fromStart)} | ${w.calls} in ${w.seconds} s | ${w.hosts.finished} finished; slowest ${
      w.hosts.slowestMs
    } ms = ${w.hosts.slowestToMedian} × median ${w.hosts.medianMs} | ${w.connections.max} (${
      w.connections.perProcessMax.join(", ")
    }) | ${w.queueChecks}; ${w.channels.opened} (${w.channels.perSecond}/s), ≤ ${w.channels.maxOpenPerProcess} open | ${list(w.failures)} |`
  const cpu = (c: Record<string, number>) => Object.entries(c).map(([k, v]) => `${k} ${round(v, 2)}`).join(", ")
  const { storm: st, singleHost: one } = s
  return [
    "",
    `Storm: ${s.hosts} hosts × ${s.targetsPerHost} targets × ${s.jobsPerTarget} jobs from ${s.processes} client processes, every call of a wave started at once; the baseline offers the same load on one host (${
      s.hosts * s.targetsPerHost
    } targets × ${s.jobsPerTarget} jobs):`,
    "",
    `| wave | ms from the fire, p50 / p90 / p99 | ms from its own start | calls | per host (fire → its last call) | MySQL connections, max (per process) | queue checks; channels opened, max open per process | failures |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- |`,
    row("storm: mounts", st.mount),
    row("storm: unmounts", st.unmount),
    row("one host: mounts", one.mount),
    row("one host: unmounts", one.unmount),
    "",
    `Storm p99 / one-host p99: mounts ${s.p99Ratio.mount} ×, unmounts ${s.p99Ratio.unmount} × (goal ≤ 2).`,
    `CPU ms per cycle (mount + unmount): storm ${cpu(st.cpuMsPerCycle)}; one host ${cpu(one.cpuMsPerCycle)}.`,
    `Queue checks' cached answers per process after the storm's mounts ${st.mount.cachedQueues.join(", ")}, after its unmounts ${
      st.unmount.cachedQueues.join(", ")
    }. Client RSS per process after GC, storm ${st.unmount.rssMiB.join(", ")} MiB (peak ${st.unmount.peakRssMiB.join(", ")}); one host ${
      one.unmount.rssMiB.join(", ")
    } MiB (peak ${one.unmount.peakRssMiB.join(", ")}).`
  ]
}
