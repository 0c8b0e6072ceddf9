/**
 * The ledger commands: `status`, `mounts` (with the guide's orphaned-mount check, `--older-than`),
 * `history`, `soft-delete` and `migrate`. Aligned tables by default, `--json` for scripts. Only
 * `soft-delete --force` talks to a DMS server; the others need the database alone.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Ledger from "../Ledger.js"
import * as Failure from "./Failure.js"
import * as Lazy from "./Lazy.js"
import * as Output from "./Output.js"
import * as RequestArgs from "./RequestArgs.js"
import * as SecretFlags from "./SecretFlags.js"

const jobId = RequestArgs.integer("job-id").pipe(Options.withDescription("the job (an integer)"))
const targetId = Options.text("target-id").pipe(Options.withDescription("the backup target's id"))
const hostFilter = Options.text("host").pipe(Options.withDescription("only this compute host"), Options.optional)

/**
 * Parses `90s`, `30m`, `24h`, `2d`, `1w`, `1h30m` into milliseconds.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseAge = (text: string): Option.Option<number> => {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }
  const trimmed = text.trim().toLowerCase()
  if (!/^(\d+(\.\d+)?(ms|s|m|h|d|w))+$/.test(trimmed)) return Option.none()
  let total = 0
  for (const m of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) total += Number(m[1]) * units[m[2]!]!
  return total > 0 ? Option.some(total) : Option.none()
}

const entryRow = (e: Ledger.LedgerEntry) => Output.entriesTable([e])

/**
 * `trilio-dms status --job-id --target-id [--host]`.
 *
 * @since 0.1.0
 * @category commands
 */
export const status = Command.make(
  "status",
  { jobId, targetId, host: hostFilter, json: RequestArgs.json, verbose: RequestArgs.verbose },
  (args) =>
    Effect.gen(function*() {
      const { Mount, Setup } = yield* Lazy.lib
      const host = Option.getOrUndefined(args.host)
      const entry = yield* Mount.getMountStatus(args.jobId, args.targetId, host).pipe(
        Effect.provide(Setup.ledgerLayer({}))
      )
      if (args.json) return yield* Output.json(Option.match(entry, { onNone: () => null, onSome: Output.entryJson }))
      if (Option.isNone(entry)) {
        return yield* Output.line(
          `no ledger row for job ${args.jobId} and target ${args.targetId}${host === undefined ? "" : ` on ${host}`}`
        )
      }
      return yield* Output.lines(entryRow(entry.value))
    }).pipe(Failure.reported(args))
).pipe(Command.withDescription("Show the ledger's newest row for a job and a target (the guide's get_mount_status)."))

/**
 * `trilio-dms mounts [--host] [--target-id] [--older-than 24h]`.
 *
 * @since 0.1.0
 * @category commands
 */
export const mounts = Command.make(
  "mounts",
  {
    host: hostFilter,
    targetId: targetId.pipe(Options.withDescription("only this backup target"), Options.optional),
    olderThan: Options.text("older-than").pipe(
      Options.withDescription("only mounts created longer ago than this (90s, 30m, 24h, 2d): the orphaned-mount check"),
      Options.optional
    ),
    json: RequestArgs.json,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.gen(function*() {
      const olderThan = yield* Option.match(args.olderThan, {
        onNone: () => Effect.succeed(Option.none<number>()),
        onSome: (text) =>
          Option.match(parseAge(text), {
            onNone: () =>
              Effect.fail(
                new Failure.BadInput({ field: "--older-than", reason: `expected a duration such as 90s, 30m, 24h or 2d, got "${text}"` })
              ),
            onSome: (ms) => Effect.succeed(Option.some(ms))
          })
      })
      const { Mount, Setup } = yield* Lazy.lib
      const all = yield* Mount.getActiveMounts({
        host: Option.getOrUndefined(args.host),
        backupTargetId: Option.getOrUndefined(args.targetId)
      }).pipe(Effect.provide(Setup.ledgerLayer({})))
      const now = yield* Clock.currentTimeMillis
      const shown = Option.match(olderThan, {
        onNone: () => all,
        onSome: (ms) => all.filter((e) => now - e.createdAt.getTime() > ms)
      })
      if (args.json) {
        return yield* Output.json(
          shown.map((e) => ({ ...Output.entryJson(e), age_seconds: Math.floor((now - e.createdAt.getTime()) / 1000) }))
        )
      }
      const filters = [
        Option.map(args.host, (h) => `on ${h}`),
        Option.map(args.targetId, (t) => `of ${t}`),
        Option.map(args.olderThan, (t) => `older than ${t}`)
      ].flatMap(Option.toArray).join(" ")
      if (shown.length === 0) return yield* Output.line(`no active mounts${filters === "" ? "" : ` ${filters}`}`)
      const title = Option.isSome(olderThan)
        ? `${shown.length} active mount(s) ${filters}: possibly orphaned (a job that ended without unmounting)`
        : `${shown.length} active mount(s)${filters === "" ? "" : ` ${filters}`}`
      return yield* Output.lines([title, ...Output.entriesTable(shown, { now })])
    }).pipe(Failure.reported(args))
).pipe(
  Command.withDescription(
    "List active mounts (mounted and not deleted) from the ledger; --older-than finds mounts that may be orphaned."
  )
)

/**
 * `trilio-dms history --target-id [--limit]`.
 *
 * @since 0.1.0
 * @category commands
 */
export const history = Command.make(
  "history",
  {
    targetId,
    limit: RequestArgs.integer("limit").pipe(Options.withDescription("at most this many rows, newest first"), Options.withDefault(100)),
    json: RequestArgs.json,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.gen(function*() {
      const { Mount, Setup } = yield* Lazy.lib
      const rows = yield* Mount.getLedgerHistory(args.targetId, args.limit).pipe(Effect.provide(Setup.ledgerLayer({})))
      if (args.json) return yield* Output.json(rows.map(Output.entryJson))
      if (rows.length === 0) return yield* Output.line(`no ledger rows for target ${args.targetId}`)
      return yield* Output.lines(Output.entriesTable(rows, { history: true }))
    }).pipe(Failure.reported(args))
).pipe(Command.withDescription("Show a target's ledger rows, deleted ones included, newest first (the guide's get_ledger_history)."))

/**
 * `trilio-dms soft-delete --job-id --target-id [--host] [--force]`.
 *
 * @since 0.1.0
 * @category commands
 */
export const softDelete = Command.make(
  "soft-delete",
  {
    jobId,
    targetId,
    host: hostFilter,
    force: Options.boolean("force").pipe(
      Options.withDescription("unmount a mounted row first (through the DMS server if the job is the last holder)")
    ),
    timeout: RequestArgs.timeout,
    json: RequestArgs.json,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.gen(function*() {
      const { DmsConfig, Ledger, Mount, Setup } = yield* Lazy.lib
      const host = Option.getOrUndefined(args.host)
      const config = Option.match(args.timeout, { onNone: () => ({}), onSome: (timeout) => ({ timeout }) })
      const what = `job ${args.jobId} and target ${args.targetId}${host === undefined ? "" : ` on ${host}`}`
      const deleted = yield* Effect.gen(function*() {
        const ledger = yield* Ledger.Ledger
        const settings = yield* DmsConfig.DmsConfig
        const entry = yield* ledger.getMountStatus(args.jobId, args.targetId, host)
        if (Option.isNone(entry)) {
          return yield* Failure.fail(args, Failure.ExitCode.failed, `not deleted: no ledger row for ${what}`, { deleted: false })
        }
        if (entry.value.mounted && !args.force) {
          return yield* Failure.fail(
            args,
            Failure.ExitCode.failed,
            `not deleted: job ${args.jobId} still holds ${args.targetId} on ${entry.value.host} (mounted); ` +
              `unmount it first, or pass --force to unmount and delete`,
            { deleted: false }
          )
        }
        const done = args.force
          ? yield* Mount.softDeleteEntry(args.jobId, args.targetId, { host, force: true }).pipe(
            Effect.provide(Setup.clientLayer(config))
          )
          : yield* ledger.softDeleteEntry(args.jobId, args.targetId, { host, timeout: settings.lockTimeout })
        if (!done) {
          return yield* Failure.fail(args, Failure.ExitCode.failed, `not deleted: the row for ${what} changed meanwhile`, {
            deleted: false
          })
        }
        return entry.value
      }).pipe(Effect.provide(Setup.ledgerLayer(config)))
      if (args.json) {
        return yield* Output.json({
          status: "success",
          deleted: true,
          id: deleted.id,
          jobid: deleted.jobId,
          backup_target_id: deleted.backupTargetId,
          host: deleted.host
        })
      }
      return yield* Output.line(
        `soft-deleted ledger row ${deleted.id} (job ${deleted.jobId}, target ${deleted.backupTargetId}, host ${deleted.host})`
      )
    }).pipe(Failure.reported(args))
).pipe(
  Command.withDescription(
    "Mark a job's ledger row for a target deleted (the guide's soft_delete_entry). A mounted row is refused (exit 1) " +
      "unless --force, which unmounts it first."
  )
)

const tableLine = (t: Ledger.TableMigration) =>
  t.action === "created"
    ? `  ${t.table}: created`
    : t.action === "upgraded"
    ? `  ${t.table}: ${
      [
        ...(t.addedColumns.length > 0 ? [`added column(s) ${t.addedColumns.join(", ")}`] : []),
        ...(t.addedIndexes.length > 0 ? [`added index(es) ${t.addedIndexes.join(", ")}`] : [])
      ].join("; ")
    }`
    : `  ${t.table}: already current`

/**
 * `trilio-dms migrate [--db-url]`: creates or upgrades the ledger's tables and says what it did.
 *
 * @since 0.1.0
 * @category commands
 */
export const migrate = Command.make(
  "migrate",
  {
    dbUrl: Options.text("db-url").pipe(
      Options.withDescription(
        "the database to migrate (default: DMS_DB_URL or client.conf's db_url); a password here is visible in the process list: prefer --db-url-file"
      ),
      Options.optional
    ),
    dbUrlFile: Options.text("db-url-file").pipe(
      Options.withDescription("a file (mode 600) holding the database URL (default: DMS_DB_URL_FILE or client.conf's db_url_file)"),
      Options.optional
    ),
    json: RequestArgs.json,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.gen(function*() {
      yield* SecretFlags.warnUrl("--db-url", args.dbUrl, [
        "--db-url-file <file>",
        "DMS_DB_URL_FILE",
        "DMS_DB_URL in the environment",
        "db_url_file in client.conf"
      ])
      const { Ledger, Setup } = yield* Lazy.lib
      const dbUrl = yield* SecretFlags.fromFlags("--db-url", args.dbUrl, "--db-url-file", args.dbUrlFile)
      const options = Option.match(dbUrl, { onNone: () => ({}), onSome: (dbUrl) => ({ dbUrl }) })
      const { settings } = yield* Setup.resolve(options, { rabbitmqUrl: "memory:" })
      const report = yield* Ledger.migrate({ url: settings.dbUrl })
      const current = report.tables.every((t) => t.action === "current")
      if (args.json) {
        return yield* Output.json({
          status: "success",
          db_url: report.location,
          changed: !current,
          tables: report.tables.map((t) => ({
            table: t.table,
            action: t.action,
            added_columns: t.addedColumns,
            added_indexes: t.addedIndexes
          }))
        })
      }
      if (report.tables.length === 0) return yield* Output.line(`${report.location}: an in-process ledger has no tables to migrate`)
      if (current) {
        return yield* Output.line(
          `ledger on ${report.location} already current: ${report.tables.map((t) => t.table).join(", ")} have every column and index`
        )
      }
      return yield* Output.lines([`migrated the ledger on ${report.location}:`, ...report.tables.map(tableLine)])
    }).pipe(Failure.reported(args))
).pipe(
  Command.withDescription(
    "Create the ledger tables (backup_target_mount_ledger, backup_target_mount_lock) if missing, or add the columns " +
      "an earlier version's tables lack, and say what was done. The only command that changes the schema (a client " +
      "start only checks it): run it once per database, and again after an upgrade, as a user with CREATE, ALTER " +
      "and INDEX. Safe to run again or concurrently. The database itself must exist."
  )
)
