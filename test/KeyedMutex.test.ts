/**
 * The in-process queue in front of the database lease: FIFO per key, independent keys, and a waiter
 * that times out or is interrupted never leaks the mutex.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import * as KeyedMutex from "../src/internal/keyedMutex.js"

const long = Duration.minutes(10)

/** Lets every forked fiber run until it blocks. */
const settle = Effect.repeatN(Effect.yieldNow(), 20)

describe("KeyedMutex", () => {
  it.effect("hands the mutex to waiters in arrival order", () =>
    Effect.gen(function*() {
      const mutex = KeyedMutex.make()
      const order: Array<string> = []
      const gate = yield* Deferred.make<void>()
      const first = yield* mutex.withLock("k", long, () => "timeout", Deferred.await(gate)).pipe(Effect.fork)
      yield* settle
      const waiters = []
      for (const name of ["b", "c", "d"]) {
        waiters.push(yield* mutex.withLock("k", long, () => "timeout", Effect.sync(() => order.push(name))).pipe(Effect.fork))
        yield* settle
      }
      assert.deepStrictEqual(order, [], "nobody ran while the first held the mutex")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(first)
      yield* Effect.forEach(waiters, Fiber.join)
      assert.deepStrictEqual(order, ["b", "c", "d"])
      assert.strictEqual(mutex.size(), 0)
    }))

  it.effect("different keys never wait for each other", () =>
    Effect.gen(function*() {
      const mutex = KeyedMutex.make()
      const gate = yield* Deferred.make<void>()
      const held = yield* mutex.withLock("a", long, () => "timeout", Deferred.await(gate)).pipe(Effect.fork)
      yield* settle
      assert.strictEqual(yield* mutex.withLock("b", Duration.zero, () => "timeout", Effect.succeed("ran")), "ran")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(held)
    }))

  it.effect("a waiter that times out leaves the queue; the mutex passes on and is freed", () =>
    Effect.gen(function*() {
      const mutex = KeyedMutex.make()
      const gate = yield* Deferred.make<void>()
      const holder = yield* mutex.withLock("k", long, () => "timeout", Deferred.await(gate)).pipe(Effect.fork)
      yield* settle
      const impatient = yield* mutex.withLock("k", Duration.seconds(1), () => "timeout" as const, Effect.succeed("ran")).pipe(Effect.either, Effect.fork)
      const patient = yield* mutex.withLock("k", long, () => "timeout", Effect.succeed("ran")).pipe(Effect.fork)
      yield* settle
      yield* TestClock.adjust(Duration.seconds(2))
      const r = yield* Fiber.join(impatient)
      assert.deepStrictEqual(r._tag === "Left" ? r.left : r.right, "timeout")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(holder)
      assert.strictEqual(yield* Fiber.join(patient), "ran")
      assert.strictEqual(mutex.size(), 0)
    }))

  it.effect("an interrupted waiter or holder passes the mutex on", () =>
    Effect.gen(function*() {
      const mutex = KeyedMutex.make()
      const holder = yield* mutex.withLock("k", long, () => "timeout", Effect.never).pipe(Effect.fork)
      yield* settle
      const waiter = yield* mutex.withLock("k", long, () => "timeout", Effect.never).pipe(Effect.fork)
      const last = yield* mutex.withLock("k", long, () => "timeout", Effect.succeed("ran")).pipe(Effect.fork)
      yield* settle
      yield* Fiber.interrupt(waiter)
      yield* Fiber.interrupt(holder)
      assert.strictEqual(yield* Fiber.join(last), "ran")
      assert.strictEqual(mutex.size(), 0)
    }))
})
