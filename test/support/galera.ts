/**
 * A database of the test's own on the test Galera cluster (test/cluster/globalSetup.ts starts it),
 * dropped with the scope, and control of the cluster's nodes (scripts/cluster/galera.sh).
 */
import * as Effect from "effect/Effect"
import mysql from "mysql2/promise"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { promisify } from "node:util"
import { uniqueName } from "./mysql.js"

const run = promisify(execFile)
const script = path.resolve(import.meta.dirname, "../../scripts/cluster/galera.sh")

/** The nodes' SQL addresses, node 1 first. */
export const GALERA_NODES = ["127.0.0.1:3307", "127.0.0.1:3308", "127.0.0.1:3309"] as const
const USER = "dms"
const PASSWORD = "dms"

/** A connection to one node (1..3) as the test user. */
export const nodeConnection = (node: 1 | 2 | 3, database?: string) =>
  Effect.acquireRelease(
    Effect.tryPromise(() => {
      const [host, port] = GALERA_NODES[node - 1]!.split(":")
      return mysql.createConnection({
        host: host!,
        port: Number(port),
        user: USER,
        password: PASSWORD,
        timezone: "Z",
        ...(database === undefined ? {} : { database })
      })
    }),
    (c) => Effect.promise(() => c.end().catch(() => undefined))
  )

/** Runs `statement` on the first node that answers (a test may have stopped one). */
const onAnyNode = (statement: string) =>
  Effect.firstSuccessOf(
    ([1, 2, 3] as const).map((n) => Effect.scoped(Effect.flatMap(nodeConnection(n), (c) => Effect.tryPromise(() => c.query(statement)))))
  ).pipe(Effect.orDie)

/** A fresh database on the cluster; `url(nodes)` names it through those nodes (1-based, in order). */
export const galeraDatabase = Effect.gen(function*() {
  const name = uniqueName("dms_galera")
  yield* Effect.acquireRelease(
    onAnyNode(`CREATE DATABASE \`${name}\``),
    () => onAnyNode(`DROP DATABASE IF EXISTS \`${name}\``).pipe(Effect.catchAllDefect(() => Effect.void))
  )
  return {
    name,
    url: (...nodes: ReadonlyArray<1 | 2 | 3>) =>
      `mysql://${USER}:${PASSWORD}@${nodes.map((n) => GALERA_NODES[n - 1]).join(",")}/${name}`
  }
})

/** Runs scripts/cluster/galera.sh with `args` (start, kill N, restart N, status). */
export const galera = (...args: ReadonlyArray<string>) =>
  Effect.promise(() => run("bash", [script, ...args], { timeout: 300_000 }).then((r) => r.stdout))

/** A global status counter of one node. */
export const nodeStatus = (node: 1 | 2 | 3, variable: string) =>
  Effect.scoped(
    Effect.flatMap(nodeConnection(node), (c) =>
      Effect.promise(() =>
        c.query(`SHOW GLOBAL STATUS LIKE ?`, [variable]).then(([rows]) => Number((rows as Array<{ Value: string }>)[0]?.Value ?? NaN))
      ))
  ).pipe(Effect.orDie)
