/**
 * The Broker: one behavioural suite for the memory and AMQP layers, then the AMQP layer's own
 * guarantees against the real RabbitMQ (wire format, expiry, fast failure, returns, closing). Every
 * test uses its own host names, so they are safe in parallel; tests that close connections from the
 * broker side are in test/faults/Broker.test.ts.
 */
import { assertNone, assertSome } from "@effect/vitest/utils"
import { afterAll, assert, describe, expect, it, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as FiberRef from "effect/FiberRef"
import * as Fiber from "effect/Fiber"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as TestContext from "effect/TestContext"
import * as Tracer from "effect/Tracer"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Broker from "../src/Broker.js"
import * as DmsConfig from "../src/DmsConfig.js"
import { BrokerError, TimeoutError } from "../src/DmsError.js"
import * as Protocol from "../src/Protocol.js"
import {
  admin,
  connectionsNamed,
  declareHostQueue,
  RABBIT_URL,
  sweepQueues,
  uniqueConnectionName,
  uniqueHost
} from "./support/rabbit.js"
import { echo, noAnswer, raw, reply, spawnResponder, startResponder } from "./support/responder.js"
import { holdingProxy, silentListener, urlOnPort } from "./support/tcp.js"
import type { Answer, Received } from "./support/responder.js"

afterAll(sweepQueues)

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

const mountBody = (id: string, extra: Record<string, unknown> = {}) => ({
  action: "mount",
  host: "compute-01",
  job: { jobid: 12345 },
  keystone_token: "secret-token-do-not-leak",
  backup_target: {
    id,
    type: "nfs",
    filesystem_export: "192.0.2.10:/backups",
    filesystem_export_mount_path: `/var/lib/trilio/triliovault-mounts/${id}`
  },
  ...extra
})

// ---------------------------------------------------------------------------------------------------
// Log capture (debug lines of the broker)

interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Record<string, unknown>
}

const makeCapture = () => {
  const lines: Array<LogLine> = []
  const waiters: Array<{ predicate: (l: LogLine) => boolean; done: Deferred.Deferred<LogLine> }> = []
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    const line: LogLine = {
      level: logLevel.label,
      message: Array.isArray(message) ? message.map(String).join(" ") : String(message),
      annotations: Object.fromEntries(HashMap.toEntries(annotations))
    }
    lines.push(line)
    for (const w of waiters.filter((w) => w.predicate(line))) {
      waiters.splice(waiters.indexOf(w), 1)
      Deferred.unsafeDone(w.done, Effect.succeed(line))
    }
  })
  /** The first line (logged or to come) matching `predicate`. */
  const waitFor = (predicate: (l: LogLine) => boolean): Effect.Effect<LogLine> =>
    Effect.suspend(() => {
      const seen = lines.find(predicate)
      if (seen !== undefined) return Effect.succeed(seen)
      const done = Deferred.unsafeMake<LogLine>(FiberId.none)
      waiters.push({ predicate, done })
      return Deferred.await(done)
    })
  const layer = Layer.mergeAll(Logger.replace(Logger.defaultLogger, logger), Logger.minimumLogLevel(LogLevel.Debug))
  /** The same for one effect, without building a layer (cheap enough for every request). */
  const locally = <A, E, R>(self: Effect.Effect<A, E, R>) =>
    self.pipe(Effect.locally(FiberRef.currentLoggers, HashSet.make(logger)), Logger.withMinimumLogLevel(LogLevel.Debug))
  return { waitFor, layer, locally }
}

// ---------------------------------------------------------------------------------------------------
// The shared suite: a broker and a host whose server answers with `handle`.

interface Request {
  readonly correlationId: string
  readonly body: any
  readonly headers: Record<string, unknown>
}

interface Served {
  readonly broker: Broker.Service
  readonly host: string
  readonly received: Queue.Queue<Request>
  /** Correlation ids of the answers, once sent. */
  readonly replied: Queue.Queue<string>
}

class Env extends Context.Tag("test/BrokerEnv")<Env, {
  readonly serve: (handle: (req: Request) => Effect.Effect<Answer>) => Effect.Effect<Served, Error, Scope.Scope>
  /** Waits for a line logged by the broker. */
  readonly waitForLog: (predicate: (l: LogLine) => boolean) => Effect.Effect<LogLine>
}>() {}

const memoryEnv = Layer.sync(Env, () => {
  const capture = makeCapture()
  return {
    waitForLog: capture.waitFor,
    serve: (handle) =>
      Effect.gen(function*() {
        const received = yield* Queue.unbounded<Request>()
        const replied = yield* Queue.unbounded<string>()
        const host = uniqueHost("mem")
        const ctx = yield* Layer.build(
          Broker.layerMemory((req) =>
            Effect.gen(function*() {
              const r: Request = { correlationId: req.correlationId, body: req.body, headers: { ...req.headers } }
              yield* Queue.offer(received, r)
              const answer = yield* handle(r)
              if (answer._tag === "none") return yield* Effect.never
              if (answer._tag === "raw") return yield* Effect.die("raw replies are not supported in memory")
              yield* Queue.offer(replied, r.correlationId)
              return answer.body as Protocol.Reply
            })
          )
        )
        const inner = Context.get(ctx, Broker.Broker)
        // The handler's fiber is forked from the request's, so it logs with the request's logger.
        const broker: Broker.Service = { ...inner, request: (...args) => capture.locally(inner.request(...args)) }
        return { broker, host, received, replied }
      })
  }
})

const amqpEnv = Layer.unwrapEffect(Effect.sync(() => {
  const capture = makeCapture()
  const brokerLayer = Broker.layerAmqp({ url: RABBIT_URL, connectionName: uniqueConnectionName("suite") }).pipe(
    Layer.provide(capture.layer)
  )
  return Layer.effect(
    Env,
    Effect.map(Broker.Broker, (broker) => ({
      waitForLog: capture.waitFor,
      serve: (handle: (req: Request) => Effect.Effect<Answer>) =>
        Effect.gen(function*() {
          const received = yield* Queue.unbounded<Request>()
          const host = uniqueHost("amqp")
          const responder = yield* startResponder({
            host,
            handle: (req: Received) => {
              const r: Request = {
                correlationId: req.correlationId,
                body: req.body,
                headers: (req.properties.headers ?? {}) as Record<string, unknown>
              }
              return Effect.zipRight(Queue.offer(received, r), handle(r))
            }
          })
          return { broker, host, received, replied: responder.replied }
        })
    }))
  ).pipe(Layer.provide(brokerLayer))
}))

const echoReply = (req: Request): Answer =>
  reply({ ...Protocol.success(`ok ${req.correlationId}`), seq: req.body?.seq ?? null, correlation: req.correlationId })

for (const [name, envLayer] of [["memory", memoryEnv], ["amqp", amqpEnv]] as const) {
  describe(`Broker (${name})`, () => {
    layer(envLayer, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
      it.scoped("round trip: the server gets the JSON body with a correlation id and a deadline; the reply is decoded", () =>
        Effect.gen(function*() {
          const env = yield* Env
          const { broker, host, received } = yield* env.serve((req) => Effect.succeed(echoReply(req)))
          const body = mountBody("target-rt", { context: { request_id: "req-1" }, extra_field: [1, { a: null }] })
          const before = Date.now()
          const result = yield* broker.request(host, body, { timeout: "10 seconds" })
          const after = Date.now()
          const got = yield* Queue.take(received)
          assert.deepStrictEqual(got.body, body)
          assert.match(got.correlationId, UUID)
          const deadline = Option.getOrThrow(Broker.deadlineOf(got.headers))
          assert.isAtLeast(deadline, before + 10_000)
          assert.isAtMost(deadline, after + 10_000)
          assert.strictEqual(result.status, "success")
          assert.strictEqual(result.success_msg, `ok ${got.correlationId}`)
          // extra fields of the reply are kept
          assert.strictEqual((result as Record<string, unknown>).correlation, got.correlationId)
        }))

      it.scoped("1,000 concurrent requests: every reply reaches its own caller", () =>
        Effect.gen(function*() {
          const env = yield* Env
          const { broker, host, received } = yield* env.serve((req) => Effect.succeed(echoReply(req)))
          const results = yield* Effect.forEach(
            Array.from({ length: 1000 }, (_, i) => i),
            (seq) => Effect.map(broker.request(host, { action: "mount", seq }, { timeout: "30 seconds" }), (r) => [seq, r] as const),
            { concurrency: "unbounded" }
          )
          for (const [seq, r] of results) assert.strictEqual((r as Record<string, unknown>).seq, seq)
          const ids = new Set(results.map(([, r]) => (r as Record<string, unknown>).correlation))
          assert.strictEqual(ids.size, 1000)
          assert.strictEqual(yield* Queue.size(received), 1000)
        }))

      it.scoped("a server that never answers: TimeoutError { phase: 'reply' } at the timeout", () =>
        Effect.gen(function*() {
          const env = yield* Env
          const { broker, host, received } = yield* env.serve(() => Effect.succeed(noAnswer))
          const start = Date.now()
          const error = yield* Effect.flip(broker.request(host, mountBody("target-to"), { timeout: "1 second" }))
          const elapsed = Date.now() - start
          assert.instanceOf(error, TimeoutError)
          assert.deepInclude(error, { phase: "reply", operation: "mount", host, backupTargetId: "target-to", timeoutMs: 1000 })
          assert.strictEqual(yield* Queue.size(received), 1, "the request was delivered")
          assert.isAtLeast(elapsed, 990)
          assert.isBelow(elapsed, 1000 + 4000) // loose: 2 shared cores
        }))

      it.scoped("a late reply is dropped (logged at debug) and never reaches the next request", () =>
        Effect.gen(function*() {
          const env = yield* Env
          const releaseLate = yield* Deferred.make<void>()
          const releaseSecond = yield* Deferred.make<void>()
          const { broker, host, received, replied } = yield* env.serve((req) =>
            req.body.seq === 1
              ? Deferred.await(releaseLate).pipe(Effect.as(reply({ ...Protocol.success("late"), seq: 1 })))
              : Deferred.await(releaseSecond).pipe(Effect.as(reply({ ...Protocol.success("fresh"), seq: 2 })))
          )
          const first = yield* Effect.flip(broker.request(host, { action: "mount", seq: 1 }, { timeout: "500 millis" }))
          assert.instanceOf(first, TimeoutError)
          const lateId = (yield* Queue.take(received)).correlationId
          const second = yield* Effect.fork(broker.request(host, { action: "mount", seq: 2 }, { timeout: "20 seconds" }))
          yield* Queue.take(received) // the second request is pending at the server
          // The late answer goes out first, while the second request waits for its own.
          yield* Deferred.succeed(releaseLate, undefined)
          assert.strictEqual(yield* Queue.take(replied), lateId)
          yield* Deferred.succeed(releaseSecond, undefined)
          const result = yield* Fiber.join(second)
          assert.strictEqual(result.success_msg, "fresh")
          assert.strictEqual((result as Record<string, unknown>).seq, 2)
          // The late reply reached the client and was dropped with a debug line naming its correlation id.
          const dropped = yield* env.waitForLog((l) => l.annotations.correlationId === lateId).pipe(
            Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("no log line for the late reply") })
          )
          assert.strictEqual(dropped.level, "DEBUG")
          assert.match(dropped.message, /not pending/)
        }))

      it.scoped("a reply that is not a DMS reply fails that request only", () =>
        Effect.gen(function*() {
          const env = yield* Env
          const all = yield* Deferred.make<void>()
          const count = yield* Ref.make(0)
          const { broker, host } = yield* env.serve((req) =>
            Effect.gen(function*() {
              // Hold every answer until both requests are pending at once.
              if ((yield* Ref.updateAndGet(count, (n) => n + 1)) === 2) yield* Deferred.succeed(all, undefined)
              yield* Deferred.await(all)
              return req.body.seq === 1 ? reply({ foo: "bar" }) : echoReply(req)
            })
          )
          const [bad, good] = yield* Effect.all([
            Effect.flip(broker.request(host, { action: "mount", seq: 1 }, { timeout: "20 seconds" })),
            broker.request(host, { action: "mount", seq: 2 }, { timeout: "20 seconds" })
          ], { concurrency: "unbounded" })
          assert.instanceOf(bad, BrokerError)
          assert.match(bad.message, /not a DMS reply/)
          assert.strictEqual((good as Record<string, unknown>).seq, 2)
        }))
    })
  })
}

// ---------------------------------------------------------------------------------------------------

describe("deadline helpers", () => {
  it("deadlineOf reads a number, a bigint or a decimal string; anything else is none", () => {
    assertSome(Broker.deadlineOf({ [Broker.DEADLINE_HEADER]: 1_700_000_000_123 }), 1_700_000_000_123)
    assertSome(Broker.deadlineOf({ [Broker.DEADLINE_HEADER]: 1_700_000_000_123n }), 1_700_000_000_123)
    assertSome(Broker.deadlineOf({ [Broker.DEADLINE_HEADER]: "1700000000123" }), 1_700_000_000_123)
    assertNone(Broker.deadlineOf({ [Broker.DEADLINE_HEADER]: "soon" }))
    assertNone(Broker.deadlineOf({}))
    assertNone(Broker.deadlineOf(undefined))
    assertNone(Broker.deadlineOf(null))
  })

  it("isExpired: at or past the deadline; never without one (the Python client sends none)", () => {
    const headers = { [Broker.DEADLINE_HEADER]: 1000 }
    assert.isFalse(Broker.isExpired(headers, 999))
    assert.isTrue(Broker.isExpired(headers, 1000))
    assert.isTrue(Broker.isExpired(headers, 5000))
    assert.isFalse(Broker.isExpired({}, Number.MAX_SAFE_INTEGER))
    assert.isFalse(Broker.isExpired(undefined, Number.MAX_SAFE_INTEGER))
  })

  it("queueName is dms.<host>", () => {
    assert.strictEqual(Broker.queueName("compute-01"), "dms.compute-01")
  })
})

// Note: @effect/vitest 0.30's layer() rebinds the global it.effect / it.scoped to its own runtime, so
// the tests below provide the TestContext (TestClock) themselves.
const withTestClock = <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.provide(self, TestContext.TestContext)

describe("layerMemory", () => {
  it.scopedLive("timeouts run on Effect's Clock (TestClock): TimeoutError when the clock passes the deadline", () =>
    withTestClock(Effect.gen(function*() {
      const started = yield* Deferred.make<Broker.MemoryRequest>()
      const ctx = yield* Layer.build(Broker.layerMemory((req) => Effect.zipRight(Deferred.succeed(started, req), Effect.never)))
      const broker = Context.get(ctx, Broker.Broker)
      const fiber = yield* Effect.fork(broker.request("compute-01", mountBody("t-clock"), { timeout: "5 minutes" }))
      const req = yield* Deferred.await(started)
      assert.strictEqual(req.deadline, 300_000) // TestClock starts at 0
      assert.strictEqual(req.headers[Broker.DEADLINE_HEADER], 300_000)
      yield* TestClock.adjust("299 seconds")
      assert.isTrue(Option.isNone(yield* Fiber.poll(fiber)))
      yield* TestClock.adjust("1 second")
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      const error = yield* Effect.flip(exit)
      assert.instanceOf(error, TimeoutError)
      assert.deepInclude(error, { phase: "reply", operation: "mount", timeoutMs: 300_000 })
    })))

  it.scopedLive("a deadline already past fails at once, without reaching the server", () =>
    withTestClock(Effect.gen(function*() {
      const calls = yield* Ref.make(0)
      const ctx = yield* Layer.build(
        Broker.layerMemory(() => Effect.as(Ref.update(calls, (n) => n + 1), Protocol.success("no")))
      )
      const broker = Context.get(ctx, Broker.Broker)
      yield* TestClock.adjust("10 seconds")
      const error = yield* Effect.flip(broker.request("compute-01", { action: "unmount" }, { timeout: "1 minute", deadline: 5_000 }))
      assert.instanceOf(error, TimeoutError)
      assert.deepInclude(error, { phase: "publish", operation: "unmount", timeoutMs: 60_000 })
      assert.strictEqual(yield* Ref.get(calls), 0)
      // and a deadline in the future overrides the timeout
      const result = yield* broker.request("compute-01", { action: "unmount" }, { timeout: "1 millis", deadline: 60_000 })
      assert.strictEqual(result.status, "success")
    })))

  it.scopedLive("a BrokerError from the handler is the request's error; an invalid host never reaches it", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(
        Broker.layerMemory((req) => Effect.fail(new BrokerError({ host: req.host, reason: "no DMS server" })))
      )
      const broker = Context.get(ctx, Broker.Broker)
      const e1 = yield* Effect.flip(broker.request("compute-01", {}, { timeout: "1 second" }))
      assert.instanceOf(e1, BrokerError)
      assert.deepInclude(e1, { reason: "no DMS server" })
      const e2 = yield* Effect.flip(broker.request("bad host", {}, { timeout: "1 second" }))
      assert.instanceOf(e2, BrokerError)
      assert.match(e2.message, /invalid host/)
    }))

  it.scopedLive("every request is a span with host, action, target id and correlation id, never the token", () =>
    Effect.gen(function*() {
      const spans: Array<Tracer.Span> = []
      const native = yield* Effect.tracer
      const tracer = Tracer.make({
        span: (...args) => {
          const span = native.span(...args)
          spans.push(span)
          return span
        },
        context: (f, fiber) => native.context(f, fiber)
      })
      const seen = yield* Deferred.make<string>()
      const ctx = yield* Layer.build(
        Broker.layerMemory((req) => Effect.as(Deferred.succeed(seen, req.correlationId), Protocol.success("ok")))
      )
      const broker = Context.get(ctx, Broker.Broker)
      yield* broker.request("compute-01", mountBody("t-span", { context: { request_id: "req-42" } }), { timeout: "1 minute" }).pipe(
        Effect.withTracer(tracer)
      )
      const span = spans.find((s) => s.name === "Broker.request")
      assert.isDefined(span)
      const attributes = Object.fromEntries(span!.attributes)
      assert.deepInclude(attributes, {
        host: "compute-01",
        queue: "dms.compute-01",
        action: "mount",
        backupTargetId: "t-span",
        requestId: "req-42",
        correlationId: yield* Deferred.await(seen)
      })
      assert.notInclude(JSON.stringify(attributes), "secret-token-do-not-leak")
    }))
})

// ---------------------------------------------------------------------------------------------------
// layerAmqp only

// Recorded from the existing Python DMS (copied from shared/fixtures).
const fixturesDir = path.resolve(import.meta.dirname, "fixtures/python")
const readFixture = (name: string): any => JSON.parse(fs.readFileSync(path.join(fixturesDir, name), "utf8"))
const serverFixtures = fs.readdirSync(fixturesDir).filter((f) => f.startsWith("python-server-reply-") && f.endsWith(".json"))
const clientFixtures = fs.readdirSync(fixturesDir).filter((f) => f.startsWith("python-client-request-") && f.endsWith(".json"))

/** A broker of the test's own, closed with the test's scope. */
const buildBroker = (options: Partial<Broker.AmqpOptions> = {}) =>
  Layer.build(Broker.layerAmqp({ url: RABBIT_URL, ...options })).pipe(Effect.map(Context.get(Broker.Broker)))

/** Property names as they appear on the wire (the fixtures' snake_case). */
const wireKeys = (properties: Record<string, unknown>) =>
  Object.entries(properties)
    .filter(([, v]) => v !== undefined)
    .map(([k]) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`))
    .sort()

describe("layerAmqp (RabbitMQ)", () => {
  layer(Broker.layerAmqp({ url: RABBIT_URL, connectionName: uniqueConnectionName("amqp") }), {
    excludeTestServices: true,
    timeout: "120 seconds"
  })((it) => {
    it.scoped("wire: requests and replies match the Python server's recorded samples", () =>
      Effect.gen(function*() {
        const broker = yield* Broker.Broker
        assert.isAbove(serverFixtures.length, 0)
        for (const file of serverFixtures) {
          const fixture = readFixture(file)
          // The recorded reply: body bytes and the only properties the Python server sets.
          const answerOf = (req: Received) =>
            Effect.succeed(raw(JSON.stringify(fixture.reply.body), { contentType: "application/json", correlationId: req.correlationId }))
          const host = uniqueHost("wire")
          const responder = yield* startResponder({ host, handle: answerOf })
          const requestBody = typeof fixture.request.body === "string" ? { action: "mount", note: fixture.request.body } : fixture.request.body
          const before = Date.now()
          const result = yield* broker.request(host, requestBody, { timeout: "30 seconds" })
          const after = Date.now()
          assert.deepStrictEqual(result, fixture.reply.body, `${file}: the reply as the Python server sent it`)
          const got = yield* Queue.take(responder.received)
          assert.deepStrictEqual(JSON.parse(got.raw), requestBody, `${file}: the body arrives as sent`)
          assert.strictEqual(got.exchange, "", "default exchange")
          assert.strictEqual(got.routingKey, `dms.${host}`)
          const p = got.properties
          assert.strictEqual(p.contentType, fixture.request.properties.content_type)
          assert.match(String(p.correlationId), UUID)
          assert.match(String(p.replyTo), /^amq\.rabbitmq\.reply-to\./)
          assert.strictEqual(p.deliveryMode, 1, "transient (DESIGN.md; the Python client sends 2)")
          const expiration = Number(p.expiration)
          assert.isTrue(Number.isInteger(expiration) && expiration > 0 && expiration <= 30_000, `expiration ${p.expiration}`)
          const deadline = p.headers?.[Broker.DEADLINE_HEADER] as number
          assert.isTrue(deadline >= before + 30_000 && deadline <= after + 30_000, `deadline ${deadline}`)
          // Every property the Python client sets is set, plus expiration and headers.
          const expected = [...Object.keys(fixture.request.properties), "expiration", "headers"].sort()
          assert.deepStrictEqual(wireKeys(p as unknown as Record<string, unknown>), expected)
        }
        // The Python client's own request shape (top-level jobid, no job object) goes through unchanged.
        for (const file of clientFixtures) {
          const fixture = readFixture(file)
          const host = uniqueHost("pyclient")
          const responder = yield* startResponder({ host })
          const result = yield* broker.request(host, fixture.body, { timeout: "30 seconds" })
          assert.strictEqual(result.status, "success")
          const got = yield* Queue.take(responder.received)
          assert.deepStrictEqual(JSON.parse(got.raw), fixture.body)
          assert.strictEqual(got.routingKey, Broker.queueName(host))
          assert.strictEqual(fixture.routing_key, Broker.queueName(fixture.body.host))
        }
      }))

    it.scoped("a reply that is not JSON fails that request only", () =>
      Effect.gen(function*() {
        const broker = yield* Broker.Broker
        const both = yield* Deferred.make<void>()
        const count = yield* Ref.make(0)
        const host = uniqueHost("notjson")
        yield* startResponder({
          host,
          handle: (req) =>
            Effect.gen(function*() {
              if ((yield* Ref.updateAndGet(count, (n) => n + 1)) === 2) yield* Deferred.succeed(both, undefined)
              yield* Deferred.await(both)
              return req.body.seq === 1 ? raw("{not json") : echo(req)
            })
        })
        const [bad, good] = yield* Effect.all([
          Effect.flip(broker.request(host, { action: "mount", seq: 1 }, { timeout: "20 seconds" })),
          broker.request(host, { action: "mount", seq: 2 }, { timeout: "20 seconds" })
        ], { concurrency: "unbounded" })
        assert.instanceOf(bad, BrokerError)
        assert.match(bad.message, /not valid JSON/)
        assert.strictEqual((good as Record<string, unknown>).seq, 2)
      }))

    it.scoped("no server: a missing queue and a queue without consumer fail fast; requests in flight are unaffected", () =>
      Effect.gen(function*() {
        const broker = yield* Broker.Broker
        const gate = yield* Deferred.make<void>()
        const live = uniqueHost("inflight")
        const responder = yield* startResponder({ host: live, handle: (req) => Deferred.await(gate).pipe(Effect.as(echo(req))) })
        const inFlight = yield* Effect.fork(broker.request(live, { action: "mount", seq: 7 }, { timeout: "60 seconds" }))
        yield* Queue.take(responder.received) // published and delivered: now in flight

        const missing = uniqueHost("missing")
        let start = Date.now()
        const e1 = yield* Effect.flip(broker.request(missing, mountBody("t-ff"), { timeout: "60 seconds" }))
        const missingMs = Date.now() - start
        assert.instanceOf(e1, BrokerError)
        assert.deepInclude(e1, { host: missing, queue: `dms.${missing}` })
        assert.match(e1.message, /does not exist/)
        assert.isTrue(e1.notDelivered, "nothing reached a server")
        assert.isBelow(missingMs, 5_000)

        const idle = uniqueHost("idle")
        yield* declareHostQueue(idle)
        start = Date.now()
        const e2 = yield* Effect.flip(broker.request(idle, mountBody("t-ff"), { timeout: "60 seconds" }))
        const idleMs = Date.now() - start
        assert.instanceOf(e2, BrokerError)
        assert.match(e2.message, /has no consumer/)
        assert.isTrue(e2.notDelivered)
        assert.isBelow(idleMs, 5_000)

        assert.isTrue(Option.isNone(yield* Fiber.poll(inFlight)), "still waiting for its reply")
        yield* Deferred.succeed(gate, undefined)
        const result = yield* Fiber.join(inFlight)
        assert.strictEqual((result as Record<string, unknown>).seq, 7)
        // and the layer keeps working
        const again = yield* broker.request(live, { action: "mount", seq: 8 }, { timeout: "30 seconds" })
        assert.strictEqual((again as Record<string, unknown>).seq, 8)
        yield* Effect.logInfo(`fast failure: missing queue ${missingMs} ms, no consumer ${idleMs} ms`)
      }))

    it.scoped("an invalid host name is refused before any I/O", () =>
      Effect.gen(function*() {
        const broker = yield* Broker.Broker
        const error = yield* Effect.flip(broker.request("", { action: "mount" }, { timeout: "5 seconds" }))
        assert.instanceOf(error, BrokerError)
        assert.match(error.message, /invalid host/)
      }))
  })

  it.scopedLive("a deadline already past: TimeoutError { phase: 'publish' } at once, nothing is sent", () =>
    Effect.gen(function*() {
      const broker = yield* buildBroker({ connectionName: uniqueConnectionName("past") })
      const host = uniqueHost("past")
      const responder = yield* startResponder({ host })
      yield* broker.request(host, { action: "mount", seq: 1 }, { timeout: "30 seconds" }) // connected and checked
      yield* Queue.take(responder.received)
      const error = yield* Effect.flip(
        broker.request(host, { action: "unmount", seq: 2 }, { timeout: "1 minute", deadline: Date.now() - 1 })
      )
      assert.instanceOf(error, TimeoutError)
      assert.deepInclude(error, { phase: "publish", operation: "unmount", host, timeoutMs: 60_000 })
      const next = yield* broker.request(host, { action: "mount", seq: 3 }, { timeout: "30 seconds" })
      assert.strictEqual((next as Record<string, unknown>).seq, 3)
      assert.strictEqual((yield* Queue.take(responder.received)).body.seq, 3, "the late request never reached the server")
    }), { timeout: 60_000 })

  it.scopedLive("a deadline that passes while connecting: TimeoutError { phase: 'publish' }, safe to retry", () =>
    Effect.gen(function*() {
      const silent = yield* silentListener
      const broker = yield* buildBroker({
        url: urlOnPort(RABBIT_URL, silent.port),
        connectionName: uniqueConnectionName("connecting"),
        connectTimeout: "60 seconds"
      })
      // Closing the layer waits for its connection attempt: end that first.
      yield* Effect.addFinalizer(() => silent.dropAll)
      yield* Deferred.await(silent.accepted) // the client waits for the broker's first frame, which never comes
      const error = yield* Effect.flip(broker.request(uniqueHost("connecting"), mountBody("t-connecting"), { timeout: "300 millis" }))
      assert.instanceOf(error, TimeoutError)
      assert.deepInclude(error, { phase: "publish", operation: "mount", backupTargetId: "t-connecting", timeoutMs: 300 })
      assert.match(error.message, /nothing was sent.*safe to retry/)
    }), { timeout: 60_000 })

  it.scopedLive("a deadline that passes while the host's queue is checked: TimeoutError { phase: 'publish' }, nothing reaches the server", () =>
    Effect.gen(function*() {
      const proxy = yield* holdingProxy(RABBIT_URL)
      const broker = yield* buildBroker({ url: urlOnPort(RABBIT_URL, proxy.port), connectionName: uniqueConnectionName("checking") })
      // Closing the layer waits for what it sent: let it through first, even when the test fails.
      yield* Effect.addFinalizer(() => proxy.release)
      const other = uniqueHost("connected")
      yield* startResponder({ host: other })
      yield* broker.request(other, { action: "mount" }, { timeout: "30 seconds" }) // connected, through the proxy
      const host = uniqueHost("checking")
      const responder = yield* startResponder({ host })
      // The first request to `host` checks its queue first; the check's channel open waits at the proxy.
      yield* proxy.hold
      const error = yield* Effect.flip(
        broker.request(host, { ...mountBody("t-checking"), seq: 1 }, { timeout: "300 millis" })
      )
      assert.instanceOf(error, TimeoutError)
      assert.deepInclude(error, { phase: "publish", operation: "mount", host, backupTargetId: "t-checking", timeoutMs: 300 })
      yield* proxy.release
      const next = yield* broker.request(host, { action: "mount", seq: 2 }, { timeout: "30 seconds" })
      assert.strictEqual((next as Record<string, unknown>).seq, 2)
      assert.strictEqual((yield* Queue.take(responder.received)).body.seq, 2, "the timed-out request never reached the server")
      assert.strictEqual(yield* Queue.size(responder.received), 0)
    }), { timeout: 60_000 })

  it.scopedLive("what the check missed: a queue deleted after it was checked → the broker returns the request → BrokerError", () =>
    Effect.gen(function*() {
      const broker = yield* buildBroker({ queueCheckCacheTtl: "10 minutes" })
      const host = uniqueHost("returned")
      const responder = yield* startResponder({ host })
      yield* broker.request(host, { action: "mount" }, { timeout: "30 seconds" }) // checked and cached
      yield* responder.detach
      const { channel } = yield* admin
      yield* Effect.promise(() => channel.deleteQueue(Broker.queueName(host)))
      const start = Date.now()
      const error = yield* Effect.flip(broker.request(host, { action: "mount" }, { timeout: "60 seconds" }))
      assert.instanceOf(error, BrokerError)
      assert.match(error.message, /could not route/)
      assert.isTrue(error.notDelivered)
      assert.isBelow(Date.now() - start, 5_000)
      // not cached any more: the next request checks, and finds no queue
      const next = yield* Effect.flip(broker.request(host, { action: "mount" }, { timeout: "60 seconds" }))
      assert.match(next.message, /does not exist/)
    }), { timeout: 60_000 })

  it.scopedLive("expiry: a request nobody took by its deadline is never delivered to a server that starts later", () =>
    Effect.gen(function*() {
      // A long cache: the request is published without a new check after the first server stops.
      const broker = yield* buildBroker({ queueCheckCacheTtl: "10 minutes" })
      const host = uniqueHost("expiry")
      const first = yield* startResponder({ host })
      yield* broker.request(host, { action: "mount", seq: 0 }, { timeout: "30 seconds" })
      yield* first.detach // the server stops; its durable queue stays

      const published = Date.now()
      const error = yield* Effect.flip(broker.request(host, { action: "mount", seq: 1 }, { timeout: "1 second" }))
      assert.instanceOf(error, TimeoutError)
      // The server comes back 3 s after the request was published (the gap is what is tested).
      yield* Effect.sleep(Duration.millis(Math.max(0, published + 3_000 - Date.now())))
      const server = yield* spawnResponder({ url: RABBIT_URL, host })
      // A fresh request: the queue is FIFO, so the stale one, had it survived, would come first.
      const fresh = (yield* broker.request(host, { action: "mount", seq: 2 }, { timeout: "30 seconds" })) as Record<string, unknown>
      assert.strictEqual(fresh.seq, 2)
      // The reply comes over AMQP, the server's events over its stdout: they race. The server prints
      // "replied" before it sends the reply, and after every earlier "received"; once that line is read,
      // every request it took before the fresh one has been read too.
      yield* server.waitFor((e) => e.event === "replied" && e.correlationId === fresh.correlation)
      const received = server.events().filter((e) => e.event === "received")
      assert.deepStrictEqual(received.map((e) => e.correlationId), [fresh.correlation])
    }), { timeout: 60_000 })

  it.scopedLive("expiry: a server checking x-dms-deadline refuses a request whose turn comes too late", () =>
    Effect.gen(function*() {
      const broker = yield* buildBroker()
      const host = uniqueHost("refuse")
      const server = yield* spawnResponder({ url: RABBIT_URL, host, checkDeadline: true })
      // On time: served.
      const ok = yield* broker.request(host, { action: "mount", _test: { delayMs: 0 } }, { timeout: "30 seconds" })
      assert.strictEqual(ok.status, "success")
      // Its turn comes 1.5 s after receipt, past its 1 s deadline: the client has given up, the server refuses.
      const error = yield* Effect.flip(broker.request(host, { action: "mount", _test: { delayMs: 1500 } }, { timeout: "1 second" }))
      assert.instanceOf(error, TimeoutError)
      const received = server.events().filter((e) => e.event === "received")
      assert.strictEqual(received.length, 2)
      const late = received[1]!
      const outcome = yield* server.waitFor((e) => e.correlationId === late.correlationId && (e.event === "refused" || e.event === "replied"))
      assert.strictEqual(outcome.event, "refused")
      assert.isAtLeast(outcome.at, late.deadline!)
    }), { timeout: 60_000 })

  it.scopedLive("closing the layer closes its connection; nothing is left running", () =>
    Effect.gen(function*() {
      const name = uniqueConnectionName("close")
      const host = uniqueHost("close")
      yield* startResponder({ host })
      const scope = yield* Scope.make()
      const broker = yield* buildBroker({ connectionName: name }).pipe(Scope.extend(scope))
      yield* broker.request(host, { action: "mount" }, { timeout: "30 seconds" })
      assert.strictEqual((yield* connectionsNamed(name)).length, 1)
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(yield* connectionsNamed(name), [])
      const error = yield* Effect.flip(broker.request(host, { action: "mount" }, { timeout: "5 seconds" }))
      assert.instanceOf(error, BrokerError)
      assert.match(error.message, /closed/)
    }), { timeout: 60_000 })

  it.scopedLive("an unreachable broker: the layer builds, requests fail fast with BrokerError, the password is never shown", () =>
    Effect.gen(function*() {
      const capture = makeCapture()
      const broker = yield* Layer.build(
        Broker.layerAmqp({ url: "amqp://guest:s3cret-pw@127.0.0.1:1", connectionName: uniqueConnectionName("down") }).pipe(
          Layer.provide(capture.layer)
        )
      ).pipe(Effect.map(Context.get(Broker.Broker)))
      const start = Date.now()
      const error = yield* Effect.flip(broker.request("compute-01", mountBody("t-down"), { timeout: "60 seconds" }))
      assert.instanceOf(error, BrokerError)
      assert.isBelow(Date.now() - start, 5_000)
      assert.include(error.message, "amqp://guest:***@127.0.0.1:1")
      for (const text of [error.message, String(error), JSON.stringify(error)]) assert.notInclude(text, "s3cret-pw")
      const warning = yield* capture.waitFor((l) => l.level === "WARN").pipe(Effect.timeout("10 seconds"))
      assert.notInclude(JSON.stringify(warning), "s3cret-pw")
      assert.include(JSON.stringify(warning), "guest:***@")
      const invalid = yield* Effect.flip(buildBroker({ url: "http://user:s3cret-pw@example.com" }))
      assert.instanceOf(invalid, BrokerError)
      assert.notInclude(invalid.message, "s3cret-pw")
      expect(invalid.message).toMatch(/invalid broker URL/)
    }), { timeout: 60_000 })

  it.scopedLive("layerAmqpConfig takes the URL from DmsConfig (and refuses an in-process memory: URL)", () =>
    Effect.gen(function*() {
      const host = uniqueHost("config")
      yield* startResponder({ host })
      const config = DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: RABBIT_URL })
      const broker = yield* Layer.build(
        Broker.layerAmqpConfig({ connectionName: uniqueConnectionName("config") }).pipe(Layer.provide(config))
      ).pipe(Effect.map(Context.get(Broker.Broker)))
      assert.strictEqual((yield* broker.request(host, { action: "mount" }, { timeout: "30 seconds" })).status, "success")
      const refused = yield* Effect.flip(
        Layer.build(Broker.layerAmqpConfig().pipe(Layer.provide(DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:" }))))
      )
      assert.instanceOf(refused, BrokerError)
      assert.match(refused.message, /layerMemory/)
    }), { timeout: 60_000 })
})
