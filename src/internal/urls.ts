/**
 * Parsing of the ledger and broker URLs, and their redaction for messages.
 */
import * as Redacted from "effect/Redacted"

/** Where the ledger lives, parsed from `DMS_DB_URL`. */
export type LedgerLocation =
  | {
    readonly kind: "mysql"
    readonly host: string
    readonly port: number
    readonly user: string | undefined
    readonly password: Redacted.Redacted<string> | undefined
    readonly database: string
  }
  | { readonly kind: "sqlite"; readonly filename: string }
  | { readonly kind: "memory" }

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
  let parsed: URL
  try {
    parsed = new URL(`mysql://${url.slice(scheme.length + 3)}`)
  } catch {
    return "not a valid URL"
  }
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ""))
  if (database === "" || database.includes("/")) return "the URL must name the database, e.g. mysql://host:3306/trilio_dms"
  const port = parsed.port === "" ? 3306 : Number(parsed.port)
  return {
    kind: "mysql",
    host: parsed.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost",
    port,
    user: parsed.username === "" ? undefined : decodeURIComponent(parsed.username),
    password: parsed.password === "" ? undefined : Redacted.make(decodeURIComponent(parsed.password)),
    database
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
