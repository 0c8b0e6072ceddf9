/**
 * `trilio-dms reconcile --host <h> [--repair] [--json]`: the ledger against the host's real mounts.
 *
 * Exit codes: 0 when nothing is left that reconcile can see (no finding, or every one repaired), 1 when
 * drift remains (findings without `--repair`; with it, findings left, failed, or only marked for the
 * next operation), and as every command: 2 bad input, 3 timeout, 4 database, 5 broker or no DMS server
 * for the host. So `trilio-dms reconcile --host h` is a check a monitor can run.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as DmsError from "../DmsError.js"
import * as Protocol from "../Protocol.js"
import type * as Reconcile from "../Reconcile.js"
import * as Failure from "./Failure.js"
import * as Lazy from "./Lazy.js"
import * as Output from "./Output.js"
import * as RequestArgs from "./RequestArgs.js"
import * as Spinner from "./Spinner.js"

/**
 * A report as the JSON `--json` prints: snake_case, dates as ISO strings.
 *
 * @since 0.1.0
 * @category formatting
 */
export const reportJson = (r: Reconcile.Report) => ({
  status: "success" as const,
  host: r.host,
  status_supported: r.statusSupported,
  status_message: r.statusMessage,
  repair: r.repair,
  clean: r.clean,
  counts: r.counts,
  held: r.held.map((h) => ({ backup_target_id: h.backupTargetId, mount_path: h.mountPath, job_ids: h.jobIds, on_host: h.onHost })),
  stale: r.stale.map((s) => ({
    backup_target_id: s.backupTargetId,
    mount_path: s.mountPath,
    job_ids: s.jobIds,
    reason: s.reason,
    action: s.action,
    detail: s.detail
  })),
  orphans: r.orphans.map((o) => ({
    backup_target_id: o.backupTargetId,
    mount_path: o.mountPath,
    source: o.source,
    fs_type: o.fsType,
    action: o.action,
    detail: o.detail
  })),
  pending: r.pending.map((p) => ({
    backup_target_id: p.backupTargetId,
    op: p.op,
    deadline: p.deadline.toISOString(),
    expired: p.expired,
    job_ids: p.jobIds,
    action: p.action,
    detail: p.detail
  })),
  mounts: r.mounts.map((m) => ({
    backup_target_id: m.backupTargetId,
    type: m.type,
    mount_path: m.mountPath,
    source: m.source,
    fs_type: m.fsType,
    mounted: m.mounted,
    daemon_alive: m.daemonAlive
  }))
})

const jobs = (ids: ReadonlyArray<number>) => (ids.length === 0 ? "-" : ids.join(","))
const action = (o: Reconcile.Outcome) => (o.action === "none" ? "-" : o.detail === "" ? o.action : `${o.action}: ${o.detail}`)

/**
 * A report as the lines the command prints: a header, a table of the findings, a summary.
 *
 * @since 0.1.0
 * @category formatting
 */
export const reportLines = (r: Reconcile.Report): ReadonlyArray<string> => {
  const header = r.statusSupported
    ? `reconcile of ${r.host}: the server lists ${r.mounts.length} mount(s); the ledger has ${r.held.length} held target(s) and ${r.pending.length} pending mark(s)`
    : `reconcile of ${r.host}: the server does not answer status (${r.statusMessage}), so stale and orphan mounts cannot be ` +
      `detected; the ledger has ${r.held.length} held target(s) and ${r.pending.length} pending mark(s)`
  const rows = [
    ...r.stale.map((s) => ["stale", s.backupTargetId, s.mountPath ?? "-", jobs(s.jobIds), s.reason, action(s)]),
    ...r.orphans.map((o) => [
      "orphan",
      o.backupTargetId ?? "-",
      o.mountPath,
      "-",
      o.backupTargetId === null ? `not made by this server (from ${o.source ?? "?"})` : `mounted from ${o.source ?? "?"}, no job holds it`,
      action(o)
    ]),
    ...r.pending.map((p) => [
      "pending",
      p.backupTargetId,
      "-",
      jobs(p.jobIds),
      `${p.op} of unknown outcome, deadline ${Output.timestamp(p.deadline)}${p.expired ? " (passed)" : ""}`,
      action(p)
    ])
  ]
  const c = r.counts
  const summary = `summary: ${c.stale} stale, ${c.orphans} orphan(s), ${c.pending} pending; ` +
    (r.repair ? `repaired ${c.repaired}, marked ${c.marked}, remaining ${c.remaining}` : "nothing changed (run with --repair to repair)")
  return [
    header,
    ...(rows.length === 0
      ? []
      : Output.table(
        [{ header: "KIND" }, { header: "TARGET" }, { header: "PATH" }, { header: "JOBS" }, { header: "FOUND" }, { header: "ACTION" }],
        rows
      )),
    rows.length === 0 ? "the ledger and the host agree" : summary
  ]
}

const decodeHost = Schema.decodeUnknownEither(Protocol.Host)

/**
 * `trilio-dms reconcile`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "reconcile",
  {
    host: Options.text("host").pipe(Options.withDescription("the compute host (the DMS server's node id)")),
    repair: Options.boolean("repair").pipe(
      Options.withDescription(
        "repair what is found, under each target's lock: unmount orphans, resolve pending marks, mark stale targets so " +
          "that the next operation on them remounts them first"
      )
    ),
    timeout: RequestArgs.timeout,
    json: RequestArgs.json,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.gen(function*() {
      const host = yield* Either.match(decodeHost(args.host), {
        onLeft: (e) =>
          Effect.fail(new Failure.BadInput({ field: "--host", reason: DmsError.fromParseError("host", e).issues[0]?.message ?? "invalid" })),
        onRight: Effect.succeed
      })
      const { Reconcile, Setup } = yield* Lazy.lib
      const config = Option.match(args.timeout, { onNone: () => ({}), onSome: (timeout) => ({ timeout }) })
      const report = yield* Reconcile.reconcile(host, { repair: args.repair }).pipe(
        Effect.provide(Setup.clientLayer(config)),
        Spinner.withSpinner(`${args.repair ? "reconciling" : "checking"} ${host}`)
      )
      if (args.json) yield* Output.json({ ...reportJson(report), exit_code: report.clean ? 0 : Failure.ExitCode.failed })
      else yield* Output.lines(reportLines(report))
      if (!report.clean) return yield* Effect.fail(new Failure.CliExit({ code: Failure.ExitCode.failed }))
    }).pipe(Failure.reported(args))
).pipe(
  Command.withDescription(
    "Compare the ledger with the host's real mounts (its DMS server's status): stale rows (the ledger says mounted, the " +
      "host does not have it), orphan mounts (mounted, no job holds it) and pending operations. --repair repairs them. " +
      "Exit codes: 0 the ledger and the host agree (or everything found was repaired), 1 drift remains (found without " +
      "--repair; with it, left, failed or only marked), 2 bad input, 3 timeout, 4 database, 5 broker or no server for the host."
  )
)
