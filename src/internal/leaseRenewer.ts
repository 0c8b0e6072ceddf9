/**
 * Keeps the leases of one Ledger alive while their operations run, and says when one was lost (the
 * writes under it are then refused by the store's fence).
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import type { LeaseState } from "./leaseHold.js"
import type { LockKey, Store } from "./store.js"

/** The renewer of one Ledger's leases. */
export interface LeaseRenewer {
  /** Hands a taken lease to the renewer (the operation's finalizer takes it back). */
  readonly renewWhileHeld: (key: LockKey, owner: string, state: LeaseState) => Effect.Effect<void>
  /** Takes a lease back: it is no longer renewed. */
  readonly forget: (owner: string) => void
}

/** A sleep on a timer that does not keep the process alive. */
const unrefSleep = (duration: Duration.Duration) =>
  Effect.async<void>((resume) => {
    const timer = setTimeout(() => resume(Effect.void), Duration.toMillis(duration))
    timer.unref()
    return Effect.sync(() => clearTimeout(timer))
  })

/** A renewer that extends each lease handed to it by `leaseMs` every `renewEvery`; it starts with the first. */
export const make = (store: Store, leaseMs: number, renewEvery: Duration.Duration): LeaseRenewer => {
  // One renewer per Ledger renews every lease it holds, instead of a fiber per lease: forking and
  // interrupting a fiber for each operation cost ~0.1 ms of CPU, a tenth of the client's whole cost per
  // operation. It waits on a Deferred while nothing is held, and sleeps on an unref'd timer, so it never
  // keeps a process alive.
  const held = new Map<string, { readonly key: LockKey; readonly state: LeaseState }>()
  let wake: Deferred.Deferred<void> | undefined
  let renewerStarted = false
  const renewOne = (owner: string, key: LockKey, state: LeaseState) =>
    Effect.gen(function*() {
      if (!state.held) return held.delete(owner)
      const still = yield* store.renew(key, owner, leaseMs).pipe(
        Effect.catchAll((e) => Effect.as(Effect.logWarning("could not renew the target lock", e.message), true))
      )
      if (!still) {
        held.delete(owner)
        // A renewal that raced the lease's own release finds it gone: that is no loss.
        if (state.held && !state.releasing) {
          yield* Effect.logError("the target lock's lease was lost; writes under it will be refused")
        }
      }
    }).pipe(Effect.annotateLogs({ backupTargetId: key.backupTargetId, host: key.host }))
  const renewer = Effect.gen(function*() {
    while (true) {
      if (held.size === 0) {
        const idle = Deferred.unsafeMake<void>(FiberId.none)
        wake = idle
        yield* Deferred.await(idle)
      }
      yield* unrefSleep(renewEvery)
      yield* Effect.forEach([...held], ([owner, h]) => renewOne(owner, h.key, h.state), {
        concurrency: "unbounded",
        discard: true
      })
    }
  })

  return {
    renewWhileHeld: (key, owner, state) =>
      Effect.suspend(() => {
        held.set(owner, { key, state })
        if (!renewerStarted) {
          renewerStarted = true
          return Effect.asVoid(Effect.forkDaemon(renewer))
        }
        if (wake !== undefined) {
          Deferred.unsafeDone(wake, Effect.void)
          wake = undefined
        }
        return Effect.void
      }),
    forget: (owner) => {
      held.delete(owner)
    }
  }
}
