/**
 * The benchmark suite (`npm run bench`): what a mount costs, how it scales, and how close it is to the
 * floor of this machine, all in one run (ratios within a run hold; absolute times across runs do not).
 * Needs MariaDB (127.0.0.1:3306, root) and RabbitMQ (127.0.0.1:5672, guest); a responder process
 * answers every request at once (no real mount). Writes bench/results.json and bench/results.md.
 *
 *   npx tsx bench/run.ts [--quick]
 */
import amqp from "amqplib"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import mysql from "mysql2/promise"
import { spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import * as Broker from "../src/Broker.js"
import { cycle, fanOut, request, round, type Runtime, sequential, type Stats, stats } from "./common.js"
import * as Dms from "../src/Dms.js"
import * as Mount from "../src/Mount.js"
import * as Protocol from "../src/Protocol.js"
import { RABBIT_URL } from "../test/support/rabbit.js"

const quick = process.argv.includes("--quick")
const root = path.resolve(import.meta.dirname, "..")
const HOST_PREFIX = `bench-${process.pid}`

// ---------------------------------------------------------------------------------------------------
// Statistics and CPU accounting

const clockTicks = 100
const cpuOf = (pid: number): number => {
  try {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
    return (Number(fields[11]) + Number(fields[12])) / clockTicks // utime + stime, seconds
  } catch {
    return 0
  }
}
const pidsOf = (name: string): Array<number> =>
  fs.readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim() === name
    } catch {
      return false
    }
  })

// ---------------------------------------------------------------------------------------------------
// A responder process: answers every request at once, as an idle DMS server would

const startResponder = async (hosts: ReadonlyArray<string>) => {
  const child = spawn(process.execPath, ["--import", "tsx", "bench/responder.ts", JSON.stringify({ url: RABBIT_URL, hosts })], {
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

// ---------------------------------------------------------------------------------------------------
// Scenarios

// The floor: a raw amqplib round trip with the client's publish options, and the ledger's SQL of one
// mount + unmount cycle issued directly with mysql2 (take the lease and read, mark pending, record and
// release — for the mount and for the unmount).
const rawFloor = async (db: string, host: string, n: number) => {
  const conn = await amqp.connect(RABBIT_URL, { noDelay: true })
  const ch = await conn.createConfirmChannel()
  const pending = new Map<string, () => void>()
  await ch.consume("amq.rabbitmq.reply-to", (m) => {
    const id = m?.properties.correlationId as string
    pending.get(id)?.()
    pending.delete(id)
  }, { noAck: true })
  const rpc = () =>
    new Promise<void>((resolve) => {
      const id = randomUUID()
      pending.set(id, resolve)
      ch.publish("", Broker.queueName(host), Buffer.from(JSON.stringify(request(1, "floor", host))), {
        contentType: "application/json",
        correlationId: id,
        replyTo: "amq.rabbitmq.reply-to",
        deliveryMode: 1,
        mandatory: true,
        expiration: "30000",
        headers: { [Broker.DEADLINE_HEADER]: Date.now() + 30_000 }
      })
    })
  const sqlConn = await mysql.createConnection({ host: "127.0.0.1", user: "root", database: db, multipleStatements: true })
  const owner = randomUUID()
  const key = "f".repeat(40)
  await sqlConn.query(
    "INSERT IGNORE INTO backup_target_mount_lock (lock_key, backup_target_id, host) VALUES (?, 'floor', ?)",
    [key, host]
  )
  const take = `UPDATE backup_target_mount_lock SET owner = ?, expires_at = UTC_TIMESTAMP(3) + INTERVAL 30 SECOND
      WHERE lock_key = ? AND (owner IS NULL OR expires_at < UTC_TIMESTAMP(3));
    SELECT * FROM backup_target_mount_ledger WHERE backup_target_id = 'floor' AND host = ? AND deleted = 0 AND mounted = 1`
  const mark = "UPDATE backup_target_mount_lock SET pending_op = 'mount', expires_at = UTC_TIMESTAMP(3) + INTERVAL 30 SECOND WHERE lock_key = ? AND owner = ?"
  const sqlCycle = async (job: number) => {
    await sqlConn.query(take, [owner, key, host])
    await sqlConn.execute(mark, [key, owner])
    await sqlConn.query(
      `INSERT INTO backup_target_mount_ledger (backup_target_id, jobid, host, mounted) SELECT 'floor', ?, ?, 1
         FROM backup_target_mount_lock WHERE lock_key = ? AND owner = ?;
       UPDATE backup_target_mount_lock SET owner = NULL, pending_op = NULL WHERE lock_key = ? AND owner = ?`,
      [job, host, key, owner, key, owner]
    )
    await sqlConn.query(take, [owner, key, host])
    await sqlConn.execute(mark, [key, owner])
    await sqlConn.query(
      `UPDATE backup_target_mount_ledger e JOIN backup_target_mount_lock l ON l.lock_key = ? AND l.owner = ?
         SET e.mounted = 0, l.owner = NULL, l.pending_op = NULL WHERE e.jobid = ? AND e.backup_target_id = 'floor'`,
      [key, owner, job]
    )
  }
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
  await sqlConn.end()
  await conn.close()
  const rpc50 = stats(rpcs).p50
  const sql50 = stats(sqls).p50
  return { rpc: stats(rpcs), sqlCycle: stats(sqls), cycleFloorP50: 2 * rpc50 + sql50 }
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

const main = async () => {
  const n = quick ? 300 : 2000
  const fanSeconds = quick ? 5 : 30
  const admin = await mysql.createConnection({ host: "127.0.0.1", user: "root" })
  const db = `dms_bench_${process.pid}`
  await admin.query(`CREATE DATABASE ${db}`)
  const hosts = Array.from({ length: 16 }, (_, i) => `${HOST_PREFIX}-h${i}`)
  const responder = await startResponder(hosts)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dms-bench-"))
  const results: Record<string, unknown> = { node: process.version, cpus: os.cpus().length, quick, at: new Date().toISOString() }
  const mysqlRt = ManagedRuntime.make(Dms.layer({ dbUrl: `mysql://root@127.0.0.1:3306/${db}`, rabbitmqUrl: RABBIT_URL, timeout: 30 }))
  try {
    await mysqlRt.runPromise(Mount.getActiveMounts()) // creates the tables
    const host = hosts[0]!
    console.error("floor…")
    const floor = await rawFloor(db, host, n)
    results.floor = floor
    console.error("cycle…")
    const seq = await sequential(mysqlRt, n, "seq-target", host, 1)
    results.cycle = { ...seq, ratioToFloor: round(seq.p50 / floor.cycleFloorP50, 2) }

    console.error("shared…")
    for (let j = 0; j < 50; j++) await mysqlRt.runPromise(Mount.mount(request(500_000 + j, "shared-target", host)))
    results.shared = await sequential(mysqlRt, Math.min(n, 1000), "shared-target", host, 600_000)

    console.error("fan-out…")
    const cpuBefore = {
      client: cpuOf(process.pid),
      mariadb: pidsOf("mariadbd").reduce((a, p) => a + cpuOf(p), 0),
      rabbitmq: pidsOf("beam.smp").reduce((a, p) => a + cpuOf(p), 0),
      responder: cpuOf(responder.pid)
    }
    const fan8 = await fanOut(mysqlRt, 64, 8, [host], fanSeconds, 1_000_000)
    const cpuAfter = {
      client: cpuOf(process.pid),
      mariadb: pidsOf("mariadbd").reduce((a, p) => a + cpuOf(p), 0),
      rabbitmq: pidsOf("beam.smp").reduce((a, p) => a + cpuOf(p), 0),
      responder: cpuOf(responder.pid)
    }
    const cycles = fan8.cyclesPerSecond * fanSeconds
    const cpuPerCycleMs = Object.fromEntries(
      Object.entries(cpuAfter).map(([k, v]) => [k, round(((v - cpuBefore[k as keyof typeof cpuBefore]) * 1000) / cycles)])
    )
    const fan16 = await fanOut(mysqlRt, 16, 16, hosts, fanSeconds, 50_000_000)
    const sequentialRate = 1000 / seq.mean
    results.fanOut = {
      "64 jobs x 8 targets, 1 host": { ...fan8, ratioToSequential: round(fan8.cyclesPerSecond / sequentialRate, 2) },
      "16 jobs x 16 hosts": { ...fan16, ratioToSequential: round(fan16.cyclesPerSecond / sequentialRate, 2) },
      cpuMsPerCycle: cpuPerCycleMs
    }

    console.error("two processes…")
    results.twoProcesses = await twoProcesses(db, host, fanSeconds)

    console.error("queries…")
    results.queries = await queries(mysqlRt, db, quick ? 50 : 200)

    console.error("memory…")
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

    console.error("sqlite and memory…")
    const sqliteRt = ManagedRuntime.make(Dms.layer({ dbUrl: `sqlite:${path.join(dir, "bench.db")}`, rabbitmqUrl: RABBIT_URL, timeout: 30 }))
    results.cycleSqlite = await sequential(sqliteRt, Math.min(n, 1000), "sqlite-target", host, 1)
    await sqliteRt.dispose()
    const memRt = ManagedRuntime.make(
      Dms.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 30, server: () => Effect.succeed(Protocol.success("ok")) })
    )
    results.cycleMemory = await sequential(memRt, Math.min(n, 1000), "memory-target", "memory-host", 1)
    await memRt.dispose()
  } finally {
    await mysqlRt.dispose()
    responder.stop()
    await admin.query(`DROP DATABASE IF EXISTS ${db}`)
    await admin.end()
    fs.rmSync(dir, { recursive: true, force: true })
    await deleteQueues(hosts)
  }
  fs.writeFileSync(path.join(root, "bench/results.json"), JSON.stringify(results, null, 2))
  fs.writeFileSync(path.join(root, "bench/results.md"), markdown(results))
  console.log(markdown(results))
}

const twoProcesses = async (db: string, host: string, seconds: number) => {
  const run = () =>
    new Promise<{ cyclesPerSecond: number; latency: Stats; minShare: number; maxShare: number }>((resolve, reject) => {
      const child = spawn(process.execPath, ["--import", "tsx", "bench/worker.ts", JSON.stringify({ db, host, seconds, url: RABBIT_URL })], {
        cwd: root,
        stdio: ["ignore", "pipe", "inherit"]
      })
      let out = ""
      child.stdout!.on("data", (d) => (out += String(d)))
      child.on("exit", (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`worker exited ${code}`))))
    })
  const [a, b] = await Promise.all([run(), run()])
  return { cyclesPerSecond: a.cyclesPerSecond + b.cyclesPerSecond, p99: Math.max(a.latency.p99, b.latency.p99), a, b }
}

const deleteQueues = async (hosts: ReadonlyArray<string>) => {
  const conn = await amqp.connect(RABBIT_URL)
  const ch = await conn.createChannel()
  for (const h of hosts) await ch.deleteQueue(Broker.queueName(h)).catch(() => undefined)
  await conn.close()
}

const markdown = (r: Record<string, any>): string => {
  const ms = (s: Stats | undefined) => (s ? `${round(s.p50, 2)} / ${round(s.p90, 2)} / ${round(s.p99, 2)}` : "—")
  const fan = r.fanOut ?? {}
  const lines = [
    `| scenario | p50 / p90 / p99 ms | throughput | note |`,
    `| --- | --- | --- | --- |`,
    `| floor: RabbitMQ round trip | ${ms(r.floor?.rpc)} | | raw amqplib, the client's publish options |`,
    `| floor: ledger SQL of a cycle (mysql2) | ${ms(r.floor?.sqlCycle)} | | 6 round trips |`,
    `| floor: cycle = 2 × rpc + SQL | ${round(r.floor?.cycleFloorP50 ?? 0, 2)} | | |`,
    `| cycle (mount + unmount), MariaDB | ${ms(r.cycle)} | ${round(1000 / (r.cycle?.mean ?? 1), 0)}/s | ${r.cycle?.ratioToFloor} × floor |`,
    `| shared: 51st job mount + unmount | ${ms(r.shared)} | | one verifying round trip |`,
    ...Object.entries(fan).filter(([k]) => k !== "cpuMsPerCycle").map(([k, v]: [string, any]) =>
      `| fan-out: ${k} | ${ms(v.latency)} | ${round(v.cyclesPerSecond, 0)}/s | ${v.ratioToSequential} × sequential; shares ${round(v.minShare, 2)}–${round(v.maxShare, 2)} of mean |`
    ),
    `| two client processes, 64 jobs x 8 targets each | p99 ${round(r.twoProcesses?.p99 ?? 0, 2)} | ${round(r.twoProcesses?.cyclesPerSecond ?? 0, 0)}/s | |`,
    `| getActiveMounts() at 100k rows | ${ms(r.queries?.getActiveMountsAll)} | | ${r.queries?.distribution ?? ""} |`,
    `| getActiveMounts({host}) | ${ms(r.queries?.getActiveMountsHost)} | | |`,
    `| getMountStatus | ${ms(r.queries?.getMountStatus)} | | |`,
    `| getLedgerHistory(limit 100) | ${ms(r.queries?.getLedgerHistory100)} | | |`,
    `| cycle, SQLite ledger | ${ms(r.cycleSqlite)} | | |`,
    `| cycle, memory ledger + memory broker | ${ms(r.cycleMemory)} | | |`,
    "",
    `CPU ms per cycle in the 64×8 fan-out: ${JSON.stringify(fan.cpuMsPerCycle ?? {})}`,
    `RSS: ${r.memory?.rssMiBAfter1k} MiB after 1k cycles, ${r.memory?.rssMiBAfter20k} MiB after 20k (growth ${round((r.memory?.growth ?? 0) * 100, 1)} %)`
  ]
  return lines.join("\n") + "\n"
}

main().then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
