/**
 * The queue checks' bounds, against the real RabbitMQ: however many hosts a client checks at once, it
 * runs at most its limit of checks at a time on at most that many channels, which it keeps for the next
 * checks, and it caches at most its cap of answers, the oldest dropped first. The checks run on the
 * test's own connection, seen through a wrapper that counts the channels opened and the checks in flight.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import type { ChannelModel } from "amqplib"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Scope from "effect/Scope"
import * as Broker from "../src/Broker.js"
import { BrokerError } from "../src/DmsError.js"
import { makeTools } from "../src/internal/amqpCommon.js"
import * as AmqpQueueCheck from "../src/internal/amqpQueueCheck.js"
import { admin, deleteOnClose, RABBIT_URL, sweepQueues, uniqueHost } from "./support/rabbit.js"

afterAll(sweepQueues)

interface Seen {
  /** Channels opened on the connection. */
  opened: number
  /** Channels open now, and the most at once. */
  open: number
  maxOpen: number
  /** Checks in flight now, and the most at once. */
  checking: number
  maxChecking: number
}

/**
 * The connection `model` as the queue checks see it, counting what they do on it. Checks wait until
 * `openAt` of them are in flight at once (then all go on), so a test knows the limit was reached.
 */
const counted = (model: ChannelModel, openAt: number) => {
  const seen: Seen = { opened: 0, open: 0, maxOpen: 0, checking: 0, maxChecking: 0 }
  let open!: () => void
  const gate = new Promise<void>((resolve) => (open = resolve))
  const wrapped = {
    createChannel: async () => {
      seen.opened++
      const channel = await model.createChannel()
      seen.maxOpen = Math.max(seen.maxOpen, ++seen.open)
      channel.on("close", () => void seen.open--)
      const checkQueue = channel.checkQueue.bind(channel)
      channel.checkQueue = async (queue: string) => {
        seen.maxChecking = Math.max(seen.maxChecking, ++seen.checking)
        if (seen.checking >= openAt) open()
        try {
          await gate
          return await checkQueue(queue)
        } finally {
          seen.checking--
        }
      }
      return channel
    }
  } as unknown as ChannelModel
  return { model: () => wrapped, seen }
}

const settings = (extra: Partial<AmqpQueueCheck.Settings>): AmqpQueueCheck.Settings => ({
  connectTimeout: Duration.seconds(10),
  fastFailWindow: Duration.zero,
  queueCheckCacheTtl: Duration.minutes(10),
  ...extra
})

/** `n` hosts whose queues exist and have a consumer (on the admin connection), deleted with the scope. */
const servedHosts = (n: number, label: string) =>
  Effect.gen(function*() {
    const { channel } = yield* admin
    const hosts = Array.from({ length: n }, (_, i) => uniqueHost(`${label}${i}`))
    for (const host of hosts) {
      const queue = Broker.queueName(host)
      yield* deleteOnClose(queue)
      yield* Effect.promise(async () => {
        await channel.assertQueue(queue, { durable: true })
        await channel.consume(queue, () => {}, { noAck: true })
      })
    }
    return hosts
  })

/**
 * Queue checks with `extra` settings, on the admin connection seen through {@link counted}, in a scope of
 * their own (`close` ends them; else the test's scope does).
 */
const checksOn = (extra: Partial<AmqpQueueCheck.Settings>, openAt: number) =>
  Effect.gen(function*() {
    const { model } = yield* admin
    const connection = counted(model, openAt)
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const check = yield* AmqpQueueCheck.make(settings(extra), yield* makeTools([RABBIT_URL])).pipe(Scope.extend(scope))
    const ensure = (host: string) => check.ensure(host, Broker.queueName(host), connection.model)
    const fresh = (host: string) => check.freshness(Broker.queueName(host))
    return { check, ensure, fresh, seen: connection.seen, close: Scope.close(scope, Exit.void) }
  })

/** The answers cached by every client of the process now. */
const cached = Effect.map(Metric.value(AmqpQueueCheck.cachedQueues), (state) => state.value)

describe("AmqpQueueCheck", () => {
  it.scopedLive("twelve hosts checked at once: at most 3 checks in flight, on 3 channels, kept for the next checks", () =>
    Effect.gen(function*() {
      const hosts = yield* servedHosts(12, "limit")
      const { check, close, ensure, fresh, seen } = yield* checksOn({ maxConcurrentChecks: 3 }, 3)
      const checkAll = Effect.forEach(hosts, ensure, { concurrency: "unbounded", discard: true })
      yield* checkAll
      assert.strictEqual(seen.maxChecking, 3)
      assert.strictEqual(seen.opened, 3)
      assert.deepStrictEqual(hosts.map(fresh), hosts.map(() => "fresh"))

      // Checked again (the servers may be gone): on the same channels.
      for (const h of hosts) check.forget(Broker.queueName(h))
      yield* checkAll
      assert.strictEqual(seen.maxChecking, 3)
      assert.strictEqual(seen.opened, 3)
      assert.strictEqual(seen.open, 3)

      yield* close
      assert.strictEqual(seen.open, 0, "closing the checks closes their idle channels")
    }), { timeout: 60_000 })

  it.scopedLive("missing queues: the broker closes each one's channel, which is never reused; a check after them succeeds", () =>
    Effect.gen(function*() {
      const [served] = yield* servedHosts(1, "after")
      const { ensure, fresh, seen } = yield* checksOn({ maxConcurrentChecks: 2 }, 2)
      const missing = Array.from({ length: 6 }, (_, i) => uniqueHost(`missing${i}`))
      const errors = yield* Effect.forEach(missing, (h) => Effect.flip(ensure(h)), { concurrency: "unbounded" })
      for (const e of errors) {
        assert.instanceOf(e, BrokerError)
        assert.match(e.message, /does not exist/)
      }
      assert.strictEqual(seen.opened, 6)
      assert.strictEqual(seen.maxChecking, 2)
      assert.isAtMost(seen.maxOpen, 2)
      yield* ensure(served!)
      assert.strictEqual(fresh(served!), "fresh")
      assert.strictEqual(seen.open, 1)
    }), { timeout: 60_000 })

  it.scopedLive("ten hosts checked one after another with a cap of 4: the 4 last answers are kept, the oldest dropped", () =>
    Effect.gen(function*() {
      const hosts = yield* servedHosts(10, "cap")
      const before = yield* cached
      const { close, ensure, fresh, seen } = yield* checksOn({ maxCachedQueues: 4 }, 1)
      for (const h of hosts) yield* ensure(h)
      assert.deepStrictEqual(hosts.map(fresh), [...hosts.slice(0, 6).map(() => "stale"), ...hosts.slice(6).map(() => "fresh")])
      assert.strictEqual((yield* cached) - before, 4)
      assert.strictEqual(seen.opened, 1, "one check at a time needs one channel")

      // A dropped answer checked again is cached as the newest; the oldest kept one goes.
      yield* ensure(hosts[0]!)
      assert.strictEqual(fresh(hosts[0]!), "fresh")
      assert.strictEqual(fresh(hosts[6]!), "stale")
      assert.strictEqual((yield* cached) - before, 4)

      yield* close
      assert.strictEqual(yield* cached, before, "a closed client caches nothing")
    }), { timeout: 60_000 })

  it.scopedLive("a reply from a host's server counts as a check: its queue is fresh without a check or a channel", () =>
    Effect.gen(function*() {
      const hosts = yield* servedHosts(3, "heard")
      const { check, ensure, fresh, seen } = yield* checksOn({}, 1)
      assert.deepStrictEqual(hosts.map(fresh), ["stale", "stale", "stale"])
      for (const h of hosts) check.heard(Broker.queueName(h))
      assert.deepStrictEqual(hosts.map(fresh), ["fresh", "fresh", "fresh"])
      for (const h of hosts) yield* ensure(h)
      assert.strictEqual(seen.opened, 0, "no check was needed")
      // A server that may be gone is checked again, whatever was heard from it before.
      check.forget(Broker.queueName(hosts[0]!))
      yield* ensure(hosts[0]!)
      assert.strictEqual(seen.opened, 1)
    }), { timeout: 60_000 })

  it.scopedLive("a TTL of zero: no answer is kept, however many hosts are checked", () =>
    Effect.gen(function*() {
      const hosts = yield* servedHosts(5, "ttl")
      const before = yield* cached
      const { ensure } = yield* checksOn({ queueCheckCacheTtl: Duration.zero }, 1)
      for (const h of hosts) yield* ensure(h)
      assert.strictEqual(yield* cached, before)
    }), { timeout: 60_000 })
})
