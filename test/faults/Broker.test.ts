/**
 * The Broker when things break under it: its connection closed from the broker side (as on a broker
 * restart or `rabbitmqctl close_all_connections`), and the DMS server process killed mid-request. Only
 * this test's own connection (by its unique name) and processes are touched.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Broker from "../../src/Broker.js"
import { BrokerError, TimeoutError } from "../../src/DmsError.js"
import {
  closeConnectionNamed,
  connectionsNamed,
  queueInfo,
  RABBIT_URL,
  sweepQueues,
  uniqueConnectionName,
  uniqueHost
} from "../support/rabbit.js"
import { spawnResponder } from "../support/responder.js"
import type { ResponderProcess } from "../support/responder.js"

afterAll(sweepQueues)

/** Waits until the server process has received at least `n` requests. */
const received = (server: ResponderProcess, n: number) =>
  server.waitFor((e) => e.event === "received" && server.events().filter((x) => x.event === "received").length >= n)

const buildBroker = (options: Partial<Broker.AmqpOptions> = {}) =>
  Layer.build(Broker.layerAmqp({ url: RABBIT_URL, ...options })).pipe(Effect.map(Context.get(Broker.Broker)))

describe("Broker faults", () => {
  it.scopedLive("the broker closes our connection mid-request: the pending request fails at once, the layer reconnects", () =>
    Effect.gen(function*() {
      const name = uniqueConnectionName("restart")
      const host = uniqueHost("restart")
      const server = yield* spawnResponder({ url: RABBIT_URL, host })
      const broker = yield* buildBroker({ connectionName: name })
      assert.strictEqual((yield* broker.request(host, { action: "mount", seq: 0 }, { timeout: "30 seconds" })).status, "success")

      for (let round = 1; round <= 2; round++) {
        // A request the server holds (never answers): in flight when the connection goes.
        const pending = yield* Effect.fork(
          broker.request(host, { action: "mount", seq: round, _test: { hold: true } }, { timeout: "60 seconds" })
        )
        yield* received(server, server.events().filter((e) => e.event === "received").length + 1)
        assert.strictEqual(yield* closeConnectionNamed(name), 1)
        const closedAt = Date.now()
        const error = yield* Effect.flip(Fiber.join(pending))
        const failedAfter = Date.now() - closedAt
        assert.instanceOf(error, BrokerError)
        assert.match(error.message, /lost/)
        assert.match(error.message, /outcome is unknown/)
        assert.isUndefined(error.notDelivered, "it was delivered: the outcome is unknown")
        assert.isBelow(failedAfter, 10_000, "at once, not at the 60 s timeout")
        // The same layer works again, on a new connection of the same name.
        const retryAt = Date.now()
        const after = yield* broker.request(host, { action: "mount", seq: 10 + round }, { timeout: "30 seconds" })
        const recoveredMs = Date.now() - retryAt
        assert.strictEqual(after.status, "success")
        assert.strictEqual((yield* connectionsNamed(name)).length, 1)
        yield* Effect.logInfo(
          `round ${round}: pending request failed ${failedAfter} ms after close_connection returned; next request served after ${recoveredMs} ms`
        )
      }
    }), { timeout: 120_000 })

  it.scopedLive("the server process is killed mid-request: that request times out, the next fails fast, a restarted server is used", () =>
    Effect.gen(function*() {
      const host = uniqueHost("killed")
      const broker = yield* buildBroker({ connectionName: uniqueConnectionName("killed") })
      const first = yield* spawnResponder({ url: RABBIT_URL, host })
      yield* broker.request(host, { action: "mount", seq: 0 }, { timeout: "30 seconds" })

      const pending = yield* Effect.fork(
        broker.request(host, { action: "mount", seq: 1, _test: { hold: true } }, { timeout: "3 seconds" })
      )
      yield* received(first, 2)
      yield* first.kill
      // The server may have been half-way through the mount: the outcome is unknown, so a timeout.
      const error = yield* Effect.flip(Fiber.join(pending))
      assert.instanceOf(error, TimeoutError)
      assert.strictEqual(error.phase, "reply")
      assert.strictEqual((yield* queueInfo(Broker.queueName(host)))?.consumerCount, 0)

      // No server any more: fast failure, not another timeout.
      const start = Date.now()
      const noServer = yield* Effect.flip(broker.request(host, { action: "mount", seq: 2 }, { timeout: "60 seconds" }))
      assert.instanceOf(noServer, BrokerError)
      assert.match(noServer.message, /no consumer/)
      assert.isBelow(Date.now() - start, 5_000)

      // The server comes back: served again by the same layer.
      yield* spawnResponder({ url: RABBIT_URL, host })
      const again = yield* broker.request(host, { action: "mount", seq: 3 }, { timeout: "30 seconds" })
      assert.strictEqual(again.status, "success")
      assert.strictEqual((again as Record<string, unknown>).seq, 3)
    }), { timeout: 120_000 })
})
