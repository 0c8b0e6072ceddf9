/**
 * Mount and unmount: the ledger counts the jobs that hold a target on a host; the first causes a
 * physical mount, the last release a physical unmount. Every operation runs under the (target, host)
 * lease, and an outcome that is not known (a reply that never came, a crash mid-call) is recorded as
 * pending and resolved with the server by the next operation before the rows are trusted.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Broker from "./Broker.js"
import * as DmsConfig from "./DmsConfig.js"
import * as DmsError from "./DmsError.js"
import * as Ledger from "./Ledger.js"
import * as Protocol from "./Protocol.js"
import * as Operation from "./internal/operation.js"
import * as OperationMetrics from "./internal/operationMetrics.js"

/**
 * What a successful mount tells the caller.
 *
 * @since 0.1.0
 * @category models
 */
export interface MountResult {
  /** Where the target is mounted on the host. */
  readonly mountPath: string
  /** The host already had the target mounted (for other jobs); the server verified it. */
  readonly reusedExisting: boolean
  /** This call caused the physical mount. */
  readonly physicallyMounted: boolean
  /** The server's message. */
  readonly message: string
}

/**
 * What a successful unmount tells the caller.
 *
 * @since 0.1.0
 * @category models
 */
export interface UnmountResult {
  /** The target was physically unmounted (this job was the last holder). */
  readonly unmounted: boolean
  /** Holds that remain on the target on this host (other jobs, or this job's other holds in process). */
  readonly activeMountsRemaining: number
  readonly message: string
}

/**
 * The services mount and unmount need.
 *
 * @since 0.1.0
 * @category models
 */
export type Services = Ledger.Ledger | Broker.Broker | DmsConfig.DmsConfig

/**
 * How long after a pending operation's deadline the next operation waits before resolving it, so a
 * server whose clock runs a little behind the client's cannot still run the stale request.
 *
 * @since 0.1.0
 * @category constants
 */
export const PENDING_GRACE = Operation.PENDING_GRACE

/**
 * Mount and unmount calls by operation and outcome (`success`, or the error's tag).
 *
 * @since 0.1.0
 * @category metrics
 */
export const operationsTotal = OperationMetrics.operationsTotal

/**
 * Duration of mount and unmount calls, in seconds.
 *
 * @since 0.1.0
 * @category metrics
 */
export const operationDuration = OperationMetrics.operationDuration

// ---------------------------------------------------------------------------------------------------
// Holds of one job in this process (one job backing up two VMs in two mount contexts)

const holdsByLedger = new WeakMap<Ledger.Service, Map<string, number>>()
const holdsOf = (ledger: Ledger.Service) => {
  let holds = holdsByLedger.get(ledger)
  if (holds === undefined) {
    holds = new Map()
    holdsByLedger.set(ledger, holds)
  }
  return holds
}
const holdKey = (jobId: number, targetId: string, host: string) => `${jobId}\0${targetId}\0${host}`

// ---------------------------------------------------------------------------------------------------
// The operations

const pathMismatch = (target: Operation.Target, recorded: string) =>
  DmsError.invalid(
    "request",
    "backup_target.filesystem_export_mount_path",
    `target ${target.id} is mounted on ${target.host} at ${recorded}; a target has one mount path per host`
  )

const mountUnderLease = (e: Operation.Env, target: Operation.Target) => (lease: Ledger.Lease) =>
  Effect.gen(function*() {
    const { remounted, state } = yield* Operation.resolvePending(e, lease, target, yield* lease.read(target.jobId))
    const hadHolders = state.holders.length > 0
    if (hadHolders && Option.isSome(state.mountPath) && state.mountPath.value !== target.mountPath) {
      return yield* Effect.fail(pathMismatch(target, state.mountPath.value))
    }
    // Always ask the server, even when other jobs hold the target: it verifies the mount is really there
    // (a host reboot or a late unmount must never hand out a path that is the local disk).
    const reply = yield* Operation.send(e, lease, target, "mount", target.mountPath, target.type)
    if (reply.status === "error") {
      yield* lease.write({ pending: null, release: true })
      return yield* Effect.fail(Operation.serverError(target, reply))
    }
    // Remounted while resolving an earlier operation (the host had lost it): this call mounted it.
    // Without holders (pending marks resolved) a mount the server already has belongs to no other job:
    // typically this very request, run by a server that died before replying and answered again after
    // its restart (the model test found it). The first holder is the physical mount.
    const reused = hadHolders && Operation.alreadyMounted(reply, hadHolders) && !remounted
    const entryId = Option.match(state.job, { onNone: () => null, onSome: (j) => j.id })
    yield* lease.write({
      job: { jobId: target.jobId, mounted: true, entryId },
      mountPath: target.mountPath,
      targetType: target.type,
      pending: null,
      release: true
    })
    const holds = holdsOf(e.ledger)
    const key = holdKey(target.jobId, target.id, target.host)
    // The ledger is the truth: without an active row the job has no holds here, whatever an earlier
    // operation that failed after its write committed left in this count.
    const before = Option.exists(state.job, (j) => j.mounted) ? holds.get(key) ?? 0 : 0
    holds.set(key, before + 1)
    const result: MountResult = {
      mountPath: target.mountPath,
      reusedExisting: reused,
      physicallyMounted: !reused,
      message: reply.success_msg ?? `Mounted at ${target.mountPath}`
    }
    return result
  })

const unmountUnderLease = (e: Operation.Env, target: Operation.Target, options: { readonly release: boolean; readonly force: boolean }) =>
(lease: Ledger.Lease) =>
  Effect.gen(function*() {
    const { state } = yield* Operation.resolvePending(e, lease, target, yield* lease.read(target.jobId))
    const mine = Option.filter(state.job, (j) => j.mounted)
    if (Option.isNone(mine)) {
      // No active row, so no holds in this process either (see mountUnderLease).
      holdsOf(e.ledger).delete(holdKey(target.jobId, target.id, target.host))
      return yield* Effect.fail(
        new DmsError.MountError({
          reason: "no-active-mount",
          errorMsg: "No active mount found for this job",
          backupTargetId: target.id,
          host: target.host,
          jobId: target.jobId
        })
      )
    }
    const recordedPath = Option.getOrElse(state.mountPath, () => target.mountPath)
    if (!options.force && recordedPath !== target.mountPath) return yield* Effect.fail(pathMismatch(target, recordedPath))
    const holds = holdsOf(e.ledger)
    const key = holdKey(target.jobId, target.id, target.host)
    const inProcess = holds.get(key) ?? 0
    if (!options.force && inProcess >= 2) {
      holds.set(key, inProcess - 1)
      yield* lease.write({ pending: null, release: options.release })
      const result: UnmountResult = {
        unmounted: false,
        activeMountsRemaining: state.holders.length - 1 + inProcess - 1,
        message: `Released one of job ${target.jobId}'s holds; ${inProcess - 1} more in this process keep it`
      }
      return result
    }
    const others = state.holders.filter((h) => h.jobId !== target.jobId)
    if (others.length > 0) {
      yield* lease.write({
        job: { jobId: target.jobId, mounted: false, entryId: mine.value.id },
        pending: null,
        release: options.release
      })
      holds.delete(key)
      const result: UnmountResult = {
        unmounted: false,
        activeMountsRemaining: others.length,
        message: `Released job ${target.jobId}'s hold; ${others.length} other job(s) still use ${recordedPath}`
      }
      return result
    }
    const type = Option.getOrElse(state.targetType, () => target.type)
    const reply = yield* Operation.send(e, lease, target, "unmount", recordedPath, type)
    if (reply.status === "error") {
      yield* lease.write({ pending: null, release: options.release })
      return yield* Effect.fail(Operation.serverError(target, reply))
    }
    yield* lease.write({
      job: { jobId: target.jobId, mounted: false, entryId: mine.value.id },
      pending: null,
      release: options.release
    })
    holds.delete(key)
    const result: UnmountResult = {
      unmounted: true,
      activeMountsRemaining: 0,
      message: reply.success_msg ?? `Unmounted ${recordedPath}`
    }
    return result
  })

const spanAttributes = (request: Protocol.MountRequest) => ({
  "dms.host": request.host,
  "dms.backup_target_id": request.backup_target.id,
  "dms.job_id": request.job.jobid,
  ...(request.context?.request_id ? { "dms.request_id": request.context.request_id } : {})
})

/**
 * Mounts the request's target on its host for its job. Validates first (no I/O on bad input); then,
 * under the (target, host) lease, always asks the server to mount (idempotent: verifies an existing
 * mount) and records the job as a holder.
 *
 * @since 0.1.0
 * @category operations
 */
export const mount = (
  request: unknown
): Effect.Effect<MountResult, DmsError.DmsError, Services> =>
  Effect.gen(function*() {
    const valid = yield* Operation.validate("mount", request)
    const e = yield* Operation.env
    const target = Operation.fromRequest(valid, e.config)
    return yield* e.ledger.withTargetLock(target.id, target.host, mountUnderLease(e, target), {
      timeout: e.config.lockTimeout,
      readJobId: target.jobId,
      mark: { op: "mount", timeout: e.config.requestTimeout, mountPath: target.mountPath, targetType: target.type }
    }).pipe(Effect.withSpan("dms.mount", { attributes: spanAttributes(valid), captureStackTrace: false }))
  }).pipe(OperationMetrics.measured("mount"))

/**
 * Releases the job's hold on the target. The last holder causes one `unmount` message, and only its
 * success marks the row unmounted; other holders remaining → ledger only. A job that holds nothing →
 * `MountError { reason: "no-active-mount" }`.
 *
 * @since 0.1.0
 * @category operations
 */
export const unmount = (
  request: unknown
): Effect.Effect<UnmountResult, DmsError.DmsError, Services> =>
  Effect.gen(function*() {
    const valid = yield* Operation.validate("unmount", request)
    const e = yield* Operation.env
    const target = Operation.fromRequest(valid, e.config)
    return yield* e.ledger.withTargetLock(
      target.id,
      target.host,
      unmountUnderLease(e, target, { release: true, force: false }),
      {
        timeout: e.config.lockTimeout,
        readJobId: target.jobId,
        mark: { op: "unmount", timeout: e.config.requestTimeout, mountPath: target.mountPath, targetType: target.type }
      }
    ).pipe(Effect.withSpan("dms.unmount", { attributes: spanAttributes(valid), captureStackTrace: false }))
  }).pipe(OperationMetrics.measured("unmount"))

/**
 * Options of {@link mountScoped}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ScopedOptions {
  /** How long the release keeps retrying a failing unmount in total. Default 60 s. */
  readonly releaseRetryFor?: Duration.DurationInput | undefined
}

const retryable = (e: DmsError.DmsError) =>
  e._tag === "TimeoutError" || e._tag === "BrokerError" || e._tag === "DatabaseError" ||
  (e._tag === "MountError" && e.reason === "server")

/**
 * The release of a scoped mount: unmount, retried with backoff for a bounded time; a job that holds
 * nothing any more counts as released. It never fails: what it cannot release is logged, and stays
 * recorded (as a holder, or as a pending operation) for the next operation or a reconcile.
 *
 * @since 0.1.0
 * @category operations
 */
export const release = (request: unknown, options: ScopedOptions = {}): Effect.Effect<void, never, Services> =>
  unmount(request).pipe(
    Effect.asVoid,
    Effect.catchIf((e) => e._tag === "MountError" && e.reason === "no-active-mount", () => Effect.void),
    Effect.retry({
      schedule: Schedule.exponential(Duration.millis(200), 2).pipe(
        Schedule.jittered,
        Schedule.upTo(options.releaseRetryFor ?? Duration.seconds(60))
      ),
      while: retryable
    }),
    Effect.catchAll((e) =>
      Effect.logError(
        "could not release a scoped mount; it stays recorded for the next operation or a reconcile",
        e.message
      )
    ),
    // A fiber of its own: when the scope closes because its fiber was interrupted, the unmount's
    // interruptible waits (reply, lock, backoff) must not inherit that interruption.
    Effect.forkDaemon,
    Effect.flatMap(Fiber.join)
  )

/**
 * A mount that is always released: unmounted when the scope closes, whether the body succeeded, failed
 * or was interrupted. A failing release is retried, logged, and never masks the body's own error.
 *
 * @since 0.1.0
 * @category operations
 */
export const mountScoped = (
  request: unknown,
  options: ScopedOptions = {}
): Effect.Effect<MountResult, DmsError.DmsError, Services | Scope.Scope> =>
  Effect.acquireRelease(mount(request), () => release(request, options))

/**
 * Runs `use` with the target mounted, and unmounts afterwards however `use` ends.
 *
 * @since 0.1.0
 * @category operations
 */
export const withMount = <A, E, R>(
  request: unknown,
  use: (mount: MountResult) => Effect.Effect<A, E, R>,
  options: ScopedOptions = {}
): Effect.Effect<A, E | DmsError.DmsError, R | Services> =>
  Effect.scoped(Effect.flatMap(mountScoped(request, options), use))

/**
 * Soft-deletes the job's newest row for the target (sets `deleted`). Without `force`, only a row that is
 * not mounted is marked and `false` is returned otherwise; with `force`, a mounted row is first released
 * through the normal unmount path (the server unmounts it if the job was the last holder).
 *
 * @since 0.1.0
 * @category operations
 */
export const softDeleteEntry = (
  jobId: number,
  backupTargetId: string,
  options: { readonly host?: string | undefined; readonly force?: boolean | undefined } = {}
): Effect.Effect<boolean, DmsError.DmsError, Services> =>
  Effect.gen(function*() {
    const e = yield* Operation.env
    if (options.force !== true) {
      return yield* e.ledger.softDeleteEntry(jobId, backupTargetId, { host: options.host, timeout: e.config.lockTimeout })
    }
    const entry = yield* e.ledger.getMountStatus(jobId, backupTargetId, options.host)
    if (Option.isNone(entry)) return false
    const row = entry.value
    return yield* e.ledger.withTargetLock(backupTargetId, row.host, (lease) =>
      Effect.gen(function*() {
        if (row.mounted) {
          const state = yield* lease.read(jobId)
          const mountPath = Option.getOrElse(state.mountPath, () => "")
          const type = Option.getOrElse(state.targetType, () => "nfs" as const)
          const target: Operation.Target = {
            jobId,
            id: backupTargetId,
            host: row.host,
            type,
            mountPath,
            body: (action, path, t) => ({
              action,
              job: { jobid: jobId },
              host: row.host,
              keystone_token: Option.match(e.config.keystoneToken, { onNone: () => null, onSome: Redacted.value }),
              backup_target: { id: backupTargetId, type: t, filesystem_export_mount_path: path }
            })
          }
          yield* unmountUnderLease(e, target, { release: false, force: true })(lease).pipe(
            Effect.catchIf((err) => err._tag === "MountError" && err.reason === "no-active-mount", () => Effect.void)
          )
        }
        return yield* lease.softDelete(row.id)
      }), { timeout: e.config.lockTimeout })
  }).pipe(Effect.withSpan("dms.softDeleteEntry", { attributes: { "dms.backup_target_id": backupTargetId, "dms.job_id": jobId } }))

/**
 * The ledger's newest non-deleted row for (job, target[, host]).
 *
 * @since 0.1.0
 * @category queries
 */
export const getMountStatus = (jobId: number, backupTargetId: string, host?: string) =>
  Effect.flatMap(Ledger.Ledger, (l) => l.getMountStatus(jobId, backupTargetId, host))

/**
 * The ledger's active mounts (`mounted = 1 AND deleted = 0`), optionally for one host and/or target.
 *
 * @since 0.1.0
 * @category queries
 */
export const getActiveMounts = (filter?: Ledger.ActiveMountsFilter) =>
  Effect.flatMap(Ledger.Ledger, (l) => l.getActiveMounts(filter))

/**
 * The ledger's rows for a target, newest first.
 *
 * @since 0.1.0
 * @category queries
 */
export const getLedgerHistory = (backupTargetId: string, limit?: number) =>
  Effect.flatMap(Ledger.Ledger, (l) => l.getLedgerHistory(backupTargetId, limit))
