/**
 * Mount and unmount: the ledger counts the jobs that hold a target on a host; the first causes a
 * physical mount, the last release a physical unmount. Every operation runs under the (target, host)
 * lease, and an outcome that is not known (a reply that never came, a crash mid-call) is recorded as
 * pending and resolved with the server by the next operation before the rows are trusted.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Broker from "./Broker.js"
import * as DmsConfig from "./DmsConfig.js"
import * as DmsError from "./DmsError.js"
import * as Ledger from "./Ledger.js"
import * as Protocol from "./Protocol.js"
import * as Operation from "./internal/operation.js"
import * as Holds from "./internal/holds.js"
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
// Holds: which calls count (one job backing up two VMs in two mount contexts holds the target twice)

/** How an operation holds or releases: a plain `mount`/`unmount`, or a scope's. */
type Kind = "plain" | "scope"

const holdKey = (e: Operation.Env, target: Operation.Target): Holds.HoldKey => ({
  location: e.ledger.location,
  jobId: target.jobId,
  targetId: target.id,
  host: target.host
})

/** How long a write whose failure may still have committed is checked again before giving up. */
const CONFIRM_FOR = Duration.seconds(15)

const rowHolds = (state: Ledger.TargetState) => Option.exists(state.job, (j) => j.mounted)

/**
 * The operation's last ledger write, which decides whether the job holds the target. A write that
 * reports a failure may still have committed (the connection lost after COMMIT; the lease lost between
 * the row's write and the lock row's), so the job's row is read again before the failure is reported:
 * if it says what the write was to say, the operation succeeded.
 */
const commit = (lease: Ledger.Lease, jobId: number, holds: boolean, changes: Ledger.LeaseWrite) =>
  lease.write(changes).pipe(
    Effect.catchTag("DatabaseError", (error) =>
      lease.read(jobId).pipe(
        Effect.retry(Schedule.exponential(Duration.millis(50), 2).pipe(Schedule.jittered, Schedule.upTo(CONFIRM_FOR))),
        Effect.matchEffect({
          onFailure: () =>
            Effect.fail(
              new DmsError.DatabaseError({
                operation: error.operation,
                reason: `${error.reason ?? error.message}; whether it was written is not known (the ledger did not answer for ${
                  Duration.format(CONFIRM_FOR)
                })`,
                cause: error
              })
            ),
          onSuccess: (state) =>
            rowHolds(state) === holds
              ? Effect.logWarning("a ledger write reported a failure but is in the ledger; going on", error.message)
              : Effect.fail(error)
        })
      ))
  )

/** A write that only hands the lease back (nothing depends on it: the lease expires otherwise). */
const releaseLease = (lease: Ledger.Lease, release: boolean) =>
  lease.write({ pending: null, release }).pipe(
    Effect.catchAll((error) => Effect.logWarning("could not hand back the target lock; it will expire", error.message))
  )

/**
 * The operation's last write and the job's holds it implies, as one step: neither an interruption nor a
 * release without the lease by another client of this process can come between them.
 */
const settle = (key: Holds.HoldKey, write: Effect.Effect<void, DmsError.DatabaseError>, holds: () => void) =>
  Effect.uninterruptible(Holds.exclusive(key, Effect.tap(write, () => Effect.sync(holds))))

/** The job's holds in this process once a release of `kind` gave its own back. */
const afterRelease = (holds: Holds.Holds, kind: Kind | "force"): Holds.Holds => kind === "plain" ? { ...holds, plain: false } : holds

const sharedReleased = (target: Operation.Target, others: number, path: string): UnmountResult => ({
  unmounted: false,
  activeMountsRemaining: others,
  message: `Released job ${target.jobId}'s hold; ${others} other job(s) still use ${path}`
})

// ---------------------------------------------------------------------------------------------------
// The operations

const pathMismatch = (target: Operation.Target, recorded: string) =>
  DmsError.invalid(
    "request",
    "backup_target.filesystem_export_mount_path",
    `target ${target.id} is mounted on ${target.host} at ${recorded}; a target has one mount path per host`
  )

const mountUnderLease = (
  e: Operation.Env,
  target: Operation.RequestTarget,
  kind: Kind,
  /** Told, once the hold is in the ledger, whether this call added a hold (a repeated plain mount adds none). */
  committed: (madeHold: boolean) => void
) =>
(lease: Ledger.Lease) =>
  Effect.gen(function*() {
    const { remounted, state } = yield* Operation.resolvePending(e, lease, target, yield* lease.read(target.jobId))
    const hadHolders = state.holders.length > 0
    if (hadHolders && Option.isSome(state.mountPath) && state.mountPath.value !== target.mountPath) {
      return yield* Effect.fail(pathMismatch(target, state.mountPath.value))
    }
    // Always ask the server, even when other jobs (or this one) hold the target: it verifies the mount
    // is really there (a host reboot or a late unmount must never hand out a path that is the local disk).
    const reply = yield* Operation.send(e, lease, target, "mount", target.mountPath, target.type)
    if (reply.status === "error") {
      yield* releaseLease(lease, true)
      return yield* Effect.fail(Operation.serverError(target, reply))
    }
    // Remounted while resolving an earlier operation (the host had lost it): this call mounted it.
    // Without holders (pending marks resolved) a mount the server already has belongs to no other job:
    // typically this very request, run by a server that died before replying and answered again after
    // its restart (the model test found it). The first holder is the physical mount.
    const reused = hadHolders && Operation.alreadyMounted(reply, hadHolders) && !remounted
    const entryId = Option.match(state.job, { onNone: () => null, onSome: (j) => j.id })
    const key = holdKey(e, target)
    const held = rowHolds(state)
    yield* settle(
      key,
      commit(lease, target.jobId, true, {
        job: { jobId: target.jobId, mounted: true, entryId },
        mountPath: target.mountPath,
        targetType: target.type,
        pending: null,
        release: true
      }),
      () => {
        // Read now, not before the round trips: a scope of the job may have ended meanwhile.
        const before = Holds.current(key, held)
        Holds.set(key, kind === "plain" ? { ...before, plain: true } : { ...before, scopes: before.scopes + 1 })
        committed(kind === "scope" || !before.plain)
      }
    )
    const result: MountResult = {
      mountPath: target.mountPath,
      reusedExisting: reused,
      physicallyMounted: !reused,
      message: reply.success_msg ?? `Mounted at ${target.mountPath}`
    }
    return result
  })

const unmountUnderLease = (
  e: Operation.Env,
  target: Operation.Target,
  options: { readonly kind: Kind | "force"; readonly release: boolean }
) =>
(lease: Ledger.Lease) =>
  Effect.gen(function*() {
    const { state } = yield* Operation.resolvePending(e, lease, target, yield* lease.read(target.jobId))
    const key = holdKey(e, target)
    const mine = Option.filter(state.job, (j) => j.mounted)
    if (Option.isNone(mine)) {
      Holds.set(key, Holds.current(key, false))
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
    if (options.kind !== "force" && recordedPath !== target.mountPath) return yield* Effect.fail(pathMismatch(target, recordedPath))
    // A scope gave its count back when its release began (Holds.endScope); a plain unmount gives back
    // the job's plain hold. Either way, what else the job holds in this process keeps the row.
    const remaining = afterRelease(Holds.current(key, true), options.kind)
    if (options.kind !== "force" && Holds.keepsRow(remaining)) {
      Holds.set(key, remaining)
      yield* releaseLease(lease, options.release)
      const why = remaining.scopes > 0
        ? `${remaining.scopes} open scope(s) of the job in this process keep it`
        : `the job's own mount (not a scope) keeps it`
      const result: UnmountResult = {
        unmounted: false,
        activeMountsRemaining: state.holders.length,
        message: `Released ${options.kind === "plain" ? `job ${target.jobId}'s mount` : `a scope of job ${target.jobId}`}; ${why}`
      }
      return result
    }
    const others = state.holders.filter((h) => h.jobId !== target.jobId)
    const releaseRow = settle(
      key,
      commit(lease, target.jobId, false, {
        job: { jobId: target.jobId, mounted: false, entryId: mine.value.id },
        pending: null,
        release: options.release
      }),
      () => Holds.set(key, Holds.current(key, false))
    )
    if (others.length > 0) {
      yield* releaseRow
      return sharedReleased(target, others.length, recordedPath)
    }
    const type = Option.getOrUndefined(state.targetType) ?? target.type
    if (recordedPath === "" || type === undefined) return yield* Effect.fail(Operation.unknownMount(target))
    const reply = yield* Operation.send(e, lease, target, "unmount", recordedPath, type)
    if (reply.status === "error") {
      yield* releaseLease(lease, options.release)
      return yield* Effect.fail(Operation.serverError(target, reply))
    }
    yield* releaseRow
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

const mountWith = (request: unknown, kind: Kind) =>
  Effect.gen(function*() {
    const valid = yield* Operation.validate("mount", request)
    const e = yield* Operation.env
    const target = Operation.fromRequest(valid, e.config)
    let madeHold = false
    return yield* e.ledger.withTargetLock(
      target.id,
      target.host,
      mountUnderLease(e, target, kind, (made) => {
        madeHold = made
      }),
      {
        timeout: e.config.lockTimeout,
        readJobId: target.jobId,
        mark: { op: "mount", timeout: e.config.requestTimeout, mountPath: target.mountPath, targetType: target.type }
      }
    ).pipe(
      Effect.withSpan("dms.mount", { attributes: spanAttributes(valid), captureStackTrace: false }),
      // Interrupted after the hold was written (an Effect.timeout around the call, say): the caller never
      // learns of it, so it is given back before the interruption completes.
      Effect.onExit((exit) =>
        Exit.isInterrupted(exit) && madeHold
          ? giveBack(request, kind, DEFAULT_RELEASE_TIMEOUT, "could not give back the hold of an interrupted mount")
          : Effect.void
      )
    )
  })

/**
 * A release that other jobs' holds keep mounted, in one round trip without the lease (see
 * `Ledger.SharedRelease`). `None` when it does not apply — the job still holds the target in this
 * process, it holds nothing, it is the last holder, the lease is taken or an outcome pending, the path
 * differs, the ledger cannot — and nothing was written: the release then takes the lease.
 */
const releaseShared = (e: Operation.Env, target: Operation.Target, kind: Kind, timeout: Duration.Duration) => {
  const shared = e.ledger.releaseShared
  if (shared === undefined) return Effect.succeedNone
  const key = holdKey(e, target)
  return shared(target.id, target.host, (release) =>
    Effect.uninterruptible(Holds.exclusive(
      key,
      Effect.suspend(() =>
        Holds.keepsRow(afterRelease(Holds.current(key, true), kind))
          ? Effect.succeedNone
          : release(target.jobId, target.mountPath).pipe(
            Effect.tap((others) =>
              Effect.sync(() => {
                if (Option.isSome(others)) Holds.set(key, Holds.current(key, false))
              })
            )
          )
      )
    )), { timeout }).pipe(Effect.map(Option.map((others) => sharedReleased(target, others, target.mountPath))))
}

const unmountWith = (request: unknown, kind: Kind, lockTimeout?: Duration.Duration) =>
  Effect.gen(function*() {
    const valid = yield* Operation.validate("unmount", request)
    const e = yield* Operation.env
    const target = Operation.fromRequest(valid, e.config)
    const timeout = lockTimeout === undefined ? e.config.lockTimeout : Duration.min(lockTimeout, e.config.lockTimeout)
    const start = yield* Clock.currentTimeMillis
    const shared = yield* releaseShared(e, target, kind, timeout)
    if (Option.isSome(shared)) return shared.value
    const waited = Duration.millis((yield* Clock.currentTimeMillis) - start)
    return yield* e.ledger.withTargetLock(
      target.id,
      target.host,
      unmountUnderLease(e, target, { kind, release: true }),
      {
        timeout: Duration.subtract(timeout, Duration.min(waited, timeout)),
        readJobId: target.jobId,
        mark: { op: "unmount", timeout: e.config.requestTimeout, mountPath: target.mountPath, targetType: target.type }
      }
    ).pipe(Effect.withSpan("dms.unmount", { attributes: spanAttributes(valid), captureStackTrace: false }))
  })

/**
 * Mounts the request's target on its host for its job. Validates first (no I/O on bad input); then,
 * under the (target, host) lease, always asks the server to mount (idempotent: verifies an existing
 * mount) and records the job as a holder. Idempotent per (job, target, host): a job that already holds
 * the target holds it once, however often it mounts it; one {@link unmount} releases it. (Scopes are
 * counted: see {@link mountScoped}.) Interrupted after its hold was written, it gives the hold back
 * before the interruption completes.
 *
 * @since 0.1.0
 * @category operations
 */
export const mount = (
  request: unknown
): Effect.Effect<MountResult, DmsError.DmsError, Services> => mountWith(request, "plain").pipe(OperationMetrics.measured("mount"))

/**
 * Releases the job's hold on the target. The last holder causes one `unmount` message, and only its
 * success marks the row unmounted; other holders remaining → ledger only. A job that holds nothing →
 * `MountError { reason: "no-active-mount" }`. Scopes of the job still open in this process keep the
 * target held (`unmounted: false`); they release it when they end.
 *
 * @since 0.1.0
 * @category operations
 */
export const unmount = (
  request: unknown
): Effect.Effect<UnmountResult, DmsError.DmsError, Services> => unmountWith(request, "plain").pipe(OperationMetrics.measured("unmount"))

/**
 * Options of {@link mountScoped}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ScopedOptions {
  /**
   * How long the release may take in total: waiting for the lock and for the server's reply, and
   * retrying a failing unmount. Default 60 s. What it could not release by then stays recorded: as a
   * pending mark when the unmount was sent, else as the job's hold (given up by this process, so the
   * job's next operation here releases it), for the next operation or a reconcile.
   */
  readonly releaseTimeout?: Duration.DurationInput | undefined
  /** The former name of `releaseTimeout`. */
  readonly releaseRetryFor?: Duration.DurationInput | undefined
}

/**
 * The default total time of a scoped mount's release.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_RELEASE_TIMEOUT = Duration.seconds(60)

const retryable = (e: DmsError.DmsError) =>
  e._tag === "TimeoutError" || e._tag === "BrokerError" || e._tag === "DatabaseError" ||
  (e._tag === "MountError" && e.reason === "server")

/**
 * Runs a release on a fiber of its own, within `total`, and logs what it could not do. A fiber of its
 * own: when the scope closes because its fiber was interrupted, the unmount's interruptible waits (reply,
 * lock, backoff) must not inherit that interruption.
 */
const detached = <R>(
  effect: Effect.Effect<unknown, DmsError.DmsError, R>,
  what: string,
  total: Duration.DurationInput
): Effect.Effect<void, never, R> =>
  effect.pipe(
    Effect.asVoid,
    Effect.catchIf((e) => e._tag === "MountError" && e.reason === "no-active-mount", () => Effect.void),
    Effect.retry({
      schedule: Schedule.exponential(Duration.millis(200), 2).pipe(Schedule.jittered, Schedule.upTo(total)),
      while: retryable
    }),
    Effect.timeoutFail({
      duration: total,
      onTimeout: () => `gave up after ${Duration.format(Duration.decode(total))}`
    }),
    Effect.catchAll((e) =>
      Effect.logError(`${what}; it stays recorded for the next operation or a reconcile`, typeof e === "string" ? e : e.message)
    ),
    Effect.forkDaemon,
    Effect.flatMap(Fiber.join)
  )

/**
 * The release of a scoped mount: gives its scope back, and releases the job's hold when no other scope
 * of the job in this process (and no plain mount of it) still holds the target; the unmount is retried
 * with backoff. It finishes or gives up within `releaseTimeout` (default 60 s) in total, and never fails:
 * what it cannot release is logged, and stays recorded (see {@link ScopedOptions}).
 *
 * @since 0.1.0
 * @category operations
 */
export const release = (request: unknown, options: ScopedOptions = {}): Effect.Effect<void, never, Services> =>
  giveBack(
    request,
    "scope",
    Duration.decode(options.releaseTimeout ?? options.releaseRetryFor ?? DEFAULT_RELEASE_TIMEOUT),
    "could not release a scoped mount"
  )

/** Gives back one hold of `kind`: a scope's count once, however often its unmount is retried. */
const giveBack = (request: unknown, kind: Kind, total: Duration.Duration, what: string): Effect.Effect<void, never, Services> =>
  Effect.zipRight(
    kind === "scope"
      ? Effect.gen(function*() {
        const valid = yield* Operation.validate("unmount", request)
        const e = yield* Operation.env
        Holds.endScope(holdKey(e, Operation.fromRequest(valid, e.config)))
      }).pipe(Effect.ignore)
      : Effect.void,
    detached(unmountWith(request, kind, total).pipe(OperationMetrics.measured("unmount")), what, total)
  )

/**
 * The acquire half of {@link mountScoped}, for code that manages the scope itself (the Promise facade's
 * `MountContext`): a hold of its own, counted as a scope, that {@link release} with the same request
 * gives back. Interrupted after its hold was written, it gives the hold back.
 *
 * @since 0.1.0
 * @category operations
 */
export const acquire = (request: unknown): Effect.Effect<MountResult, DmsError.DmsError, Services> =>
  mountWith(request, "scope").pipe(OperationMetrics.measured("mount"))

/**
 * A mount that is always released: unmounted when the scope closes, whether the body succeeded, failed
 * or was interrupted. A failing release is retried, logged, and never masks the body's own error.
 * Each scope is a hold of its own: one job backing up two VMs in two scopes (through one client, or two
 * clients of one process on the same ledger) keeps the target until the last scope ends.
 *
 * @since 0.1.0
 * @category operations
 */
export const mountScoped = (
  request: unknown,
  options: ScopedOptions = {}
): Effect.Effect<MountResult, DmsError.DmsError, Services | Scope.Scope> =>
  Effect.acquireRelease(acquire(request), () => release(request, options))

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
 * through the normal unmount path (the server unmounts it if the job was the last holder), whatever
 * holds of the job this process counts. A last holder whose mount path or type the ledger does not
 * record (rows written by a client that records none) fails with `MountError { reason: "unknown-mount" }`
 * and sends nothing.
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
          const target: Operation.Target = {
            jobId,
            id: backupTargetId,
            host: row.host,
            type: Option.getOrUndefined(state.targetType),
            mountPath: Option.getOrElse(state.mountPath, () => ""),
            body: (action, path, t) => ({
              action,
              job: { jobid: jobId },
              host: row.host,
              backup_target: { id: backupTargetId, type: t, filesystem_export_mount_path: path }
            })
          }
          yield* unmountUnderLease(e, target, { kind: "force", release: false })(lease).pipe(
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
