/**
 * The user's guide's API for plain TypeScript: `DMSClient`, `MountContext` and the guide's exceptions,
 * over one Effect `ManagedRuntime`. Import from `trilio-dms/promise`.
 *
 * ```ts
 * const client = new DMSClient()                       // environment / client.conf
 * const response = await client.mount(request)         // { status, error_msg, success_msg, mount_path, … }
 * await withMount(client, request, async (mount) => backup(mount.getMountPath()))
 * await client.close()
 * ```
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Option from "effect/Option"
import * as Dms from "./Dms.js"
import type * as DmsError from "./DmsError.js"
import type * as Ledger from "./Ledger.js"
import * as Mount from "./Mount.js"
import * as Protocol from "./Protocol.js"
import * as Reconcile from "./Reconcile.js"

// ---------------------------------------------------------------------------------------------------
// Exceptions, as the guide names them

/**
 * The base of every exception the client throws. `error` is the typed Effect error behind it, when
 * there is one.
 *
 * @since 0.1.0
 * @category exceptions
 */
export class DMSClientException extends Error {
  override readonly name: string = "DMSClientException"
  constructor(message: string, readonly error?: DmsError.DmsError, options?: { cause?: unknown }) {
    super(message, options)
  }
}

/**
 * The request (or the configuration) is invalid; nothing was done. `error.issues` lists every bad field.
 *
 * @since 0.1.0
 * @category exceptions
 */
export class RequestValidationException extends DMSClientException {
  override readonly name = "RequestValidationException"
}

/**
 * The lock, the publish or the server's reply did not come in time (`error.phase` says which: `"lock"`
 * and `"publish"`, nothing happened and it is safe to retry; `"reply"`, the outcome is unknown).
 *
 * @since 0.1.0
 * @category exceptions
 */
export class RequestTimeoutException extends DMSClientException {
  override readonly name = "RequestTimeoutException"
}

/**
 * The ledger database failed or cannot be reached.
 *
 * @since 0.1.0
 * @category exceptions
 */
export class DatabaseException extends DMSClientException {
  override readonly name = "DatabaseException"
}

/**
 * RabbitMQ failed or cannot be reached, or no DMS server listens for the host.
 *
 * @since 0.1.0
 * @category exceptions
 */
export class RabbitMQException extends DMSClientException {
  override readonly name = "RabbitMQException"
}

/**
 * A mount context could not mount: the server answered an error. (`mount()`/`unmount()` return that as
 * a `{ status: "error" }` response instead, as the guide shows.)
 *
 * @since 0.1.0
 * @category exceptions
 */
export class MountException extends DMSClientException {
  override readonly name = "MountException"
}

/**
 * The exception for a typed error.
 *
 * @since 0.1.0
 * @category exceptions
 */
export const toException = (error: DmsError.DmsError): DMSClientException => {
  switch (error._tag) {
    case "ValidationError":
      return new RequestValidationException(error.message, error, { cause: error })
    case "TimeoutError":
      return new RequestTimeoutException(error.message, error, { cause: error })
    case "DatabaseError":
      return new DatabaseException(error.message, error, { cause: error })
    case "BrokerError":
      return new RabbitMQException(error.message, error, { cause: error })
    case "MountError":
      return new MountException(error.message, error, { cause: error })
  }
}

/**
 * Refuses a malformed request before the client connects: bad input is a `RequestValidationException`
 * even when the database or the broker is down, and costs no connection. (What needs the
 * configuration, such as an S3 request's token, is checked again by `Mount`.)
 */
const precheck = (request: unknown): Protocol.MountRequest => {
  const decoded = Protocol.decodeMountRequestEither(request)
  if (Either.isLeft(decoded)) throw toException(decoded.left)
  // The operation is given the decoded request, which it does not decode again.
  return decoded.right
}

const fromCause = (cause: Cause.Cause<DmsError.DmsError>): DMSClientException =>
  Option.match(Cause.failureOption(cause), {
    onSome: toException,
    onNone: () =>
      Cause.isInterruptedOnly(cause)
        ? new DMSClientException("the operation was interrupted", undefined, { cause: Cause.squash(cause) })
        : new DMSClientException(`unexpected failure: ${Cause.pretty(cause)}`, undefined, { cause: Cause.squash(cause) })
  })

// ---------------------------------------------------------------------------------------------------
// Responses, as the guide shows them

/**
 * The guide's response: `{ status, error_msg, success_msg }`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Response {
  readonly status: "success" | "error"
  readonly error_msg: string | null
  readonly success_msg: string | null
}

/**
 * `mount()`'s response; on success also where and how it mounted.
 *
 * @since 0.1.0
 * @category models
 */
export interface MountResponse extends Response {
  readonly mount_path?: string
  readonly reused_existing?: boolean
  readonly physically_mounted?: boolean
}

/**
 * `unmount()`'s response; on success also whether it unmounted and how many holds remain.
 *
 * @since 0.1.0
 * @category models
 */
export interface UnmountResponse extends Response {
  readonly unmounted?: boolean
  readonly active_mounts_remaining?: number
}

/**
 * A ledger row (`backup_target_mount_ledger`), camelCase: `jobId`, `backupTargetId`, `createdAt`, ….
 *
 * @since 0.1.0
 * @category models
 */
export type LedgerEntry = Ledger.LedgerEntry

/**
 * What `reconcile()` returns: the host, whether its server answered `status`, the stale, orphan and
 * pending findings each with what was done, and counts.
 *
 * @since 0.1.0
 * @category models
 */
export type ReconcileReport = Reconcile.Report

// ---------------------------------------------------------------------------------------------------
// The client

/**
 * The guide's `DMSClient(db_url=…, rabbitmq_url=…, timeout=…)`; anything not given comes from the
 * environment, `~/.trilio-dms/client.conf`, or the defaults. `layer` replaces all of it (e.g. memory
 * layers in unit tests).
 *
 * @since 0.1.0
 * @category models
 */
export interface ClientOptions extends Dms.Options {
  readonly layer?: Layer.Layer<Dms.Services, Dms.LayerError> | undefined
}

type Runtime = ManagedRuntime.ManagedRuntime<Dms.Services, Dms.LayerError>

/**
 * The DMS client for plain TypeScript. Connects on first use; a failed connect is not remembered, so the
 * next call tries again. Close it with `close()` (or `await using`).
 *
 * @since 0.1.0
 * @category client
 */
export class DMSClient {
  private readonly layer: Layer.Layer<Dms.Services, Dms.LayerError>
  private runtime: Promise<Runtime> | undefined

  constructor(options: ClientOptions = {}) {
    this.layer = options.layer ?? Dms.layerConfig(options)
  }

  /**
   * Connects now and checks both services, as the guide's `try: client = DMSClient() except
   * DatabaseException / RabbitMQException` expects: throws `DatabaseException` when the ledger does not
   * answer, `RabbitMQException` when the broker cannot be reached (within its connect timeout), and
   * `RequestValidationException` for a bad configuration. The client stays usable either way: a failed
   * connect is not remembered.
   */
  async connect(): Promise<this> {
    await this.run(Dms.connect)
    return this
  }

  /**
   * A client connected and checked now (see {@link DMSClient.connect}); the eager form of
   * `new DMSClient(options)`, which connects on first use.
   */
  static async connect(options: ClientOptions = {}): Promise<DMSClient> {
    const client = new DMSClient(options)
    try {
      return await client.connect()
    } catch (e) {
      await client.close()
      throw e
    }
  }

  /** The runtime, built on first use; a failed build is disposed and forgotten. */
  private runtimeOf(): Promise<Runtime> {
    if (this.runtime === undefined) {
      const runtime = ManagedRuntime.make(this.layer)
      this.runtime = Effect.runPromiseExit(runtime.runtimeEffect).then(async (exit) => {
        if (Exit.isSuccess(exit)) return runtime
        this.runtime = undefined
        await runtime.dispose().catch(() => undefined)
        throw fromCause(exit.cause)
      })
    }
    return this.runtime
  }

  /**
   * Runs an Effect of this package on the client's services; typed errors become the guide's exceptions.
   */
  async run<A>(effect: Effect.Effect<A, DmsError.DmsError, Dms.Services>): Promise<A> {
    const runtime = await this.runtimeOf()
    const exit = await runtime.runPromiseExit(effect)
    if (Exit.isSuccess(exit)) return exit.value
    throw fromCause(exit.cause)
  }

  /** Mounts the request's target for its job. A server-side failure is a `{ status: "error" }` response. */
  async mount(request: unknown): Promise<MountResponse> {
    try {
      const r = await this.run(Mount.mount(precheck(request)))
      return {
        status: "success",
        error_msg: null,
        success_msg: r.message,
        mount_path: r.mountPath,
        reused_existing: r.reusedExisting,
        physically_mounted: r.physicallyMounted
      }
    } catch (e) {
      return errorResponse(e)
    }
  }

  /** Releases the job's hold; the last holder unmounts. A server-side failure, or a job that holds
   * nothing, is a `{ status: "error" }` response. */
  async unmount(request: unknown): Promise<UnmountResponse> {
    try {
      const r = await this.run(Mount.unmount(precheck(request)))
      return {
        status: "success",
        error_msg: null,
        success_msg: r.message,
        unmounted: r.unmounted,
        active_mounts_remaining: r.activeMountsRemaining
      }
    } catch (e) {
      return errorResponse(e)
    }
  }

  /** The newest ledger row for (job, target[, host]), or `null`. */
  async getMountStatus(jobId: number, backupTargetId: string, host?: string): Promise<LedgerEntry | null> {
    return Option.getOrNull(await this.run(Mount.getMountStatus(jobId, backupTargetId, host)))
  }

  /** Active mounts, optionally for one host and/or target. */
  async getActiveMounts(filter: Ledger.ActiveMountsFilter = {}): Promise<ReadonlyArray<LedgerEntry>> {
    return this.run(Mount.getActiveMounts(filter))
  }

  /** A target's ledger rows, newest first (default limit 100). */
  async getLedgerHistory(backupTargetId: string, limit = 100): Promise<ReadonlyArray<LedgerEntry>> {
    return this.run(Mount.getLedgerHistory(backupTargetId, limit))
  }

  /** Soft-deletes the job's row for the target; `force` unmounts a mounted row first. */
  async softDeleteEntry(
    jobId: number,
    backupTargetId: string,
    options: { readonly host?: string; readonly force?: boolean } = {}
  ): Promise<boolean> {
    return this.run(Mount.softDeleteEntry(jobId, backupTargetId, options))
  }

  /**
   * Compares the ledger with the host's real mounts (stale rows, orphan mounts, pending marks); with
   * `repair`, repairs them under each target's lock. `requests` are mount requests of stale targets to
   * remount now. Returns a plain report; throws the guide's exceptions (bad input, no server for the
   * host, timeout, database).
   */
  async reconcile(
    host: string,
    options: { readonly repair?: boolean; readonly requests?: ReadonlyArray<unknown> } = {}
  ): Promise<ReconcileReport> {
    return this.run(Reconcile.reconcile(host, options))
  }

  /** Closes the connections. The client connects again if used afterwards. */
  async close(): Promise<void> {
    const runtime = this.runtime
    this.runtime = undefined
    if (runtime !== undefined) await runtime.then((r) => r.dispose(), () => undefined)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

const errorResponse = (e: unknown): Response => {
  if (e instanceof MountException) return { status: "error", error_msg: e.message, success_msg: null }
  throw e
}

// ---------------------------------------------------------------------------------------------------
// The mount context

/**
 * The guide's `MountContext`: `await MountContext.enter(client, request)` mounts, `exit()` unmounts
 * (retrying a failing unmount for a while; never throws). Also `await using ctx = await
 * MountContext.enter(…)`, or {@link withMount}.
 *
 * @since 0.1.0
 * @category client
 */
export class MountContext {
  private exited: Promise<void> | undefined

  private constructor(
    private readonly client: DMSClient,
    private readonly request: unknown,
    private readonly options: Mount.ScopedOptions,
    /** What the mount reported. */
    readonly result: Mount.MountResult
  ) {}

  /**
   * Mounts; throws the guide's exceptions, and `MountException` when the server answered an error.
   * Each context is a hold of its own (`Mount.mountScoped`): two contexts of one job, through one
   * client or several clients of the process, keep the target until the last one exits.
   */
  static async enter(client: DMSClient, request: unknown, options: Mount.ScopedOptions = {}): Promise<MountContext> {
    const result = await client.run(Mount.acquire(precheck(request)))
    // The release sends the caller's request as it is then (validated again), as it always has.
    return new MountContext(client, request, options, result)
  }

  /** Where the target is mounted. */
  getMountPath(): string {
    return this.result.mountPath
  }

  /**
   * Unmounts (once, however often called): this context's hold is released, and the target unmounted
   * if it was the last hold. Never throws; it finishes or gives up within the release timeout (60 s by
   * default), and what it could not release stays recorded for the next operation or a reconcile.
   */
  exit(): Promise<void> {
    // Through the client's runtime of now: a client closed and used again since still releases it.
    this.exited ??= this.client.run(Mount.release(this.request, this.options)).catch(() => undefined)
    return this.exited
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.exit()
  }
}

/**
 * Mounts, runs `use`, and unmounts however `use` ends (returning or throwing).
 *
 * @since 0.1.0
 * @category client
 */
export const withMount = async <A>(
  client: DMSClient,
  request: unknown,
  use: (mount: MountContext) => Promise<A>
): Promise<A> => {
  const mount = await MountContext.enter(client, request)
  try {
    return await use(mount)
  } finally {
    await mount.exit()
  }
}
