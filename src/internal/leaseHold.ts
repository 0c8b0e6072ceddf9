/**
 * One operation's hold on the lease of a (target, host), from the statement that takes it to its
 * release: whether the lease is held, the target's state read with it, the pending mark the operation
 * owns, and the `Lease` handed to the body. Retrying the take while another process holds the lease is
 * `leaseAcquire`; keeping a held lease alive is `leaseRenewer`.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as DmsError from "../DmsError.js"
import type { Lease, PendingMark, PendingOperation, Service, TargetState } from "../Ledger.js"
import type { LockKey, Store, StoreState } from "./store.js"

/** Whether an operation holds its lease, and whether it has started to give it back. */
export interface LeaseState {
  held: boolean
  releasing: boolean
}

/** The options of one `withTargetLock` call. */
export type LockOptions = Parameters<Service["withTargetLock"]>[3]

/** What every lease of one Ledger shares. */
export interface Settings {
  readonly store: Store
  readonly leaseMs: number
  /** This client (process) among those sharing the ledger: it reserves the next turn of a lease it waits for. */
  readonly client: string
}

/** One operation's hold on the lease of a (target, host). */
export interface LeaseHold {
  /** Whether the lease is held (the renewer reads it). */
  readonly state: LeaseState
  /**
   * One attempt to take the lease, with the mark asked for and, when the backend reads it in the same
   * round trip, the state of the job to read first. Uninterruptible: we must know whether we hold the
   * lease. Succeeds with whether it was taken.
   */
  readonly take: Effect.Effect<boolean, DmsError.DatabaseError>
  /** The lease handed to the body. */
  readonly lease: Lease
  /** Gives the lease back if it is held, dropping a mark taken with it that was never published. Never fails. */
  readonly release: () => Effect.Effect<void>
}

/** A hold of `owner` on the lease of `key`, not taken yet. */
export const make = (settings: Settings, key: LockKey, owner: string, options: LockOptions): LeaseHold => {
  const { client, leaseMs, store } = settings
  const readJobId = options?.readJobId
  const markSpec = options?.mark
  const markTimeoutMs = markSpec === undefined ? 0 : Duration.toMillis(Duration.decode(markSpec.timeout))
  // "held" errs on the side of releasing: a failed acquire statement may still have committed.
  const state: LeaseState = { held: false, releasing: false }
  // The pending mark this operation holds, and whether a mark taken with the lease may be on the
  // row unpublished (dropped on release: nothing can be running). Known before any read: a body
  // whose first read fails must not leave the mark behind for the next operation to wait out.
  let own: PendingOperation | undefined
  let unpublished = markSpec !== undefined
  // The target's state, when the backend read it with the lease (one round trip less); handed to
  // the body's first read of the same job if nothing was written before it.
  let prefetched: TargetState | undefined
  // Our own mark's deadline is kept on this process's clock: it is the deadline of the request we send.
  const local = (mark: PendingMark, now: number): PendingOperation => ({
    op: mark.op,
    deadline: mark.deadline ?? new Date(now + mark.timeoutMs),
    remainingMs: mark.deadline === undefined ? mark.timeoutMs : mark.deadline.getTime() - now,
    mountPath: mark.mountPath,
    targetType: mark.targetType
  })
  let takenAt = 0
  const ownState = (s: StoreState): TargetState => {
    const mine = s.pendingOwner === owner && Option.isSome(s.pending)
    if (mine && own === undefined && markSpec !== undefined) {
      const { mountPath, op, targetType } = s.pending.value
      own = local({ op, mountPath, targetType, timeoutMs: markTimeoutMs }, takenAt)
    }
    return {
      holders: s.holders,
      job: s.job,
      mountPath: s.mountPath,
      targetType: s.targetType,
      pending: mine ? Option.none() : s.pending
    }
  }

  const take = Effect.flatMap(Clock.currentTimeMillis, (now) => {
    state.held = true
    takenAt = now
    const mark: PendingMark | undefined = markSpec === undefined ? undefined : {
      op: markSpec.op,
      timeoutMs: markTimeoutMs,
      mountPath: markSpec.mountPath,
      targetType: markSpec.targetType
    }
    return store.tryAcquire(key, owner, leaseMs, client, readJobId, mark)
  }).pipe(
    Effect.map((got) => {
      state.held = got !== false
      if (typeof got === "object") prefetched = ownState(got)
      return state.held
    }),
    Effect.uninterruptible
  )

  const whileHeld = <A>(operation: string, effect: () => Effect.Effect<A, DmsError.DatabaseError>) =>
    Effect.suspend(() =>
      state.held
        ? effect()
        : Effect.fail(new DmsError.DatabaseError({ operation, reason: "the lease was already released" }))
    )
  const lease: Lease = {
    backupTargetId: key.backupTargetId,
    host: key.host,
    read: (jobId) =>
      Effect.suspend(() => {
        const given = prefetched
        prefetched = undefined
        return given !== undefined && jobId === readJobId
          ? Effect.succeed(given)
          : Effect.map(store.read(key, jobId), ownState)
      }),
    write: (changes) =>
      whileHeld("ledger write", () =>
        Effect.suspend(() => {
          prefetched = undefined
          if (changes.release === true) state.releasing = true
          return Effect.zip(store.write(key, owner, leaseMs, changes), Clock.currentTimeMillis)
        }).pipe(
          Effect.map(([, now]) => {
            if (changes.release === true) state.held = false
            if (changes.pending !== undefined) {
              own = changes.pending === null ? undefined : local(changes.pending, now)
              unpublished = false
            }
          })
        )),
    softDelete: (entryId) =>
      whileHeld("softDeleteEntry", () =>
        Effect.suspend(() => {
          prefetched = undefined
          return store.softDelete(key, owner, leaseMs, entryId)
        })),
    ownMark: () => Option.fromNullable(own),
    markSent: () => {
      unpublished = false
    }
  }

  const release = () => {
    if (!state.held) return Effect.void
    state.releasing = true
    // The store clears only a mark this owner wrote, so an earlier operation's mark stays.
    return store.release(key, owner, unpublished).pipe(
      Effect.catchAll((e) => Effect.logWarning("could not release the target lock; it will expire", e.message)),
      Effect.annotateLogs({ backupTargetId: key.backupTargetId, host: key.host })
    )
  }

  return { state, take, lease, release }
}
