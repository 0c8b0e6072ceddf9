/**
 * Schema changes only in `migrate`: a client start runs no DDL (it finds a missing or outdated table and
 * says to run `trilio-dms migrate`), `Ledger.migrate` creates or upgrades the tables, idempotently and
 * safely from two processes at once, and a client works with SELECT, INSERT and UPDATE on the two tables.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { randomBytes } from "node:crypto"
import * as path from "node:path"
import mysql from "mysql2/promise"
import * as Dms from "../src/Dms.js"
import { DatabaseError } from "../src/DmsError.js"
import * as Ledger from "../src/Ledger.js"
import * as Mount from "../src/Mount.js"
import { tempDir } from "./support/backends.js"
import * as FakeServer from "./support/fakeServer.js"
import { adminConnection, MYSQL_HOST, MYSQL_PORT, TestDatabase, TestDatabaseEmpty, TestDatabaseLive } from "./support/mysql.js"
import { guideNfs } from "./support/requests.js"

const LEDGER = "backup_target_mount_ledger"
const LOCK = "backup_target_mount_lock"
const ADDED = ["pending_owner", "pending_path", "pending_type", "last_write"]
const ADDED_LEDGER_INDEXES = ["idx_active", "idx_target_mounted", "idx_target_created"]
const ADDED_LOCK_INDEXES = ["idx_lock_host_target"]

const build = <E>(layer: Layer.Layer<Ledger.Ledger, E>) => Layer.build(layer).pipe(Effect.map(Context.get(Ledger.Ledger)))
const database = (layer: typeof TestDatabaseLive) => Effect.map(Layer.build(layer), Context.get(TestDatabase))
type Db = Context.Tag.Service<TestDatabase>

/** Every table, column (with its type) and index of the test database: what a failed start must not change. */
const shape = (db: Db, schema = db.name) =>
  Effect.map(
    Effect.zip(
      db.query<Array<unknown>>(
        `SELECT TABLE_NAME, COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, COLUMN_DEFAULT, COLUMN_KEY
           FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION`,
        [schema]
      ),
      db.query<Array<unknown>>(
        `SELECT TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME FROM information_schema.STATISTICS
           WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX`,
        [schema]
      )
    ),
    (both) => JSON.parse(JSON.stringify(both)) as unknown
  )

/** The lock table as 0.1.0 first made it: without the columns added since. */
const oldLockTable = (db: Db) =>
  Effect.gen(function*() {
    yield* db.query(`DROP TABLE ${LOCK}`)
    yield* db.query(`CREATE TABLE ${LOCK} (
      lock_key CHAR(40) NOT NULL PRIMARY KEY, backup_target_id VARCHAR(255) NOT NULL, host VARCHAR(255) NOT NULL,
      mount_path VARCHAR(4096) NULL, target_type VARCHAR(8) NULL, owner CHAR(36) NULL, expires_at DATETIME(3) NULL,
      pending_op VARCHAR(16) NULL, pending_deadline DATETIME(3) NULL, waiter CHAR(36) NULL, waiter_at DATETIME(3) NULL,
      updated_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
      INDEX idx_lock_host (host))`)
    yield* db.query(`INSERT INTO ${LOCK} (lock_key, backup_target_id, host, mount_path) VALUES (REPEAT('a', 40), 'old', 'h', '/m/old')`)
  })

const actions = (report: Ledger.MigrationReport) => report.tables.map((t) => [t.table, t.action, [...t.addedColumns]])
const indexActions = (report: Ledger.MigrationReport) => report.tables.map((t) => [t.table, t.action, [...t.addedIndexes]])

/** A migrate that finds nothing to do, then a client that starts and writes. */
const currentAndUsable = (db: Db) =>
  Effect.gen(function*() {
    const again = yield* Ledger.migrate({ url: db.url })
    assert.deepStrictEqual(actions(again), [[LEDGER, "current", []], [LOCK, "current", []]])
    const ledger = yield* build(Ledger.layerMysql({ url: db.url }))
    yield* ledger.withTargetLock("t1", "h1", (lease) => lease.write({ job: { jobId: 1, mounted: true } }))
    assert.strictEqual((yield* ledger.getActiveMounts()).length, 1)
  })

describe("Ledger.migrate and the client's schema check (MySQL)", () => {
  it.scoped("a client start on an empty database fails, saying to run trilio-dms migrate, and creates nothing", () =>
    Effect.gen(function*() {
      const db = yield* database(TestDatabaseEmpty)
      const error = yield* Effect.flip(build(Ledger.layerMysql({ url: db.url })))
      assert.instanceOf(error, DatabaseError)
      assert.include(error.message, `tables ${LEDGER}, ${LOCK} do not exist in database ${db.name}`)
      assert.include(error.message, "run `trilio-dms migrate`")
      const tables = yield* db.query<Array<unknown>>("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?", [db.name])
      assert.deepStrictEqual(tables, [])
      // The same through the URL layer, which the CLI and the Promise client use.
      const viaUrl = yield* Effect.flip(build(Ledger.layerFromUrl(db.url)))
      assert.include(viaUrl.message, "do not exist")
    }))

  it.scoped("creates both tables on an empty database, then reports them current", () =>
    Effect.gen(function*() {
      const db = yield* database(TestDatabaseEmpty)
      const first = yield* Ledger.migrate({ url: db.url })
      assert.deepStrictEqual(actions(first), [[LEDGER, "created", []], [LOCK, "created", []]])
      assert.strictEqual(first.location, db.url)
      yield* currentAndUsable(db)
    }))

  it.scoped("an outdated lock table: a client start names the missing columns and changes nothing; migrate adds them", () =>
    Effect.gen(function*() {
      const db = yield* database(TestDatabaseLive)
      const fresh = yield* database(TestDatabaseLive)
      yield* oldLockTable(db)
      const before = yield* shape(db)
      const error = yield* Effect.flip(build(Ledger.layerMysql({ url: db.url })))
      assert.instanceOf(error, DatabaseError)
      assert.include(error.message, `table ${LOCK} is outdated (lacks the column(s) ${ADDED.join(", ")})`)
      assert.include(error.message, "run `trilio-dms migrate`")
      assert.deepStrictEqual(yield* shape(db), before)

      const report = yield* Ledger.migrate({ url: db.url })
      assert.deepStrictEqual(actions(report), [[LEDGER, "current", []], [LOCK, "upgraded", ADDED]])
      // The upgraded table is the one a fresh migrate makes, and keeps its rows.
      assert.deepStrictEqual(yield* shape(db), yield* shape(db, fresh.name))
      const [old] = yield* db.query<Array<{ mount_path: string }>>(`SELECT mount_path FROM ${LOCK} WHERE backup_target_id = 'old'`)
      assert.strictEqual(old?.mount_path, "/m/old")
      yield* currentAndUsable(db)
    }))

  it.scoped("tables without the indexes added since: a client starts on them, and migrate adds the indexes, keeping the rows", () =>
    Effect.gen(function*() {
      const db = yield* database(TestDatabaseLive)
      const fresh = yield* database(TestDatabaseLive)
      for (const index of ADDED_LEDGER_INDEXES) yield* db.query(`DROP INDEX ${index} ON ${LEDGER}`)
      for (const index of ADDED_LOCK_INDEXES) yield* db.query(`DROP INDEX ${index} ON ${LOCK}`)
      yield* db.query(`INSERT INTO ${LEDGER} (backup_target_id, jobid, host, mounted) VALUES ('old', 9, 'h', 0)`)
      // Slower on a large ledger, not wrong: a client does not check indexes.
      const ledger = yield* build(Ledger.layerMysql({ url: db.url }))
      assert.lengthOf(yield* ledger.getLedgerHistory("old"), 1)

      const report = yield* Ledger.migrate({ url: db.url })
      assert.deepStrictEqual(indexActions(report), [[LEDGER, "upgraded", ADDED_LEDGER_INDEXES], [LOCK, "upgraded", ADDED_LOCK_INDEXES]])
      assert.deepStrictEqual(actions(report), [[LEDGER, "upgraded", []], [LOCK, "upgraded", []]])
      assert.deepStrictEqual(yield* shape(db), yield* shape(db, fresh.name))
      assert.lengthOf(yield* ledger.getLedgerHistory("old"), 1)
      assert.deepStrictEqual(indexActions(yield* Ledger.migrate({ url: db.url })), [[LEDGER, "current", []], [LOCK, "current", []]])
    }))

  it.scoped("two concurrent migrates of an empty database both succeed, each table created once", () =>
    Effect.gen(function*() {
      const db = yield* database(TestDatabaseEmpty)
      const fresh = yield* database(TestDatabaseLive)
      const [a, b] = yield* Effect.all([Ledger.migrate({ url: db.url }), Ledger.migrate({ url: db.url })], { concurrency: 2 })
      for (const table of [LEDGER, LOCK]) {
        const made = [a, b].map((r) => r.tables.find((t) => t.table === table)?.action).sort()
        // Whichever way they interleave: one created it, the other found it (or lost the race to it).
        assert.deepStrictEqual(made, ["created", "current"], table)
      }
      assert.deepStrictEqual(yield* shape(db), yield* shape(db, fresh.name))
    }))

  it.scopedLive("two migrates that both found a column missing both succeed, and each column is added once", () =>
    Effect.gen(function*() {
      const db = yield* database(TestDatabaseLive)
      const fresh = yield* database(TestDatabaseLive)
      yield* oldLockTable(db)
      // A reader's open transaction holds the table's metadata lock: both migrates inspect the table,
      // then wait in their first ALTER until it ends.
      const reader = yield* Effect.acquireRelease(
        Effect.promise(() => mysql.createConnection({ host: MYSQL_HOST, port: MYSQL_PORT, user: "root", database: db.name })),
        (c) => Effect.promise(() => c.end().catch(() => undefined))
      )
      yield* Effect.promise(() => reader.query(`BEGIN`).then(() => reader.query(`SELECT * FROM ${LOCK}`)))
      const both = yield* Effect.fork(Effect.all([Ledger.migrate({ url: db.url }), Ledger.migrate({ url: db.url })], { concurrency: 2 }))
      const admin = yield* adminConnection()
      yield* Effect.promise(() =>
        admin.query(
          `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST
            WHERE DB = ? AND STATE = 'Waiting for table metadata lock' AND INFO LIKE 'ALTER TABLE ${LOCK} ADD COLUMN pending_owner %'`,
          [db.name]
        ).then(([rows]) => Number((rows as Array<{ n: number }>)[0]?.n))
      ).pipe(Effect.repeat({ until: (n) => n === 2, schedule: Schedule.spaced("20 millis") }))
      yield* Effect.promise(() => reader.query("COMMIT"))
      const [a, b] = yield* Fiber.join(both)
      const added = [a, b].map((r) => r.tables.find((t) => t.table === LOCK)!.addedColumns)
      assert.deepStrictEqual([...added[0]!, ...added[1]!].sort(), [...ADDED].sort())
      assert.isTrue(added[0]!.includes("pending_owner") !== added[1]!.includes("pending_owner"))
      assert.deepStrictEqual(yield* shape(db), yield* shape(db, fresh.name))
    }), { timeout: 60_000 })

  it.scoped("a user with only SELECT, INSERT and UPDATE on the two tables mounts and unmounts, and may not migrate", () =>
    Effect.gen(function*() {
      const db = yield* database(TestDatabaseLive)
      const admin = yield* adminConnection()
      const user = `dms_lp_${randomBytes(4).toString("hex")}`
      const password = randomBytes(8).toString("hex")
      yield* Effect.acquireRelease(
        Effect.promise(async () => {
          await admin.query(`CREATE USER '${user}'@'%' IDENTIFIED BY '${password}'`)
          for (const table of [LEDGER, LOCK]) await admin.query(`GRANT SELECT, INSERT, UPDATE ON \`${db.name}\`.${table} TO '${user}'@'%'`)
        }),
        () => Effect.promise(() => admin.query(`DROP USER IF EXISTS '${user}'@'%'`).catch(() => undefined))
      )
      const url = `mysql://${user}:${password}@${MYSQL_HOST}:${MYSQL_PORT}/${db.name}`
      const server = FakeServer.make()
      const client = Dms.layer({ dbUrl: url, rabbitmqUrl: "memory:", server: server.handler })
      const job = (jobid: number) => guideNfs({ jobid })
      yield* Effect.gen(function*() {
        assert.isTrue((yield* Mount.mount(job(1))).physicallyMounted)
        assert.isFalse((yield* Mount.mount(job(2))).physicallyMounted)
        yield* Mount.unmount(job(2))
        yield* Mount.unmount(job(1))
        assert.deepStrictEqual(yield* Mount.getActiveMounts(), [])
        assert.isTrue(yield* Mount.softDeleteEntry(1, job(1).backup_target.id))
        assert.isTrue(Option.isNone(yield* Mount.getMountStatus(1, job(1).backup_target.id)))
      }).pipe(Effect.provide(client))
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
      const rows = yield* db.query<Array<{ jobid: number; mounted: number; deleted: number }>>(
        `SELECT jobid, mounted, deleted FROM ${LEDGER} ORDER BY jobid`
      )
      assert.deepStrictEqual(rows.map((r) => [r.jobid, r.mounted, r.deleted]), [[1, 0, 1], [2, 0, 0]])

      // Nothing to do: migrate only reads.
      assert.deepStrictEqual(actions(yield* Ledger.migrate({ url })), [[LEDGER, "current", []], [LOCK, "current", []]])
      // A table to create: this user may not.
      yield* db.query(`DROP TABLE ${LOCK}`)
      const start = yield* Effect.flip(build(Ledger.layerMysql({ url })))
      assert.include(start.message, `table ${LOCK} does not exist in database ${db.name}`)
      const refused = yield* Effect.flip(Ledger.migrate({ url }))
      assert.instanceOf(refused, DatabaseError)
      assert.include(refused.message, "CREATE command denied")
      assert.include(refused.message, "run it as a user with CREATE, ALTER and INDEX")
      assert.notInclude(refused.message, password)

      // The README's migration user: CREATE, ALTER, INDEX and SELECT on the database suffice.
      const migrator = `${user}_m`
      yield* Effect.acquireRelease(
        Effect.promise(async () => {
          await admin.query(`CREATE USER '${migrator}'@'%' IDENTIFIED BY '${password}'`)
          await admin.query(`GRANT CREATE, ALTER, INDEX, SELECT ON \`${db.name}\`.* TO '${migrator}'@'%'`)
        }),
        () => Effect.promise(() => admin.query(`DROP USER IF EXISTS '${migrator}'@'%'`).catch(() => undefined))
      )
      const migratorUrl = `mysql://${migrator}:${password}@${MYSQL_HOST}:${MYSQL_PORT}/${db.name}`
      assert.deepStrictEqual(actions(yield* Ledger.migrate({ url: migratorUrl })), [[LEDGER, "current", []], [LOCK, "created", []]])
      yield* db.query(`ALTER TABLE ${LOCK} DROP COLUMN last_write`)
      assert.deepStrictEqual(actions(yield* Ledger.migrate({ url: migratorUrl })), [[LEDGER, "current", []], [LOCK, "upgraded", ["last_write"]]])
      // The client user's table grants outlived the table: it starts again.
      yield* build(Ledger.layerMysql({ url }))
    }), { timeout: 60_000 })

  it("refuses a bad URL before any I/O", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Ledger.migrate({ url: "postgres://x/y" }))
      assert.strictEqual(error._tag, "ValidationError")
    }).pipe(Effect.runPromise))
})

/** An SQLite ledger file whose tables, once made, were changed by `statements`: as an older version left them. */
const olderSqlite = (name: string, statements: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const filename = path.join(yield* tempDir, name)
    yield* build(Ledger.layerSqlite({ filename }))
    const { default: Database } = yield* Effect.promise(() => import("better-sqlite3"))
    const sqlite = new Database(filename)
    for (const statement of statements) sqlite.exec(statement)
    sqlite.close()
    return filename
  })

describe("SQLite: the embedded ledger migrates on open unless told not to", () => {
  it.scoped("creates its tables by default; with migrate: false a client start only checks", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const checked = path.join(dir, "checked.db")
      const error = yield* Effect.flip(build(Ledger.layerSqlite({ filename: checked, migrate: false })))
      assert.include(error.message, "run `trilio-dms migrate`")
      const report = yield* Ledger.migrate({ url: `sqlite:${checked}` })
      assert.deepStrictEqual(actions(report), [[LEDGER, "created", []], [LOCK, "created", []]])
      yield* build(Ledger.layerSqlite({ filename: checked, migrate: false }))

      const opened = path.join(dir, "opened.db")
      yield* build(Ledger.layerSqlite({ filename: opened }))
      assert.deepStrictEqual(actions(yield* Ledger.migrate({ url: `sqlite:${opened}` })), [[LEDGER, "current", []], [LOCK, "current", []]])
    }))

  it.scoped("adds the new indexes to older tables", () =>
    Effect.gen(function*() {
      const filename = yield* olderSqlite("old-indexes.db", [...ADDED_LEDGER_INDEXES, ...ADDED_LOCK_INDEXES].map((i) => `DROP INDEX ${i}`))
      const report = yield* Ledger.migrate({ url: `sqlite:${filename}` })
      assert.deepStrictEqual(indexActions(report), [[LEDGER, "upgraded", ADDED_LEDGER_INDEXES], [LOCK, "upgraded", ADDED_LOCK_INDEXES]])
      assert.deepStrictEqual(indexActions(yield* Ledger.migrate({ url: `sqlite:${filename}` })), [[LEDGER, "current", []], [LOCK, "current", []]])
    }))

  it.scoped("adds the new columns to an older lock table", () =>
    Effect.gen(function*() {
      const filename = yield* olderSqlite("old.db", ADDED.map((column) => `ALTER TABLE ${LOCK} DROP COLUMN ${column}`))
      const error = yield* Effect.flip(build(Ledger.layerSqlite({ filename, migrate: false })))
      assert.include(error.message, `lacks the column(s) ${ADDED.join(", ")}`)
      const report = yield* Ledger.migrate({ url: `sqlite:${filename}` })
      assert.deepStrictEqual(actions(report), [[LEDGER, "current", []], [LOCK, "upgraded", ADDED]])
    }))
})
