/**
 * Acquiring a lease that another process may hold: one attempt at once and, while the lease is taken,
 * more with jittered backoff until the lock timeout's budget is spent. (Fibers of this process queue in
 * front of it on the keyed mutex, without polling.)
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"

class NotYet {
  readonly _tag = "NotYet"
}

/**
 * Runs `take` (one uninterruptible attempt, succeeding with whether it took the lease) until it takes
 * the lease; fails with `onTimeout()` once `budget` is spent.
 */
export const acquire = <E, E2>(
  take: Effect.Effect<boolean, E>,
  budget: Duration.Duration,
  onTimeout: () => E2
): Effect.Effect<void, E | E2> => {
  const attempt = Effect.flatMap(take, (got) => (got ? Effect.void : Effect.fail(new NotYet())))
  // Each attempt is uninterruptible (we must know whether we hold the lease); the waits between
  // them are interruptible even when the caller's region is not, so the lock timeout always fires.
  // The retry schedule is only built when the first attempt finds the lease taken: building it for
  // every operation cost more CPU than the attempt itself.
  return attempt.pipe(
    Effect.catchIf(
      (e): e is NotYet => e instanceof NotYet,
      () =>
        attempt.pipe(
          Effect.retry({
            // Polls at most ~60 ms apart, so this client's reservation of the next turn stays fresh.
            schedule: Schedule.exponential(Duration.millis(5), 1.6).pipe(
              Schedule.union(Schedule.spaced(Duration.millis(50))),
              Schedule.jittered,
              Schedule.upTo(budget)
            ),
            while: (e) => e instanceof NotYet
          }),
          Effect.delay(Duration.millis(2 + Math.random() * 3)),
          Effect.catchIf(
            (e): e is NotYet => e instanceof NotYet,
            () => Effect.fail(onTimeout())
          ),
          Effect.interruptible
        )
    )
  )
}
