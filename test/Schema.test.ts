/**
 * schema.sql: the guide's ledger table exactly, loadable with the mysql client, identical to what the
 * library creates; a ledger table of another shape (the Python client's) is refused with a clear message.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { DatabaseError } from "../src/DmsError.js"
import * as Ledger from "../src/Ledger.js"
import { VERSION } from "../src/internal/version.js"
import { mysqlStateReadText } from "../src/internal/sqlStore.js"
import { tempDir } from "./support/backends.js"
import { MYSQL_HOST, MYSQL_PORT, TestDatabase, TestDatabaseEmpty, TestDatabaseLive } from "./support/mysql.js"

const root = path.resolve(import.meta.dirname, "..")
const normalize = (sql: string) => sql.replace(/\s+/g, " ").replace(/\( /g, "(").replace(/ \)/g, ")").trim()
const ledgerDdl = (text: string) => /CREATE TABLE (IF NOT EXISTS )?backup_target_mount_ledger \([\s\S]*?\n\);/.exec(text)?.[0]

const PYTHON_LEDGER = `CREATE TABLE backup_target_mount_ledger (
  jobid INT NOT NULL, backup_target_id VARCHAR(255) NOT NULL, host VARCHAR(255) NOT NULL,
  mounted BOOLEAN NOT NULL DEFAULT FALSE, created_at DATETIME, updated_at DATETIME,
  PRIMARY KEY (jobid, backup_target_id, host))`

const build = (layer: Layer.Layer<Ledger.Ledger, unknown>) =>
  Layer.build(layer).pipe(Effect.map(Context.get(Ledger.Ledger)))

describe("schema.sql", () => {
  it("declares the guide's ledger table exactly as written there", () => {
    const guide = fs.readFileSync(path.join(root, "test/fixtures/guide-ledger-ddl.sql"), "utf8")
    const ours = ledgerDdl(fs.readFileSync(path.join(root, "schema.sql"), "utf8"))
    const theirs = ledgerDdl(guide)
    assert.isDefined(ours)
    assert.isDefined(theirs)
    assert.strictEqual(normalize(ours!.replace("IF NOT EXISTS ", "")), normalize(theirs!))
  })

  it("stamps rows with the package's own version", () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as { version: string }
    assert.strictEqual(VERSION, pkg.version)
    assert.isAtMost(VERSION.length, 32, "fits the version column")
  })

  it.scoped("loads with the mysql client and matches what Ledger.migrate creates", () =>
    Effect.gen(function*() {
      const loaded = Context.get(yield* Layer.build(TestDatabaseEmpty), TestDatabase)
      const created = Context.get(yield* Layer.build(TestDatabaseEmpty), TestDatabase)
      execFileSync("mysql", ["-h", MYSQL_HOST, "-P", String(MYSQL_PORT), "-u", "root", loaded.name], {
        input: fs.readFileSync(path.join(root, "schema.sql"))
      })
      // The library accepts the tables schema.sql made, and writes to them.
      const ledger = yield* build(Ledger.layerMysql({ url: loaded.url }))
      yield* ledger.withTargetLock("t1", "h1", (lease) => lease.write({ job: { jobId: 1, mounted: true } }))
      const [row] = yield* loaded.query<Array<{ version: string; mounted: number }>>("SELECT version, mounted FROM backup_target_mount_ledger")
      assert.deepStrictEqual({ ...row }, { version: VERSION, mounted: 1 })

      yield* Ledger.migrate({ url: created.url })
      yield* build(Ledger.layerMysql({ url: created.url }))
      const shape = (db: string) =>
        loaded.query<Array<unknown>>(
          `SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA, COLUMN_KEY
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION`,
          [db]
        ).pipe(Effect.zip(loaded.query<Array<unknown>>(
          `SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NON_UNIQUE
             FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX`,
          [db]
        )))
      const [a, b] = [yield* shape(loaded.name), yield* shape(created.name)]
      assert.deepStrictEqual(JSON.parse(JSON.stringify(a)), JSON.parse(JSON.stringify(b)))
      const indexes = (table: string) =>
        new Set((a[1] as Array<{ TABLE_NAME: string; INDEX_NAME: string }>).filter((i) => i.TABLE_NAME === table)
          .map((i) => i.INDEX_NAME).filter((n) => n.startsWith("idx_")))
      assert.strictEqual(indexes("backup_target_mount_ledger").size, 9)
      assert.deepStrictEqual([...indexes("backup_target_mount_lock")], ["idx_lock_host", "idx_lock_host_target"])
    }))

  it.scoped("a lease's state read uses the pair's indexes on a ledger with 100,000 history rows", () =>
    Effect.gen(function*() {
      const db = Context.get(yield* Layer.build(TestDatabaseLive), TestDatabase)
      const ledger = yield* build(Ledger.layerMysql({ url: db.url }))
      // History of other targets and hosts (1 % active), as a ledger accumulates it, and one holder.
      yield* db.query(`INSERT INTO backup_target_mount_ledger (backup_target_id, jobid, host, mounted, version)
        SELECT CONCAT('t', seq % 1000), seq, CONCAT('h', seq % 100), seq % 100 = 0, 'x' FROM seq_1_to_100000`)
      yield* ledger.withTargetLock("t7", "h7", (lease) => lease.write({ job: { jobId: 1, mounted: true } }))
      yield* db.query("ANALYZE TABLE backup_target_mount_ledger")
      const params = ["a".repeat(40), "h7", "t7", 5, "t7", "h7"]
      const [plan] = yield* db.query<Array<{ EXPLAIN: string }>>(`EXPLAIN FORMAT=JSON ${mysqlStateReadText()}`, params)
      // The indexes the optimizer may use for each table access, and those it chose.
      const possible: Array<string> = []
      const used: Array<string> = []
      JSON.parse(plan!.EXPLAIN, (k, v) => {
        if (k === "possible_keys" && Array.isArray(v)) possible.push(...v)
        if (k === "key" && typeof v === "string") used.push(v)
        return v
      })
      // idx_deleted must not even be a candidate: an intersection with it (deleted = 0 on nearly every
      // row) scans the whole history; which plan MariaDB picks depends on its statistics of the day.
      assert.notInclude(possible, "idx_deleted")
      // The holders by the host's or the target's active rows, the job's row by its id: a few rows each.
      assert.isTrue(used.some((k) => k === "idx_mounted_host" || k === "idx_target_mounted"), used.join(", "))
      assert.isTrue(used.some((k) => k === "idx_jobid" || k === "idx_job_target"), used.join(", "))
      const state = yield* ledger.withTargetLock("t7", "h7", (lease) => lease.read(1))
      assert.deepStrictEqual(state.holders.map((h) => h.jobId), [1])
    }))

  it.scoped("refuses the Python client's ledger table on MySQL, naming it", () =>
    Effect.gen(function*() {
      const db = Context.get(yield* Layer.build(TestDatabaseEmpty), TestDatabase)
      yield* db.query(PYTHON_LEDGER)
      const error = yield* Effect.flip(build(Ledger.layerMysql({ url: db.url })))
      assert.instanceOf(error, DatabaseError)
      assert.include(error.message, "Python")
      assert.include(error.message, "(jobid, backup_target_id, host)")
      // migrate refuses it too, before creating anything.
      const refused = yield* Effect.flip(Ledger.migrate({ url: db.url }))
      assert.include(refused.message, "Python")
      const tables = yield* db.query<Array<{ name: string }>>(
        "SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
      )
      assert.deepStrictEqual(tables.map((t) => t.name), ["backup_target_mount_ledger"])
    }))

  it.scoped("refuses the Python client's ledger table and a table missing columns on SQLite", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const { default: Database } = yield* Effect.promise(() => import("better-sqlite3"))
      const python = path.join(dir, "python.db")
      const db = new Database(python)
      db.exec(PYTHON_LEDGER)
      db.close()
      const e1: unknown = yield* Effect.flip(build(Ledger.layerSqlite({ filename: python })))
      assert.include(String((e1 as Error).message), "Python")
      const partial = path.join(dir, "partial.db")
      const db2 = new Database(partial)
      db2.exec("CREATE TABLE backup_target_mount_ledger (id INTEGER PRIMARY KEY, jobid INT, host TEXT)")
      db2.close()
      const e2: unknown = yield* Effect.flip(build(Ledger.layerSqlite({ filename: partial })))
      assert.match(String((e2 as Error).message), /lacks the column\(s\) created_at, .*mounted/)
    }))

  it.scoped("fails with a DatabaseError naming the server when MySQL cannot be reached", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(build(Ledger.layerMysql({ url: "mysql://root:pw@127.0.0.1:1/x" })))
      assert.instanceOf(error, DatabaseError)
      assert.include(error.message, "mysql://root:***@127.0.0.1:1/x")
      assert.notInclude(error.message, ":pw@")
    }))
})
