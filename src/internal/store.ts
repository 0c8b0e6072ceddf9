/**
 * What a ledger backend (MySQL, SQLite, memory) implements. The lease protocol on top of it (queueing,
 * retries, renewal, release) is written once: `Ledger.make` over `leaseHold`, `leaseAcquire` and
 * `leaseRenewer`.
 */
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type { DatabaseError } from "../DmsError.js"
import type { HostState, LeaseWrite, LedgerEntry, PendingMark, TargetState } from "../Ledger.js"
import { createHash } from "node:crypto"

/** The lock row's identity: hex SHA-1 of target id, NUL, host. */
export interface LockKey {
  readonly key: string
  readonly backupTargetId: string
  readonly host: string
}

export const lockKey = (backupTargetId: string, host: string): LockKey => ({
  key: createHash("sha1").update(backupTargetId).update("\0").update(host).digest("hex"),
  backupTargetId,
  host
})

/** A target's state as a backend reads it: also which lease owner wrote the pending mark. */
export interface StoreState extends TargetState {
  readonly pendingOwner: string | null
}

export interface Store {
  readonly dialect: "mysql" | "sqlite" | "memory"
  /**
   * Takes the lease if the row is free or its lease expired; creates the row if missing. With
   * `readJobId`, a backend may also read the target's state in the same round trip and return it
   * (`true` = taken, state not read; `false` = not taken).
   */
  readonly tryAcquire: (
    key: LockKey,
    owner: string,
    leaseMs: number,
    /** The client (Ledger instance = process) asking; one that fails reserves the next turn. */
    client: string,
    readJobId?: number,
    /**
     * The operation's pending mark, written with the lease (owned by `owner`) unless an earlier mark is
     * still set.
     */
    mark?: PendingMark
  ) => Effect.Effect<boolean | StoreState, DatabaseError>
  /** Extends the lease; false when it is no longer ours. */
  readonly renew: (key: LockKey, owner: string, leaseMs: number) => Effect.Effect<boolean, DatabaseError>
  /** Clears the owner if it is still ours, and with `clearOwnMark` a pending mark that `owner` wrote. */
  readonly release: (key: LockKey, owner: string, clearOwnMark: boolean) => Effect.Effect<void, DatabaseError>
  readonly read: (key: LockKey, jobId: number | undefined) => Effect.Effect<StoreState, DatabaseError>
  /** A fenced write: fails with a lease-lost `DatabaseError`, writing nothing, when the lease is not ours. */
  readonly write: (key: LockKey, owner: string, leaseMs: number, w: LeaseWrite) => Effect.Effect<void, DatabaseError>
  /**
   * Marks `jobId`'s row of the pair unmounted without the lease, in one round trip, only if at once: the
   * job's row holds the pair, another job's row holds it too, the lease is free (no owner, or an expired
   * one, which is then cleared: a stalled holder is fenced out as by a takeover), no pending mark is set,
   * and the lock row records `mountPath`. Writes a fresh token to the lock row, so that every operation of
   * the pair conflicts with it. Returns how many other jobs hold the pair, or null when a condition did
   * not hold (nothing written). Optional: a backend without it always releases under the lease.
   */
  readonly releaseShared?: (key: LockKey, jobId: number, mountPath: string) => Effect.Effect<number | null, DatabaseError>
  /** Fenced soft delete of one entry, only if not mounted. */
  readonly softDelete: (
    key: LockKey,
    owner: string,
    leaseMs: number,
    entryId: number
  ) => Effect.Effect<boolean, DatabaseError>
  readonly getMountStatus: (
    jobId: number,
    backupTargetId: string,
    host: string | undefined
  ) => Effect.Effect<Option.Option<LedgerEntry>, DatabaseError>
  readonly getActiveMounts: (
    host: string | undefined,
    backupTargetId: string | undefined,
    page?: { readonly limit: number; readonly afterId: number } | undefined
  ) => Effect.Effect<ReadonlyArray<LedgerEntry>, DatabaseError>
  readonly getLedgerHistory: (
    backupTargetId: string,
    limit: number
  ) => Effect.Effect<ReadonlyArray<LedgerEntry>, DatabaseError>
  /**
   * One batch of a purge: the ids (after `afterId`, in id order, at most `batchSize` examined) of rows
   * that hold nothing (unmounted or soft-deleted), were last written more than `olderThanMs` ago by the
   * database's clock, and belong to no (target, host) that is leased or has a pending mark; deleted
   * unless `dryRun`. `lastId` is where the next batch starts (null: nothing left to examine).
   */
  readonly purgeBatch: (
    olderThanMs: number,
    afterId: number,
    batchSize: number,
    dryRun: boolean
  ) => Effect.Effect<{ readonly deleted: number; readonly lastId: number | null }, DatabaseError>
  /** One trivial round trip: the database answers. */
  readonly ping: Effect.Effect<void, DatabaseError>
  /** The lock rows and the holders of one host (no lease). */
  readonly getHostState: (host: string) => Effect.Effect<HostState, DatabaseError>
}

/**
 * How long a waiting client's reservation of the next turn holds without being refreshed: a waiter
 * that stopped polling (it gave up, or died) blocks the others no longer than this.
 */
export const RESERVATION_MS = 2000

/**
 * How old a waiter's own reservation gets before its poll rewrites it. The polls (~60 ms apart) only
 * read the row most of the time: on Galera every rewrite is a replicated write-set that can collide
 * with the holder's renewals and fenced writes.
 */
export const RESERVATION_REFRESH_MS = 1000

export const leaseLostReason =
  "the target lock's lease is no longer held by this operation (it expired and was taken over); nothing was written"
