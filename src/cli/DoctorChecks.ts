/**
 * The checks of `trilio-dms doctor`: the configuration (and where each value comes from), the ledger
 * database, RabbitMQ, and the queue and consumer of a host's DMS server, each saying what is wrong and
 * how to fix it. They only read: no table is created and no queue declared.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import amqp from "amqplib"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as Broker from "../Broker.js"
import * as DmsConfig from "../DmsConfig.js"
import * as MysqlConnect from "../internal/mysqlConnect.js"
import { type Dialect, mysqlDialect, sqliteDialect, type Statements } from "../internal/sqlDialect.js"
import * as SqlSchema from "../internal/sqlSchema.js"
import * as SqlStore from "../internal/sqlStore.js"
import * as Urls from "../internal/urls.js"
import * as Setup from "./Setup.js"

/**
 * The outcome of one check.
 *
 * @since 0.1.0
 * @category models
 */
export interface Check {
  readonly check: "config" | "database" | "broker" | "server"
  readonly status: "ok" | "warn" | "fail" | "skip"
  readonly detail: string
  readonly fix?: string | undefined
}

const TABLES = ["backup_target_mount_ledger", "backup_target_mount_lock"] as const
const CONNECT_TIMEOUT = Duration.seconds(5)

const codeOf = (e: unknown): string | undefined => {
  let current: unknown = e
  for (let i = 0; i < 5 && current !== undefined && current !== null; i++) {
    const code = (current as { code?: unknown }).code
    if (typeof code === "string") return code
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

const messageOf = (e: unknown): string => {
  let current: unknown = e
  let message = String(e)
  for (let i = 0; i < 5 && current !== undefined && current !== null; i++) {
    const m = (current as { message?: unknown }).message
    if (typeof m === "string" && m !== "" && m !== "Failed to execute statement") message = m
    current = (current as { cause?: unknown }).cause
  }
  return message
}

const databaseFix = (code: string | undefined, location: Extract<Urls.LedgerLocation, { kind: "mysql" }>): string => {
  const where = `${location.host}:${location.port}`
  switch (code) {
    case "ECONNREFUSED":
      return `nothing listens on ${where}: start MariaDB/MySQL there, or fix the host and port in DMS_DB_URL`
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return `the host ${location.host} cannot be resolved: fix the host in DMS_DB_URL`
    case "ETIMEDOUT":
      return `no answer from ${where}: check the address and any firewall between here and the database`
    case "ER_ACCESS_DENIED_ERROR":
    case "ER_DBACCESS_DENIED_ERROR":
      return `the database refused user ${location.user ?? "(none)"}: check the user and password in DMS_DB_URL and the GRANTs (see the guide's "Database Setup")`
    case "ER_BAD_DB_ERROR":
      return `the database ${location.database} does not exist: CREATE DATABASE ${location.database}; then run trilio-dms migrate`
    default:
      return "check DMS_DB_URL (db_url) and that the database server is running"
  }
}

const checkMysql = (location: Extract<Urls.LedgerLocation, { kind: "mysql" }>, raw: string, display: string) =>
  Effect.gen(function*() {
    const nodes = yield* MysqlConnect.open(location, raw, 1)
    const sql = SqlStore.mysqlStatements(nodes.query)
    const present = yield* sql.query(
      `SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (?, ?)`,
      TABLES
    )
    return yield* tablesCheck(sql, mysqlDialect, present.map((r) => String(r.name)), display)
  }).pipe(
    Effect.scoped,
    Effect.timeoutFail({ duration: Duration.sum(CONNECT_TIMEOUT, Duration.seconds(2)), onTimeout: () => ({ code: "ETIMEDOUT" }) }),
    Effect.catchAll((e): Effect.Effect<Check> =>
      Effect.succeed({
        check: "database",
        status: "fail",
        detail: `${display}: ${codeOf(e) === "ETIMEDOUT" ? "no answer" : messageOf(e)}`,
        fix: databaseFix(codeOf(e), location)
      })
    )
  )

const tablesCheck = (sql: Statements, dialect: Dialect, present: ReadonlyArray<string>, display: string) =>
  Effect.gen(function*() {
    const missing = TABLES.filter((t) => !present.some((p) => p.toLowerCase() === t))
    if (missing.length > 0) {
      return {
        check: "database",
        status: "fail",
        detail: `${display}: reachable, but the table(s) ${missing.join(", ")} are missing`,
        fix: "run trilio-dms migrate (or load schema.sql) as a user that may create tables; a client never creates them"
      } satisfies Check
    }
    const shape = yield* Effect.either(SqlSchema.check(sql, dialect))
    if (shape._tag === "Left") {
      return {
        check: "database",
        status: "fail",
        detail: `${display}: reachable, but ${shape.left.reason ?? shape.left.message}`,
        fix: (shape.left.reason ?? "").includes("trilio-dms migrate")
          ? "run trilio-dms migrate as a user that may alter tables"
          : "point DMS_DB_URL at a database with trilio-dms's tables (schema.sql)"
      } satisfies Check
    }
    const [row] = yield* sql.query(`SELECT COUNT(*) AS n FROM backup_target_mount_ledger WHERE mounted = 1 AND deleted = 0`, [])
    return {
      check: "database",
      status: "ok",
      detail: `${display}: reachable, ledger tables present, ${Number(row?.n ?? 0)} active mount(s)`
    } satisfies Check
  })

const checkSqlite = (filename: string, display: string): Effect.Effect<Check> => {
  if (filename === ":memory:") {
    return Effect.succeed({ check: "database", status: "warn", detail: `${display}: an in-memory SQLite ledger lives only as long as one process` })
  }
  if (!fs.existsSync(filename)) {
    return Effect.succeed({
      check: "database",
      status: "warn",
      detail: `${display}: the file does not exist yet`,
      fix: "it is created on first use; run trilio-dms migrate to create it now"
    })
  }
  return Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const present = yield* sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table'`
    return yield* tablesCheck(SqlStore.clientStatements(sql), sqliteDialect, present.map((r) => String(r.name)), display)
  }).pipe(
    Effect.scoped,
    Effect.provide(SqliteClient.layer({ filename, readonly: true })),
    Effect.catchAll((e): Effect.Effect<Check> =>
      Effect.succeed({
        check: "database",
        status: "fail",
        detail: `${display}: ${messageOf(e)}`,
        fix: "check that the file is an SQLite database this user may read"
      })
    )
  )
}

const checkDatabase = (settings: DmsConfig.Settings): Effect.Effect<Check> => {
  const raw = Redacted.value(settings.dbUrl)
  const display = Urls.redactUrl(raw)
  const location = Urls.parseLedgerUrl(raw)
  if (typeof location === "string") {
    return Effect.succeed({ check: "database", status: "fail", detail: `${display}: ${location}`, fix: "fix DMS_DB_URL (db_url)" })
  }
  switch (location.kind) {
    case "memory":
      return Effect.succeed({ check: "database", status: "warn", detail: "memory: an in-process ledger, for tests only" })
    case "sqlite":
      return checkSqlite(location.filename, display)
    case "mysql":
      return checkMysql(location, raw, display)
  }
}

const brokerFix = (e: unknown, display: string): string => {
  const message = messageOf(e)
  const code = codeOf(e)
  if (code === "ECONNREFUSED") return `nothing listens at ${display}: start RabbitMQ, or fix the host and port in DMS_RABBITMQ_URL`
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return "the broker's host cannot be resolved: fix DMS_RABBITMQ_URL"
  if (/ACCESS.REFUSED|403/.test(message)) return "RabbitMQ refused the user or password: check them in DMS_RABBITMQ_URL"
  if (/ConnectionOpenOk|NOT_ALLOWED|vhost/i.test(message)) {
    return "RabbitMQ refused the virtual host: check that it exists and the user may use it (rabbitmqctl set_permissions)"
  }
  return "check DMS_RABBITMQ_URL (rabbitmq_url) and that RabbitMQ is running"
}

const checkBroker = (settings: DmsConfig.Settings, host: string): Effect.Effect<ReadonlyArray<Check>> => {
  const raw = Redacted.value(settings.rabbitmqUrl)
  const display = Urls.redactUrl(raw)
  const location = Urls.parseBrokerUrl(raw)
  const skipServer: Check = { check: "server", status: "skip", detail: `queue ${Broker.queueName(host)} not checked (no broker)` }
  if (typeof location === "string") {
    return Effect.succeed([
      { check: "broker", status: "fail", detail: `${display}: ${location}`, fix: "fix DMS_RABBITMQ_URL (rabbitmq_url)" },
      skipServer
    ])
  }
  if (location.kind === "memory") {
    return Effect.succeed([
      { check: "broker", status: "warn", detail: "memory: an in-process broker, only the demo and tests have a server behind it" },
      { ...skipServer, detail: "no DMS server is reachable through an in-process broker" }
    ])
  }
  return Effect.acquireUseRelease(
    Effect.tryPromise({
      try: () => amqp.connect(raw.trim(), { noDelay: true, timeout: Duration.toMillis(CONNECT_TIMEOUT) }),
      catch: (e) => e
    }),
    (model) =>
      Effect.gen(function*() {
        model.on("error", () => {})
        const queue = Broker.queueName(host)
        // A passive check of a missing queue closes its channel: use a throwaway one.
        const state = yield* Effect.tryPromise({
          try: async () => {
            const channel = await model.createChannel()
            channel.on("error", () => {})
            return await channel.checkQueue(queue).then(
              (ok) => ({ exists: true as const, consumers: ok.consumerCount, messages: ok.messageCount }),
              () => ({ exists: false as const })
            )
          },
          catch: (e) => e
        })
        const broker: Check = { check: "broker", status: "ok", detail: `${display}: connected` }
        if (!state.exists) {
          return [broker, {
            check: "server",
            status: "fail",
            detail: `queue ${queue} does not exist: no DMS server has run for host ${host}`,
            fix: `start the DMS server on ${host}: trilio-dms server --node-id ${host} (or check --host: the node id is the host name)`
          }] satisfies ReadonlyArray<Check>
        }
        if (state.consumers === 0) {
          return [broker, {
            check: "server",
            status: "fail",
            detail: `queue ${queue} exists but no DMS server consumes it (${state.messages} message(s) waiting)`,
            fix: `the DMS server of ${host} is stopped: start it (trilio-dms server --node-id ${host}, or its systemd unit) and check its log`
          }] satisfies ReadonlyArray<Check>
        }
        return [broker, {
          check: "server",
          status: "ok",
          detail: `queue ${queue}: ${state.consumers} consumer(s), ${state.messages} message(s) waiting`
        }] satisfies ReadonlyArray<Check>
      }),
    (model) => Effect.promise(() => model.close().catch(() => undefined))
  ).pipe(
    Effect.catchAll((e) =>
      Effect.succeed([
        { check: "broker", status: "fail", detail: `${display}: ${messageOf(e)}`, fix: brokerFix(e, display) },
        skipServer
      ] satisfies ReadonlyArray<Check>)
    )
  )
}

/**
 * Runs every check for `host`.
 *
 * @since 0.1.0
 * @category checks
 */
export const checks = (host: string) =>
  Effect.gen(function*() {
    const resolved = yield* Effect.either(Setup.resolve({}))
    if (resolved._tag === "Left") {
      const issues = resolved.left.issues
      return {
        config: undefined,
        checks: [
          {
            check: "config",
            status: "fail",
            detail: issues.map((i) => `${i.path}: ${i.message}`).join("; "),
            fix: `set the values named above (environment, or the [client] section of ${
              process.env.DMS_CLIENT_CONF ?? DmsConfig.defaultConfigFile()
            })`
          },
          { check: "database", status: "skip", detail: "not checked (configuration incomplete)" },
          { check: "broker", status: "skip", detail: "not checked (configuration incomplete)" },
          { check: "server", status: "skip", detail: "not checked (configuration incomplete)" }
        ] satisfies ReadonlyArray<Check>
      }
    }
    const settings = resolved.right.settings
    const described = DmsConfig.describe(settings)
    const config = Object.fromEntries(
      (Object.keys(DmsConfig.keys) as Array<DmsConfig.Key>).map((key) => {
        const k = DmsConfig.keys[key]
        const name = k.file ?? k.env.toLowerCase()
        return [name, { value: described[name] ?? "", source: DmsConfig.describeSource(settings.sources[key]) }]
      })
    )
    const [database, broker] = yield* Effect.all([checkDatabase(settings), checkBroker(settings, host)], {
      concurrency: "unbounded"
    })
    const configCheck: Check = { check: "config", status: "ok", detail: "complete" }
    return { config, checks: [configCheck, database, ...broker] }
  })
