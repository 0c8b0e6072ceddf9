/**
 * `Ledger.migrate`: opens the database a ledger URL names for one migration, and closes it.
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as path from "node:path"
import * as DmsError from "../DmsError.js"
import type { MigrationReport, TableMigration } from "../Ledger.js"
import * as MysqlConnect from "./mysqlConnect.js"
import { mysqlDialect, sqliteDialect, type Dialect } from "./sqlDialect.js"
import * as SqlSchema from "./sqlSchema.js"
import * as SqlStore from "./sqlStore.js"
import * as Urls from "./urls.js"

/** Creates or upgrades the tables of the ledger at `url` (nothing for `memory:`). */
export const migrate = (
  url: string | Redacted.Redacted<string>
): Effect.Effect<MigrationReport, DmsError.DatabaseError | DmsError.ValidationError> =>
  Effect.suspend((): Effect.Effect<MigrationReport, DmsError.DatabaseError | DmsError.ValidationError> => {
    const raw = Redacted.isRedacted(url) ? Redacted.value(url as Redacted.Redacted<string>) : String(url)
    const location = Urls.parseLedgerUrl(raw)
    if (typeof location === "string") return Effect.fail(DmsError.invalid("config", "db_url", location))
    const where = Urls.redactUrl(raw)
    const report = (tables: ReadonlyArray<TableMigration>): MigrationReport => ({ location: where, tables })
    const on = (dialect: Dialect, client: Layer.Layer<SqlClient.SqlClient, unknown>) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) => SqlSchema.migrate(SqlStore.clientStatements(sql), dialect)).pipe(
        Effect.map(report),
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
        return MysqlConnect.open(location, raw, 1).pipe(
          Effect.flatMap((nodes) => SqlSchema.migrate(SqlStore.mysqlStatements(nodes.query), mysqlDialect)),
          Effect.map(report),
          Effect.scoped
        )
    }
  })
