/**
 * The benchmark suite (`npm run bench`): what a mount costs, how it scales, and how close it is to the
 * floor of this machine, all in one run (ratios within a run hold; absolute times across runs do not).
 * Needs MariaDB (127.0.0.1:3306, root) and RabbitMQ (127.0.0.1:5672, guest); a responder process
 * answers every request at once (no real mount). Writes bench/results.json and bench/results.md.
 *
 *   npm run bench [-- --quick] [-- --only=floor,cycle,shared,fanout,paced,two,procs,queries,memory,embedded,cluster,storm,years]
 *
 * `cluster` (bench/cluster.ts) also needs the 3-node Galera and RabbitMQ clusters of scripts/cluster,
 * which it starts if they are down (and then stops at the end). `storm` (bench/storm.ts) fires 10,000
 * mounts on 1,000 hosts at once from 4 client processes (200 hosts with --quick). `years` (bench/years.ts)
 * loads a ledger of 10 M rows (1 M with --quick) into databases of its own; it is not part of the whole run.
 *
 * It runs compiled (tsconfig.bench.json into .bench-build/), as a user's program would: under tsx the
 * client costs more CPU than it does in production.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import mysql from "mysql2/promise"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { cluster, clusterMarkdown } from "./cluster.js"
import { openFloor } from "./floorClient.js"
import { procs, procsMarkdown } from "./procs.js"
import { storm, stormMarkdown } from "./storm.js"
import { years, yearsMarkdown } from "./years.js"
import {
  cpuOf,
  createDatabase,
  cycle,
  deleteQueues,
  fanOut,
  paced,
  pidsOf,
  request,
  root,
  round,
  type Runtime,
  sequential,
  servicesCpu,
  sibling,
  startResponder,
  type Stats,
  stats
} from "./common.js"
import * as Dms from "../src/Dms.js"
import * as Mount from "../src/Mount.js"
import * as Protocol from "../src/Protocol.js"
import { RABBIT_URL } from "../test/support/rabbit.js"

const quick = process.argv.includes("--quick")
const onlyAt = process.argv.indexOf("--only")
const only = (onlyAt >= 0 ? process.argv[onlyAt + 1] : process.argv.find((a) => a.startsWith("--only="))?.slice("--only=".length))?.split(",")
// `years` takes a quarter of an hour and a few GB of disk: only when named.
const runs = (scenario: string) => only === undefined ? scenario !== "years" : only.includes(scenario)
const HOST_PREFIX = `bench-${process.pid}`

// ---------------------------------------------------------------------------------------------------
// Scenarios

// The floor (floorClient.ts): a raw amqplib round trip with the client's publish options, and the
// ledger's SQL of one mount + unmount cycle issued directly with mysql2, timed apart.
const rawFloor = async (db: string, host: string, n: number) => {
  const { rpc, sqlCycle, close } = await openFloor(db, host, "floor", RABBIT_URL)
  for (let i = 0; i < 50; i++) {
    await rpc()
    await sqlCycle(i + 1)
  }
  const rpcs: Array<number> = []
  const sqls: Array<number> = []
  for (let i = 0; i < n; i++) {
    let t = performance.now()
    await rpc()
    rpcs.push(performance.now() - t)
    t = performance.now()
    await sqlCycle(1000 + i)
    sqls.push(performance.now() - t)
  }
  await close()
  const rpc50 = stats(rpcs).p50
  const sql50 = stats(sqls).p50
  // The client's statements are multi-statement round trips like these; a quarter of the cycle's SQL
  // is one of them (the shared cycle's floor is one round trip to the server and three of these: the
  // mount's two, and the release that other jobs keep mounted, one conditional round trip).
  return { rpc: stats(rpcs), sqlCycle: stats(sqls), sqlStatementP50: round(sql50 / 4, 3), cycleFloorP50: 2 * rpc50 + sql50 }
}

const queries = async (rt: Runtime, db: string, n: number) => {
  const conn = await mysql.createConnection({ host: "127.0.0.1", user: "root", database: db })
  // 100,000 rows: 1,000 targets, 100 hosts, 1 % active.
  await conn.query(`INSERT INTO backup_target_mount_ledger (backup_target_id, jobid, host, mounted, version)
    SELECT CONCAT('q-t', seq % 1000), seq, CONCAT('q-h', seq % 100), seq % 100 = 0, 'bench' FROM seq_1_to_100000`)
  await conn.query("ANALYZE TABLE backup_target_mount_ledger")
  const [plans] = await conn.query("EXPLAIN SELECT * FROM backup_target_mount_ledger WHERE mounted = 1 AND deleted = 0 AND host = 'q-h5'")
  await conn.end()
  const time = async (f: () => Promise<unknown>) => {
    const samples: Array<number> = []
    for (let i = 0; i < n; i++) {
      const t = performance.now()
      await f()
      samples.push(performance.now() - t)
    }
    return stats(samples)
  }
  return {
    rows: 100_000,
    distribution: "1,000 targets, 100 hosts, 1 % active",
    getActiveMountsAll: await time(() => rt.runPromise(Mount.getActiveMounts())),
    getActiveMountsHost: await time(() => rt.runPromise(Mount.getActiveMounts({ host: "q-h5" }))),
    getMountStatus: await time(() => rt.runPromise(Mount.getMountStatus(500, "q-t500"))),
    getLedgerHistory100: await time(() => rt.runPromise(Mount.getLedgerHistory("q-t7", 100))),
    planActiveOnHost: plans
  }
}

// ---------------------------------------------------------------------------------------------------

const cpuNow = (responderPid: number) => ({ client: cpuOf(process.pid), ...servicesCpu(responderPid) })

const main = async () => {
  const n = quick ? 300 : 2000
  const fanSeconds = quick ? 5 : 30
  const began = performance.now()
  const admin = await mysql.createConnection({ host: "127.0.0.1", user: "root" })
  const db = `dms_bench_${process.pid}`
  await createDatabase(admin, db)
  const hosts = Array.from({ length: 16 }, (_, i) => `${HOST_PREFIX}-h${i}`)
  const responder = await startResponder(hosts)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dms-bench-"))
  const results: Record<string, any> = { node: process.version, cpus: os.cpus().length, quick, at: new Date().toISOString() }
  const seconds: Record<string, number> = {}
  const scenario = async (name: string, f: () => Promise<void>) => {
    if (!runs(name)) return
    console.error(`${name}…`)
    const t = performance.now()
    await f()
    seconds[name] = round((performance.now() - t) / 1000, 1)
  }
  const mysqlRt = ManagedRuntime.make(Dms.layer({ dbUrl: `mysql://root@127.0.0.1:3306/${db}`, rabbitmqUrl: RABBIT_URL, timeout: 30 }))
  try {
    await mysqlRt.runPromise(Mount.getActiveMounts()) // creates the tables
    const host = hosts[0]!
    await scenario("floor", async () => {
      results.floor = await rawFloor(db, host, n)
    })
    await scenario("cycle", async () => {
      const seq = await sequential(mysqlRt, n, "seq-target", host, 1)
      const floor = results.floor?.cycleFloorP50 as number | undefined
      results.cycle = { ...seq, ratioToFloor: floor === undefined ? null : round(seq.p50 / floor, 2) }
    })
    await scenario("shared", async () => {
      for (let j = 0; j < 50; j++) await mysqlRt.runPromise(Mount.mount(request(500_000 + j, "shared-target", host)))
      const shared = await sequential(mysqlRt, Math.min(n, 1000), "shared-target", host, 600_000)
      const floorP50 = results.floor === undefined ? null : round(results.floor.rpc.p50 + 3 * results.floor.sqlStatementP50, 3)
      results.shared = { ...shared, floorP50, ratioToFloor: floorP50 === null ? null : round(shared.p50 / floorP50, 2) }
    })
    await scenario("fanout", async () => {
      const before = cpuNow(responder.pid)
      const fan8 = await fanOut(mysqlRt, 64, 8, [host], fanSeconds, 1_000_000)
      const after = cpuNow(responder.pid)
      const cycles = fan8.cycles
      const cpuMsPerCycle = Object.fromEntries(
        Object.entries(after).map(([k, v]) => [k, round(((v - before[k as keyof typeof before]) * 1000) / cycles)])
      )
      const fan16 = await fanOut(mysqlRt, 16, 16, hosts, fanSeconds, 50_000_000)
      const sequentialRate = results.cycle === undefined ? null : 1000 / results.cycle.mean
      const ratio = (rate: number) => sequentialRate === null ? null : round(rate / sequentialRate, 2)
      results.fanOut = {
        "64 jobs x 8 targets, 1 host": { ...fan8, ratioToSequential: ratio(fan8.cyclesPerSecond) },
        "16 jobs x 16 hosts": { ...fan16, ratioToSequential: ratio(fan16.cyclesPerSecond) },
        cpuMsPerCycle
      }
    })
    await scenario("paced", async () => {
      // Open-loop load: cycles arrive at a fixed rate, each a new job on one of the 8 targets, so the
      // latency is the service time plus honest queueing (in the closed-loop fan-out, every job waits
      // for the other 7 of its target by construction: 64 jobs / throughput). Two rates, 40 % and 60 %
      // of what the 64 × 8 fan-out sustained, show where queueing starts.
      const saturated = (results.fanOut?.["64 jobs x 8 targets, 1 host"]?.cyclesPerSecond as number | undefined) ?? 300
      const rates = process.env.DMS_BENCH_PACED_RATE === undefined
        ? [0.4, 0.6].map((f) => Math.round(f * saturated))
        : [Number(process.env.DMS_BENCH_PACED_RATE)]
      results.paced = []
      for (const [i, rate] of rates.entries()) {
        results.paced.push({ rate, ...(await paced(mysqlRt, rate, 8, host, quick ? 5 : 15, 300_000_000 + i * 10_000_000)) })
      }
    })
    await scenario("two", async () => {
      results.twoProcesses = await twoProcesses(db, host, fanSeconds)
    })
    await scenario("procs", async () => {
      const counts = (process.env.DMS_BENCH_PROCS ?? "1,2,4,8").split(",").map(Number)
      results.procs = await procs({ db, host, url: RABBIT_URL, responderPid: responder.pid, seconds: quick ? 5 : 15, warmup: quick ? 50 : 300, counts })
    })
    await scenario("queries", async () => {
      results.queries = await queries(mysqlRt, db, quick ? 50 : 200)
    })
    await scenario("memory", async () => {
      const rss = async (cycles: number) => {
        await Promise.all(Array.from({ length: 8 }, async (_, w) => {
          for (let i = 0; i < cycles / 8; i++) await cycle(mysqlRt, 90_000_000 + w * 1_000_000 + i, `mem-t${w}`, host)
        }))
        globalThis.gc?.()
        return process.memoryUsage().rss / 1024 / 1024
      }
      const rss1k = await rss(1000)
      const rss20k = await rss(quick ? 3000 : 19_000)
      results.memory = { rssMiBAfter1k: round(rss1k, 1), rssMiBAfter20k: round(rss20k, 1), growth: round(rss20k / rss1k - 1, 3) }
    })
    await scenario("embedded", async () => {
      const sqliteRt = ManagedRuntime.make(Dms.layer({ dbUrl: `sqlite:${path.join(dir, "bench.db")}`, rabbitmqUrl: RABBIT_URL, timeout: 30 }))
      results.cycleSqlite = await sequential(sqliteRt, Math.min(n, 1000), "sqlite-target", host, 1)
      await sqliteRt.dispose()
      const memRt = ManagedRuntime.make(
        Dms.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 30, server: () => Effect.succeed(Protocol.success("ok")) })
      )
      results.cycleMemory = await sequential(memRt, Math.min(n, 1000), "memory-target", "memory-host", 1)
      await memRt.dispose()
    })
    await scenario("cluster", async () => {
      // A cluster that cannot be started (or a node stopped under it by someone else's test) costs this
      // scenario only: the others' figures are still written.
      results.cluster = await cluster({ n: quick ? 200 : 500, seconds: quick ? 5 : 10, hostPrefix: HOST_PREFIX, single: { rt: mysqlRt, host } })
        .catch((e: unknown) => ({ failed: String((e as Error)?.message ?? e).slice(0, 500) }))
    })
    await scenario("storm", async () => {
      results.storm = await storm({ hosts: quick ? 200 : 1000, processes: 4, hostPrefix: HOST_PREFIX })
    })
    await scenario("years", async () => {
      results.years = await years({ quick, hostPrefix: HOST_PREFIX })
    })
  } finally {
    await mysqlRt.dispose()
    responder.stop()
    await admin.query(`DROP DATABASE IF EXISTS ${db}`)
    await admin.end()
    fs.rmSync(dir, { recursive: true, force: true })
    await deleteQueues(hosts)
  }
  results.seconds = { ...seconds, total: round((performance.now() - began) / 1000, 1) }
  const suffix = only === undefined ? "" : `-${only.join("-")}`
  fs.writeFileSync(path.join(root, `bench/results${suffix}.json`), JSON.stringify(results, null, 2))
  fs.writeFileSync(path.join(root, `bench/results${suffix}.md`), markdown(results))
  console.log(markdown(results))
}

const twoProcesses = async (db: string, host: string, seconds: number) => {
  const run = () =>
    new Promise<{ cyclesPerSecond: number; latency: Stats; latencies: Array<number>; perJob: Array<number> }>((resolve, reject) => {
      const child = spawn(process.execPath, [sibling("worker.js"), JSON.stringify({ db, host, seconds, url: RABBIT_URL })], {
        cwd: root,
        stdio: ["ignore", "pipe", "inherit"]
      })
      let out = ""
      child.stdout!.on("data", (d) => (out += String(d)))
      child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`worker exited ${code}`))))
    })
  const [a, b] = await Promise.all([run(), run()])
  const perJob = [...a.perJob, ...b.perJob]
  const mean = perJob.reduce((x, y) => x + y, 0) / perJob.length
  return {
    cyclesPerSecond: a.cyclesPerSecond + b.cyclesPerSecond,
    latency: stats([...a.latencies, ...b.latencies]),
    minShare: Math.min(...perJob) / mean,
    maxShare: Math.max(...perJob) / mean,
    a: { cyclesPerSecond: a.cyclesPerSecond, latency: a.latency },
    b: { cyclesPerSecond: b.cyclesPerSecond, latency: b.latency }
  }
}

const markdown = (r: Record<string, any>): string => {
  const ms = (s: Stats | undefined) => (s ? `${round(s.p50, 2)} / ${round(s.p90, 2)} / ${round(s.p99, 2)}` : "—")
  const fan = r.fanOut ?? {}
  const two = r.twoProcesses
  const lines = [
    `| scenario | p50 / p90 / p99 ms | throughput | note |`,
    `| --- | --- | --- | --- |`,
    `| floor: RabbitMQ round trip | ${ms(r.floor?.rpc)} | | raw amqplib, the client's publish options |`,
    `| floor: ledger SQL of a cycle (mysql2, one connection) | ${ms(r.floor?.sqlCycle)} | | 4 round trips: per operation, take + mark + read, then write + release |`,
    `| floor: cycle = 2 × round trip + SQL | ${round(r.floor?.cycleFloorP50 ?? 0, 2)} | | |`,
    `| **cycle** (mount + unmount), MariaDB, sequential | ${ms(r.cycle)} | ${round(1000 / (r.cycle?.mean ?? 1), 0)}/s | **${r.cycle?.ratioToFloor} × floor** (p50) |`,
    `| shared: a 51st job's mount + unmount | ${ms(r.shared)} | | one verifying round trip, no unmount message, the release one conditional statement; **${r.shared?.ratioToFloor ?? "—"} × floor** (p50; floor ${r.shared?.floorP50 ?? "—"} ms = round trip + 3 statements) |`,
    ...Object.entries(fan).filter(([k]) => k !== "cpuMsPerCycle").map(([k, v]: [string, any]) =>
      `| fan-out: ${k}, ${r.quick ? 5 : 30} s | ${ms(v.latency)} | ${round(v.cyclesPerSecond, 0)}/s | ${v.ratioToSequential} × sequential; every job within ${round(v.minShare, 2)}–${round(v.maxShare, 2)} of the mean share |`
    ),
    ...(r.paced ?? []).map((p: any) =>
      `| paced: ${p.rate} cycles/s arriving over 8 targets, ${r.quick ? 5 : 15} s | ${ms(p.latency)} | ${round(p.cyclesPerSecond, 0)}/s | open loop; ${p.late} arrivals started more than 5 ms late |`
    ),
    two === undefined ? null :
    `| two client processes, 32 jobs each over the same 8 targets | ${ms(two.latency)} | ${round(two.cyclesPerSecond, 0)}/s | shares ${round(two.minShare, 2)}–${round(two.maxShare, 2)} of the mean |`,
    `| getActiveMounts() at 100k rows | ${ms(r.queries?.getActiveMountsAll)} | | ${r.queries?.distribution ?? ""}; 1,000 rows returned |`,
    `| getActiveMounts({host}) | ${ms(r.queries?.getActiveMountsHost)} | | |`,
    `| getMountStatus | ${ms(r.queries?.getMountStatus)} | | |`,
    `| getLedgerHistory(limit 100) | ${ms(r.queries?.getLedgerHistory100)} | | |`,
    `| cycle, SQLite ledger (AMQP broker) | ${ms(r.cycleSqlite)} | | |`,
    `| cycle, memory ledger + memory broker | ${ms(r.cycleMemory)} | | the client's own cost |`,
    ...clusterMarkdown(r.cluster),
    ...procsMarkdown(r.procs),
    ...stormMarkdown(r.storm),
    ...yearsMarkdown(r.years),
    "",
    `CPU ms per cycle in the 64 × 8 fan-out: ${JSON.stringify(fan.cpuMsPerCycle ?? {})}`,
    `RSS: ${r.memory?.rssMiBAfter1k} MiB after 1k cycles, ${r.memory?.rssMiBAfter20k} MiB after 20k (growth ${round((r.memory?.growth ?? 0) * 100, 1)} %)`,
    `Seconds per scenario: ${JSON.stringify(r.seconds ?? {})}`
  ]
  return lines.filter((l) => l !== null).join("\n") + "\n"
}

main().then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
