/**
 * Reconcile: compares what the ledger says about one host (its holders and pending marks) with what the
 * host's DMS server really has mounted (its `status` action), and optionally repairs the drift.
 *
 * - *stale*: the ledger has holders, the host does not have the target mounted (a host reboot, a dead
 *   FUSE daemon);
 * - *orphan*: the host has a mount under its base that no job holds (a mount that completed after its
 *   client timed out), or that this server did not make at all (no target id);
 * - *pending*: an operation whose outcome is not known yet (a mark on the lock row).
 *
 * With `repair`, every pair is repaired under its (target, host) lease, as mount and unmount run, and
 * judged again under it (the first answers are a snapshot and may be stale by then).
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as DmsError from "./DmsError.js"
import type * as Ledger from "./Ledger.js"
import type * as Mount from "./Mount.js"
import * as Operation from "./internal/operation.js"
import * as Protocol from "./Protocol.js"

/**
 * Options of {@link reconcile}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReconcileOptions {
  /** Repair what was found (default: only report). */
  readonly repair?: boolean | undefined
  /**
   * Mount requests (the guide's shape, for this host) of targets the caller can remount now: a stale
   * target with a request here is remounted at once; without one it is only marked, and the next
   * operation on it remounts it with that operation's request (the ledger holds no export or token).
   */
  readonly requests?: ReadonlyArray<unknown> | undefined
}

/**
 * What was done about one finding.
 * - `none`: reported only (no repair asked);
 * - `unmounted`: an orphan was unmounted; `remounted`: a stale target was mounted again (or verified);
 * - `resolved`: a pending mark was settled: the host was driven to the ledger's state, the mark cleared;
 * - `marked`: a stale target was marked so that the next operation on it remounts it first;
 * - `skipped`: under the lease the finding no longer held (e.g. the orphan is held by a job now);
 * - `left`: not repaired, `detail` says why; `failed`: the repair failed, `detail` says how.
 *
 * @since 0.1.0
 * @category models
 */
export type Action = "none" | "unmounted" | "remounted" | "resolved" | "marked" | "skipped" | "left" | "failed"

/**
 * What was done about a finding, and why.
 *
 * @since 0.1.0
 * @category models
 */
export interface Outcome {
  readonly action: Action
  readonly detail: string
}

/**
 * One mount as the host's DMS server lists it (`status`).
 *
 * @since 0.1.0
 * @category models
 */
export interface HostMount {
  /** From the server's state file; null for a mount under its base that it did not make. */
  readonly backupTargetId: string | null
  readonly type: string | null
  readonly mountPath: string
  readonly source: string | null
  readonly fsType: string | null
  /** It shows in the host's mount table. */
  readonly mounted: boolean
  /** For S3: whether the FUSE daemon is alive. */
  readonly daemonAlive: boolean | null
}

/**
 * A target that jobs hold on the host, as the ledger says.
 *
 * @since 0.1.0
 * @category models
 */
export interface Held {
  readonly backupTargetId: string
  readonly mountPath: string | null
  readonly jobIds: ReadonlyArray<number>
  /** The host really has it mounted; null when the server cannot tell (no `status`). */
  readonly onHost: boolean | null
}

/**
 * A stale row: the ledger says mounted, the host does not have it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stale extends Outcome {
  readonly backupTargetId: string
  readonly mountPath: string | null
  readonly jobIds: ReadonlyArray<number>
  /** What the host has instead. */
  readonly reason: string
}

/**
 * An orphan mount: the host has it, no job holds it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Orphan extends Outcome {
  /** Null: the server has no state file for it (it did not make this mount). */
  readonly backupTargetId: string | null
  readonly mountPath: string
  readonly source: string | null
  readonly fsType: string | null
}

/**
 * A pending mark: an operation whose outcome is not known.
 *
 * @since 0.1.0
 * @category models
 */
export interface Pending extends Outcome {
  readonly backupTargetId: string
  readonly op: Protocol.Action
  readonly deadline: Date
  /** Its deadline (plus a grace) has passed: no stale request can still run. */
  readonly expired: boolean
  readonly jobIds: ReadonlyArray<number>
}

/**
 * Counts of a {@link Report}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Counts {
  readonly held: number
  readonly stale: number
  readonly orphans: number
  readonly pending: number
  /** Findings repaired (unmounted, remounted, resolved) or gone under the lease (skipped). */
  readonly repaired: number
  /** Stale targets marked for the next operation (the host still lacks them). */
  readonly marked: number
  /** Findings not repaired: reported only, left or failed. */
  readonly remaining: number
}

/**
 * The result of {@link reconcile}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Report {
  readonly host: string
  /** The server answered `status` (the Python server does not: stale and orphan mounts then go unseen). */
  readonly statusSupported: boolean
  /** Why not, when it is not supported: the server's answer. */
  readonly statusMessage: string | null
  readonly repair: boolean
  /** The host's mounts, as its server listed them (empty without `status`). */
  readonly mounts: ReadonlyArray<HostMount>
  readonly held: ReadonlyArray<Held>
  readonly stale: ReadonlyArray<Stale>
  readonly orphans: ReadonlyArray<Orphan>
  readonly pending: ReadonlyArray<Pending>
  readonly counts: Counts
  /** Nothing is left that reconcile can see: no finding, or every one repaired. */
  readonly clean: boolean
}

// ---------------------------------------------------------------------------------------------------
// The host's status

const StatusEntry = Schema.Struct({
  backup_target_id: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }),
  type: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }),
  mount_path: Schema.String,
  source: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }),
  fs_type: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }),
  mounted: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  daemon_alive: Schema.optionalWith(Schema.NullOr(Schema.Boolean), { default: () => null })
})
const decodeHost = Schema.decodeUnknownEither(Protocol.Host)
const decodeMounts = Schema.decodeUnknownEither(Schema.Struct({ mounts: Schema.Array(StatusEntry) }), { errors: "all" })

/**
 * What the host's server answered to `status`: its mounts, or that it does not know the action.
 *
 * @since 0.1.0
 * @category models
 */
export type HostStatus =
  | { readonly supported: true; readonly mounts: ReadonlyArray<HostMount> }
  | { readonly supported: false; readonly message: string }

/**
 * Asks the host's DMS server for its mounts (`{"action": "status"}`). A server that does not know the
 * action (the Python one answers `Unknown action: status`) is reported as such, not as a failure.
 *
 * @since 0.1.0
 * @category operations
 */
export const hostStatus = (host: string): Effect.Effect<HostStatus, DmsError.DmsError, Mount.Services> =>
  Either.match(decodeHost(host), {
    onLeft: (error) =>
      Effect.fail(
        DmsError.invalid("hostStatus", "host", DmsError.fromParseError("hostStatus", error).issues[0]?.message ?? "invalid host")
      ),
    onRight: (valid) => Effect.flatMap(Operation.env, (e) => queryStatus(e, valid))
  })

const queryStatus = (e: Operation.Env, host: string): Effect.Effect<HostStatus, DmsError.DmsError> =>
  e.broker.request(host, { action: "status" }, { timeout: e.config.requestTimeout }).pipe(
    Effect.flatMap((reply): Effect.Effect<HostStatus, DmsError.MountError> => {
      if (reply.status === "error") {
        const message = reply.error_msg ?? "no message"
        return /unknown action/i.test(message)
          ? Effect.succeed({ supported: false, message })
          : Effect.fail(
            new DmsError.MountError({
              reason: "server",
              errorMsg: `the DMS server of ${host} could not list its mounts: ${message}`,
              host
            })
          )
      }
      return Either.match(decodeMounts(reply), {
        onLeft: (error) =>
          Effect.fail(
            new DmsError.MountError({
              reason: "server",
              errorMsg: `the DMS server of ${host} answered status without a list of mounts (${
                DmsError.fromParseError("status reply", error).message
              })`,
              host
            })
          ),
        onRight: ({ mounts }) =>
          Effect.succeed({
            supported: true as const,
            mounts: mounts.map((m): HostMount => ({
              backupTargetId: m.backup_target_id,
              type: m.type,
              mountPath: m.mount_path,
              source: m.source,
              fsType: m.fs_type,
              mounted: m.mounted,
              daemonAlive: m.daemon_alive
            }))
          })
      })
    })
  )

/** The host's entry for a target, and whether it really serves it. */
const onHost = (mounts: ReadonlyArray<HostMount>, targetId: string) => {
  const entry = mounts.find((m) => m.backupTargetId === targetId && m.mounted) ??
    mounts.find((m) => m.backupTargetId === targetId)
  return { entry, has: entry !== undefined && entry.mounted && entry.daemonAlive !== false }
}

const missingReason = (entry: HostMount | undefined) =>
  entry === undefined
    ? "the host does not have it mounted"
    : !entry.mounted
    ? `the server recorded it at ${entry.mountPath}, but it is not in the host's mount table`
    : `the FUSE daemon serving ${entry.mountPath} is not running`

// ---------------------------------------------------------------------------------------------------
// Validation (before any I/O)

const validateOptions = (host: unknown, options: unknown) =>
  Effect.gen(function*() {
    const issues: Array<DmsError.Issue> = []
    const issue = (path: string, message: string) => issues.push(new DmsError.Issue({ path, message }))
    Either.match(decodeHost(host), {
      onLeft: (e) => {
        for (const i of DmsError.fromParseError("reconcile", e).issues) issue("host", i.message)
      },
      onRight: () => undefined
    })
    const opts = (options ?? {}) as Record<string, unknown>
    if (typeof opts !== "object" || Array.isArray(opts)) issue("options", "Expected an object")
    if (opts.repair !== undefined && typeof opts.repair !== "boolean") {
      issue("repair", `Expected a boolean, actual ${JSON.stringify(opts.repair)}`)
    }
    const requests = new Map<string, Protocol.MountRequest>()
    if (opts.requests !== undefined && !Array.isArray(opts.requests)) {
      issue("requests", "Expected an array of mount requests")
    } else if (Array.isArray(opts.requests)) {
      for (const [i, raw] of opts.requests.entries()) {
        const decoded = yield* Effect.either(Operation.validate("mount", raw))
        if (Either.isLeft(decoded)) {
          for (const x of decoded.left.issues) issue(x.path === "" ? `requests[${i}]` : `requests[${i}].${x.path}`, x.message)
          continue
        }
        const request = decoded.right
        if (request.host !== host) {
          issue(`requests[${i}].host`, `Expected the reconciled host ${JSON.stringify(host)}, actual ${JSON.stringify(request.host)}`)
        } else if (requests.has(request.backup_target.id)) {
          issue(`requests[${i}].backup_target.id`, `a second request for target ${request.backup_target.id}`)
        } else {
          requests.set(request.backup_target.id, request)
        }
      }
    }
    if (issues.length > 0) return yield* Effect.fail(new DmsError.ValidationError({ subject: "reconcile", issues }))
    return { host: host as string, repair: opts.repair === true, requests }
  })

// ---------------------------------------------------------------------------------------------------
// Repair of one (target, host), under its lease

interface PairFindings {
  readonly stale: boolean
  readonly orphan: boolean
  readonly pending: boolean
}

interface PairOutcome {
  stale?: Outcome
  orphan?: Outcome
  pending?: Outcome
  /** A pending mark found under the lease that the snapshot did not show. */
  foundPending?: Ledger.PendingOperation
}

const outcome = (action: Action, detail: string): Outcome => ({ action, detail })

/** A target without its request: enough to unmount it (the server needs id, type and path). */
const bareTarget = (e: Operation.Env, id: string, host: string, type: "nfs" | "s3", mountPath: string): Operation.Target => ({
  jobId: 0,
  id,
  host,
  type,
  mountPath,
  body: (action, path, t) => ({
    action,
    host,
    backup_target: { id, type: t, filesystem_export_mount_path: path }
  })
})

const asType = (t: string | null | undefined): "nfs" | "s3" | undefined => (t === "nfs" || t === "s3" ? t : undefined)

const jobsOf = (state: Ledger.TargetState) => state.holders.map((h) => h.jobId)

const repairPair = (
  e: Operation.Env,
  host: string,
  id: string,
  findings: PairFindings,
  statusSupported: boolean,
  request: Protocol.MountRequest | undefined
) =>
  e.ledger.withTargetLock(id, host, (lease) =>
    Effect.gen(function*() {
      const out: PairOutcome = {}
      const grace = Duration.toMillis(Operation.PENDING_GRACE)
      let state = yield* lease.read()
      // A mark due at once (as far back as the grace), for the next operation to resolve without waiting.
      const past = () => -grace
      const requestPathDiffers = request !== undefined && Option.isSome(state.mountPath) &&
        state.mountPath.value !== request.backup_target.filesystem_export_mount_path

      if (Option.isSome(state.pending)) {
        const pending = state.pending.value
        if (!findings.pending) out.foundPending = pending
        if (pending.remainingMs + grace > 0) {
          // A request of that operation may still run on the host: nothing about the pair is settled.
          const why = `an earlier ${pending.op} of unknown outcome may still run until ${pending.deadline.toISOString()}`
          out.pending = outcome("left", `${why}; the next operation on the target waits for it and resolves it`)
          if (findings.stale) out.stale = outcome("left", why)
          if (findings.orphan) out.orphan = outcome("left", why)
          return out
        }
        if (state.holders.length === 0) {
          const entryPath = Option.getOrElse(state.mountPath, () => "")
          const type = Option.getOrElse(state.targetType, () => "nfs" as const)
          yield* Operation.resolvePending(e, lease, bareTarget(e, id, host, type, entryPath), state)
          out.pending = outcome("resolved", "no job holds it: the host was asked to unmount it, and the mark cleared")
          if (findings.orphan) out.orphan = outcome("unmounted", "unmounted while resolving the pending mark")
        } else if (request !== undefined && !requestPathDiffers) {
          const r = yield* Operation.resolvePending(e, lease, Operation.fromRequest(request, e.config), state)
          const how = r.remounted ? "remounted with the given request" : "the host has it: verified with the given request"
          out.pending = outcome("resolved", `${how}; the mark cleared`)
          if (findings.stale) out.stale = outcome("remounted", how)
        } else if (statusSupported) {
          const status = yield* queryStatus(e, host)
          const { entry, has } = status.supported ? onHost(status.mounts, id) : { entry: undefined, has: false }
          if (status.supported && has) {
            yield* lease.write({ pending: null })
            out.pending = outcome("resolved", "the host has it mounted, as the ledger says: the mark cleared")
          } else {
            // The mark stays, its deadline passed: the next operation remounts with its own request.
            const detail = `${status.supported ? missingReason(entry) : "the server no longer answers status"}; the mark stays, ` +
              `so the next operation on the target remounts it with its request`
            out.pending = outcome("marked", detail)
            if (findings.stale) out.stale = outcome("marked", detail)
            return out
          }
        } else {
          out.pending = outcome(
            "left",
            `job(s) ${jobsOf(state).join(", ")} hold it and this server cannot tell whether it is mounted; remounting needs ` +
              (requestPathDiffers ? "a request with the recorded mount path" : "its request") +
              `: the mark stays, so the next operation on the target remounts it with its request`
          )
          return out
        }
        state = yield* lease.read()
      }
      if (!statusSupported || ((out.stale !== undefined || !findings.stale) && (out.orphan !== undefined || !findings.orphan))) {
        return out
      }

      // Judged again under the lease, on a fresh answer: nothing else changes the pair meanwhile.
      const status = yield* queryStatus(e, host)
      if (!status.supported) {
        const detail = `the server no longer answers status (${status.message})`
        if (findings.stale && out.stale === undefined) out.stale = outcome("left", detail)
        if (findings.orphan && out.orphan === undefined) out.orphan = outcome("left", detail)
        return out
      }
      const { entry, has } = onHost(status.mounts, id)
      const holders = jobsOf(state)
      if (holders.length === 0) {
        if (findings.stale && out.stale === undefined) out.stale = outcome("skipped", "no job holds it any more")
        // Only what was reported is repaired; anything new is for the next reconcile.
        if (out.orphan !== undefined || !findings.orphan) return out
        if (entry === undefined || !entry.mounted) {
          out.orphan = outcome("skipped", "no longer mounted on the host")
          return out
        }
        const type = asType(entry.type) ?? Option.getOrElse(state.targetType, () => "nfs" as const)
        const reply = yield* Operation.send(e, lease, bareTarget(e, id, host, type, entry.mountPath), "unmount", entry.mountPath, type)
        // The server answered: nothing is in flight, whatever it said.
        yield* lease.write({ pending: null })
        out.orphan = reply.status === "success"
          ? outcome("unmounted", reply.success_msg ?? `unmounted ${entry.mountPath}`)
          : outcome("failed", `the server could not unmount it: ${reply.error_msg ?? "no message"}`)
        return out
      }
      if (findings.orphan && out.orphan === undefined) {
        out.orphan = outcome("skipped", `held now by job(s) ${holders.join(", ")}: not unmounted`)
      }
      if (out.stale !== undefined || !findings.stale) return out
      if (has) {
        out.stale = outcome("skipped", "the host has it mounted now")
        return out
      }
      const reason = missingReason(entry)
      if (request !== undefined && !requestPathDiffers) {
        const target = Operation.fromRequest(request, e.config)
        const reply = yield* Operation.send(e, lease, target, "mount", target.mountPath, target.type)
        if (reply.status === "success") {
          yield* lease.write({ pending: null })
          out.stale = outcome("remounted", reply.success_msg ?? `mounted at ${target.mountPath}`)
        } else {
          yield* lease.write({ pending: { op: "mount", timeoutMs: past() } })
          out.stale = outcome(
            "failed",
            `the server could not remount it: ${reply.error_msg ?? "no message"}; marked, so the next operation on the target tries again`
          )
        }
        return out
      }
      yield* lease.write({ pending: { op: "mount", timeoutMs: past() } })
      out.stale = outcome(
        "marked",
        `${reason}; ${requestPathDiffers ? "the given request has another mount path; " : ""}` +
          `marked, so the next operation on the target (even a release) remounts it with its request first`
      )
      return out
    }), { timeout: e.config.lockTimeout })

// ---------------------------------------------------------------------------------------------------
// reconcile

const byId = <A>(items: ReadonlyArray<A>, id: (a: A) => string) => {
  const out = new Map<string, Array<A>>()
  for (const item of items) {
    const list = out.get(id(item))
    if (list === undefined) out.set(id(item), [item])
    else list.push(item)
  }
  return out
}

const repairedActions: ReadonlyArray<Action> = ["unmounted", "remounted", "resolved", "skipped"]

/**
 * Compares the ledger's view of `host` (holders, pending marks) with the host's real mounts (its DMS
 * server's `status`), and with `repair` repairs the drift, one (target, host) at a time under its lease:
 * orphans are unmounted, pending marks resolved (the host driven to the ledger's state), stale targets
 * remounted when `requests` holds their request and marked otherwise (so the next operation on them
 * remounts them first). Mounts the server did not make (no target id) are reported and left alone.
 *
 * Fails with `ValidationError` (before any I/O) on a bad host or options, `BrokerError` when no server
 * listens for the host, `TimeoutError` when it does not answer, `MountError` when it cannot list its
 * mounts, `DatabaseError` when the ledger cannot be read. A repair that fails is reported, not thrown.
 *
 * @since 0.1.0
 * @category operations
 */
export const reconcile = (
  host: string,
  options: ReconcileOptions = {}
): Effect.Effect<Report, DmsError.DmsError, Mount.Services> =>
  Effect.gen(function*() {
    const valid = yield* validateOptions(host, options)
    const e = yield* Operation.env
    const ledger = yield* e.ledger.getHostState(valid.host)
    const status = yield* queryStatus(e, valid.host)
    const grace = Duration.toMillis(Operation.PENDING_GRACE)
    const supported = status.supported
    const mounts = status.supported ? status.mounts : []
    const locks = new Map(ledger.locks.map((l) => [l.backupTargetId, l]))
    const holders = byId(ledger.holders, (h) => h.backupTargetId)
    const none = outcome("none", "")

    const held: Array<Held> = [...holders.entries()].map(([id, rows]) => ({
      backupTargetId: id,
      mountPath: Option.getOrNull(Option.flatMap(Option.fromNullable(locks.get(id)), (l) => l.mountPath)),
      jobIds: rows.map((r) => r.jobId),
      onHost: supported ? onHost(mounts, id).has : null
    }))
    const stale: Array<Stale> = held.filter((h) => h.onHost === false).map((h) => ({
      backupTargetId: h.backupTargetId,
      mountPath: h.mountPath,
      jobIds: h.jobIds,
      reason: missingReason(onHost(mounts, h.backupTargetId).entry),
      ...none
    }))
    const orphans: Array<Orphan> = mounts
      .filter((m) => m.mounted && (m.backupTargetId === null || !holders.has(m.backupTargetId)))
      .map((m) => ({
        backupTargetId: m.backupTargetId,
        mountPath: m.mountPath,
        source: m.source,
        fsType: m.fsType,
        ...(m.backupTargetId === null && valid.repair
          ? outcome(
            "left",
            "this DMS server did not make it (no state file names a target): left alone, it may be someone else's; unmount it by hand if nobody uses it"
          )
          : none)
      }))
    const pending: Array<Pending> = ledger.locks.flatMap((l) =>
      Option.match(l.pending, {
        onNone: () => [],
        onSome: (p) => [{
          backupTargetId: l.backupTargetId,
          op: p.op,
          deadline: p.deadline,
          expired: p.remainingMs + grace <= 0,
          jobIds: (holders.get(l.backupTargetId) ?? []).map((r) => r.jobId),
          ...none
        }]
      })
    )

    if (valid.repair) {
      const ids = [
        ...new Set([
          ...stale.map((s) => s.backupTargetId),
          ...orphans.flatMap((o) => (o.backupTargetId === null ? [] : [o.backupTargetId])),
          ...pending.map((p) => p.backupTargetId)
        ])
      ].sort()
      for (const id of ids) {
        const findings: PairFindings = {
          stale: stale.some((s) => s.backupTargetId === id),
          orphan: orphans.some((o) => o.backupTargetId === id),
          pending: pending.some((p) => p.backupTargetId === id)
        }
        const result = yield* repairPair(e, valid.host, id, findings, supported, valid.requests.get(id)).pipe(
          Effect.catchAll((error) => {
            const failed = outcome("failed", error.message)
            return Effect.succeed<PairOutcome>({ stale: failed, orphan: failed, pending: failed })
          }),
          Effect.annotateLogs({ backupTargetId: id, host: valid.host })
        )
        const apply = <A extends Outcome & { readonly backupTargetId: string | null }>(list: Array<A>, o: Outcome | undefined) => {
          if (o === undefined) return
          list.forEach((item, i) => {
            if (item.backupTargetId === id) list[i] = { ...item, ...o }
          })
        }
        apply(stale, result.stale)
        apply(orphans, result.orphan)
        apply(pending, result.pending)
        if (result.foundPending !== undefined && result.pending !== undefined) {
          pending.push({
            backupTargetId: id,
            op: result.foundPending.op,
            deadline: result.foundPending.deadline,
            expired: result.foundPending.remainingMs + grace <= 0,
            jobIds: (holders.get(id) ?? []).map((r) => r.jobId),
            ...result.pending
          })
        }
      }
    }

    const findings: ReadonlyArray<Outcome> = [...stale, ...orphans, ...pending]
    const marked = findings.filter((f) => f.action === "marked").length
    const repaired = findings.filter((f) => repairedActions.includes(f.action)).length
    const remaining = findings.length - repaired - marked
    const report: Report = {
      host: valid.host,
      statusSupported: supported,
      statusMessage: status.supported ? null : status.message,
      repair: valid.repair,
      mounts,
      held,
      stale,
      orphans,
      pending,
      counts: { held: held.length, stale: stale.length, orphans: orphans.length, pending: pending.length, repaired, marked, remaining },
      clean: marked === 0 && remaining === 0
    }
    if (!supported) {
      yield* Effect.logWarning(
        `the DMS server of ${valid.host} does not answer status (${status.message}): stale and orphan mounts cannot be detected; only pending marks were handled`
      )
    }
    return report
  }).pipe(
    Effect.withSpan("dms.reconcile", { attributes: { "dms.host": String(host), "dms.repair": options?.repair === true }, captureStackTrace: false })
  )
