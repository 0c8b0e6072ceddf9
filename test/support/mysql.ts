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

/** A MariaDB server other than the test's (e.g. a Galera node), and a user that may create databases. */
export interface DatabaseServer {
  readonly host: string
  readonly port: number
  readonly user: string
  readonly password?: string
  /** Statements run first on the test's own connection (e.g. `SET SESSION wsrep_sync_wait = 1`). */
  readonly session?: ReadonlyArray<string>
}

/** Creates `dms_test_<pid>_<random>` on `server` (with the ledger's tables unless `migrate: false`), drops it afterwards. */
export const testDatabaseOn = (server: DatabaseServer, options: { readonly migrate: boolean } = { migrate: true }) =>
  Layer.scoped(
    TestDatabase,
    Effect.gen(function*() {
      const name = uniqueName("dms_test")
      const login = {
        host: server.host,
        port: server.port,
        user: server.user,
        ...(server.password === undefined ? {} : { password: server.password }),
        timezone: "Z"
      }
      const admin = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => mysql.createConnection(login),
          catch: (cause) => new Error(`MariaDB is not answering on ${server.host}:${server.port} (tests need it): ${String(cause)}`)
        }),
        (c) => Effect.promise(() => c.end().catch(() => undefined))
      )
      yield* Effect.promise(() => admin.query(`CREATE DATABASE \`${name}\``))
      yield* Effect.addFinalizer(() =>
        Effect.promise(() => admin.query(`DROP DATABASE IF EXISTS \`${name}\``).catch(() => undefined))
      )
      const conn = yield* Effect.acquireRelease(
        Effect.promise(() => mysql.createConnection({ ...login, database: name })),
        (c) => Effect.promise(() => c.end().catch(() => undefined))
      )
      for (const statement of server.session ?? []) yield* Effect.promise(() => conn.query(statement))
      const credentials = server.password === undefined ? server.user : `${server.user}:${encodeURIComponent(server.password)}`
      const url = `mysql://${credentials}@${server.host}:${server.port}/${name}`
      if (options.migrate) yield* Effect.orDie(Ledger.migrate({ url }))
      return {
        name,
        url,
        query: <T>(sql: string, params: ReadonlyArray<unknown> = []) =>
          Effect.promise(() => conn.query(sql, params as Array<unknown>).then(([rows]) => rows as T))
      }
    })
  )

const testMariadb = { host: MYSQL_HOST, port: MYSQL_PORT, user: "root" }

/** Creates `dms_test_<pid>_<random>` with the ledger's tables on the test MariaDB, drops it afterwards. */
export const TestDatabaseLive = testDatabaseOn(testMariadb)

/** Creates an empty `dms_test_<pid>_<random>` (no tables) on the test MariaDB, drops it afterwards. */
export const TestDatabaseEmpty = testDatabaseOn(testMariadb, { migrate: false })
