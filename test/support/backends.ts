/**
 * The three Ledger backends, each as a test environment that can build several Ledger instances over
 * the same tables (one instance = one client process, as far as locking is concerned).
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Ledger from "../../src/Ledger.js"
import { TestDatabase, TestDatabaseLive, uniqueName } from "./mysql.js"

export class Backend extends Context.Tag("test/Backend")<Backend, {
  readonly name: "memory" | "sqlite" | "mysql"
  /** A new Ledger instance over this backend's tables. */
  readonly build: (options?: Ledger.LeaseOptions) => Effect.Effect<Ledger.Service, never, Scope.Scope>
  /** Runs raw SQL on the backend's tables (not for memory). */
  readonly query?: <T = unknown>(sql: string, params?: ReadonlyArray<unknown>) => Effect.Effect<T>
  /** The ledger URL, for child processes. */
  readonly url?: string
}>() {}

const buildFrom = (layer: Layer.Layer<Ledger.Ledger, unknown>) =>
  Layer.build(layer).pipe(Effect.map(Context.get(Ledger.Ledger)), Effect.orDie)

export const memoryBackend = Layer.sync(Backend, () => {
  const state = Ledger.makeMemoryState()
  return { name: "memory" as const, build: (o = {}) => buildFrom(Ledger.layerMemory({ ...o, state })) }
})

export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dms-test-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

export const sqliteBackend = Layer.scoped(
  Backend,
  Effect.gen(function*() {
    const dir = yield* tempDir
    const filename = path.join(dir, `${uniqueName("ledger")}.db`)
    const { default: Database } = yield* Effect.promise(() => import("better-sqlite3"))
    // Build one ledger first so the tables exist before raw queries.
    yield* buildFrom(Ledger.layerSqlite({ filename }))
    const db = yield* Effect.acquireRelease(Effect.sync(() => new Database(filename)), (d) => Effect.sync(() => d.close()))
    return {
      name: "sqlite" as const,
      url: `sqlite:${filename}`,
      build: (o = {}) => buildFrom(Ledger.layerSqlite({ ...o, filename })),
      query: <T>(sql: string, params: ReadonlyArray<unknown> = []) =>
        Effect.sync(() => {
          const st = db.prepare(sql)
          return (st.reader ? st.all(...params) : st.run(...params)) as T
        })
    }
  })
)

export const mysqlBackend = Layer.effect(
  Backend,
  Effect.map(TestDatabase, (db) => ({
    name: "mysql" as const,
    url: db.url,
    build: (o: Ledger.LeaseOptions = {}) => buildFrom(Ledger.layerMysql({ ...o, url: db.url, maxConnections: 4 })),
    query: db.query
  }))
).pipe(Layer.provide(TestDatabaseLive))

export const backends = [
  ["memory", memoryBackend],
  ["sqlite", sqliteBackend],
  ["mysql", mysqlBackend]
] as const
