/**
 * The holds of one job on one (target, host) in this process, beyond what the ledger's single row per
 * job can say: whether the job holds it by a plain `mount`, and how many scopes (`mountScoped`,
 * `withMount`, `MountContext`) of the job hold it. One registry per process, keyed by the ledger's
 * location, so every client of the process that writes to the same ledger shares it: two `DMSClient`s,
 * or one closed and used again.
 *
 * It is changed only together with the job's row, under the pair's lease or by a release without it
 * that other jobs' holds keep mounted (see `Mount`), each inside {@link exclusive} (but for a scope's
 * release, which gives its scope back at once, see `Mount.release`), and aligned with the job's row
 * first: the ledger is the truth.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"

/** One job's holds on one pair. */
export interface Holds {
  /** Held by a plain mount (repeated plain mounts are one hold), or by a hold this process did not make. */
  readonly plain: boolean
  /** Scopes of the job open in this process. */
  readonly scopes: number
}

/** The key of one job's holds on one pair of one ledger. */
export interface HoldKey {
  readonly location: string
  readonly jobId: number
  readonly targetId: string
  readonly host: string
}

const registry = new Map<string, Holds>()

const keyOf = (key: HoldKey) => `${key.location}\0${key.jobId}\0${key.targetId}\0${key.host}`

const NONE: Holds = { plain: false, scopes: 0 }

/**
 * The job's holds, aligned with its ledger row read under the lease: none when the row does not hold
 * the target (whatever an earlier failure left here); a row that holds it but that this process has no
 * record of is a hold outside this process's scopes (a plain mount, before a restart or from another
 * process), which a scope opened on top must not release.
 */
export const current = (key: HoldKey, rowHolds: boolean): Holds => {
  if (!rowHolds) return NONE
  return registry.get(keyOf(key)) ?? { plain: true, scopes: 0 }
}

/** Records the job's holds once the ledger write that matches them committed; none forgets the job. */
export const set = (key: HoldKey, holds: Holds): void => {
  if (holds.plain || holds.scopes > 0) registry.set(keyOf(key), holds)
  else registry.delete(keyOf(key))
}

/**
 * Gives one scope back at once, before its release waits for the lease: a release that gives up
 * (bounded in time) must not leave a scope counted that no longer exists. The record stays (with no
 * holds) until the release, or the job's next operation, settles the row.
 */
export const endScope = (key: HoldKey): void => {
  const holds = registry.get(keyOf(key))
  if (holds !== undefined && holds.scopes > 0) registry.set(keyOf(key), { ...holds, scopes: holds.scopes - 1 })
}

/** Whether the holds keep the job's row holding the target. */
export const keepsRow = (holds: Holds): boolean => holds.plain || holds.scopes > 0

// Who waits for the exclusive section of each key (the first entry's owner is inside).
const turns = new Map<string, Array<Deferred.Deferred<void>>>()

const enter = (k: string) =>
  Effect.suspend(() => {
    const waiting = turns.get(k)
    if (waiting === undefined) {
      turns.set(k, [])
      return Effect.void
    }
    const mine = Deferred.unsafeMake<void>(FiberId.none)
    waiting.push(mine)
    return Deferred.await(mine)
  })

const leave = (k: string) =>
  Effect.sync(() => {
    const next = turns.get(k)?.shift()
    if (next === undefined) turns.delete(k)
    else Deferred.unsafeDone(next, Effect.void)
  })

/**
 * Runs `effect` alone among this process's changes of the job's row and holds on the pair, in FIFO
 * order. A release without the lease reads the holds, then writes the row: a write made under the lease
 * by another client of this process (its own queue, its own lease) must not land between the two with
 * holds of its own. Waiting is not interruptible: whoever is inside runs one ledger write.
 */
export const exclusive = <A, E, R>(key: HoldKey, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const k = keyOf(key)
  return Effect.acquireUseRelease(enter(k), () => effect, () => leave(k))
}

/** How many wait to enter the exclusive section of the key (tests force interleavings with it). */
export const waiting = (key: HoldKey): number => turns.get(keyOf(key))?.length ?? 0
