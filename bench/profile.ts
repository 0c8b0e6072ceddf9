/**
 * The client's own cost per mount + unmount cycle, for profiling (`--cpu-prof`):
 *   npm run bench:profile -- memory [cycles]   memory ledger + memory broker (no I/O)
 *   npm run bench:profile -- mysql [cycles]    MariaDB + RabbitMQ + a responder process
 */
import * as Effect from "effect/Effect"
import * as ManagedRuntime from "effect/ManagedRuntime"
import mysql from "mysql2/promise"
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import * as Dms from "../src/Dms.js"
import * as Protocol from "../src/Protocol.js"
import { RABBIT_URL } from "../test/support/rabbit.js"
import { createDatabase, deleteQueue, round, type Runtime, sequential } from "./common.js"

const mode = process.argv[2] ?? "memory"
const n = Number(process.argv[3] ?? 5000)

const run = async (rt: Runtime, host: string) => {
  await sequential(rt, 200, "profile-warmup", host, 1)
  const cpu = process.cpuUsage()
  const s = await sequential(rt, n, "profile-target", host, 1)
  const used = process.cpuUsage(cpu)
  const cpuMs = (used.user + used.system) / 1000 / (n + 50)
  console.log(
    `${mode} cycle over ${n}: p50 ${round(s.p50)} ms, p90 ${round(s.p90)} ms, p99 ${round(s.p99)} ms, mean ${round(s.mean)} ms; ` +
      `client CPU ${round(cpuMs)} ms per cycle`
  )
  await rt.dispose()
}

if (mode === "memory") {
  await run(
    ManagedRuntime.make(
      Dms.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 30, server: () => Effect.succeed(Protocol.success("ok")) })
    ),
    "profile-host"
  )
} else {
  const db = `dms_profile_${process.pid}`
  const host = `profile-${process.pid}`
  const admin = await mysql.createConnection({ host: "127.0.0.1", user: "root" })
  await createDatabase(admin, db)
  const responder = spawn(process.execPath, [path.join(import.meta.dirname, "responder.js"), JSON.stringify({ url: RABBIT_URL, hosts: [host] })], {
    detached: true,
    stdio: ["ignore", "pipe", "inherit"]
  })
  await new Promise<void>((resolve) => readline.createInterface({ input: responder.stdout! }).on("line", (l) => l === "ready" && resolve()))
  try {
    await run(ManagedRuntime.make(Dms.layer({ dbUrl: `mysql://root@127.0.0.1:3306/${db}`, rabbitmqUrl: RABBIT_URL, timeout: 30 })), host)
  } finally {
    process.kill(-responder.pid!, "SIGKILL")
    await deleteQueue(host)
    await admin.query(`DROP DATABASE ${db}`)
    await admin.end()
  }
}
process.exit(0)
