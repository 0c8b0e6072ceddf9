/**
 * Parsing of the ledger and broker URLs, and their redaction for messages.
 */
import * as Redacted from "effect/Redacted"

/** Where the ledger lives, parsed from `DMS_DB_URL`. */
export type LedgerLocation =
  | {
    readonly kind: "mysql"
    /** The first node (the one tried first). */
    readonly host: string
    readonly port: number
    /** Every node the URL names, in the order they are tried (`h1:3307,h2:3308,…`; one for a plain URL). */
    readonly nodes: ReadonlyArray<MysqlNode>
    readonly user: string | undefined
    readonly password: Redacted.Redacted<string> | undefined
    readonly database: string
    /** TLS to the database, from the URL's `ssl*` parameters; undefined for none. */
    readonly tls: MysqlTls | undefined
    /** Connections per node, from the URL's `pool_size` parameter; undefined for the default. */
    readonly poolSize: number | undefined
  }
  | { readonly kind: "sqlite"; readonly filename: string }
  | { readonly kind: "memory" }

/**
 * TLS to the database, from the ledger URL's parameters (the names PyMySQL/SQLAlchemy use):
 * `?ssl_ca=/etc/ssl/db-ca.pem` (verify the server against this CA), `&ssl_cert=…&ssl_key=…` (a client
 * certificate), `&ssl_verify_cert=false` (encrypt without verifying: warned about), or `?ssl=true` (TLS
 * verified against the system's CAs).
 */
export interface MysqlTls {
  /** Files holding the CA certificate(s), the client certificate and its key (paths, read at connect). */
  readonly ca: string | undefined
  readonly cert: string | undefined
  readonly key: string | undefined
  /** Whether the server's certificate must verify (and name the host). Default true. */
  readonly verify: boolean
}

const tlsParameters = ["ssl", "ssl_ca", "ssl_cert", "ssl_key", "ssl_verify_cert"] as const
const urlParameters = [...tlsParameters, "pool_size"] as const

/** The most connections per node a `pool_size` may ask for. */
const MAX_POOL_SIZE = 100

const parsePoolSize = (search: URLSearchParams): number | undefined | string => {
  const v = search.get("pool_size")
  if (v === null) return undefined
  const n = /^[0-9]+$/.test(v) ? Number(v) : Number.NaN
  return n >= 1 && n <= MAX_POOL_SIZE ? n : `pool_size must be a whole number of connections from 1 to ${MAX_POOL_SIZE}, got "${v}"`
}

const parseTls = (search: URLSearchParams): MysqlTls | undefined | string => {
  for (const name of search.keys()) {
    if (!(urlParameters as ReadonlyArray<string>).includes(name)) {
      return `unknown URL parameter "${name}": expected ${urlParameters.join(", ")}`
    }
  }
  const flag = (name: string): boolean | undefined | string => {
    const v = search.get(name)
    if (v === null) return undefined
    if (/^(1|true|yes|on)$/i.test(v)) return true
    if (/^(0|false|no|off)$/i.test(v)) return false
    return `${name} must be true or false, got "${v}"`
  }
  const enabled = flag("ssl")
  const verify = flag("ssl_verify_cert")
  if (typeof enabled === "string") return enabled
  if (typeof verify === "string") return verify
  const file = (name: string) => (search.get(name) === "" ? "" : search.get(name) ?? undefined)
  const [ca, cert, key] = [file("ssl_ca"), file("ssl_cert"), file("ssl_key")]
  for (const [name, v] of [["ssl_ca", ca], ["ssl_cert", cert], ["ssl_key", key]] as const) {
    if (v === "") return `${name} is empty: give the path of a PEM file`
  }
  if ((cert === undefined) !== (key === undefined)) return "ssl_cert and ssl_key go together: give both or neither"
  if (enabled === false) return ca !== undefined || cert !== undefined ? "ssl=false contradicts the other ssl_ parameters" : undefined
  if (enabled === undefined && ca === undefined && cert === undefined && verify === undefined) return undefined
  return { ca, cert, key, verify: verify ?? true }
}

/** One database server of a ledger URL. */
export interface MysqlNode {
  readonly host: string
  readonly port: number
}

/**
 * Where the broker lives, parsed from `DMS_RABBITMQ_URL`: one or more nodes of a cluster (tried in
 * order), or the in-process broker.
 */
export type BrokerLocation =
  | { readonly kind: "amqp"; readonly urls: readonly [Redacted.Redacted<string>, ...Array<Redacted.Redacted<string>>] }
  | { readonly kind: "memory" }

/**
 * Parses a ledger URL. Accepts `mysql://`, SQLAlchemy's `mysql+<driver>://` (as the guide writes it),
 * `sqlite:` in SQLAlchemy's forms (`sqlite:///relative.db`, `sqlite:////abs.db`, `sqlite://` = in memory)
 * and the short `sqlite:/abs.db`, `sqlite:relative.db`, `sqlite::memory:`, and `memory:` (in process).
 * Returns a reason string on failure (never echoing the password).
 */
export const parseLedgerUrl = (raw: string): LedgerLocation | string => {
  const url = raw.trim()
  if (url === "memory:" || url === "memory://") return { kind: "memory" }
  if (url.startsWith("sqlite:")) {
    const rest = url.slice("sqlite:".length)
    let filename: string
    if (rest === "//" || rest === "" || rest === ":memory:" || rest === "///:memory:") filename = ":memory:"
    else if (rest.startsWith("///")) filename = rest.slice(3) // sqlite:///rel.db → rel.db, sqlite:////abs → /abs
    else if (rest.startsWith("//")) return "a sqlite URL has no host: use sqlite:///relative.db or sqlite:////absolute.db"
    else filename = rest
    if (filename === "") return "the sqlite URL names no file"
    return { kind: "sqlite", filename }
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase()
  if (scheme === undefined) {
    return `expected a URL such as mysql://user:password@host:3306/trilio_dms or sqlite:///path/to/ledger.db`
  }
  if (scheme !== "mysql" && !scheme.startsWith("mysql+") && scheme !== "mariadb" && !scheme.startsWith("mariadb+")) {
    return `unsupported scheme "${scheme}": expected mysql://, mysql+pymysql:// or sqlite:`
  }
  // Several nodes (`h1:3307,h2:3308`) are not a valid URL authority: parse the URL with the first node,
  // and the node list by itself.
  const rest = url.slice(scheme.length + 3)
  const authorityEnd = rest.search(/[/?#]/)
  const authority = authorityEnd === -1 ? rest : rest.slice(0, authorityEnd)
  const at = authority.lastIndexOf("@")
  const hostList = authority.slice(at + 1)
  const nodeTexts = hostList === "" ? [""] : hostList.split(",")
  const nodes: Array<MysqlNode> = []
  for (const [i, text] of nodeTexts.entries()) {
    let node: URL
    try {
      node = new URL(`mysql://${text.trim()}`)
    } catch {
      return nodeTexts.length > 1 ? `node ${i + 1} of the host list ("${text.trim()}") is not a valid host[:port]` : "not a valid URL"
    }
    if (text.trim() === "" && nodeTexts.length > 1) return `node ${i + 1} of the host list is empty`
    nodes.push({
      host: node.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost",
      port: node.port === "" ? 3306 : Number(node.port)
    })
  }
  let parsed: URL
  try {
    parsed = new URL(`mysql://${authority.slice(0, at + 1)}${nodeTexts[0]!.trim()}${authorityEnd === -1 ? "" : rest.slice(authorityEnd)}`)
  } catch {
    return "not a valid URL"
  }
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ""))
  if (database === "" || database.includes("/")) return "the URL must name the database, e.g. mysql://host:3306/trilio_dms"
  const tls = parseTls(parsed.searchParams)
  if (typeof tls === "string") return tls
  const poolSize = parsePoolSize(parsed.searchParams)
  if (typeof poolSize === "string") return poolSize
  const first = nodes[0]!
  return {
    kind: "mysql",
    host: first.host,
    port: first.port,
    nodes,
    user: parsed.username === "" ? undefined : decodeURIComponent(parsed.username),
    password: parsed.password === "" ? undefined : Redacted.make(decodeURIComponent(parsed.password)),
    database,
    tls,
    poolSize
  }
}

const parseAmqpUrl = (url: string): string | undefined => {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase()
  if (scheme !== "amqp" && scheme !== "amqps") {
    return scheme === undefined
      ? "expected a URL such as amqp://user:password@host:5672"
      : `unsupported scheme "${scheme}": expected amqp:// or amqps://`
  }
  try {
    new URL(url)
  } catch {
    return "not a valid URL"
  }
  return undefined
}

/**
 * Parses a broker URL: `amqp://` or `amqps://`, or a comma-separated list of them (the nodes of a
 * cluster, tried in that order), or `memory:` (an in-process broker). Every entry is checked; the
 * reason names the bad entry by its position, never echoing it (it may hold a password). A password
 * that contains a comma must be percent-encoded (`%2C`).
 */
export const parseBrokerUrl = (raw: string): BrokerLocation | string => {
  const url = raw.trim()
  if (url === "memory:" || url === "memory://") return { kind: "memory" }
  const entries = url.split(",").map((e) => e.trim())
  const urls: Array<Redacted.Redacted<string>> = []
  for (const [i, entry] of entries.entries()) {
    const which = entries.length === 1 ? "" : `entry ${i + 1} of ${entries.length}: `
    if (entry === "") return `${which}empty (a list is amqp://host1:5672,amqp://host2:5672)`
    if (entry === "memory:" || entry === "memory://") return `${which}memory: cannot be part of a list of RabbitMQ nodes`
    const reason = parseAmqpUrl(entry)
    if (reason !== undefined) return `${which}${reason}`
    urls.push(Redacted.make(entry))
  }
  return { kind: "amqp", urls: urls as [Redacted.Redacted<string>, ...Array<Redacted.Redacted<string>>] }
}

/**
 * A URL safe to print: the password (if any) replaced by `***`, in every URL of a comma-separated list.
 */
export const redactUrl = (raw: string): string => 
  // The password may hold anything but '@', even a comma; it never runs into the next URL of a list.
  raw.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@,]*:)(?:(?!:\/\/)[^@])*@/gi, "$1***@")
