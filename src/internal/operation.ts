/**
 * The steps an operation takes under a (target, host) lease, shared by `Mount` and `Reconcile`: the
 * target and its wire body, validation, sending one action with its pending mark, and resolving an
 * earlier operation whose outcome is unknown.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Broker from "../Broker.js"
import * as DmsConfig from "../DmsConfig.js"
import * as DmsError from "../DmsError.js"
import * as Ledger from "../Ledger.js"
import * as Protocol from "../Protocol.js"

/**
 * How long after a pending operation's deadline the next operation waits before resolving it, so a
 * server whose clock runs a little behind the client's cannot still run the stale request.
 *
 */
export const PENDING_GRACE = Duration.seconds(1)

/**
 * One (job, target, host) an operation works on, and how to build its wire body. Used by reconcile too.
 *
 */
export interface Target {
  readonly jobId: number
  readonly id: string
  readonly host: string
  /** Unknown for a target known only from the ledger's rows (nothing is sent for it then). */
  readonly type: "nfs" | "s3" | undefined
  /** Empty when unknown. */
  readonly mountPath: string
  /** The wire body for an action, with the target's path and type as given. */
  readonly body: (action: Protocol.Action, mountPath: string, type: "nfs" | "s3") => Record<string, unknown>
}

/** A target built from its request: its type is known. */
export interface RequestTarget extends Target {
  readonly type: "nfs" | "s3"
}

/**
 * The services an operation runs with.
 *
 */
export interface Env {
  readonly config: DmsConfig.Settings
  readonly ledger: Ledger.Service
  readonly broker: Broker.Service
}

/**
 * Reads the services into an {@link Env}.
 *
 */
export const env = Effect.all({ config: DmsConfig.DmsConfig, ledger: Ledger.Ledger, broker: Broker.Broker })

/**
 * The {@link Target} of a validated request. Only an S3 mount carries a token (the request's, else the
 * configured one): the server needs it for Barbican, and nothing else needs it.
 *
 */
export const fromRequest = (request: Protocol.MountRequest, config: DmsConfig.Settings): RequestTarget => {
  const token = request.keystone_token ?? Option.getOrUndefined(config.keystoneToken)
  return {
    jobId: request.job.jobid,
    id: request.backup_target.id,
    host: request.host,
    type: request.backup_target.type,
    mountPath: request.backup_target.filesystem_export_mount_path,
    body: (action, mountPath, type) => {
      const { keystone_token: _, ...wire } = Protocol.encodeMountRequest(request, action) as Record<string, unknown>
      return {
        ...wire,
        ...(action === "mount" && type === "s3" ? { keystone_token: token === undefined ? null : Redacted.value(token) } : {}),
        backup_target: { ...(wire.backup_target as Record<string, unknown>), filesystem_export_mount_path: mountPath, type }
      }
    }
  }
}

/**
 * Validates a request for an operation before any I/O (an S3 mount needs a Keystone token).
 *
 */
export const validate = (operation: Protocol.Action, input: unknown) =>
  Effect.gen(function*() {
    const request = yield* Protocol.decodeMountRequest(input)
    const { config } = yield* env
    const needsToken = operation === "mount" && request.backup_target.type === "s3" && request.keystone_token == null
    if (needsToken && Option.isSome(config.keystoneToken)) {
      yield* Effect.logWarning(
        "the S3 mount request carries no keystone_token: using KEYSTONE_TOKEN from the configuration for its secret_ref"
      ).pipe(Effect.annotateLogs({ secretRef: request.backup_target.secret_ref ?? "", backupTargetId: request.backup_target.id }))
    }
    if (needsToken && Option.isNone(config.keystoneToken)) {
      return yield* Effect.fail(
        DmsError.invalid(
          "request",
          "keystone_token",
          "an S3 target needs a Keystone token to read its credentials from Barbican: set keystone_token in the request or KEYSTONE_TOKEN"
        )
      )
    }
    return request
  })

/** The error for a server's `status: "error"` reply. */
export const serverError = (target: Target, reply: Protocol.Reply) =>
  new DmsError.MountError({
    reason: "server",
    errorMsg: reply.error_msg ?? "the DMS server reported an error without a message",
    backupTargetId: target.id,
    host: target.host,
    jobId: target.jobId
  })

/**
 * Whether a failed request certainly reached no server: refused before it was published (no consumer,
 * no connection, a nack), or its deadline passed before it was published.
 */
export const neverPublished = (error: DmsError.DmsError): boolean =>
  (error._tag === "BrokerError" && error.notDelivered === true) ||
  (error._tag === "TimeoutError" && error.phase === "publish")

/**
 * Sends one action to the host's server under the lease, recorded as pending first so that an outcome
 * the caller never learns is resolved by the next operation: usually by the mark the lease was taken
 * with (no round trip), else by a write of its own. A request that certainly reached no server leaves
 * the mark as it found it: cleared when it was this operation's own, and when `resolving` an earlier
 * operation's mark, that mark again (the host is not known to match the ledger yet).
 */
export const send = (
  e: Env,
  lease: Ledger.Lease,
  target: Target,
  action: Protocol.Action,
  mountPath: string,
  type: "nfs" | "s3",
  resolving?: Ledger.PendingOperation
) =>
  Effect.gen(function*() {
    const own = Option.filter(
      lease.ownMark(),
      (m) => m.op === action && m.mountPath === mountPath && m.targetType === type
    )
    let deadline: number
    if (Option.isSome(own) && resolving === undefined) {
      deadline = own.value.deadline.getTime()
    } else {
      const timeoutMs = Duration.toMillis(e.config.requestTimeout)
      deadline = (yield* Clock.currentTimeMillis) + timeoutMs
      // While resolving, the mark keeps the earlier operation's path: a mount of unknown outcome may be there.
      yield* lease.write({
        pending: {
          op: action,
          timeoutMs,
          mountPath: resolving?.mountPath ?? mountPath,
          targetType: resolving?.targetType ?? type
        }
      })
    }
    lease.markSent()
    // Interruptible even inside mountScoped's acquire: the reply timeout must fire, and an interrupted
    // wait is safe (the pending mark stays for the next operation).
    return yield* e.broker.request(target.host, target.body(action, mountPath, type), {
      timeout: e.config.requestTimeout,
      deadline
    }).pipe(
      Effect.interruptible,
      Effect.tapError((error) =>
        neverPublished(error)
          ? lease.write({ pending: resolving === undefined ? null : { ...resolving, timeoutMs: resolving.remainingMs, deadline: resolving.deadline } })
          : Effect.void
      )
    )
  })

const nonEmpty = (path: string | null | undefined) => (path === undefined || path === null || path === "" ? undefined : path)

/**
 * The error for an unmount the ledger cannot address: it records no mount path or type for the pair
 * (rows written by a client that records none, such as the Python client).
 */
export const unknownMount = (target: { readonly id: string; readonly host: string; readonly jobId: number }) =>
  new DmsError.MountError({
    reason: "unknown-mount",
    errorMsg: `the ledger records no mount path or type for target ${target.id} on ${target.host}, so nothing was sent; ` +
      `unmount it with its request, or run reconcile for the host`,
    backupTargetId: target.id,
    host: target.host,
    jobId: target.jobId
  })

/** Whether a successful mount reply says the target was mounted already (flag, or the Python server's text). */
export const alreadyMounted = (reply: Protocol.Reply, hadHolders: boolean): boolean => {
  const flag = (reply as { already_mounted?: unknown }).already_mounted
  if (typeof flag === "boolean") return flag
  const message = reply.success_msg ?? ""
  if (/^already mounted/i.test(message)) return true
  if (/mounted successfully|mount successful/i.test(message)) return false
  return hadHolders
}

/**
 * Drives the host to the state the ledger implies (mounted iff there are holders) when an earlier
 * operation's outcome is unknown, after its deadline has passed (no stale request can still run then).
 *
 */
export const resolvePending = (e: Env, lease: Ledger.Lease, target: Target, state: Ledger.TargetState) =>
  Effect.gen(function*() {
    if (Option.isNone(state.pending)) return { state, remounted: false }
    const pending = state.pending.value
    // The database's clock says how long is left: a client whose clock is behind waits as long.
    const wait = Math.ceil(pending.remainingMs + Duration.toMillis(PENDING_GRACE))
    if (wait > 0) {
      yield* Effect.logInfo(`waiting ${wait} ms for an earlier ${pending.op} whose outcome is unknown to expire`)
      yield* Effect.interruptible(Effect.sleep(Duration.millis(wait)))
    }
    const desired: Protocol.Action = state.holders.length > 0 ? "mount" : "unmount"
    // Holders: the path they hold. None: where the operation of unknown outcome may have mounted.
    const recordedPath = Option.getOrUndefined(state.mountPath)
    const mountPath = nonEmpty(desired === "mount" ? recordedPath ?? pending.mountPath : pending.mountPath ?? recordedPath) ??
      nonEmpty(target.mountPath)
    const type = pending.targetType ?? Option.getOrUndefined(state.targetType) ?? target.type
    if (mountPath === undefined || type === undefined) {
      // Nothing to send: an unmount of a guessed path or type could hit the wrong mount. The mark stays.
      return yield* Effect.fail(unknownMount(target))
    }
    yield* Effect.logInfo(`resolving an earlier ${pending.op} of unknown outcome: ${desired} (${state.holders.length} holders)`)
    const reply = yield* send(e, lease, target, desired, mountPath, type, pending)
    if (reply.status === "error") {
      // The server answered, so nothing stale is in flight: the next operation retries at once.
      yield* lease.write({
        pending: {
          op: desired,
          timeoutMs: 0,
          mountPath: pending.mountPath ?? mountPath,
          targetType: pending.targetType ?? type
        }
      })
      return yield* Effect.fail(
        new DmsError.MountError({
          reason: "server",
          errorMsg: `could not bring ${target.host} to the ledger's state after an earlier ${pending.op} of unknown outcome (${desired}): ${
            reply.error_msg ?? "no message"
          }`,
          backupTargetId: target.id,
          host: target.host,
          jobId: target.jobId
        })
      )
    }
    yield* lease.write({ pending: null })
    return { state, remounted: desired === "mount" && !alreadyMounted(reply, false) }
  }).pipe(Effect.annotateLogs({ backupTargetId: target.id, host: target.host }))

