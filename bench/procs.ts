/**
 * The `procs` scenario of `npm run bench`: the client as users run it, N processes (1, 2, 4, 8) each
 * cycling mount + unmount of its own target on one shared host through `DMSClient`, and beside each
 * the same N processes of the raw floor client (floorClient.ts), so that the client's CPU per cycle is
 * read against the floor's in the same run and at the same load. Each process measures its own CPU
 * from /proc/self/stat over the window; all processes warm up first and start their window together.
 *
 * `DMS_BENCH_PROCS=1,8` measures other process counts; `DMS_BENCH_CPU_PROF=<dir>` runs the client
 * processes with `--cpu-prof` into that folder (`procs-client-n<N>-p<i>.cpuprofile`, replaced by the
 * next run).
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as readline from "node:readline"
import { root, round, servicesCpu, sibling, type Stats, stats } from "./common.js"
import type { WorkerArgs, WorkerResult } from "./procWorker.js"

/**
 * The goals of the multi-process benchmark issue.
 */
const goals = { cpuMsOneProcess: 1.5, growth: 1.5, ratioToFloor: 3, cyclesPerSecondAt8: 250 }

/**
 * What one phase measured: N processes of one kind over the same window.
 */
export interface Phase {
  readonly processes: number
  readonly cycles: number
  /** The sum of the processes' rates. */
  readonly cyclesPerSecond: number
  readonly latency: Stats
  /** The processes' own CPU (user + system, from /proc) per cycle. */
  readonly cpuMsPerCycle: number
  /** The processes' CPU from their start through the warm-up, per warm-up cycle. */
  readonly coldCpuMsPerCycle: number
  readonly mariadbCpuMsPerCycle: number
  readonly rabbitmqCpuMsPerCycle: number
  readonly responderCpuMsPerCycle: number
}

const line = (child: ChildProcess, lines: AsyncIterator<string>, what: string, ms: number): Promise<string> =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`procs: no ${what} from worker ${child.pid} within ${ms} ms`)), ms)
    // "close" rather than "exit": it comes after the last output, which may hold the line.
    const exited = (code: number | null) => reject(new Error(`procs: worker ${child.pid} exited ${code} before ${what}`))
    child.once("close", exited)
    lines.next().then((l) => {
      clearTimeout(timer)
      child.off("close", exited)
      if (l.done === true) reject(new Error(`procs: worker ${child.pid} closed its output before ${what}`))
      else resolve(l.value)
    }, reject)
  })

const phase = async (
  mode: WorkerArgs["mode"],
  processes: number,
  options: ProcsOptions,
  jobBase: number
): Promise<Phase> => {
  const profileDir = mode === "client" ? process.env.DMS_BENCH_CPU_PROF : undefined
  if (profileDir !== undefined) fs.mkdirSync(profileDir, { recursive: true })
  const children = Array.from({ length: processes }, (_, i) => {
    const args: WorkerArgs = {
      mode,
      db: options.db,
      host: options.host,
      target: `procs-${mode}-n${processes}-p${i}`,
      url: options.url,
      seconds: options.seconds,
      warmup: options.warmup,
      jobBase: jobBase + i * 1_000_000
    }
    const profile = profileDir === undefined
      ? []
      : ["--cpu-prof", `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=procs-client-n${processes}-p${i}.cpuprofile`]
    const child = spawn(process.execPath, [...profile, sibling("procWorker.js"), JSON.stringify(args)], {
      cwd: root,
      stdio: ["pipe", "pipe", "inherit"]
    })
    return { child, lines: readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]() }
  })
  const exited = children.map(({ child }) => new Promise<void>((resolve) => child.once("close", () => resolve())))
  try {
    // Starting and warming up N processes on a busy machine can take a while.
    await Promise.all(children.map(({ child, lines }) => line(child, lines, "ready", 180_000)))
    const before = servicesCpu(options.responderPid)
    for (const { child } of children) child.stdin.write("go\n")
    const results = (await Promise.all(
      children.map(({ child, lines }) => line(child, lines, "result", options.seconds * 1000 + 120_000))
    )).map((l) => JSON.parse(l) as WorkerResult)
    const after = servicesCpu(options.responderPid)
    await Promise.all(exited)
    const cycles = results.reduce((a, r) => a + r.cycles, 0)
    const perCycle = (seconds: number) => round((seconds * 1000) / cycles)
    return {
      processes,
      cycles,
      cyclesPerSecond: round(results.reduce((a, r) => a + r.cycles / r.seconds, 0), 1),
      latency: stats(results.flatMap((r) => r.latencies)),
      cpuMsPerCycle: perCycle(results.reduce((a, r) => a + r.cpuSeconds, 0)),
      // A new process's start and first cycles, per warm-up cycle: what a program that mounts a few
      // times in its life pays (module loading, connecting, code not yet optimised by the JIT).
      coldCpuMsPerCycle: round((results.reduce((a, r) => a + r.warmupCpuSeconds, 0) * 1000) / (processes * options.warmup)),
      mariadbCpuMsPerCycle: perCycle(after.mariadb - before.mariadb),
      rabbitmqCpuMsPerCycle: perCycle(after.rabbitmq - before.rabbitmq),
      responderCpuMsPerCycle: perCycle(after.responder - before.responder)
    }
  } finally {
    for (const { child } of children) if (child.exitCode === null) child.kill("SIGKILL")
  }
}

/**
 * Options of {@link procs}.
 */
export interface ProcsOptions {
  readonly db: string
  /** The host every process uses; a responder answers for it. */
  readonly host: string
  readonly url: string
  readonly responderPid: number
  /** The measured window of each phase. */
  readonly seconds: number
  readonly warmup: number
  readonly counts: ReadonlyArray<number>
}

/**
 * Runs the scenario: for each process count, the client's phase and then the floor's, and their ratios.
 */
export const procs = async (options: ProcsOptions) => {
  const runs: Array<{ processes: number; client: Phase; floor: Phase; ratioToFloor: number; growth: number | null; floorGrowth: number | null }> = []
  for (const [k, n] of options.counts.entries()) {
    console.error(`procs: ${n} client process(es)…`)
    const client = await phase("client", n, options, 400_000_000 + k * 20_000_000)
    console.error(`procs: ${n} floor process(es)…`)
    const floor = await phase("floor", n, options, 410_000_000 + k * 20_000_000)
    const first = runs[0]
    runs.push({
      processes: n,
      client,
      floor,
      ratioToFloor: round(client.cpuMsPerCycle / floor.cpuMsPerCycle, 2),
      growth: first === undefined ? null : round(client.cpuMsPerCycle / first.client.cpuMsPerCycle, 2),
      floorGrowth: first === undefined ? null : round(floor.cpuMsPerCycle / first.floor.cpuMsPerCycle, 2)
    })
  }
  const at = (n: number) => runs.find((r) => r.processes === n)
  const worst = runs.reduce<(typeof runs)[number] | undefined>((w, r) => (w === undefined || r.ratioToFloor > w.ratioToFloor ? r : w), undefined)
  return {
    seconds: options.seconds,
    warmup: options.warmup,
    // The profiler's own CPU is in the client's figures then.
    cpuProfiledInto: process.env.DMS_BENCH_CPU_PROF ?? null,
    runs,
    goals: {
      cpuMsOneProcess: at(1)?.client.cpuMsPerCycle ?? null,
      growth8vs1: at(8)?.growth ?? null,
      ratioToFloorOneProcess: at(1)?.ratioToFloor ?? null,
      ratioToFloorWorst: worst === undefined ? null : { processes: worst.processes, ratio: worst.ratioToFloor },
      cyclesPerSecondAt8: at(8)?.client.cyclesPerSecond ?? null
    }
  }
}

/**
 * The scenario's table and its goals line, for results.md.
 */
export const procsMarkdown = (r: Awaited<ReturnType<typeof procs>> | undefined): Array<string> => {
  if (r === undefined) return []
  const ms = (s: Stats) => `${round(s.p50, 2)} / ${round(s.p99, 2)}`
  const verdict = (value: number | null | undefined, goal: number, atLeast = false) =>
    value == null ? "not measured" : `${value} (${atLeast ? "≥" : "≤"} ${goal}: ${(atLeast ? value >= goal : value <= goal) ? "met" : "missed"})`
  const g = r.goals
  return [
    "",
    `Processes × 1 target each, one shared host, ${r.seconds} s windows after ${r.warmup} warm-up cycles each; CPU per cycle from /proc (the processes' own, and MariaDB's during the window)` +
    (r.cpuProfiledInto === null ? ":" : `; the client processes ran under --cpu-prof (into ${r.cpuProfiledInto}), which adds to their CPU:`),
    "",
    "| processes | client cycles/s | client p50 / p99 ms | client CPU ms/cycle | × 1 process | floor cycles/s | floor p50 / p99 ms | floor CPU ms/cycle | × 1 process | client / floor CPU | MariaDB CPU ms/cycle, client / floor | first cycles of a new process, CPU ms/cycle: client / floor |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...r.runs.map((x) =>
      `| ${x.processes} | ${round(x.client.cyclesPerSecond, 0)} | ${ms(x.client.latency)} | ${x.client.cpuMsPerCycle} | ${x.growth ?? "—"} | ` +
      `${round(x.floor.cyclesPerSecond, 0)} | ${ms(x.floor.latency)} | ${x.floor.cpuMsPerCycle} | ${x.floorGrowth ?? "—"} | **${x.ratioToFloor} ×** | ` +
      `${x.client.mariadbCpuMsPerCycle} / ${x.floor.mariadbCpuMsPerCycle} | ${x.client.coldCpuMsPerCycle} / ${x.floor.coldCpuMsPerCycle} |`
    ),
    "",
    `procs goals: client CPU per cycle in one process ${verdict(g.cpuMsOneProcess, goals.cpuMsOneProcess)} ms; ` +
    `8 processes against 1 ${verdict(g.growth8vs1, goals.growth)} ×; ` +
    `client / floor CPU ${verdict(g.ratioToFloorWorst?.ratio, goals.ratioToFloor)} × at worst (${g.ratioToFloorWorst === null ? "—" : `${g.ratioToFloorWorst.processes} process${g.ratioToFloorWorst.processes === 1 ? "" : "es"}`}; ` +
    `${g.ratioToFloorOneProcess ?? "—"} × in one); 8 processes ${verdict(g.cyclesPerSecondAt8, goals.cyclesPerSecondAt8, true)} cycles/s`
  ]
}
