/**
 * The years scenario of `npm run bench` (`--only=years`): the ledger after years of use. A bulk load
 * (MariaDB's sequence engine, INSERT … SELECT in chunks) fills a ledger with 10 M rows (`--quick`: 1 M)
 * of 1,000 targets on 1,000 hosts (each host uses 10 of them: 10,000 pairs, each with its lock row),
 * about 0.1 % mounted, one in ten soft-deleted, and the older half last written 200–258 days ago and
 * holding nothing: the rows a 90-day purge deletes. Then:
 *
 * - every client query, timed through the library, with the plan MariaDB chooses for the statement the
 *   library sent (taken from its mysql2 pool): no full scans;
 * - the sequential mount + unmount cycle on this ledger against one on an empty ledger, one cycle on each
 *   in turn, so that both see the same load of a shared machine;
 * - `trilio-dms purge --older-than 90d --batch 1000` (the CLI, in a process of its own, as an operator
 *   runs it) while the cycle runs: phases with the purge running and paused (SIGSTOP) alternate, and the
 *   cycle's latency is compared between them.
 *
 * `DMS_BENCH_YEARS_ROWS` and `DMS_BENCH_YEARS_PURGE_SECONDS` (the purge's running time at most) override
 * the defaults; `DMS_BENCH_YEARS_PURGE_DUTY=0.25` paces the purge (it runs a quarter of every 200 ms), to
 * see what a pause between batches would do.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Mysql2 from "mysql2"
import mysql from "mysql2/promise"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as Dms from "../src/Dms.js"
import * as Ledger from "../src/Ledger.js"
import * as Mount from "../src/Mount.js"
import { RABBIT_URL } from "../test/support/rabbit.js"
import {
  alternating,
  createDatabase,
  cycle,
  deleteQueues,
  root,
  round,
  type Runtime,
  sequential,
  sibling,
  startResponder,
  type Stats,
  stats
} from "./common.js"

const HOSTS = 1000
const TARGETS = 1000
const TARGETS_PER_HOST = 10
/** Of the recent rows that are not soft-deleted, one in this many is mounted (about 0.1 % of all rows). */
const MOUNTED_EVERY = 499
const P50_GOAL_MS = 5
const CYCLE_RATIO_GOAL = 1.1
const PURGE_P99_RATIO_GOAL = 1.5
/** The first job id of the cycles: above every loaded row's. */
const JOB_BASE = 1_500_000_000

/** The target of loaded row `seq` (its job id): host seq % HOSTS uses TARGETS_PER_HOST targets in turn. */
const targetIndexOf = (seq: number) => (seq % HOSTS + (TARGETS / TARGETS_PER_HOST) * (Math.floor(seq / HOSTS) % TARGETS_PER_HOST)) % TARGETS
const hostName = (prefix: string, index: number) => `${prefix}-yh${index}`
const hostSql = (prefix: string, seq: string) => `CONCAT('${prefix}-yh', ${seq} % ${HOSTS})`
const targetSql = (seq: string) => `CONCAT('yt', (${seq} % ${HOSTS} + ${TARGETS / TARGETS_PER_HOST} * ((${seq} DIV ${HOSTS}) % ${TARGETS_PER_HOST})) % ${TARGETS})`

const LEDGER = "backup_target_mount_ledger"
const LOCK = "backup_target_mount_lock"

/** Rows `lo`…`hi` of a ledger of `rows`: see the module's comment. */
const chunkSql = (lo: number, hi: number, rows: number, hostPrefix: string) => {
  const half = rows / 2
  return `INSERT INTO ${LEDGER} (created_at, updated_at, deleted_at, deleted, version, backup_target_id, jobid, host, mounted)
    SELECT ts, ts, IF(seq % 10 = 3, ts, NULL), seq % 10 = 3, 'bench', ${targetSql("seq")}, seq,
      ${hostSql(hostPrefix, "seq")}, seq > ${half} AND seq % ${MOUNTED_EVERY} = 0 AND seq % 10 <> 3
    FROM (SELECT seq, IF(seq <= ${half},
        UTC_TIMESTAMP() - INTERVAL 200 DAY - INTERVAL (${half} - seq) SECOND,
        UTC_TIMESTAMP() - INTERVAL (${rows} - seq) SECOND) AS ts
      FROM seq_${lo}_to_${hi}) s`
}

const lockRowsSql = (hostPrefix: string) =>
  `INSERT INTO ${LOCK} (lock_key, backup_target_id, host)
    SELECT SHA1(CONCAT(t, CHAR(0), h)), t, h FROM (
      SELECT ${targetSql("seq")} AS t, ${hostSql(hostPrefix, "seq")} AS h FROM seq_0_to_${HOSTS * TARGETS_PER_HOST - 1}) p`

// ---------------------------------------------------------------------------------------------------
// The statements the library sends, and their plans

interface Sent {
  readonly sql: string
  readonly values: ReadonlyArray<unknown>
}

type QueryFn = (...args: Array<unknown>) => unknown
const poolPrototype = (Mysql2 as unknown as { Pool: { prototype: { query: QueryFn } } }).Pool.prototype

/** The statements the ledger's mysql2 pools were given while `f` ran. */
const sentBy = async (f: () => Promise<unknown>): Promise<Array<Sent>> => {
  const sent: Array<Sent> = []
  const original = poolPrototype.query
  poolPrototype.query = function(this: unknown, ...args: Array<unknown>) {
    const first = args[0] as string | { sql: string; values?: ReadonlyArray<unknown> }
    sent.push(typeof first === "string" ? { sql: first, values: (args[1] ?? []) as ReadonlyArray<unknown> } : { sql: first.sql, values: first.values ?? [] })
    return original.apply(this, args)
  }
  try {
    await f()
  } finally {
    poolPrototype.query = original
  }
  return sent
}

/** A plan, table by table ("ledger ref idx_mounted_host ~9"), and whether any step reads a whole table or index. */
export interface Plan {
  readonly steps: string
  readonly fullScan: boolean
}

const explain = async (conn: mysql.Connection, sent: ReadonlyArray<Sent>): Promise<Plan> => {
  const steps: Array<string> = []
  let fullScan = false
  for (const s of sent) {
    const text = Mysql2.format(s.sql, s.values as Parameters<typeof Mysql2.format>[1])
    for (const statement of text.split(/;\s*(?=SELECT|UPDATE|INSERT|DELETE)/i)) {
      // A ping, and an INSERT … VALUES, have no plan worth showing.
      if (!/^\s*(SELECT|UPDATE|INSERT|DELETE)\b/i.test(statement) || /^\s*SELECT 1\s*$/i.test(statement)) continue
      if (/^\s*INSERT\b/i.test(statement) && !/\bSELECT\b/i.test(statement)) continue
      const [rows] = await conn.query(`EXPLAIN ${statement}`) as unknown as [Array<Record<string, unknown>>]
      for (const r of rows) {
        const table = r.table as string | null
        if (table === null || table.startsWith("<")) continue
        if (r.type === "ALL" || r.type === "index") fullScan = true
        const name = table === "l" || table === LOCK ? "lock" : "ledger"
        steps.push(`${name} ${String(r.type)}${r.key ? ` ${String(r.key)}` : ""} ~${String(r.rows)}`)
      }
    }
  }
  return { steps: [...new Set(steps)].join("; "), fullScan }
}

// ---------------------------------------------------------------------------------------------------

/** `f` called `calls` times in turn (after 5 untimed calls), or until 20 s have passed. */
const timed = async (calls: number, f: (i: number) => Promise<unknown>): Promise<Stats> => {
  for (let i = 0; i < 5; i++) await f(calls + i)
  const samples: Array<number> = []
  const until = performance.now() + 20_000
  for (let i = 0; i < calls && performance.now() < until; i++) {
    const t = performance.now()
    await f(i)
    samples.push(performance.now() - t)
  }
  return stats(samples)
}

interface QueryResult extends Stats {
  readonly name: string
  readonly rows: number
  readonly plan: Plan
  /** Whether the p50 goal applies (not to the unpaged getActiveMounts()). */
  readonly goal: boolean
}

const mib = (bytes: unknown) => round(Number(bytes) / 1024 / 1024, 0)

/**
 * The scenario: load, queries, the cycle against an empty ledger's, and the purge under the cycle.
 *
 * @since 0.1.0
 * @category benchmarks
 */
export const years = async (options: { readonly quick: boolean; readonly hostPrefix: string }) => {
  const rows = Number(process.env.DMS_BENCH_YEARS_ROWS ?? (options.quick ? 1_000_000 : 10_000_000))
  const chunk = Math.min(1_000_000, Math.ceil(rows / 4))
  const cycles = options.quick ? 200 : 500
  const calls = options.quick ? 50 : 200
  const purgeCapSeconds = Number(process.env.DMS_BENCH_YEARS_PURGE_SECONDS ?? (options.quick ? 90 : 300))
  const phaseMs = options.quick ? 3000 : 5000
  const purgeDuty = Math.min(1, Math.max(0.05, Number(process.env.DMS_BENCH_YEARS_PURGE_DUTY ?? 1)))
  const host = hostName(options.hostPrefix, 7)
  const target = `yt${targetIndexOf(7)}`
  const empty = `dms_bench_years0_${process.pid}`
  const full = `dms_bench_years_${process.pid}`
  const url = (db: string) => `mysql://root@127.0.0.1:3306/${db}`
  const admin = await mysql.createConnection({ host: "127.0.0.1", user: "root", multipleStatements: true })
  const [[{ datadir }]] = await admin.query("SELECT @@datadir AS datadir") as unknown as [[{ datadir: string }]]
  const free = fs.statfsSync(datadir)
  const freeBytes = free.bavail * free.bsize
  // About 300 bytes a row with its nine indexes, twice over for the load's undo and redo.
  if (freeBytes < rows * 600) {
    await admin.end()
    throw new Error(`years: ${mib(freeBytes)} MiB free under ${datadir}, about ${mib(rows * 600)} MiB needed for ${rows} rows`)
  }
  let responder: Awaited<ReturnType<typeof startResponder>> | undefined
  let purger: ReturnType<typeof spawn> | undefined
  const runtimes: Array<Runtime> = []
  try {
    await createDatabase(admin, empty)
    await createDatabase(admin, full)
    responder = await startResponder([host])
    const client = (db: string) => {
      const rt: Runtime = ManagedRuntime.make(Dms.layer({ dbUrl: url(db), rabbitmqUrl: RABBIT_URL, timeout: 30 }))
      runtimes.push(rt)
      return rt
    }
    const rtEmpty = client(empty)
    const rtFull = client(full)
    // Each client checks the tables once when it starts: not a query to time or explain.
    await rtFull.runPromise(Mount.getActiveMounts({ limit: 1 }))
    const conn = await mysql.createConnection({ host: "127.0.0.1", user: "root", database: full })

    // 1. The cycle on an empty ledger, before anything else.
    const cycleEmpty = await sequential(rtEmpty, cycles, target, host, JOB_BASE)

    // 2. The load.
    const loadStarted = performance.now()
    const chunkSeconds: Array<number> = []
    for (let lo = 1; lo <= rows; lo += chunk) {
      const t = performance.now()
      await conn.query(chunkSql(lo, Math.min(rows, lo + chunk - 1), rows, options.hostPrefix))
      chunkSeconds.push(round((performance.now() - t) / 1000, 1))
    }
    await conn.query(lockRowsSql(options.hostPrefix))
    const loadSeconds = (performance.now() - loadStarted) / 1000
    const analyzeStarted = performance.now()
    await conn.query(`ANALYZE TABLE ${LEDGER}, ${LOCK}`)
    const analyzeSeconds = (performance.now() - analyzeStarted) / 1000
    const [[size]] = await conn.query(
      `SELECT data_length AS data, index_length AS indexes FROM information_schema.TABLES WHERE table_schema = ? AND table_name = ?`,
      [full, LEDGER]
    ) as unknown as [[{ data: number; indexes: number }]]
    const [[counts]] = await conn.query(
      `SELECT SUM(mounted = 1 AND deleted = 0) AS active, SUM(deleted) AS deleted FROM ${LEDGER}`
    ) as unknown as [[{ active: string; deleted: string }]]
    const active = Number(counts.active)

    // 3. Every query, through the library.
    const [[middle]] = await conn.query(
      `SELECT id FROM ${LEDGER} WHERE mounted = 1 AND deleted = 0 ORDER BY id LIMIT 1 OFFSET ${Math.floor(active / 2)}`
    ) as unknown as [[{ id: number } | undefined]]
    const hostOf = (i: number) => hostName(options.hostPrefix, (i * 37) % HOSTS)
    const targetOf = (i: number) => `yt${(i * 53) % TARGETS}`
    const jobOf = (i: number) => 1 + ((i * 7919) % rows)
    const runQuery = <A, E>(effect: Effect.Effect<A, E, Ledger.Ledger>) => rtFull.runPromise(effect)
    const querySpecs: ReadonlyArray<{ name: string; run: (i: number) => Effect.Effect<unknown, unknown, Ledger.Ledger>; goal?: boolean; calls?: number }> = [
      { name: "getActiveMounts({host})", run: (i) => Mount.getActiveMounts({ host: hostOf(i) }) },
      { name: "getActiveMounts({limit: 100}), first page", run: () => Mount.getActiveMounts({ limit: 100 }) },
      { name: "getActiveMounts({limit: 100, afterId}), a middle page", run: () => Mount.getActiveMounts({ limit: 100, afterId: middle?.id ?? 0 }) },
      { name: "getActiveMounts({backupTargetId})", run: (i) => Mount.getActiveMounts({ backupTargetId: targetOf(i) }) },
      { name: "getActiveMounts({host, backupTargetId})", run: (i) => Mount.getActiveMounts({ host: hostOf(i), backupTargetId: targetOf(i) }) },
      { name: "getMountStatus(job, target)", run: (i) => Mount.getMountStatus(jobOf(i), `yt${targetIndexOf(jobOf(i))}`) },
      {
        name: "getMountStatus(job, target, host)",
        run: (i) => Mount.getMountStatus(jobOf(i), `yt${targetIndexOf(jobOf(i))}`, hostName(options.hostPrefix, jobOf(i) % HOSTS))
      },
      { name: "getLedgerHistory(target, 100)", run: (i) => Mount.getLedgerHistory(targetOf(i), 100) },
      { name: "getHostState(host) (reconcile)", run: (i) => Effect.flatMap(Ledger.Ledger, (l) => l.getHostState(hostOf(i))) },
      { name: "getActiveMounts(), unpaged", run: () => Mount.getActiveMounts(), goal: false, calls: Math.min(calls, 20) }
    ]
    const queries: Array<QueryResult> = []
    for (const q of querySpecs) {
      let returned = 0
      const sent = await sentBy(async () => {
        const r = await runQuery(q.run(0))
        returned = Array.isArray(r) ? r.length : 1
      })
      const s = await timed(q.calls ?? calls, (i) => runQuery(q.run(i)))
      queries.push({ name: q.name, ...s, rows: returned, plan: await explain(conn, sent), goal: q.goal ?? true })
    }
    // Every active row, page by page through the cursor.
    const walkStarted = performance.now()
    let walked = 0
    let pages = 0
    for (let afterId = 0;;) {
      const page = await runQuery(Mount.getActiveMounts({ limit: 1000, afterId }))
      if (page.length === 0) break
      walked += page.length
      pages++
      afterId = page[page.length - 1]!.id
    }
    const walk = { rows: walked, pages, ms: round(performance.now() - walkStarted, 1) }
    // The lease's own statements, as one cycle sends them.
    const leaseSent = await sentBy(() => cycle(rtFull, JOB_BASE - 1, target, host))
    const leasePlan = await explain(conn, leaseSent)

    // 4. The cycle on the loaded ledger against the empty one, alternating.
    const [cycle0, cycleN] = await alternating([{ rt: rtEmpty, host }, { rt: rtFull, host }], cycles, target, JOB_BASE + 10_000) as [Stats, Stats]

    // 5. The purge (the CLI, its own process) under the cycle, in phases running and paused.
    const half = rows / 2
    const oldRemaining = async () => {
      const [[r]] = await conn.query(`SELECT COUNT(*) AS n FROM ${LEDGER} WHERE jobid BETWEEN 1 AND ?`, [half]) as unknown as [[{ n: number }]]
      return Number(r.n)
    }
    // The purge's own statements, for their plans: its first batches, in this process, then interrupted.
    const purgeSent = await sentBy(async () => {
      const fiber = rtFull.runFork(Effect.flatMap(Ledger.Ledger, (l) => l.purge({ olderThan: "90 days", batchSize: 1000 })))
      await new Promise((resolve) => setTimeout(resolve, 300))
      await rtFull.runPromise(Fiber.interrupt(fiber))
    })
    const purgePlan = await explain(conn, purgeSent.slice(0, 2))
    const oldBefore = await oldRemaining()
    let purgeOutput = ""
    let purgeErrors = ""
    const child = spawn(
      process.execPath,
      [sibling("../src/cli/main.js"), "purge", "--older-than", "90d", "--batch", "1000", "--json"],
      { cwd: root, env: { ...process.env, DMS_DB_URL: url(full) }, stdio: ["ignore", "pipe", "pipe"] }
    )
    purger = child
    child.stdout!.on("data", (d) => (purgeOutput += String(d)))
    child.stderr!.on("data", (d) => (purgeErrors += String(d)))
    let exitCode: number | null | undefined
    const exited = new Promise<void>((resolve) => child.on("exit", (code) => {
      exitCode = code
      resolve()
    }))
    const without: Array<number> = []
    const withPurge: Array<number> = []
    let job = JOB_BASE + 100_000
    // Cycles for `ms` (until the purge ends, in a running phase); those begun within 250 ms of a switch
    // are not counted: a batch sent before a pause still runs on the server.
    const phase = async (ms: number, into: Array<number> | undefined) => {
      const started = performance.now()
      while (performance.now() - started < ms && exitCode === undefined) {
        const t = performance.now()
        await cycle(rtFull, job++, target, host)
        if (into !== undefined && t - started >= 250) into.push(performance.now() - t)
      }
      return performance.now() - started
    }
    // A paced purge, as a pause between batches would make it: in a running phase, the purge runs for
    // this fraction of every 200 ms and is stopped for the rest.
    const paced = async <A>(f: () => Promise<A>): Promise<A> => {
      if (purgeDuty >= 1) return f()
      let running = true
      let timer: NodeJS.Timeout | undefined
      const toggle = () => {
        running = !running
        child.kill(running ? "SIGCONT" : "SIGSTOP")
        timer = setTimeout(toggle, (running ? purgeDuty : 1 - purgeDuty) * 200)
      }
      timer = setTimeout(toggle, purgeDuty * 200)
      try {
        return await f()
      } finally {
        clearTimeout(timer)
      }
    }
    // The CLI's start (module loading, the table check) is not a purge's steady state.
    let runningMs = await phase(2000, undefined)
    while (exitCode === undefined && runningMs < purgeCapSeconds * 1000) {
      child.kill("SIGSTOP")
      await phase(phaseMs, without)
      child.kill("SIGCONT")
      runningMs += purgeDuty * (await paced(() => phase(phaseMs, withPurge)))
    }
    const completed = exitCode !== undefined
    if (!completed) {
      child.kill("SIGKILL")
      await exited
    }
    purger = undefined
    const purged = oldBefore - (await oldRemaining())
    const cli = completed && exitCode === 0 ? JSON.parse(purgeOutput) as { deleted: number; batches: number } : undefined
    const purgeWithout = stats(without)
    const purgeWith = stats(withPurge)
    await conn.end()

    return {
      rows,
      distribution: `${HOSTS} hosts × ${TARGETS_PER_HOST} targets each (${TARGETS} targets, ${HOSTS * TARGETS_PER_HOST} lock rows); ` +
        `${active} active (${round((100 * active) / rows, 2)} %), ${Number(counts.deleted)} soft-deleted; ${half} rows 200–258 days old, holding nothing`,
      load: {
        seconds: round(loadSeconds, 1),
        rowsPerSecond: Math.round(rows / loadSeconds),
        chunk,
        chunkSeconds,
        analyzeSeconds: round(analyzeSeconds, 1),
        dataMiB: mib(size.data),
        indexMiB: mib(size.indexes)
      },
      cycleEmpty,
      queries,
      walk,
      active,
      leasePlan,
      cycle: { empty: cycle0, loaded: cycleN, p50Ratio: round(cycleN.p50 / cycle0.p50, 2), meanRatio: round(cycleN.mean / cycle0.mean, 2) },
      purge: {
        purgeable: oldBefore,
        purged,
        completed,
        exitCode: exitCode ?? null,
        cli: cli ?? null,
        errors: purgeErrors.slice(0, 500),
        runningSeconds: round(runningMs / 1000, 1),
        rowsPerSecond: Math.round(purged / (runningMs / 1000)),
        phaseMs,
        duty: purgeDuty,
        plan: purgePlan,
        without: purgeWithout,
        with: purgeWith,
        p99Ratio: round(purgeWith.p99 / purgeWithout.p99, 2),
        p50Ratio: round(purgeWith.p50 / purgeWithout.p50, 2),
        // Against the loaded cycle of step 4, just before the purge: InnoDB's own purge of the deleted
        // rows and its page flushing go on in the paused phases too.
        p99RatioBefore: round(purgeWith.p99 / cycleN.p99, 2)
      }
    }
  } finally {
    purger?.kill("SIGKILL")
    await Promise.allSettled(runtimes.map((rt) => rt.dispose()))
    responder?.stop()
    await deleteQueues([host]).catch(() => undefined)
    for (const db of [empty, full]) await admin.query(`DROP DATABASE IF EXISTS ${db}`).catch((e) => console.error(`could not drop ${db}:`, e))
    await admin.end()
  }
}

/**
 * The scenario's lines of results.md.
 *
 * @since 0.1.0
 * @category benchmarks
 */
export const yearsMarkdown = (y: Awaited<ReturnType<typeof years>> | undefined): Array<string> => {
  if (y === undefined) return []
  const ms = (s: Stats) => `${round(s.p50, 2)} / ${round(s.p90, 2)} / ${round(s.p99, 2)}`
  const met = (ok: boolean) => (ok ? "met" : "**missed**")
  const rows = y.rows.toLocaleString("en")
  const p = y.purge
  return [
    "",
    `Years of ledger: ${rows} rows; ${y.distribution}.`,
    "",
    `| scenario | p50 / p90 / p99 ms | rows | plan | goal |`,
    `| --- | --- | --- | --- | --- |`,
    `| cycle (mount + unmount), empty ledger, before the load | ${ms(y.cycleEmpty)} | | | |`,
    `| bulk load: ${rows} rows in ${y.load.seconds} s, ${y.load.rowsPerSecond.toLocaleString("en")} rows/s | | | chunks of ${y.load.chunk.toLocaleString("en")}: ${y.load.chunkSeconds.join(", ")} s; ANALYZE ${y.load.analyzeSeconds} s; data ${y.load.dataMiB} MiB, indexes ${y.load.indexMiB} MiB | |`,
    ...y.queries.map((q) =>
      `| ${q.name} at ${rows} rows | ${ms(q)} | ${q.rows} | ${q.plan.steps}${q.plan.fullScan ? " **(full scan)**" : ""} | ${
        q.goal ? `p50 ≤ ${P50_GOAL_MS} ms: ${met(q.p50 <= P50_GOAL_MS && !q.plan.fullScan)}` : "all active rows in one answer: page instead"
      } |`
    ),
    `| every active row by cursor, pages of 1,000 | ${y.walk.ms} ms in all | ${y.walk.rows} of ${y.active} | ${y.walk.pages} pages | ${met(y.walk.rows === y.active)} |`,
    `| the lease's statements of a cycle (plans) | | | ${y.leasePlan.steps}${y.leasePlan.fullScan ? " **(full scan)**" : ""} | ${met(!y.leasePlan.fullScan)} |`,
    `| cycle, empty ledger (alternating with the next) | ${ms(y.cycle.empty)} | | | |`,
    `| cycle, ledger of ${rows} rows (alternating) | ${ms(y.cycle.loaded)} | | p50 ${y.cycle.p50Ratio} ×, mean ${y.cycle.meanRatio} × empty | p50 ≤ ${CYCLE_RATIO_GOAL} ×: ${met(y.cycle.p50Ratio <= CYCLE_RATIO_GOAL)} |`,
    `| cycle, purge paused (alternating ${p.phaseMs / 1000} s phases) | ${ms(p.without)} | ${p.without.n} cycles | | |`,
    `| cycle during \`trilio-dms purge --older-than 90d --batch 1000\`${p.duty < 1 ? `, paced to ${p.duty * 100} % of the time` : ""} | ${ms(p.with)} | ${p.with.n} cycles | p99 ${p.p99Ratio} ×, p50 ${p.p50Ratio} × paused; p99 ${p.p99RatioBefore} × the cycle before the purge | p99 ≤ ${PURGE_P99_RATIO_GOAL} × both: ${
      met(Math.max(p.p99Ratio, p.p99RatioBefore) <= PURGE_P99_RATIO_GOAL)
    } |`,
    `| purge: ${p.purged.toLocaleString("en")} of ${p.purgeable.toLocaleString("en")} old rows deleted in ${p.runningSeconds} s running, ${p.rowsPerSecond.toLocaleString("en")} rows/s | | | ${p.plan.steps}${p.plan.fullScan ? " **(full scan)**" : ""} | ${
      p.completed ? (p.exitCode === 0 ? `completed${p.cli ? ` (${p.cli.batches} batches)` : ""}` : `**failed** (exit ${p.exitCode}): ${p.errors}`) : `stopped after ${p.runningSeconds} s (the cap); the rate holds`
    } |`
  ]
}
