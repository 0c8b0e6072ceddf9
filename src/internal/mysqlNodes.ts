/**
 * The MySQL/MariaDB servers of a ledger URL (`mysql://u:p@h1:3307,h2:3308,h3:3309/db`), tried in order:
 * every statement goes to the first node that answers. A node that refuses connections, says it is not
 * ready (Galera's 1047, "WSREP has not yet prepared node for application use"), or loses a connection
 * mid-statement is passed over for {@link RESTORE_MS}, then tried again first (an ordered list keeps a
 * Galera cluster's writes on one node while it lives: no certification conflicts between our clients).
 *
 * mysql2's PoolCluster does the ordered failover for connection errors, but not for a node that accepts
 * connections and refuses statements (a Galera node outside the primary component does), so the list is
 * kept here, over one mysql2 pool per node.
 */
import { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as Mysql from "mysql2"
import type { MysqlNode } from "./urls.js"

/** How long a node that failed is passed over before it is tried first again. */
export const RESTORE_MS = 2000

/** The nodes of one ledger. */
export interface MysqlNodes {
  /** Runs one statement text (on MySQL several, `;`-separated) with `?` parameters on the first node that answers. */
  readonly query: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<unknown, SqlError>
}

/** Connection settings shared by every node. */
export interface NodeSettings {
  readonly user: string | undefined
  readonly password: Redacted.Redacted<string> | undefined
  readonly database: string
  /** Connections per node. */
  readonly connectionLimit: number
  /** TLS: the certificates' PEM text, and whether the server's certificate must verify. */
  readonly tls?: { readonly ca?: string; readonly cert?: string; readonly key?: string; readonly verify: boolean } | undefined
}

/** Errors after which a node is passed over: it refused or lost the connection, or is not ready. */
const nodeFailed = (cause: unknown): boolean => {
  const e = cause as { code?: unknown; errno?: unknown; fatal?: unknown } | null
  if (e === null || typeof e !== "object") return false
  return e.fatal === true || e.errno === 1047 || e.code === "ECONNREFUSED" || e.code === "ETIMEDOUT" ||
    e.code === "EHOSTUNREACH" || e.code === "PROTOCOL_CONNECTION_LOST"
}

interface Node {
  readonly name: string
  readonly pool: Mysql.Pool
  offlineUntil: number
}

/** Opens a pool per node (connections are made on first use) and closes them with the scope. */
export const make = (nodes: ReadonlyArray<MysqlNode>, settings: NodeSettings): Effect.Effect<MysqlNodes, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() =>
      nodes.map((n): Node => {
        const pool = Mysql.createPool({
          host: n.host,
          port: n.port,
          database: settings.database,
          ...(settings.user === undefined ? {} : { user: settings.user }),
          ...(settings.password === undefined ? {} : { password: Redacted.value(settings.password) }),
          // DATETIME values are UTC (every write uses UTC_TIMESTAMP()), so read them as UTC.
          timezone: "Z",
          connectTimeout: 5_000,
          connectionLimit: settings.connectionLimit,
          maxIdle: Math.min(2, settings.connectionLimit),
          idleTimeout: 60_000,
          multipleStatements: true,
          supportBigNumbers: true,
          ...(settings.tls === undefined ? {} : {
            ssl: {
              ...(settings.tls.ca === undefined ? {} : { ca: settings.tls.ca }),
              ...(settings.tls.cert === undefined ? {} : { cert: settings.tls.cert }),
              ...(settings.tls.key === undefined ? {} : { key: settings.tls.key }),
              rejectUnauthorized: settings.tls.verify
            }
          })
        })
        // Behind a balancing proxy a read may land on another Galera node than the write before it:
        // wsrep_sync_wait makes reads causal (they wait until the node has applied every earlier
        // write-set). Outside Galera it does nothing; a server without the variable (MySQL) refuses it,
        // which is harmless.
        pool.on("connection", (connection) => {
          connection.query("SET SESSION wsrep_sync_wait = 1", () => undefined)
        })
        return { name: `${n.host}:${n.port}`, pool, offlineUntil: 0 }
      })
    ),
    (all) =>
      Effect.forEach(all, (n) => Effect.async<void>((resume) => void n.pool.end(() => resume(Effect.void))), {
        discard: true,
        concurrency: "unbounded"
      })
  ).pipe(Effect.map((all): MysqlNodes => {
    let current: Node | undefined
    const order = () => {
      const now = Date.now()
      const online = all.filter((n) => n.offlineUntil <= now)
      // Every node failed lately: try them all again, in order, rather than fail without trying.
      return online.length > 0 ? online : all
    }
    const failed = (node: Node, cause: unknown) =>
      Effect.suspend(() => {
        if (all.length === 1 || !nodeFailed(cause)) return Effect.void
        node.offlineUntil = Date.now() + RESTORE_MS
        return Effect.logWarning(
          `ledger database node ${node.name} failed (${String((cause as { code?: unknown }).code ?? cause)}); ` +
            `passing it over for ${RESTORE_MS} ms`
        )
      })
    const onNode = (node: Node, text: string, params: ReadonlyArray<unknown>) =>
      Effect.async<unknown, SqlError>((resume) => {
        node.pool.query({ sql: text, values: params as Array<unknown> }, (cause, result) =>
          resume(cause ? Effect.fail(new SqlError({ cause, message: "Failed to execute statement" })) : Effect.succeed(result))
        )
      }).pipe(Effect.tapError((e) => failed(node, e.cause)))
    const query: MysqlNodes["query"] = (text, params) =>
      all.length === 1 ? onNode(all[0]!, text, params) : Effect.suspend(() => {
        const candidates = order()
        // A node that cannot be connected to at all is passed over at once: the statement was never
        // sent, so the next node may run it. Any other error goes to the caller (it may have run).
        const attempt = (i: number): Effect.Effect<unknown, SqlError> =>
          onNode(candidates[i]!, text, params).pipe(
            Effect.tap(() =>
              current === candidates[i] ? Effect.void : Effect.suspend(() => {
                const before = current
                current = candidates[i]
                return before === undefined ? Effect.void : Effect.logWarning(`ledger database: now using node ${current!.name}`)
              })
            ),
            Effect.catchIf(
              (e) => i + 1 < candidates.length && neverConnected(e.cause),
              () => attempt(i + 1)
            )
          )
        return attempt(0)
      })
    return { query }
  }))

/**
 * The statement never reached the server: the connection could not be made. Only errors of making the
 * connection count: the same codes (ETIMEDOUT, EHOSTUNREACH) on an open connection may come after the
 * statement ran, and it must not run again on another node.
 */
const neverConnected = (cause: unknown): boolean => {
  const e = cause as { code?: unknown; syscall?: unknown } | null
  return e?.code === "ECONNREFUSED" || e?.code === "ENOTFOUND" || e?.syscall === "connect" || e?.syscall === "getaddrinfo"
}
