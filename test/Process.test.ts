/**
 * The child-process helper of the tests (test/support/process.ts), which the model test's fault
 * injection waits on: a `take` given up (timed out, interrupted) must not take a line later, or the
 * next `take` of that line waits for ever (the model test's drift once lost its `stalled` line so); and a
 * wait that begins after the child ended fails at once instead of waiting for ever (the model test's
 * wait for a replaced worker's `done` once hung so), while the lines it printed last are still seen.
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

it.live("after the child ended, its last line is seen and a wait for any other fails at once", () =>
  Effect.scoped(Effect.gen(function*() {
    const child = yield* spawnTs("test/support/echo.ts", [])
    yield* child.waitFor("ready")
    yield* child.send("exit 3")
    assert.strictEqual(yield* child.exited, 3)
    // Bounded only so that a regression fails here instead of at the test's timeout.
    yield* child.waitFor("bye").pipe(Effect.timeout("5 seconds"))
    const missing = yield* child.waitFor("never printed").pipe(Effect.timeout("5 seconds"), Effect.flip)
    assert.include(missing.message, "before \"never printed\"")
    const untaken = yield* child.take("never").pipe(Effect.timeout("5 seconds"), Effect.flip)
    assert.include(untaken.message, "child exited (3)")
  })), { timeout: 30_000 })
