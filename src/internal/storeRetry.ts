/**
 * Retries of the errors a database cluster produces as a matter of course: Galera's certification
 * failures (1213, reported at commit), lock wait timeouts (1205), a node not ready for statements
 * (1047), a connection lost mid-statement, SQLite's busy file. Each statement of a store is safe to
 * retry: takes, renewals and releases are idempotent for their owner, and a fenced write or a shared
 * release whose commit outcome is unknown re-checks its write token before it is applied again (see
 * sqlStore).
 */
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import type { DatabaseError } from "../DmsError.js"
import type { Store } from "./store.js"

/** What kind of passing trouble an error is; undefined for one that retrying cannot cure. */
export type RetryKind = "deadlock" | "lock-wait" | "not-ready" | "connection" | "busy"

const connectionCodes = new Set([
  "PROTOCOL_CONNECTION_LOST",
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ER_SERVER_SHUTDOWN",
  "ER_CONNECTION_KILLED",
  "PROTOCOL_SEQUENCE_TIMEOUT"
])

/** The kind of a store error's cause (a mysql2 or better-sqlite3 error), if retrying can cure it. */
export const retryKind = (error: DatabaseError): RetryKind | undefined => {
  const cause = error.cause as { code?: unknown; errno?: unknown; fatal?: unknown } | null | undefined
  if (cause === null || typeof cause !== "object") return undefined
  const { code, errno } = cause
  if (errno === 1213 || code === "ER_LOCK_DEADLOCK") return "deadlock"
  if (errno === 1205 || code === "ER_LOCK_WAIT_TIMEOUT") return "lock-wait"
  if (errno === 1047 || code === "ER_UNKNOWN_COM_ERROR") return "not-ready"
  if (typeof code === "string" && code.startsWith("SQLITE_BUSY")) return "busy"
  if ((typeof code === "string" && connectionCodes.has(code)) || errno === 1053 || errno === 1927 || cause.fatal === true) {
    return "connection"
  }
  return undefined
}

/** Whether a failed write may have committed: the connection was lost before its answer came. */
export const outcomeUnknown = (error: DatabaseError): boolean => retryKind(error) === "connection"

/**
 * Ledger statements retried after a passing error, by the error's kind.
 *
 * @since 0.1.0
 */
export const retriesTotal = Metric.counter("dms_ledger_retries_total", {
  description: "ledger statements retried after a passing database error (Galera certification failure, lock wait, node not ready, lost connection)",
  incremental: true
})

/**
 * Retries `effect` after passing errors with jittered exponential backoff (10 ms doubling, at most
 * 500 ms apart) for at most `budget`; then the last error is the caller's. Build it once and apply it to
 * many effects: the schedule is only run when a first attempt fails.
 */
export const retrying = (operation: string, budget: Duration.Duration) => {
  const count = (error: DatabaseError) => {
    const kind = retryKind(error)
    return kind === undefined ? Effect.void : Effect.zipRight(
      // Only on a retry, off the hot path: the tagged counter is built when needed.
      Metric.update(retriesTotal.pipe(Metric.tagged("error", kind)), 1),
      Effect.logDebug(`${operation}: retrying after a passing database error (${kind})`, error.message)
    )
  }
  const schedule = Schedule.exponential("10 millis", 2).pipe(
    Schedule.union(Schedule.spaced("500 millis")),
    Schedule.jittered,
    Schedule.upTo(budget),
    // Counts every failure after the first (counted before the schedule starts), the last one included.
    Schedule.tapInput(count)
  )
  const retryable = (error: DatabaseError) => retryKind(error) !== undefined
  return <A, R>(effect: Effect.Effect<A, DatabaseError, R>): Effect.Effect<A, DatabaseError, R> =>
    Effect.catchIf(effect, retryable, (first) => Effect.zipRight(count(first), Effect.retry(effect, { schedule, while: retryable })))
}

/** The store with every statement retried after passing errors for at most `budget` each. */
export const store = (inner: Store, budget: Duration.Duration): Store => {
  const take = retrying("acquire lock", budget)
  const renew = retrying("renew lock", budget)
  const release = retrying("release lock", budget)
  const read = retrying("read target state", budget)
  const write = retrying("ledger write", budget)
  const softDelete = retrying("softDeleteEntry", budget)
  const queryRetry = retrying("query", budget)
  const purge = retrying("purge", budget)
  const shared = retrying("release a shared hold", budget)
  const releaseShared = inner.releaseShared
  return {
    dialect: inner.dialect,
    tryAcquire: (...args) => take(inner.tryAcquire(...args)),
    renew: (...args) => renew(inner.renew(...args)),
    release: (...args) => release(inner.release(...args)),
    read: (...args) => read(inner.read(...args)),
    write: (...args) => write(inner.write(...args)),
    softDelete: (...args) => softDelete(inner.softDelete(...args)),
    ...(releaseShared === undefined ? {} : { releaseShared: (...args) => shared(releaseShared(...args)) }),
    getMountStatus: (...args) => queryRetry(inner.getMountStatus(...args)),
    getActiveMounts: (...args) => queryRetry(inner.getActiveMounts(...args)),
    getLedgerHistory: (...args) => queryRetry(inner.getLedgerHistory(...args)),
    purgeBatch: (...args) => purge(inner.purgeBatch(...args)),
    ping: inner.ping,
    getHostState: (...args) => queryRetry(inner.getHostState(...args))
  }
}
