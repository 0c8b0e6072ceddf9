/**
 * The ledger in memory, for unit tests and the in-process demo. Same semantics as the SQL stores,
 * within one process; time comes from Effect's `Clock`, so `TestClock` drives lease expiry.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { DatabaseError } from "../DmsError.js"
import type { LedgerEntry, PendingMark, PendingOperation } from "../Ledger.js"
import type { LockKey, Store } from "./store.js"
import { leaseLostReason, lockKey, RESERVATION_MS } from "./store.js"
import { VERSION } from "./version.js"

interface LockRow {
  owner: string | null
  expiresAt: number
  mountPath: string | null
  targetType: "nfs" | "s3" | null
  pending: StoredMark | null
  pendingOwner: string | null
  waiter: string | null
  waiterAt: number
}

/** A pending mark as the table keeps it: its deadline, on Effect's `Clock`. */
interface StoredMark {
  readonly op: PendingMark["op"]
  readonly deadlineMs: number
  readonly mountPath: string | null
  readonly targetType: "nfs" | "s3" | null
}
const stored = (mark: PendingMark, now: number): StoredMark => ({
  op: mark.op,
  deadlineMs: mark.deadline === undefined ? now + mark.timeoutMs : mark.deadline.getTime(),
  mountPath: mark.mountPath ?? null,
  targetType: mark.targetType ?? null
})
const pendingAt = (mark: StoredMark | null | undefined, now: number): Option.Option<PendingOperation> =>
  mark === null || mark === undefined ? Option.none() : Option.some({
    op: mark.op,
    deadline: new Date(mark.deadlineMs),
    remainingMs: mark.deadlineMs - now,
    mountPath: mark.mountPath,
    targetType: mark.targetType
  })

type MutableEntry = { -readonly [K in keyof LedgerEntry]: LedgerEntry[K] }

/** The tables of a memory ledger; share one between two layers to model two client processes. */
export interface MemoryState {
  readonly locks: Map<string, LockRow>
  readonly rows: Array<MutableEntry>
  /** The rows of each (target, host), so operations under a lease do not scan the whole ledger. */
  readonly byPair: Map<string, Array<MutableEntry>>
  /** The rows of each (target, host, job), so a lease's read does not scan the pair's history. */
  readonly byPairJob: Map<string, Array<MutableEntry>>
  /** The mounted, non-deleted rows of each (target, host). */
  readonly holders: Map<string, Set<MutableEntry>>
  /** The (target, host) of each lock row, by lock key. */
  readonly pairs: Map<string, LockKey>
  nextId: number
}

export const makeState = (): MemoryState => ({
  locks: new Map(),
  rows: [],
  byPair: new Map(),
  byPairJob: new Map(),
  holders: new Map(),
  pairs: new Map(),
  nextId: 1
})

const copy = (e: MutableEntry): LedgerEntry => ({ ...e })
const seconds = (ms: number) => new Date(Math.floor(ms / 1000) * 1000)

export const make = (state: MemoryState = makeState()): Store => {
  const withNow = <A>(f: (now: number) => A): Effect.Effect<A> => Effect.map(Clock.currentTimeMillis, f)
  const owned = (key: string, owner: string) => state.locks.get(key)?.owner === owner
  const lost = (operation: string) => Effect.fail(new DatabaseError({ operation, reason: leaseLostReason }))
  const newestFirst = (a: LedgerEntry, b: LedgerEntry) => b.id - a.id
  const jobKey = (key: LockKey, jobId: number | undefined) => `${key.key}\0${jobId}`
  const jobRows = (key: LockKey, jobId: number | undefined) => state.byPairJob.get(jobKey(key, jobId)) ?? []
  const setMounted = (key: LockKey, row: MutableEntry, mounted: boolean) => {
    row.mounted = mounted
    let set = state.holders.get(key.key)
    if (set === undefined) state.holders.set(key.key, set = new Set())
    if (mounted && !row.deleted) set.add(row)
    else set.delete(row)
  }

  return {
    dialect: "memory",
    tryAcquire: (key, owner, leaseMs, client, _readJobId, mark) =>
      withNow((now) => {
        const row = state.locks.get(key.key)
        if (row === undefined) {
          state.pairs.set(key.key, key)
          state.locks.set(key.key, {
            owner,
            expiresAt: now + leaseMs,
            mountPath: null,
            targetType: null,
            pending: mark === undefined ? null : stored(mark, now),
            pendingOwner: mark === undefined ? null : owner,
            waiter: null,
            waiterAt: 0
          })
          return true
        }
        if (row.owner === owner) return true // a retried take that had taken it
        const open = row.waiter === null || row.waiter === client || row.waiterAt < now - RESERVATION_MS
        if ((row.owner !== null && row.expiresAt >= now) || !open) {
          if (open) {
            row.waiter = client
            row.waiterAt = now
          }
          return false
        }
        row.owner = owner
        row.expiresAt = now + leaseMs
        if (row.waiter === client) row.waiter = null
        if (mark !== undefined && row.pending === null) {
          row.pending = stored(mark, now)
          row.pendingOwner = owner
        }
        return true
      }),
    renew: (key, owner, leaseMs) =>
      withNow((now) => {
        const row = state.locks.get(key.key)
        if (row?.owner !== owner) return false
        row.expiresAt = now + leaseMs
        return true
      }),
    release: (key, owner, clearOwnMark) =>
      Effect.sync(() => {
        const row = state.locks.get(key.key)
        if (row?.owner !== owner) return
        row.owner = null
        if (clearOwnMark && row.pendingOwner === owner) row.pending = null
      }),
    read: (key, jobId) =>
      withNow((now) => {
        const lock = state.locks.get(key.key)
        const own = jobRows(key, jobId).filter((r) => !r.deleted)
        const holders = [...(state.holders.get(key.key) ?? [])].sort((a, b) => a.id - b.id)
        return {
          holders: holders.map(copy),
          job: Option.map(Option.fromNullable(own[own.length - 1]), copy),
          mountPath: Option.fromNullable(lock?.mountPath ?? null),
          targetType: Option.fromNullable(lock?.targetType ?? null),
          pending: pendingAt(lock?.pending, now),
          pendingOwner: lock?.pending == null ? null : lock.pendingOwner
        }
      }),
    write: (key, owner, leaseMs, w) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const lock = state.locks.get(key.key)
        if (lock === undefined || lock.owner !== owner) return lost("ledger write")
        lock.expiresAt = now + leaseMs
        if (w.mountPath !== undefined) lock.mountPath = w.mountPath
        if (w.targetType !== undefined) lock.targetType = w.targetType
        if (w.pending !== undefined) {
          lock.pending = w.pending === null ? null : stored(w.pending, now)
          lock.pendingOwner = w.pending === null ? null : owner
        }
        if (w.release === true) lock.owner = null
        const job = w.job
        if (job !== undefined) {
          const mine = jobRows(key, job.jobId).filter((r) => !r.deleted)
          for (const r of mine) {
            setMounted(key, r, job.mounted)
            r.updatedAt = seconds(now)
            r.version = VERSION
          }
          if (mine.length === 0 && job.mounted) {
            const row: MutableEntry = {
              id: state.nextId++,
              jobId: job.jobId,
              backupTargetId: key.backupTargetId,
              host: key.host,
              mounted: true,
              deleted: false,
              version: VERSION,
              createdAt: seconds(now),
              updatedAt: seconds(now),
              deletedAt: null
            }
            state.rows.push(row)
            const pair = state.byPair.get(key.key)
            if (pair === undefined) state.byPair.set(key.key, [row])
            else pair.push(row)
            const forJob = state.byPairJob.get(jobKey(key, job.jobId))
            if (forJob === undefined) state.byPairJob.set(jobKey(key, job.jobId), [row])
            else forJob.push(row)
            setMounted(key, row, true)
          }
        }
        return Effect.void
      }),
    releaseShared: (key, jobId, mountPath) =>
      withNow((now) => {
        const lock = state.locks.get(key.key)
        const free = lock !== undefined && (lock.owner === null || lock.expiresAt < now) && lock.pending === null
        const mine = jobRows(key, jobId).filter((r) => r.mounted && !r.deleted)
        const others = [...(state.holders.get(key.key) ?? [])].filter((r) => r.jobId !== jobId).length
        if (!free || lock.mountPath !== mountPath || mine.length === 0 || others === 0) return null
        lock.owner = null
        for (const r of mine) {
          setMounted(key, r, false)
          r.updatedAt = seconds(now)
          r.version = VERSION
        }
        return others
      }),
    softDelete: (key, owner, leaseMs, entryId) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (!owned(key.key, owner)) return lost("softDeleteEntry")
        state.locks.get(key.key)!.expiresAt = now + leaseMs
        const row = state.rows.find((r) => r.id === entryId)
        if (row === undefined || row.mounted || row.deleted) return Effect.succeed(false)
        row.deleted = true
        row.deletedAt = seconds(now)
        row.updatedAt = seconds(now)
        row.version = VERSION
        return Effect.succeed(true)
      }),
    getMountStatus: (jobId, backupTargetId, host) =>
      Effect.sync(() => {
        const rows = state.rows
          .filter((r) =>
            r.jobId === jobId && r.backupTargetId === backupTargetId && !r.deleted && (host === undefined || r.host === host)
          )
          .sort(newestFirst)
        return Option.map(Option.fromNullable(rows[0]), copy)
      }),
    getActiveMounts: (host, backupTargetId, page) =>
      Effect.sync(() => {
        const active = state.rows.filter((r) =>
          r.mounted && !r.deleted && (host === undefined || r.host === host) &&
          (backupTargetId === undefined || r.backupTargetId === backupTargetId) && (page === undefined || r.id > page.afterId)
        )
        return (page === undefined ? active : active.slice(0, page.limit)).map(copy)
      }),
    purgeBatch: (olderThanMs, afterId, batchSize, dryRun) =>
      withNow((now) => {
        const examined = state.rows.filter((r) => r.id > afterId).slice(0, batchSize)
        const busy = (r: MutableEntry) => {
          const lock = state.locks.get(lockKey(r.backupTargetId, r.host).key)
          return lock !== undefined && (lock.pending !== null || (lock.owner !== null && lock.expiresAt >= now))
        }
        const doomed = new Set(
          examined.filter((r) => (!r.mounted || r.deleted) && r.updatedAt.getTime() < now - olderThanMs && !busy(r))
        )
        if (!dryRun && doomed.size > 0) {
          const keep = (r: MutableEntry) => !doomed.has(r)
          state.rows.splice(0, state.rows.length, ...state.rows.filter(keep))
          for (const [k, rows] of state.byPair) state.byPair.set(k, rows.filter(keep))
          for (const [k, rows] of state.byPairJob) state.byPairJob.set(k, rows.filter(keep))
        }
        return { deleted: doomed.size, lastId: examined.length < batchSize ? null : examined[examined.length - 1]!.id }
      }),
    ping: Effect.void,
    getHostState: (host) =>
      withNow((now) => ({
        host,
        locks: [...state.locks.entries()]
          .flatMap(([k, lock]) => {
            const pair = state.pairs.get(k)
            return pair === undefined || pair.host !== host ? [] : [{
              backupTargetId: pair.backupTargetId,
              host,
              mountPath: Option.fromNullable(lock.mountPath),
              targetType: Option.fromNullable(lock.targetType),
              pending: pendingAt(lock.pending, now)
            }]
          })
          .sort((a, b) => (a.backupTargetId < b.backupTargetId ? -1 : a.backupTargetId > b.backupTargetId ? 1 : 0)),
        holders: state.rows.filter((r) => r.mounted && !r.deleted && r.host === host).map(copy)
      })),
    getLedgerHistory: (backupTargetId, limit) =>
      Effect.sync(() =>
        state.rows.filter((r) => r.backupTargetId === backupTargetId).sort(newestFirst).slice(0, limit).map(copy)
      )
  }
}
