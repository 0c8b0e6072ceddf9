/**
 * The quick start: `npm start` on a fresh HOME with no MySQL and no RabbitMQ configured runs the demo
 * to exit 0, and the same demo against the real services and a running server.
 */
import { assert, describe, it, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { cleanEnv, demoHome, exec, modelServer, mountPointsUnder } from "../support/cli.js"
import type { Result } from "../support/cli.js"
import { TestDatabase, TestDatabaseLive } from "../support/mysql.js"
import { RABBIT_URL, uniqueHost } from "../support/rabbit.js"

const show = (r: Result) => `exit ${r.code} after ${r.ms} ms\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`

const count = (text: string, part: string) => text.split(part).length - 1

describe("quick start", () => {
  it.scoped("npm start on a clean HOME, with no database or broker configured, runs the demo to exit 0", () =>
    Effect.gen(function*() {
      const home = yield* demoHome
      const r = yield* exec("npm", ["start"], { env: cleanEnv(home), timeoutMs: 90_000 })
      assert.strictEqual(r.code, 0, show(r))
      const out = r.stdout
      assert.include(out, `ledger   sqlite:${path.join(home, ".trilio-dms", "demo", "ledger.db")} (embedded SQLite; the default while DMS_DB_URL is not set)`)
      assert.include(out, "broker   in-process (the default while DMS_RABBITMQ_URL is not set)")
      assert.match(out, /server {3}in-process DMS server; driver: (bind mounts|tmpfs mounts|plain directories, NOT real mounts)/)
      assert.isTrue(fs.existsSync(path.join(home, ".trilio-dms", "demo", "ledger.db")))
      // One physical mount, three holders in the ledger, releases in order, one physical unmount.
      assert.strictEqual(count(out, "<- PHYSICAL MOUNT"), 1, out)
      assert.strictEqual(count(out, "<- PHYSICAL UNMOUNT"), 1, out)
      for (const job of [1001, 1002, 1003]) assert.include(out, `job ${job}  mount requested`)
      assert.strictEqual(count(out, "(this job caused the physical mount)"), 1, out)
      assert.strictEqual(count(out, "(shares the existing mount)"), 2, out)
      assert.match(out, /ledger: 3 active row\(s\) for demo-target-\w+/)
      assert.match(out, /ID\s+JOB\s+TARGET\s+HOST\s+MOUNTED\s+CREATED \(UTC\)\s+UPDATED \(UTC\)/)
      const order = [
        "<- PHYSICAL MOUNT",
        "ledger: 3 active row(s)",
        "job 1001  released: 2 other job(s) still hold it",
        "job 1002  released: 1 other job(s) still hold it",
        "<- PHYSICAL UNMOUNT",
        "job 1003  released: it was the last holder",
        "ledger history of demo-target-",
        "summary: 3 jobs, 1 physical mount, 1 physical unmount, nothing left mounted"
      ].map((part) => out.indexOf(part))
      assert.notInclude(order, -1, out)
      assert.deepStrictEqual(order, [...order].sort((a, b) => a - b), out)
      assert.match(out, /ID\s+JOB\s+TARGET\s+HOST\s+MOUNTED\s+DELETED\s+CREATED \(UTC\)\s+UPDATED \(UTC\)\s+DELETED AT \(UTC\)\s+VERSION/)
      if (out.includes("driver: bind mounts")) {
        assert.match(out, /backups in the target directory .*: backup-job-1001\.img, backup-job-1002\.img, backup-job-1003\.img/)
      }
      assert.deepStrictEqual(mountPointsUnder(home), [], "nothing left mounted")
    }), 90_000)

  it.scoped("where mounting is not wanted or permitted, the demo says it uses plain directories, and still exits 0", () =>
    Effect.gen(function*() {
      const home = yield* demoHome
      const r = yield* exec("npm", ["run", "demo", "--", "--driver", "directory"], { env: cleanEnv(home), timeoutMs: 90_000 })
      assert.strictEqual(r.code, 0, show(r))
      assert.include(r.stdout, "driver: plain directories, NOT real mounts (chosen with --driver directory)")
      assert.strictEqual(count(r.stdout, "<- PHYSICAL MOUNT"), 1, r.stdout)
      assert.strictEqual(count(r.stdout, "<- PHYSICAL UNMOUNT"), 1, r.stdout)
      assert.include(r.stdout, "summary: 3 jobs, 1 physical mount, 1 physical unmount, nothing left mounted")
      assert.deepStrictEqual(mountPointsUnder(home), [])
    }), 90_000)

  layer(TestDatabaseLive, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("with DMS_DB_URL and DMS_RABBITMQ_URL set, the demo runs against the real services and a running server", () =>
      Effect.gen(function*() {
        const db = yield* TestDatabase
        const home = yield* demoHome
        const host = uniqueHost("demo")
        const server = yield* modelServer(host)
        const env = cleanEnv(home, { DMS_DB_URL: db.url, DMS_RABBITMQ_URL: RABBIT_URL })
        const r = yield* exec("npm", ["run", "demo", "--", "--host", host], { env, timeoutMs: 90_000 })
        assert.strictEqual(r.code, 0, show(r))
        assert.include(r.stdout, `ledger   ${db.url}`)
        assert.include(r.stdout, "broker   amqp://guest:***@127.0.0.1:5672")
        assert.include(r.stdout, `server   the DMS server of host ${host} (queue dms.${host})`)
        assert.include(r.stdout, "summary: 3 jobs, 1 physical mount, 1 physical unmount")
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        const rows = yield* db.query<Array<{ jobid: number; mounted: number }>>(
          "SELECT jobid, mounted FROM backup_target_mount_ledger ORDER BY jobid"
        )
        assert.deepStrictEqual(rows.map((row) => [row.jobid, row.mounted]), [[1001, 0], [1002, 0], [1003, 0]])
        assert.isFalse(fs.existsSync(path.join(home, ".trilio-dms", "demo", "ledger.db")), "no SQLite file with a real database")
      }), 90_000)
  })
})
