/**
 * The ledger's tables: the DDL of both backends (the MySQL one from schema.sql), the columns this client
 * needs, the read-only check a client runs when it starts, and the migration (`trilio-dms migrate`) that
 * creates or upgrades the tables. A client start runs no DDL: on Galera each `CREATE`/`ALTER` is a
 * cluster-wide schema change, and concurrent starts would race on an `ALTER`.
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import { DatabaseError } from "../DmsError.js"
import type { TableMigration } from "../Ledger.js"
import { type Dialect, errorCode, sqliteNow, sqliteNowSeconds, type Statements, toDatabaseError, truthy } from "./sqlDialect.js"

export const LEDGER_TABLE = "backup_target_mount_ledger"
export const LOCK_TABLE = "backup_target_mount_lock"

/**
 * The MySQL DDL: the statements of schema.sql (shipped with the package, two levels above this module
 * in src/ and in dist/): the guide's ledger table exactly as written there, our indexes on it, and our
 * lock table. Without
 * `IF NOT EXISTS`: a migration that loses a race to create a table must know it did not create it.
 */
export const mysqlDdl: ReadonlyArray<string> = fs
  .readFileSync(new URL("../../schema.sql", import.meta.url), "utf8")
  .split("\n")
  .filter((line) => !line.trimStart().startsWith("--"))
  .join("\n")
  .split(";")
  .map((statement) => statement.trim())
  .filter((statement) => statement !== "")
  .map((statement) => statement.replace(/^CREATE TABLE IF NOT EXISTS /i, "CREATE TABLE "))

/**
 * An index that came after 0.1.0's first tables (schema.sql has them too): migrate adds it to an older
 * table. Each serves a query that otherwise reads a row per history row on a ledger of years.
 */
interface Index {
  readonly name: string
  readonly columns: string
}

const addedIndexes: Readonly<Record<string, ReadonlyArray<Index>>> = {
  [LEDGER_TABLE]: [
    // getActiveMounts' pages in id order (the primary key completes every secondary index).
    { name: "idx_active", columns: "mounted, deleted" },
    // getActiveMounts({ backupTargetId }): the target's active rows, not its history.
    { name: "idx_target_mounted", columns: "backup_target_id, mounted" },
    // getLedgerHistory: a target's newest rows without sorting its history.
    { name: "idx_target_created", columns: "backup_target_id, created_at" }
  ],
  // purge's check of a row's (target, host) lease: one lock row, not every lock row of the host.
  [LOCK_TABLE]: [{ name: "idx_lock_host_target", columns: "host, backup_target_id" }]
}

const indexesOf = (table: string) =>
  (addedIndexes[table] ?? []).map((i) => `CREATE INDEX IF NOT EXISTS ${i.name} ON ${table} (${i.columns})`)

/** The SQLite DDL, equivalent to schema.sql. */
export const sqliteDdl: ReadonlyArray<string> = [
  `CREATE TABLE backup_target_mount_ledger (
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
  ...indexesOf(LEDGER_TABLE),
  `CREATE TABLE backup_target_mount_lock (
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
  `CREATE INDEX IF NOT EXISTS idx_lock_host ON backup_target_mount_lock (host)`,
  ...indexesOf(LOCK_TABLE)
]


/** A column of our tables; `added` ones came after 0.1.0's first tables, and migrate adds them to an older table. */
interface Column {
  readonly name: string
  readonly added?: { readonly mysql: string; readonly sqlite: string }
}

const ledgerColumns: ReadonlyArray<Column> = [
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
].map((name) => ({ name }))

const lockColumns: ReadonlyArray<Column> = [
  ...["lock_key", "backup_target_id", "host", "mount_path", "target_type", "owner", "expires_at", "pending_op",
    "pending_deadline", "waiter", "waiter_at"].map((name) => ({ name })),
  { name: "pending_owner", added: { mysql: "CHAR(36) NULL", sqlite: "TEXT NULL" } },
  { name: "pending_path", added: { mysql: "VARCHAR(4096) NULL", sqlite: "TEXT NULL" } },
  { name: "pending_type", added: { mysql: "VARCHAR(8) NULL", sqlite: "TEXT NULL" } },
  { name: "last_write", added: { mysql: "CHAR(36) NULL", sqlite: "TEXT NULL" } }
]

const tables: ReadonlyArray<{ readonly name: string; readonly primaryKey: string; readonly columns: ReadonlyArray<Column> }> = [
  { name: LEDGER_TABLE, primaryKey: "id", columns: ledgerColumns },
  { name: LOCK_TABLE, primaryKey: "lock_key", columns: lockColumns }
]
type Table = (typeof tables)[number]

/** A table as the database has it: missing, or its columns and primary key (lower case). */
type Found = { readonly exists: false } | {
  readonly exists: true
  readonly columns: ReadonlySet<string>
  readonly primaryKey: ReadonlyArray<string>
}

const inspect = (sql: Statements, dialect: Dialect, table: string) =>
  Effect.map(
    sql.query(
      dialect.name === "mysql"
        ? `SELECT COLUMN_NAME AS name, (COLUMN_KEY = 'PRI') AS pk
            FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`
        : `SELECT name, pk FROM pragma_table_info(?)`,
      [table]
    ) as Effect.Effect<ReadonlyArray<{ name: string; pk: unknown }>, SqlError>,
    (cols): Found =>
      cols.length === 0 ? { exists: false } : {
        exists: true,
        columns: new Set(cols.map((c) => String(c.name).toLowerCase())),
        primaryKey: cols.filter((c) => truthy(c.pk) || Number(c.pk) > 0).map((c) => String(c.name).toLowerCase())
      }
  )

const schemaError = (reason: string) => new DatabaseError({ operation: "schema check", reason })

/**
 * What is wrong with an existing table that migrate cannot repair (another primary key, or missing
 * columns that are not ours to add), and the columns migrate would add.
 */
const shapeOf = (table: Table, found: Extract<Found, { exists: true }>): Effect.Effect<ReadonlyArray<Column>, DatabaseError> => {
  const pk = found.primaryKey
  if (pk.length !== 1 || pk[0] !== table.primaryKey) {
    const python = table.name === LEDGER_TABLE && ["jobid", "backup_target_id", "host"].every((c) => pk.includes(c))
    return Effect.fail(schemaError(
      python
        ? `table ${table.name} has the primary key (${pk.join(", ")}): it is the Python trilio-dms client's ledger, ` +
          `which this client cannot share (it keys rows by id and keeps history). Point DMS_DB_URL at another ` +
          `database, or migrate the rows into the schema of schema.sql`
        : `table ${table.name} has the primary key (${pk.join(", ") || "none"}), expected (${table.primaryKey}); ` +
          `create it from schema.sql`
    ))
  }
  const missing = table.columns.filter((c) => !found.columns.has(c.name))
  const foreign = missing.filter((c) => c.added === undefined)
  if (foreign.length > 0) {
    return Effect.fail(schemaError(
      `table ${table.name} lacks the column(s) ${foreign.map((c) => c.name).join(", ")}, which \`trilio-dms migrate\` ` +
        `does not add: it was not made by trilio-dms; create it from schema.sql`
    ))
  }
  return Effect.succeed(missing)
}

const databaseName = (sql: Statements, dialect: Dialect) =>
  Effect.map(
    sql.query(
      dialect.name === "mysql" ? `SELECT DATABASE() AS name` : `SELECT file AS name FROM pragma_database_list WHERE name = 'main'`,
      []
    ),
    (rows) => String(rows[0]?.name ?? "") || "(in memory)"
  )

const RUN_MIGRATE = "run `trilio-dms migrate` (or `Ledger.migrate`, or load schema.sql) as a user that may create and alter tables"

/**
 * The read-only check a client runs when it starts (information_schema / pragma only, never DDL): both
 * tables exist with our primary keys and every column. A missing or outdated table fails with a
 * `DatabaseError` that says to run `trilio-dms migrate`; the Python client's ledger is refused.
 */
export const check = (sql: Statements, dialect: Dialect): Effect.Effect<void, DatabaseError> =>
  Effect.gen(function*() {
    const found = yield* Effect.forEach(tables, (t) => inspect(sql, dialect, t.name))
    const missingTables: Array<string> = []
    const outdated: Array<string> = []
    // Every shape error first: a foreign table (the Python ledger) matters more than a missing one.
    for (const [i, table] of tables.entries()) {
      const f = found[i]!
      if (!f.exists) missingTables.push(table.name)
      else {
        const add = yield* shapeOf(table, f)
        if (add.length > 0) outdated.push(`table ${table.name} is outdated (lacks the column(s) ${add.map((c) => c.name).join(", ")})`)
      }
    }
    if (missingTables.length > 0) {
      const database = yield* databaseName(sql, dialect)
      return yield* schemaError(
        `${missingTables.length === 1 ? "table" : "tables"} ${missingTables.join(", ")} ` +
          `${missingTables.length === 1 ? "does" : "do"} not exist in database ${database}: ${RUN_MIGRATE}`
      )
    }
    if (outdated.length > 0) return yield* schemaError(`${outdated.join("; ")}: ${RUN_MIGRATE}`)
  }).pipe(Effect.mapError(toDatabaseError("schema check")))

const isTableExists = (dialect: Dialect) => (e: unknown): boolean =>
  dialect.name === "mysql"
    ? errorCodeOf(e) === "ER_TABLE_EXISTS_ERROR"
    : /already exists/.test(messageOf(e))
const isDuplicateColumn = (dialect: Dialect) => (e: unknown): boolean =>
  dialect.name === "mysql" ? errorCodeOf(e) === "ER_DUP_FIELDNAME" : /duplicate column name/.test(messageOf(e))
const isDuplicateIndex = (e: unknown): boolean => errorCodeOf(e) === "ER_DUP_KEYNAME"

/** The names of a table's indexes (lower case). */
const indexNames = (sql: Statements, dialect: Dialect, table: string) =>
  Effect.map(
    sql.query(
      dialect.name === "mysql"
        ? `SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?`
        : `SELECT name FROM pragma_index_list(?)`,
      [table]
    ),
    (rows) => new Set(rows.map((r) => String(r.name).toLowerCase()))
  )

/**
 * Adds the indexes an older table lacks; the names of those it added. On MySQL an online ALTER: on a
 * ledger of millions of rows it takes a while (about half a minute per index for 10 M rows), without
 * blocking writes; on Galera it is a cluster-wide schema change for that time.
 */
const addIndexes = (sql: Statements, dialect: Dialect, table: string) =>
  Effect.gen(function*() {
    const present = yield* indexNames(sql, dialect, table)
    const added: Array<string> = []
    for (const index of addedIndexes[table] ?? []) {
      if (present.has(index.name)) continue
      const made = yield* sql.run(
        dialect.name === "mysql"
          ? `ALTER TABLE ${table} ADD INDEX ${index.name} (${index.columns})`
          : `CREATE INDEX ${index.name} ON ${table} (${index.columns})`,
        []
      ).pipe(
        Effect.as(true),
        Effect.catchIf((e) => isDuplicateIndex(e) || /already exists/.test(messageOf(e)), () => Effect.succeed(false))
      )
      if (made) added.push(index.name)
    }
    return added
  })
const errorCodeOf = (e: unknown) => (isSqlError(e) ? errorCode(e) : undefined)
const messageOf = (e: unknown) => String((isSqlError(e) ? (e.cause as { message?: unknown } | undefined)?.message : undefined) ?? "")
const isSqlError = (e: unknown): e is SqlError => (e as { _tag?: unknown } | null)?._tag === "SqlError"

const deniedCodes = new Set(["ER_TABLEACCESS_DENIED_ERROR", "ER_DBACCESS_DENIED_ERROR", "ER_SPECIFIC_ACCESS_DENIED_ERROR", "ER_ACCESS_DENIED_ERROR"])

const ddlOf = (dialect: Dialect, table: string): ReadonlyArray<string> => {
  const mentions = new RegExp(`\\b${table}\\b`)
  return (dialect.name === "mysql" ? mysqlDdl : sqliteDdl).filter((statement) => mentions.test(statement))
}

/**
 * Creates a missing table and adds the columns an older one lacks, then checks the result. Safe to run
 * again and from two processes at once: a table or column another migration made meanwhile is taken
 * as made (the database's "already exists" and "duplicate column" errors), and the final check
 * verifies the shape whoever made it.
 */
export const migrate = (
  sql: Statements,
  dialect: Dialect
): Effect.Effect<ReadonlyArray<TableMigration>, DatabaseError> =>
  Effect.gen(function*() {
    const reports: Array<TableMigration> = []
    for (const table of tables) {
      let found = yield* inspect(sql, dialect, table.name)
      if (!found.exists) {
        // SQLite's DDL is transactional: the table and its indexes appear together. (MySQL commits
        // each DDL statement: a table whose CREATE INDEX did not run gets the index from the next migrate.)
        const statements = Effect.forEach(ddlOf(dialect, table.name), (s) => sql.run(s, []), { discard: true })
        const created = yield* (dialect.name === "sqlite" ? sql.transaction(statements) : statements).pipe(
          Effect.as(true),
          Effect.catchIf(isTableExists(dialect), () => Effect.succeed(false))
        )
        if (created) {
          reports.push({ table: table.name, action: "created", addedColumns: [], addedIndexes: [] })
          continue
        }
        found = yield* inspect(sql, dialect, table.name)
        if (!found.exists) return yield* schemaError(`table ${table.name} was reported to exist and then was not found: was it dropped meanwhile?`)
      }
      const addedColumns: Array<string> = []
      for (const column of yield* shapeOf(table, found)) {
        const added = yield* sql.run(
          `ALTER TABLE ${table.name} ADD COLUMN ${column.name} ${column.added![dialect.name]}`,
          []
        ).pipe(Effect.as(true), Effect.catchIf(isDuplicateColumn(dialect), () => Effect.succeed(false)))
        if (added) addedColumns.push(column.name)
      }
      const addedIndexes = yield* addIndexes(sql, dialect, table.name)
      reports.push({
        table: table.name,
        action: addedColumns.length > 0 || addedIndexes.length > 0 ? "upgraded" : "current",
        addedColumns,
        addedIndexes
      })
    }
    yield* check(sql, dialect)
    return reports
  }).pipe(Effect.mapError((e) => {
    if (e instanceof DatabaseError) return e
    const code = errorCode(e)
    return code !== undefined && deniedCodes.has(code)
      ? new DatabaseError({
        operation: "migrate",
        reason: `${messageOf(e)}: migrate creates and alters tables; run it as a user with CREATE, ALTER and INDEX ` +
          `on the database (a client needs only SELECT, INSERT and UPDATE on the two tables)`,
        cause: e.cause
      })
      : toDatabaseError("migrate")(e)
  }))
