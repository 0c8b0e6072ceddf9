/**
 * `Ledger.migrate`: opens the database a ledger URL names for one migration, and closes it.
 */
import * as MysqlClient from "@effect/sql-mysql2/MysqlClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as path from "node:path"
import * as DmsError from "../DmsError.js"
import type { MigrationReport } from "../Ledger.js"
import { mysqlDialect, sqliteDialect, type Dialect } from "./sqlDialect.js"
import * as SqlSchema from "./sqlSchema.js"
import * as Urls from "./urls.js"

/** One connection to the database of a `mysql://` ledger URL, through @effect/sql (DATETIMEs read as UTC). */
export const mysqlClient = (
  location: Extract<Urls.LedgerLocation, { kind: "mysql" }>,
  connectTimeoutMs: number
): Layer.Layer<SqlClient.SqlClient, unknown> =>
  MysqlClient.layer({
    host: location.host,
    port: location.port,
    database: location.database,
    username: location.user,
    password: location.password,
    maxConnections: 1,
    poolConfig: { timezone: "Z", connectTimeout: connectTimeoutMs }
  })

/** Creates or upgrades the tables of the ledger at `url` (nothing for `memory:`). */
export const migrate = (
  url: string | Redacted.Redacted<string>
): Effect.Effect<MigrationReport, DmsError.DatabaseError | DmsError.ValidationError> =>
  Effect.suspend((): Effect.Effect<MigrationReport, DmsError.DatabaseError | DmsError.ValidationError> => {
    const raw = Redacted.isRedacted(url) ? Redacted.value(url as Redacted.Redacted<string>) : String(url)
    const location = Urls.parseLedgerUrl(raw)
    if (typeof location === "string") return Effect.fail(DmsError.invalid("config", "db_url", location))
    const where = Urls.redactUrl(raw)
    const on = (dialect: Dialect, client: Layer.Layer<SqlClient.SqlClient, unknown>) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) => SqlSchema.migrate(sql, dialect)).pipe(
        Effect.map((tables): MigrationReport => ({ location: where, tables })),
        Effect.provide(client),
        Effect.mapError((e) =>
          e instanceof DmsError.DatabaseError
            ? e
            : new DmsError.DatabaseError({ operation: `connect to ${where}`, cause: (e as { cause?: unknown }).cause ?? e })
        )
      )
    switch (location.kind) {
      case "memory":
        return Effect.succeed({ location: where, tables: [] })
      case "sqlite":
        return Effect.flatMap(
          Effect.try({
            try: () => {
              if (location.filename !== ":memory:") fs.mkdirSync(path.dirname(path.resolve(location.filename)), { recursive: true })
            },
            catch: (cause) => new DmsError.DatabaseError({ operation: `open ${location.filename}`, cause })
          }),
          () => on(sqliteDialect, SqliteClient.layer({ filename: location.filename }))
        )
      case "mysql":
        return on(mysqlDialect, mysqlClient(location, 10_000))
    }
  })
