/**
 * A fresh MariaDB database per test layer, dropped when the layer closes, with the ledger's tables made
 * by `Ledger.migrate` (as an operator runs `trilio-dms migrate` before any client starts), or empty.
 * Fails loudly (never skips) when MariaDB is not answering.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import mysql from "mysql2/promise"
import { randomBytes } from "node:crypto"
import * as Ledger from "../../src/Ledger.js"

/** Where the test MariaDB is: root with an empty password on loopback, unless overridden. */
export const MYSQL_HOST = process.env.DMS_TEST_MYSQL_HOST ?? "127.0.0.1"
export const MYSQL_PORT = Number(process.env.DMS_TEST_MYSQL_PORT ?? 3306)

export const adminConnection = () =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => mysql.createConnection({ host: MYSQL_HOST, port: MYSQL_PORT, user: "root", timezone: "Z" }),
      catch: (cause) =>
        new Error(`MariaDB is not answering on ${MYSQL_HOST}:${MYSQL_PORT} (tests need it): ${String(cause)}`)
    }),
    (c) => Effect.promise(() => c.end().catch(() => undefined))
  )

export class TestDatabase extends Context.Tag("test/TestDatabase")<TestDatabase, {
  readonly name: string
  readonly url: string
  /** Runs a statement on its own connection to the test database. */
  readonly query: <T = unknown>(sql: string, params?: ReadonlyArray<unknown>) => Effect.Effect<T>
}>() {}

export const uniqueName = (prefix: string) => `${prefix}_${process.pid}_${randomBytes(4).toString("hex")}`

const testDatabase = (options: { readonly migrate: boolean }) => Layer.scoped(
  TestDatabase,
  Effect.gen(function*() {
    const name = uniqueName("dms_test")
    const admin = yield* adminConnection()
    yield* Effect.promise(() => admin.query(`CREATE DATABASE \`${name}\``))
    yield* Effect.addFinalizer(() =>
      Effect.promise(() => admin.query(`DROP DATABASE IF EXISTS \`${name}\``).catch(() => undefined))
    )
    const conn = yield* Effect.acquireRelease(
      Effect.promise(() =>
        mysql.createConnection({ host: MYSQL_HOST, port: MYSQL_PORT, user: "root", database: name, timezone: "Z" })
      ),
      (c) => Effect.promise(() => c.end().catch(() => undefined))
    )
    const url = `mysql://root@${MYSQL_HOST}:${MYSQL_PORT}/${name}`
    if (options.migrate) yield* Effect.orDie(Ledger.migrate({ url }))
    return {
      name,
      url,
      query: <T>(sql: string, params: ReadonlyArray<unknown> = []) =>
        Effect.promise(() => conn.query(sql, params as Array<unknown>).then(([rows]) => rows as T))
    }
  })
)

/** Creates `dms_test_<pid>_<random>` with the ledger's tables, drops it afterwards. */
export const TestDatabaseLive = testDatabase({ migrate: true })

/** Creates an empty `dms_test_<pid>_<random>` (no tables), drops it afterwards. */
export const TestDatabaseEmpty = testDatabase({ migrate: false })
