/**
 * Opening the MySQL/MariaDB servers a `mysql://` ledger URL names: TLS files read, one pool per node
 * (`mysqlNodes`), and one round trip to see that a node answers — so an unreachable server is reported
 * as such (naming the URL, never its password), not as a failed schema check later.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as fs from "node:fs"
import * as DmsError from "../DmsError.js"
import * as MysqlNodes from "./mysqlNodes.js"
import * as Urls from "./urls.js"

/** The TLS settings of a location, its PEM files read. */
const tlsSettings = (tls: Urls.MysqlTls | undefined) => {
  if (tls === undefined) return Effect.succeed(undefined)
  const readPem = (parameter: string, file: string | undefined) =>
    file === undefined ? Effect.succeed(undefined) : Effect.try({
      try: () => fs.readFileSync(file, "utf8"),
      catch: (cause) => new DmsError.DatabaseError({ operation: `read ${parameter} (${file}) for TLS to the database`, cause })
    })
  return Effect.gen(function*() {
    if (!tls.verify) {
      yield* Effect.logWarning("db_url: ssl_verify_cert=false: the connection to the database is encrypted but the server is not verified")
    }
    const [ca, cert, key] = [yield* readPem("ssl_ca", tls.ca), yield* readPem("ssl_cert", tls.cert), yield* readPem("ssl_key", tls.key)]
    return {
      ...(ca === undefined ? {} : { ca }),
      ...(cert === undefined ? {} : { cert }),
      ...(key === undefined ? {} : { key }),
      verify: tls.verify
    }
  })
}

/** The nodes of `location`, once one of them answered; closed with the scope. `raw` is the URL, for messages. */
export const open = (
  location: Extract<Urls.LedgerLocation, { kind: "mysql" }>,
  raw: string,
  connectionLimit: number
): Effect.Effect<MysqlNodes.MysqlNodes, DmsError.DatabaseError, Scope.Scope> =>
  Effect.gen(function*() {
    const tls = yield* tlsSettings(location.tls)
    const nodes = yield* MysqlNodes.make(location.nodes, {
      user: location.user,
      password: location.password,
      database: location.database,
      connectionLimit,
      tls
    })
    yield* Effect.mapError(
      nodes.query("SELECT 1", []),
      (e) => new DmsError.DatabaseError({ operation: `connect to ${Urls.redactUrl(raw)}`, cause: e.cause })
    )
    return nodes
  })

/** How a ledger at `location` is named in `Ledger.location`: its nodes and database, never a password. */
export const describe = (location: Extract<Urls.LedgerLocation, { kind: "mysql" }>): string =>
  `mysql://${location.nodes.map((n) => `${n.host.toLowerCase()}:${n.port}`).join(",")}/${location.database}`
