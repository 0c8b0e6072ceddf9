/**
 * The ledger's tables: the DDL of both backends (the MySQL one from schema.sql), the columns this client
 * needs, and the check (and creation) of the tables.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { DatabaseError } from "../DmsError.js"
import { type Dialect, sqliteNow, sqliteNowSeconds, type Statements, toDatabaseError, truthy } from "./sqlDialect.js"

export const LEDGER_TABLE = "backup_target_mount_ledger"
export const LOCK_TABLE = "backup_target_mount_lock"

/**
 * The MySQL DDL: the statements of schema.sql (shipped with the package, two levels above this module
 * in src/ and in dist/): the guide's ledger table exactly as written there, and our lock table.
 */
export const mysqlDdl: ReadonlyArray<string> = fs
  .readFileSync(new URL("../../schema.sql", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => !line.trimStart().startsWith("--"))
  .join("\n")
  .split(";")
  .map((statement) => statement.trim())
  .filter((statement) => statement !== "")


export const sqliteDdl: ReadonlyArray<string> = [
  `CREATE TABLE IF NOT EXISTS backup_target_mount_ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL DEFAULT (${sqliteNowSeconds}),
    updated_at TEXT NOT NULL DEFAULT (${sqliteNowSeconds}),
    deleted_at TEXT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    version VARCHAR(32),
    backup_target_id VARCHAR(255) NOT NULL,
    jobid INTEGER NOT NULL,
    host VARCHAR(255) NOT NULL,
    mounted INTEGER NOT NULL DEFAULT 0
  )`,
  `CREATE INDEX IF NOT EXISTS idx_backup_target_id ON backup_target_mount_ledger (backup_target_id)`,
  `CREATE INDEX IF NOT EXISTS idx_jobid ON backup_target_mount_ledger (jobid)`,
  `CREATE INDEX IF NOT EXISTS idx_host ON backup_target_mount_ledger (host)`,
  `CREATE INDEX IF NOT EXISTS idx_job_target ON backup_target_mount_ledger (jobid, backup_target_id)`,
  `CREATE INDEX IF NOT EXISTS idx_mounted_host ON backup_target_mount_ledger (mounted, host)`,
  `CREATE INDEX IF NOT EXISTS idx_deleted ON backup_target_mount_ledger (deleted)`,
  `CREATE TABLE IF NOT EXISTS backup_target_mount_lock (
    lock_key TEXT NOT NULL PRIMARY KEY,
    backup_target_id VARCHAR(255) NOT NULL,
    host VARCHAR(255) NOT NULL,
    mount_path TEXT NULL,
    target_type TEXT NULL,
    owner TEXT NULL,
    expires_at TEXT NULL,
    pending_op TEXT NULL,
    pending_deadline TEXT NULL,
    waiter TEXT NULL,
    waiter_at TEXT NULL,
    updated_at TEXT NOT NULL DEFAULT (${sqliteNow}),
    pending_owner TEXT NULL,
    pending_path TEXT NULL,
    pending_type TEXT NULL,
    last_write TEXT NULL
  )`,
  `CREATE INDEX IF NOT EXISTS idx_lock_host ON backup_target_mount_lock (host)`
]

const ledgerColumns = [
  "id",
  "created_at",
  "updated_at",
  "deleted_at",
  "deleted",
  "version",
  "backup_target_id",
  "jobid",
  "host",
  "mounted"
] as const
const lockColumns = [
  "lock_key",
  "backup_target_id",
  "host",
  "mount_path",
  "target_type",
  "owner",
  "expires_at",
  "pending_op",
  "pending_deadline",
  "waiter",
  "waiter_at"
] as const
/** Lock columns added after 0.1.0's first tables: added to an existing table by {@link migrate}. */
const addedLockColumns: ReadonlyArray<readonly [string, string, string]> = [
  ["pending_owner", "CHAR(36) NULL", "TEXT NULL"],
  ["pending_path", "VARCHAR(4096) NULL", "TEXT NULL"],
  ["pending_type", "VARCHAR(8) NULL", "TEXT NULL"],
  ["last_write", "CHAR(36) NULL", "TEXT NULL"]
]

/**
 * Creates the tables if missing and checks that existing ones have our shape. The Python client's ledger
 * (keyed by jobid, backup_target_id, host) is refused: it cannot be shared.
 */
export const migrate = (sql: Statements, dialect: Dialect): Effect.Effect<void, DatabaseError> =>
  Effect.gen(function*() {
    const columnsOf = (table: string) =>
      sql.query(
        dialect.name === "mysql"
          ? `SELECT COLUMN_NAME AS name, (COLUMN_KEY = 'PRI') AS pk
              FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`
          : `SELECT name, pk FROM pragma_table_info(?)`,
        [table]
      ) as Effect.Effect<ReadonlyArray<{ name: string; pk: unknown }>, SqlError>
    const check = (table: string, expected: ReadonlyArray<string>, primaryKey: string) =>
      Effect.gen(function*() {
        const cols = yield* columnsOf(table)
        if (cols.length === 0) return [] // created below
        const names = new Set(cols.map((c) => String(c.name).toLowerCase()))
        const pk = cols.filter((c) => truthy(c.pk) || Number(c.pk) > 0).map((c) => String(c.name).toLowerCase())
        const missing = expected.filter((c) => !names.has(c))
        if (pk.length !== 1 || pk[0] !== primaryKey) {
          const python = table === LEDGER_TABLE && ["jobid", "backup_target_id", "host"].every((c) => pk.includes(c))
          return yield* Effect.fail(
            new DatabaseError({
              operation: "schema check",
              reason: python
                ? `table ${table} has the primary key (${pk.join(", ")}): it is the Python trilio-dms client's ledger, ` +
                  `which this client cannot share (it keys rows by id and keeps history). Point DMS_DB_URL at another ` +
                  `database, or migrate the rows into the schema of schema.sql`
                : `table ${table} has the primary key (${pk.join(", ") || "none"}), expected (${primaryKey}); ` +
                  `create it from schema.sql`
            })
          )
        }
        if (missing.length > 0) {
          return yield* Effect.fail(
            new DatabaseError({
              operation: "schema check",
              reason: `table ${table} lacks the column(s) ${missing.join(", ")}; create it from schema.sql`
            })
          )
        }
        return [...names]
      })
    // Check existing tables before any DDL: an index on a foreign table's missing column would fail
    // with a less helpful message.
    yield* check(LEDGER_TABLE, ledgerColumns, "id")
    const lockHas = yield* check(LOCK_TABLE, lockColumns, "lock_key")
    if (lockHas.length > 0) {
      for (const [column, mysqlType, sqliteType] of addedLockColumns) {
        if (!lockHas.includes(column)) {
          yield* sql.run(`ALTER TABLE ${LOCK_TABLE} ADD COLUMN ${column} ${dialect.name === "mysql" ? mysqlType : sqliteType}`, [])
        }
      }
    }
    for (const statement of dialect.name === "mysql" ? mysqlDdl : sqliteDdl) yield* sql.run(statement, [])
  }).pipe(Effect.mapError((e) => (e instanceof DatabaseError ? e : toDatabaseError("schema check")(e))))
