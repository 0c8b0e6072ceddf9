/**
 * A spinner with the elapsed time on stderr while a command waits (for the lock, for the server). Only
 * on a terminal: piped or redirected output stays clean.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"

const frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]

/**
 * Runs `self` with a spinner labelled `label` on stderr (when stderr is a terminal), cleared when it
 * ends however it ends.
 *
 * @since 0.1.0
 * @category combinators
 */
export const withSpinner = (label: string, enabled: boolean = process.stderr.isTTY === true) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  if (!enabled) return self
  return Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    let i = 0
    const tick = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const frame = frames[i++ % frames.length]!
      process.stderr.write(`\r\x1b[K${frame} ${label} ${((now - start) / 1000).toFixed(1)}s`)
    })
    const spinner = yield* Effect.fork(Effect.forever(Effect.zipRight(tick, Effect.sleep(Duration.millis(80)))))
    return yield* self.pipe(
      Effect.ensuring(
        Effect.zipRight(Fiber.interrupt(spinner), Effect.sync(() => void process.stderr.write("\r\x1b[K")))
      )
    )
  })
}
