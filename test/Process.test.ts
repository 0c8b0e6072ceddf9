/**
 * The child-process helper of the tests (test/support/process.ts), which the model test's fault
 * injection waits on: a `take` given up (timed out, interrupted) must not take a line later, or the
 * next `take` of that line waits for ever (the model test's drift once lost its `stalled` line so).
 */
import { assert, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { spawnTs } from "./support/process.js"

// Real time: the timeouts are real.
it.live("a take that timed out leaves the next matching line to the next take", () =>
  Effect.scoped(Effect.gen(function*() {
    const child = yield* spawnTs("test/support/echo.ts", [])
    yield* child.waitFor("ready")
    // Nothing matches yet: this take gives up before the line exists.
    const gaveUp = yield* Effect.timeout(child.take("stalled"), "50 millis").pipe(Effect.option)
    assert.isTrue(Option.isNone(gaveUp))
    yield* child.send("stalled one")
    yield* child.send("other")
    yield* child.waitFor("other")
    const taken = yield* child.take("stalled").pipe(Effect.timeout("5 seconds"))
    assert.strictEqual(taken, "stalled one")
  })), { timeout: 30_000 })
