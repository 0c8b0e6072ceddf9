/**
 * The mount ledger: which job holds which backup target on which host (`backup_target_mount_ledger`),
 * and a fenced lease per (target, host) (`backup_target_mount_lock`) under which it is changed.
 *
 * Backends: MySQL/MariaDB (`layerMysql`, shared by every client process and machine, Galera-safe),
 * SQLite (`layerSqlite`, the embedded ledger, for one host only), and memory (`layerMemory`, for unit
 * tests; one process).
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Either from "effect/Either"
import * as Cause from "effect/Cause"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as fs from "node:fs"
import * as path from "node:path"
import { randomUUID } from "node:crypto"
import * as DmsConfig from "./DmsConfig.js"
import * as DmsError from "./DmsError.js"
import * as Protocol from "./Protocol.js"
import * as KeyedMutex from "./internal/keyedMutex.js"
import * as LeaseAcquire from "./internal/leaseAcquire.js"
import * as LeaseHold from "./internal/leaseHold.js"
import * as LeaseRenewer from "./internal/leaseRenewer.js"
import * as MemoryStore from "./internal/memoryStore.js"
import * as MigrateUrl from "./internal/migrateUrl.js"
import * as MysqlConnect from "./internal/mysqlConnect.js"
import * as SqlStore from "./internal/sqlStore.js"
import * as StoreRetry from "./internal/storeRetry.js"
import { lockKey, type Store } from "./internal/store.js"
import * as Urls from "./internal/urls.js"

/**
 * A row of `backup_target_mount_ledger`.
 *
 * @since 0.1.0
 * @category models
 */
export interface LedgerEntry {
  readonly id: number
  readonly jobId: number
  readonly backupTargetId: string
  readonly host: string
  readonly mounted: boolean
  readonly deleted: boolean
  /** The trilio-dms version that last wrote the row. */
  readonly version: string | null
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly deletedAt: Date | null
}

/**
 * An operation whose outcome is not known yet: a request was (or may have been) sent to the server and
 * its result not recorded. After `deadline` no stale request can still run.
 *
 * @since 0.1.0
 * @category models
 */
export interface PendingOperation {
  readonly op: Protocol.Action
  /** After it no stale request can still run (as the database's clock puts it, for a mark read from the ledger). */
  readonly deadline: Date
  /**
   * Milliseconds from the read to the deadline by the database's clock (negative once it passed): what a
   * client waits, whatever its own clock says, so clients with skewed clocks agree.
   */
  readonly remainingMs: number
  /** The path the operation was sent for (where a mount whose outcome is unknown may have landed). */
  readonly mountPath?: string | null | undefined
  readonly targetType?: "nfs" | "s3" | null | undefined
}

/**
 * A pending mark to write: due `timeoutMs` after the write, by the database's clock (0 or less: due at
 * once, for the next operation to resolve without waiting).
 *
 * @since 0.1.0
 * @category models
 */
export interface PendingMark {
  readonly op: Protocol.Action
  readonly timeoutMs: number
  /**
   * The deadline exactly as a read from the ledger gave it (the database's clock), to put an earlier
   * operation's mark back as it was; `timeoutMs` is then ignored.
   */
  readonly deadline?: Date | undefined
  /** The path the operation was sent for (where a mount whose outcome is unknown may have landed). */
  readonly mountPath?: string | null | undefined
  readonly targetType?: "nfs" | "s3" | null | undefined
}

/**
 * What the ledger says about one (target, host), read under its lease.
 *
 * @since 0.1.0
 * @category models
 */
export interface TargetState {
  /** Rows with `mounted = 1 AND deleted = 0`, oldest first. */
  readonly holders: ReadonlyArray<LedgerEntry>
  /** The job's own newest non-deleted row, when a job id was given. */
  readonly job: Option.Option<LedgerEntry>
  /** The path the target is mounted at on the host, as last recorded. */
  readonly mountPath: Option.Option<string>
  /** The target's type, as last recorded (so it can be unmounted without its request). */
  readonly targetType: Option.Option<"nfs" | "s3">
  readonly pending: Option.Option<PendingOperation>
}

/**
 * Changes written in one fenced transaction under a lease. Absent fields are left as they are.
 *
 * @since 0.1.0
 * @category models
 */
export interface LeaseWrite {
  /**
   * Sets `mounted` on the job's non-deleted row; a missing row is created only for `mounted: true`.
   * `entryId` (the row's id, or `null` for none) saves a statement; it must come from a read under the
   * same lease (nothing else writes the pair's rows meanwhile). Omit it when unknown.
   */
  readonly job?: { readonly jobId: number; readonly mounted: boolean; readonly entryId?: number | null | undefined } | undefined
  readonly mountPath?: string | null | undefined
  readonly targetType?: "nfs" | "s3" | null | undefined
  readonly pending?: PendingMark | null | undefined
  /** Releases the lease in the same transaction (the operation is done). */
  readonly release?: boolean | undefined
}

/**
 * The lease on one (target, host), handed to the body of {@link Service.withTargetLock}. Every write is
 * fenced: it fails with a `DatabaseError`, writing nothing, if the lease was lost.
 *
 * @since 0.1.0
 * @category models
 */
export interface Lease {
  readonly backupTargetId: string
  readonly host: string
  /** Reads the holders, the lock row's mount path and pending operation, and the job's row. */
  readonly read: (jobId?: number) => Effect.Effect<TargetState, DmsError.DatabaseError>
  readonly write: (changes: LeaseWrite) => Effect.Effect<void, DmsError.DatabaseError>
  /** Marks a row deleted if it is not mounted; false otherwise. */
  readonly softDelete: (entryId: number) => Effect.Effect<boolean, DmsError.DatabaseError>
  /**
   * The pending mark this operation holds: the one asked for with the lease (`mark` of
   * {@link Service.withTargetLock}, when no earlier operation's mark was set), or the last one written.
   * Reads never report it as `pending`: it is this operation's own.
   */
  readonly ownMark: () => Option.Option<PendingOperation>
  /**
   * Tells the lease that the marked request is being published: from then on the mark taken with the
   * lease outlives it if the operation ends without clearing it; one never published is dropped on
   * release. (A mark written with `write` always stays until cleared.)
   */
  readonly markSent: () => void
}

/**
 * Releases a job's hold on the (target, host) of {@link Service.releaseShared} in one round trip without
 * the lease, only if at once: the job's row holds the target, another job's row holds it too (so nothing
 * is to be unmounted), nobody holds the lease and no operation's outcome is pending, and the target is
 * recorded at `mountPath`. Succeeds with how many other jobs hold it, or `None` when any of that did not
 * hold and nothing was written (the release then takes the lease, as any other).
 *
 * @since 0.1.0
 * @category models
 */
export type SharedRelease = (jobId: number, mountPath: string) => Effect.Effect<Option.Option<number>, DmsError.DatabaseError>

/**
 * Filters of {@link Service.getActiveMounts}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ActiveMountsFilter {
  readonly host?: string | undefined
  readonly backupTargetId?: string | undefined
  /** At most this many rows (1 … 10,000), in id order: a page. Without it, every active row. */
  readonly limit?: number | undefined
  /** The page after the row with this id (the last id of the previous page). */
  readonly afterId?: number | undefined
}

/**
 * Options of {@link Service.purge}.
 *
 * @since 0.1.0
 * @category models
 */
export interface PurgeOptions {
  /** Rows last written longer ago than this (by the database's clock) may go. */
  readonly olderThan: Duration.DurationInput
  /** Rows examined per batch (1 … 10,000; default 1,000): each batch is one short statement or two. */
  readonly batchSize?: number | undefined
  /** Count what would go, delete nothing. */
  readonly dryRun?: boolean | undefined
}

/**
 * What {@link Service.purge} did.
 *
 * @since 0.1.0
 * @category models
 */
export interface PurgeResult {
  /** Rows deleted (or, in a dry run, that would be). */
  readonly deleted: number
  readonly batches: number
  readonly dryRun: boolean
  readonly olderThanMs: number
}

/**
 * The lock row of one target on a host, as {@link Service.getHostState} lists it.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostLock {
  readonly backupTargetId: string
  readonly host: string
  /** The path the target is mounted at on the host, as last recorded. */
  readonly mountPath: Option.Option<string>
  readonly targetType: Option.Option<"nfs" | "s3">
  /** An operation on the pair whose outcome is not known yet. */
  readonly pending: Option.Option<PendingOperation>
}

/**
 * What the ledger says about one host: the lock row of every target it knows there, and the holders
 * (rows with `mounted = 1 AND deleted = 0`, oldest first). Read without any lease: a snapshot.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostState {
  readonly host: string
  readonly locks: ReadonlyArray<HostLock>
  readonly holders: ReadonlyArray<LedgerEntry>
}

/**
 * The Ledger service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Which database this ledger writes to (`mysql://host:port/database`, `sqlite:<absolute path>`,
   * `memory:<tables>`; never a password). Ledgers of one process with the same location share the
   * in-process count of a job's scoped holds (see `Mount`).
   */
  readonly location: string
  /** One trivial statement: fails with a `DatabaseError` unless the database answers now. */
  readonly ping: Effect.Effect<void, DmsError.DatabaseError>
  /**
   * Runs `body` holding the lease on (target, host). Fibers of this process queue in order; other
   * processes are waited for by polling with jittered backoff, holding no database connection. Fails
   * with `TimeoutError { phase: "lock" }` if the lease is not taken within `timeout`.
   */
  readonly withTargetLock: <A, E, R>(
    backupTargetId: string,
    host: string,
    body: (lease: Lease) => Effect.Effect<A, E, R>,
    options?: {
      readonly timeout?: Duration.DurationInput | undefined
      /** The job whose state the body reads first: the backend may read it with the lease, in one round trip. */
      readonly readJobId?: number | undefined
      /**
       * The request the body will probably send: marked pending by the statement that takes the lease
       * (no round trip of its own), with a deadline `timeout` after the lease was taken.
       */
      readonly mark?: {
        readonly op: Protocol.Action
        readonly timeout: Duration.DurationInput
        readonly mountPath: string
        readonly targetType: "nfs" | "s3"
      } | undefined
    }
  ) => Effect.Effect<A, E | DmsError.TimeoutError | DmsError.DatabaseError | DmsError.ValidationError, R>
  /**
   * Runs `body` in this process's queue for (target, host), as {@link Service.withTargetLock} does, but
   * without taking the lease; `body` may release a job's hold that other jobs share (see
   * {@link SharedRelease}). Fails with `TimeoutError { phase: "lock" }` if its turn does not come within
   * `timeout`. Absent on a ledger that cannot release without the lease: then every release takes it.
   */
  readonly releaseShared?: <A, E, R>(
    backupTargetId: string,
    host: string,
    body: (release: SharedRelease) => Effect.Effect<A, E, R>,
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<A, E | DmsError.TimeoutError | DmsError.ValidationError, R>
  /** The newest non-deleted row for (job, target[, host]). */
  readonly getMountStatus: (
    jobId: number,
    backupTargetId: string,
    host?: string
  ) => Effect.Effect<Option.Option<LedgerEntry>, DmsError.DatabaseError | DmsError.ValidationError>
  /** Rows with `mounted = 1 AND deleted = 0`, optionally for one host and/or target. */
  readonly getActiveMounts: (
    filter?: ActiveMountsFilter
  ) => Effect.Effect<ReadonlyArray<LedgerEntry>, DmsError.DatabaseError | DmsError.ValidationError>
  /**
   * Hard-deletes, in small batches, the rows that hold nothing (unmounted or soft-deleted) and were
   * last written before `olderThan`; never an active holder's row, nor a row of a (target, host) that is
   * leased or has a pending mark. Each batch locks only the rows it deletes, by primary key, so mounts go
   * on meanwhile.
   */
  readonly purge: (options: PurgeOptions) => Effect.Effect<PurgeResult, DmsError.DatabaseError | DmsError.ValidationError>
  /** Every row of a target (deleted ones too), newest first. */
  readonly getLedgerHistory: (
    backupTargetId: string,
    limit?: number
  ) => Effect.Effect<ReadonlyArray<LedgerEntry>, DmsError.DatabaseError | DmsError.ValidationError>
  /**
   * The lock rows (path, type, pending operation) and the holders of one host, without a lease: what
   * reconcile compares with the host's real mounts.
   */
  readonly getHostState: (host: string) => Effect.Effect<HostState, DmsError.DatabaseError | DmsError.ValidationError>
  /**
   * Marks the job's newest row for the target deleted, under the lease, only if it is not mounted.
   * Returns false when there is no such row or it is mounted. (`force`, which unmounts first, is
   * `Mount.softDeleteEntry`.)
   */
  readonly softDeleteEntry: (
    jobId: number,
    backupTargetId: string,
    options?: { readonly host?: string | undefined; readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<boolean, DmsError.DatabaseError | DmsError.TimeoutError | DmsError.ValidationError>
}

/**
 * The Ledger tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Ledger extends Context.Tag("trilio-dms/Ledger")<Ledger, Service>() {}

/**
 * Lease settings shared by every backend.
 *
 * @since 0.1.0
 * @category models
 */
export interface LeaseOptions {
  /** How long a lease lasts without renewal; a crashed holder is taken over after it. Default 30 s. */
  readonly leaseDuration?: Duration.DurationInput | undefined
  /** How often a held lease is renewed. Default a third of the lease duration. */
  readonly renewInterval?: Duration.DurationInput | undefined
  /** Default time to wait for a lock, when a call gives none. Default 330 s (request timeout + 30 s). */
  readonly lockTimeout?: Duration.DurationInput | undefined
  /**
   * How long one statement is retried after passing database errors (a Galera certification failure,
   * a lock wait timeout, a node not ready, a lost connection) before its `DatabaseError` is the
   * caller's. Default 15 s: longer than the ~6 s a Galera cluster stalls writes after losing a node.
   */
  readonly retryTimeout?: Duration.DurationInput | undefined
}

/** Where a store's tables are ({@link Service.location}); unset, a location of its own. */
interface StoreOptions extends LeaseOptions {
  readonly location?: string | undefined
}

const DEFAULT_LEASE = Duration.seconds(30)
const DEFAULT_LOCK_TIMEOUT = Duration.seconds(330)
const DEFAULT_RETRY_TIMEOUT = Duration.seconds(15)

/**
 * The largest `limit` accepted by `getLedgerHistory`.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_HISTORY_LIMIT = 10_000

const validate = <A, I>(schema: Schema.Schema<A, I>, subject: string, path: string, value: unknown) =>
  Either.mapLeft(
    Schema.decodeUnknownEither(schema)(value),
    (e) => {
      const v = DmsError.fromParseError(subject, e)
      return new DmsError.ValidationError({
        subject,
        issues: v.issues.map((i) => new DmsError.Issue({ path: i.path === "" ? path : `${path}.${i.path}`, message: i.message }))
      })
    }
  )

const HistoryLimit = Schema.Int.pipe(Schema.between(1, MAX_HISTORY_LIMIT))
const PageLimit = Schema.Int.pipe(Schema.between(1, 10_000))
const AfterId = Schema.Int.pipe(Schema.greaterThanOrEqualTo(0))
const PositiveMillis = Schema.Number.pipe(Schema.finite(), Schema.positive())

/**
 * Builds the Ledger over a backend store.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (backend: Store, options: LeaseOptions & { readonly location?: string | undefined } = {}): Service => {
  const store = StoreRetry.store(backend, Duration.decode(options.retryTimeout ?? DEFAULT_RETRY_TIMEOUT))
  const leaseMs = Math.max(1, Math.round(Duration.toMillis(options.leaseDuration ?? DEFAULT_LEASE)))
  const renewEvery = Duration.decode(options.renewInterval ?? Duration.millis(Math.max(1, Math.floor(leaseMs / 3))))
  const defaultLockTimeout = Duration.decode(options.lockTimeout ?? DEFAULT_LOCK_TIMEOUT)
  const mutex = KeyedMutex.make()
  const renewer = LeaseRenewer.make(store, leaseMs, renewEvery)
  const settings: LeaseHold.Settings = { store, leaseMs, client: randomUUID() }

  /** The pair's lock key, once its target and host are valid. */
  const pairKey = (backupTargetId: string, host: string) =>
    Effect.gen(function*() {
      yield* validate(Protocol.BackupTargetId, "lock", "backupTargetId", backupTargetId)
      yield* validate(Protocol.Host, "lock", "host", host)
      return lockKey(backupTargetId, host)
    })
  const lockTimedOut = (backupTargetId: string, host: string, timeout: Duration.Duration) => () =>
    new DmsError.TimeoutError({ phase: "lock", operation: "lock", backupTargetId, host, timeoutMs: Duration.toMillis(timeout) })

  const withTargetLock: Service["withTargetLock"] = (backupTargetId, host, body, callOptions) =>
    Effect.gen(function*() {
      const key = yield* pairKey(backupTargetId, host)
      const timeout = Duration.decode(callOptions?.timeout ?? defaultLockTimeout)
      const start = yield* Clock.currentTimeMillis
      const remaining = Effect.map(Clock.currentTimeMillis, (now) => Duration.millis(Math.max(0, start + Duration.toMillis(timeout) - now)))
      const onTimeout = lockTimedOut(backupTargetId, host, timeout)

      // A finalizer rather than a Scope: closing a scope per operation cost more than its release.
      const run = Effect.suspend(() => {
        const owner = randomUUID()
        const hold = LeaseHold.make(settings, key, owner, callOptions)
        const finalize = Effect.suspend(() => {
          renewer.forget(owner)
          return hold.release()
        })
        const operation = Effect.gen(function*() {
          const budget = yield* remaining
          yield* LeaseAcquire.acquire(hold.take, budget, onTimeout)
          yield* renewer.renewWhileHeld(key, owner, hold.state)
          return yield* body(hold.lease)
        })
        return Effect.ensuring(operation, finalize)
      })

      const wait = yield* remaining
      return yield* mutex.withLock(key.key, wait, onTimeout, run)
    }).pipe(Effect.withSpan("Ledger.withTargetLock", { attributes: { backupTargetId, host }, captureStackTrace: false }))

  const shared = store.releaseShared
  const releaseShared: Service["releaseShared"] = shared === undefined ? undefined : (backupTargetId, host, body, callOptions) =>
    Effect.gen(function*() {
      const key = yield* pairKey(backupTargetId, host)
      const timeout = Duration.decode(callOptions?.timeout ?? defaultLockTimeout)
      const release: SharedRelease = (jobId, mountPath) => Effect.map(shared(key, jobId, mountPath), Option.fromNullable)
      return yield* mutex.withLock(key.key, timeout, lockTimedOut(backupTargetId, host, timeout), body(release))
    }).pipe(Effect.withSpan("Ledger.releaseShared", { attributes: { backupTargetId, host }, captureStackTrace: false }))

  const checkJob = (jobId: unknown) => validate(Protocol.JobId, "query", "jobId", jobId)
  const checkTarget = (id: unknown) => validate(Protocol.BackupTargetId, "query", "backupTargetId", id)
  const checkHost = (host: unknown) => (host === undefined ? Either.right(undefined) : validate(Protocol.Host, "query", "host", host))

  return {
    location: options.location ?? `${store.dialect}:${randomUUID()}`,
    ping: store.ping,
    withTargetLock,
    ...(releaseShared === undefined ? {} : { releaseShared }),
    getMountStatus: (jobId, backupTargetId, host) =>
      Effect.gen(function*() {
        yield* checkJob(jobId)
        yield* checkTarget(backupTargetId)
        yield* checkHost(host)
        return yield* store.getMountStatus(jobId, backupTargetId, host)
      }),
    getActiveMounts: (filter = {}) =>
      Effect.gen(function*() {
        yield* checkHost(filter.host)
        if (filter.backupTargetId !== undefined) yield* checkTarget(filter.backupTargetId)
        if (filter.limit !== undefined) yield* validate(PageLimit, "query", "limit", filter.limit)
        if (filter.afterId !== undefined) yield* validate(AfterId, "query", "afterId", filter.afterId)
        const page = filter.limit === undefined && filter.afterId === undefined
          ? undefined
          : { limit: filter.limit ?? 10_000, afterId: filter.afterId ?? 0 }
        return yield* store.getActiveMounts(filter.host, filter.backupTargetId, page)
      }),
    purge: (purgeOptions) =>
      Effect.gen(function*() {
        const olderThanMs = yield* Effect.try({
          try: () => Duration.toMillis(Duration.decode(purgeOptions.olderThan)),
          catch: () => DmsError.invalid("query", "olderThan", "must be a duration, e.g. \"90 days\"")
        })
        yield* validate(PositiveMillis, "query", "olderThan", olderThanMs)
        const batchSize = purgeOptions.batchSize ?? 1000
        yield* validate(PageLimit, "query", "batchSize", batchSize)
        const dryRun = purgeOptions.dryRun === true
        let deleted = 0
        let batches = 0
        let after: number | null = 0
        while (after !== null) {
          const batch: { readonly deleted: number; readonly lastId: number | null } = yield* store.purgeBatch(olderThanMs, after, batchSize, dryRun)
          deleted += batch.deleted
          batches++
          after = batch.lastId
          // Between batches other statements get their turn (and a purge can be interrupted).
          yield* Effect.yieldNow()
        }
        return { deleted, batches, dryRun, olderThanMs }
      }).pipe(Effect.withSpan("Ledger.purge", { captureStackTrace: false })),
    getLedgerHistory: (backupTargetId, limit = 100) =>
      Effect.gen(function*() {
        yield* checkTarget(backupTargetId)
        yield* validate(HistoryLimit, "query", "limit", limit)
        return yield* store.getLedgerHistory(backupTargetId, limit)
      }),
    getHostState: (host) =>
      Effect.gen(function*() {
        yield* validate(Protocol.Host, "query", "host", host)
        return yield* store.getHostState(host)
      }),
    softDeleteEntry: (jobId, backupTargetId, opts = {}) =>
      Effect.gen(function*() {
        yield* checkJob(jobId)
        yield* checkTarget(backupTargetId)
        yield* checkHost(opts.host)
        const entry = yield* store.getMountStatus(jobId, backupTargetId, opts.host)
        if (Option.isNone(entry)) return false
        const row = entry.value
        return yield* withTargetLock(backupTargetId, row.host, (lease) => lease.softDelete(row.id), {
          timeout: opts.timeout
        })
      })
  }
}

const buildError = (operation: string) => (cause: Cause.Cause<unknown>): DmsError.DatabaseError | DmsError.ValidationError => {
  const e = Cause.squash(cause)
  if (e instanceof DmsError.DatabaseError || e instanceof DmsError.ValidationError) return e
  const inner = (e as { _tag?: string; cause?: unknown })._tag === "SqlError" ? (e as { cause?: unknown }).cause : e
  return new DmsError.DatabaseError({ operation, cause: inner })
}

const fromStore = <E, R>(
  store: Effect.Effect<Store, E, R>,
  options: StoreOptions
): Layer.Layer<Ledger, E, R> => Layer.effect(Ledger, Effect.map(store, (s) => make(s, options)))

/**
 * Options of {@link layerMysql}.
 *
 * @since 0.1.0
 * @category models
 */
export interface MysqlOptions extends LeaseOptions {
  /**
   * `mysql://user:password@host:3306/database` (or SQLAlchemy's `mysql+pymysql://…`). Several nodes,
   * `mysql://user:password@h1:3307,h2:3308,h3:3309/database`, are tried in order: every statement goes
   * to the first that answers (a Galera cluster's nodes, without a proxy in front).
   */
  readonly url: string | Redacted.Redacted<string>
  /**
   * Connections per database node (else the URL's `?pool_size=`, else {@link DEFAULT_MAX_CONNECTIONS}).
   * Idle ones are closed after a minute.
   */
  readonly maxConnections?: number | undefined
  /**
   * Create or upgrade the tables first, as {@link migrate} does. Default false: a client only checks
   * them (read-only) and fails with a `DatabaseError` saying to run `trilio-dms migrate`.
   */
  readonly migrate?: boolean | undefined
}

/**
 * How many connections one client process opens to each database node by default. A process's
 * operations hold a connection only for a statement (never across a call to the server), so a few serve
 * many concurrent jobs; a thousand hosts with a few processes each stay within a server's
 * `max_connections` only if each process asks for few.
 *
 * @since 0.3.0
 * @category constants
 */
export const DEFAULT_MAX_CONNECTIONS = 4

/**
 * The ledger on MySQL or MariaDB, a Galera cluster included (a lease table, no `GET_LOCK`; every
 * statement retried after the errors a cluster produces as a matter of course). Checks the tables
 * without any DDL (see {@link migrate}) and refuses a ledger table of another shape.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMysql = (
  options: MysqlOptions
): Layer.Layer<Ledger, DmsError.DatabaseError | DmsError.ValidationError> => {
  const raw = Redacted.isRedacted(options.url) ? Redacted.value(options.url as Redacted.Redacted<string>) : String(options.url)
  const location = Urls.parseLedgerUrl(raw)
  if (typeof location === "string" || location.kind !== "mysql") {
    return Layer.fail(
      DmsError.invalid("config", "db_url", typeof location === "string" ? location : "expected a mysql:// URL")
    )
  }
  const store = Effect.flatMap(
    MysqlConnect.open(location, raw, options.maxConnections ?? location.poolSize ?? DEFAULT_MAX_CONNECTIONS),
    (nodes) => SqlStore.makeMysql(nodes.query, { migrate: options.migrate })
  )
  const where = MysqlConnect.describe(location)
  return Layer.scoped(Ledger, Effect.map(store, (s) => make(s, { ...options, location: where }))).pipe(
    Layer.catchAllCause((cause) => Layer.fail(buildError(`connect to ${Urls.redactUrl(raw)}`)(cause)))
  )
}

/**
 * Options of {@link layerSqlite}.
 *
 * @since 0.1.0
 * @category models
 */
export interface SqliteOptions extends LeaseOptions {
  /** The database file (created with its directory if missing), or `:memory:`. */
  readonly filename: string
  /**
   * Create or upgrade the tables when the ledger opens. Default true: the embedded ledger serves one
   * host, and its DDL is local and transactional. `false` only checks them.
   */
  readonly migrate?: boolean | undefined
}

/**
 * The embedded ledger on SQLite. Several processes of one host may share the file; it is not for
 * several hosts (a lock on a network file system is not reliable).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerSqlite = (
  options: SqliteOptions
): Layer.Layer<Ledger, DmsError.DatabaseError | DmsError.ValidationError> =>
  Layer.unwrapEffect(
    Effect.try({
      try: () => {
        if (options.filename !== ":memory:") fs.mkdirSync(path.dirname(path.resolve(options.filename)), { recursive: true })
        const where = options.filename === ":memory:" ? undefined : `sqlite:${path.resolve(options.filename)}`
        return fromStore(SqlStore.makeSqlite({ migrate: options.migrate ?? true }), { ...options, location: where }).pipe(
          Layer.provide(SqliteClient.layer({ filename: options.filename }))
        )
      },
      catch: (cause) => new DmsError.DatabaseError({ operation: `open ${options.filename}`, cause })
    })
  ).pipe(Layer.catchAllCause((cause) => Layer.fail(buildError(`open ${options.filename}`)(cause))))

/**
 * Options of {@link layerMemory}.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions extends LeaseOptions {
  /** Tables to use; share one {@link makeMemoryState} between two layers to model two processes. */
  readonly state?: MemoryStore.MemoryState | undefined
}

/**
 * The tables of a memory ledger.
 *
 * @since 0.1.0
 * @category models
 */
export type MemoryState = MemoryStore.MemoryState

/**
 * Fresh tables for {@link layerMemory}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemoryState: () => MemoryState = MemoryStore.makeState

/**
 * The ledger in memory, for unit tests: the same semantics in one process, lease expiry on Effect's
 * `Clock` (so `TestClock` drives it).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<Ledger> =>
  Layer.sync(Ledger, () => {
    const state = options.state ?? MemoryStore.makeState()
    return make(MemoryStore.make(state), { ...options, location: `memory:${memoryLocation(state)}` })
  })

// Two memory ledgers over the same tables are one ledger, as two clients of one database are.
const memoryLocations = new WeakMap<MemoryState, string>()
const memoryLocation = (state: MemoryState) => {
  let id = memoryLocations.get(state)
  if (id === undefined) {
    id = randomUUID()
    memoryLocations.set(state, id)
  }
  return id
}

/**
 * The ledger named by a URL: `mysql://…` / `mysql+pymysql://…`, `sqlite:…`, or `memory:`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromUrl = (
  url: string | Redacted.Redacted<string>,
  options: LeaseOptions & { readonly maxConnections?: number | undefined; readonly migrate?: boolean | undefined } = {}
): Layer.Layer<Ledger, DmsError.DatabaseError | DmsError.ValidationError> => {
  const raw = Redacted.isRedacted(url) ? Redacted.value(url as Redacted.Redacted<string>) : String(url)
  const location = Urls.parseLedgerUrl(raw)
  if (typeof location === "string") return Layer.fail(DmsError.invalid("config", "db_url", location))
  switch (location.kind) {
    case "mysql":
      return layerMysql({ ...options, url: raw })
    case "sqlite":
      return layerSqlite({ ...options, filename: location.filename })
    case "memory":
      return layerMemory(options)
  }
}

/**
 * The ledger named by the `DmsConfig` in context (`dbUrl`), waiting for locks up to its `lockTimeout`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: Omit<LeaseOptions, "lockTimeout"> & { readonly maxConnections?: number | undefined } = {}
): Layer.Layer<Ledger, DmsError.DatabaseError | DmsError.ValidationError, DmsConfig.DmsConfig> =>
  Layer.unwrapEffect(
    Effect.map(DmsConfig.DmsConfig, (config) => layerFromUrl(config.dbUrl, { ...options, lockTimeout: config.lockTimeout }))
  )

/**
 * What {@link migrate} did to one table: `created` it, `upgraded` it (added `addedColumns` or
 * `addedIndexes`), or found it `current`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TableMigration {
  readonly table: string
  readonly action: "created" | "upgraded" | "current"
  readonly addedColumns: ReadonlyArray<string>
  /** Indexes added to an older table (a large ledger's queries need them). */
  readonly addedIndexes: ReadonlyArray<string>
}

/**
 * What {@link migrate} did: the database (a URL without its password) and each table (none for `memory:`).
 *
 * @since 0.1.0
 * @category models
 */
export interface MigrationReport {
  readonly location: string
  readonly tables: ReadonlyArray<TableMigration>
}

/**
 * Creates the ledger's tables, or adds the columns and indexes an earlier version's tables lack
 * (`trilio-dms migrate`). The only thing that runs DDL: a client start only checks the tables. Idempotent, and safe
 * from two processes at once. Needs CREATE, ALTER and INDEX on the database; the database must exist.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate = (options: {
  readonly url: string | Redacted.Redacted<string>
}): Effect.Effect<MigrationReport, DmsError.DatabaseError | DmsError.ValidationError> => MigrateUrl.migrate(options.url)
