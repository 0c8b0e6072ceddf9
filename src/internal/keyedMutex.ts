/**
 * A FIFO mutex per key, so fibers of one process queue for a (target, host) without polling the
 * database. Waiting is interruptible and time-bounded; whether a waiter got the mutex is decided by the
 * mutex's own state, never by which side of a race finished first, so a timeout can never leak it.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"

interface Entry {
  held: boolean
  readonly waiters: Array<Deferred.Deferred<void>>
}

export interface KeyedMutex {
  /**
   * Runs `use` while holding the mutex of `key`. Gives up waiting after `timeout` with `onTimeout`.
   */
  readonly withLock: <A, E, R, E2>(
    key: string,
    timeout: Duration.Duration,
    onTimeout: () => E2,
    use: Effect.Effect<A, E, R>
  ) => Effect.Effect<A, E | E2, R>
  /** Number of keys with a holder or waiters (for leak checks). */
  readonly size: () => number
}

export const make = (): KeyedMutex => {
  const entries = new Map<string, Entry>()

  const release = (key: string, entry: Entry) => {
    const next = entry.waiters.shift()
    if (next !== undefined) {
      Deferred.unsafeDone(next, Effect.void)
    } else {
      entry.held = false
      entries.delete(key)
    }
  }

  const acquire = (key: string, timeout: Duration.Duration): Effect.Effect<boolean> =>
    Effect.suspend(() => {
      let entry = entries.get(key)
      if (entry === undefined) {
        entry = { held: false, waiters: [] }
        entries.set(key, entry)
      }
      if (!entry.held) {
        entry.held = true
        return Effect.succeed(true)
      }
      const e = entry
      const mine = Deferred.unsafeMake<void>(FiberId.none)
      e.waiters.push(mine)
      // Decides from the queue, after the wait ended for whatever reason: if we are no longer queued,
      // the releaser handed the mutex to us.
      let handedToUs: boolean | undefined
      const settle = Effect.sync(() => {
        if (handedToUs === undefined) {
          const i = e.waiters.indexOf(mine)
          if (i >= 0) e.waiters.splice(i, 1)
          handedToUs = i < 0
        }
        return handedToUs
      })
      return Deferred.await(mine).pipe(
        Effect.timeoutOption(timeout),
        Effect.zipRight(settle),
        Effect.onInterrupt(() =>
          Effect.flatMap(settle, (ours) => (ours ? Effect.sync(() => release(key, e)) : Effect.void))
        )
      )
    })

  return {
    withLock: <A, E, R, E2>(
      key: string,
      timeout: Duration.Duration,
      onTimeout: () => E2,
      use: Effect.Effect<A, E, R>
    ) =>
      // Waiting is interruptible even inside an uninterruptible region (e.g. the acquire of an
      // acquireRelease): otherwise its timeout could not fire. acquire() cleans up on interruption.
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Effect.interruptible(acquire(key, timeout)), (got): Effect.Effect<A, E | E2, R> =>
          got
            ? Effect.ensuring(
              restore(use),
              Effect.sync(() => {
                const entry = entries.get(key)
                if (entry !== undefined) release(key, entry)
              })
            )
            : Effect.fail(onTimeout()))
      ),
    size: () => entries.size
  }
}
