/**
 * Over 10,000 generated malformed requests (test/support/badRequests.ts) through the client: the Effect
 * API and the Promise facade on the memory layers, and the Effect API and the Promise facade on the real
 * MariaDB + RabbitMQ layers. Every one fails with a ValidationError (RequestValidationException) that
 * names the broken field, writes nothing to the ledger, and publishes nothing: a real consumer on the
 * host's queue (or the model server behind the memory broker) sees only the valid requests sent around
 * them, in order.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import fc from "fast-check"
import * as Broker from "../src/Broker.js"
import * as Dms from "../src/Dms.js"
import * as DmsConfig from "../src/DmsConfig.js"
import { type DmsError, ValidationError } from "../src/DmsError.js"
import * as Ledger from "../src/Ledger.js"
import * as Mount from "../src/Mount.js"
import { DMSClient, RequestValidationException } from "../src/promise.js"
import { type Bad, badRequest, namesField, validRequest } from "./support/badRequests.js"
import * as FakeServer from "./support/fakeServer.js"
import { TestDatabase, TestDatabaseLive } from "./support/mysql.js"
import { RABBIT_URL, uniqueHost } from "./support/rabbit.js"
import { startResponder } from "./support/responder.js"

const PATH = "/var/lib/trilio/triliovault-mounts/bad-input"

/** Bad inputs tried, by route and kind, printed at the end for the report. */
const tally = new Map<string, Map<string, number>>()
const count = (route: string, bad: Bad) => {
  const byKind = tally.get(route) ?? new Map<string, number>()
  byKind.set(bad.kind, (byKind.get(bad.kind) ?? 0) + 1)
  tally.set(route, byKind)
}
afterAll(() => {
  const lines: Array<string> = []
  let total = 0
  for (const [route, byKind] of tally) {
    const n = [...byKind.values()].reduce((a, b) => a + b, 0)
    total += n
    lines.push(`${route}: ${n}`, ...[...byKind].sort((a, b) => b[1] - a[1]).map(([k, v]) => `    ${k}: ${v}`))
  }
  console.log(`bad inputs tried by the client: ${total}\n${lines.join("\n")}`)
})

type Operation = "mount" | "unmount"
const operation = fc.constantFrom<Operation>("mount", "unmount")

/** The bad request applies to the operation (an S3 unmount needs no token, so it is valid there). */
const applies = (bad: Bad, op: Operation) => !(bad.mountOnly === true && op === "unmount")

const describeBad = (bad: Bad) => {
  const text = JSON.stringify(bad.request) ?? String(bad.request)
  return `${bad.kind} (${bad.field}): ${text.length > 300 ? `${text.slice(0, 300)}…` : text}`
}

/** Asserts an Effect exit is a ValidationError naming the broken field. */
const assertRefused = (bad: Bad, exit: Exit.Exit<unknown, unknown>) => {
  if (Exit.isSuccess(exit)) throw new Error(`accepted: ${describeBad(bad)}`)
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure) || !(failure.value instanceof ValidationError)) {
    throw new Error(`not a ValidationError but ${Cause.pretty(exit.cause)}: ${describeBad(bad)}`)
  }
  const error = failure.value
  assert.isTrue(namesField(bad, error.issues.map((i) => i.path)), `${error.message} does not name ${bad.field}: ${describeBad(bad)}`)
  assert.isTrue(error.issues.every((i) => i.message.length > 0 && i.message.length < 2_000), `unclear or unbounded message: ${error.message.slice(0, 500)}`)
}

/** Asserts a Promise facade call threw a RequestValidationException naming the broken field. */
const assertThrewValidation = (bad: Bad, thrown: unknown) => {
  if (!(thrown instanceof RequestValidationException)) throw new Error(`threw ${String(thrown)}: ${describeBad(bad)}`)
  const error = thrown.error as ValidationError
  assert.isTrue(namesField(bad, error.issues.map((i) => i.path)), `${thrown.message} does not name ${bad.field}: ${describeBad(bad)}`)
}

const memoryLayer = (host: string) => {
  const server = FakeServer.make()
  const state = Ledger.makeMemoryState()
  const layer = Layer.mergeAll(
    DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 10, lockTimeout: 30 }),
    Ledger.layerMemory({ state }),
    Broker.layerMemory(server.handler)
  )
  const snapshot = () => JSON.stringify({ rows: state.rows, locks: [...state.locks], nextId: state.nextId })
  return { server, layer, snapshot, valid: validRequest("nfs", host, PATH) }
}

describe("Bad input (client, memory layers)", () => {
  it.scopedLive("Effect API: 5,000 malformed requests through mount and unmount are ValidationErrors; nothing written or sent", () =>
    Effect.gen(function*() {
      const host = "compute-01"
      const { layer, server, snapshot, valid } = memoryLayer(host)
      const context = yield* Layer.build(layer)
      // The counters see a real request: one valid mount reaches the server and writes a row.
      yield* Mount.mount(valid).pipe(Effect.provide(context))
      const before = snapshot()
      assert.strictEqual(server.received.length, 1)
      fc.assert(
        fc.property(badRequest(host, PATH), operation, (bad, op) => {
          fc.pre(applies(bad, op))
          count(`client memory, Effect ${op}`, bad)
          const run: Effect.Effect<unknown, DmsError, Mount.Services> = op === "mount" ? Mount.mount(bad.request) : Mount.unmount(bad.request)
          assertRefused(bad, Effect.runSyncExit(Effect.provide(run, context)))
        }),
        { numRuns: 5_000 }
      )
      assert.strictEqual(snapshot(), before, "the memory ledger is unchanged")
      // A valid unmount after them is the server's second request: nothing was sent in between.
      yield* Mount.unmount(valid).pipe(Effect.provide(context))
      assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "unmount"])
    }))

  it.scopedLive("Promise facade: 3,000 malformed requests throw RequestValidationException; nothing written or sent", () =>
    Effect.gen(function*() {
      const host = "compute-02"
      const { layer, server, snapshot, valid } = memoryLayer(host)
      const client = new DMSClient({ layer })
      yield* Effect.addFinalizer(() => Effect.promise(() => client.close()))
      assert.strictEqual((yield* Effect.promise(() => client.mount(valid))).status, "success")
      const before = snapshot()
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(badRequest(host, PATH), operation, async (bad, op) => {
            fc.pre(applies(bad, op))
            count(`client memory, Promise ${op}`, bad)
            const thrown = await (op === "mount" ? client.mount(bad.request) : client.unmount(bad.request)).then(
              (r) => new Error(`answered ${JSON.stringify(r)}`),
              (e: unknown) => e
            )
            assertThrewValidation(bad, thrown)
          }),
          { numRuns: 3_000 }
        )
      )
      assert.strictEqual(snapshot(), before, "the memory ledger is unchanged")
      assert.strictEqual((yield* Effect.promise(() => client.unmount(valid))).status, "success")
      assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "unmount"])
    }))

  it.live("Promise facade: a malformed request is refused before connecting, even with the database down", () =>
    Effect.gen(function*() {
      const client = new DMSClient({ dbUrl: "mysql://dms:pw@127.0.0.1:1/none", rabbitmqUrl: "amqp://guest:guest@127.0.0.1:1", timeout: 5 })
      const bad = validRequest("nfs", "compute-01", "relative/path")
      const thrown = yield* Effect.promise(() => client.mount(bad).then(() => undefined, (e: unknown) => e))
      yield* Effect.promise(() => client.close())
      assert.instanceOf(thrown, RequestValidationException)
      assert.include((thrown as Error).message, "backup_target.filesystem_export_mount_path")
    }))
})

describe("Bad input (client, MariaDB + RabbitMQ)", () => {
  it.scopedLive("2,500 malformed requests through Dms.layer (Effect API and Promise facade): no row, no lock, no message", () =>
    Effect.gen(function*() {
      const db = yield* TestDatabase
      const host = uniqueHost("bad-input")
      const consumer = yield* startResponder({ host })
      const layer = Dms.layer({ dbUrl: db.url, rabbitmqUrl: RABBIT_URL, timeout: 10, lockTimeout: 30 })
      const context = yield* Layer.build(layer)
      const valid = validRequest("nfs", host, PATH)
      yield* Mount.mount(valid).pipe(Effect.provide(context))
      const tables = Effect.all([
        db.query<ReadonlyArray<unknown>>("SELECT * FROM backup_target_mount_ledger ORDER BY id"),
        db.query<ReadonlyArray<unknown>>("SELECT * FROM backup_target_mount_lock ORDER BY lock_key")
      ]).pipe(Effect.map(([ledger, locks]) => ({ ledger: JSON.stringify(ledger), locks: JSON.stringify(locks), rows: ledger.length + locks.length })))
      const before = yield* tables
      assert.strictEqual(before.rows, 2, "the valid mount wrote its row and its lock row")
      assert.strictEqual(yield* Queue.size(consumer.received), 1, "the consumer counted the valid mount")

      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(badRequest(host, PATH), operation, async (bad, op) => {
            fc.pre(applies(bad, op))
            count(`client live, Effect ${op}`, bad)
            const run: Effect.Effect<unknown, DmsError, Mount.Services> = op === "mount" ? Mount.mount(bad.request) : Mount.unmount(bad.request)
            assertRefused(bad, await Effect.runPromiseExit(Effect.provide(run, context)))
          }),
          { numRuns: 2_000 }
        )
      )
      const client = new DMSClient({ layer })
      yield* Effect.addFinalizer(() => Effect.promise(() => client.close()))
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(badRequest(host, PATH), operation, async (bad, op) => {
            fc.pre(applies(bad, op))
            count(`client live, Promise ${op}`, bad)
            const thrown = await (op === "mount" ? client.mount(bad.request) : client.unmount(bad.request)).then(
              (r) => new Error(`answered ${JSON.stringify(r)}`),
              (e: unknown) => e
            )
            assertThrewValidation(bad, thrown)
          }),
          { numRuns: 500 }
        )
      )
      const after = yield* tables
      assert.strictEqual(after.ledger, before.ledger, "ledger rows unchanged")
      assert.strictEqual(after.locks, before.locks, "lock rows unchanged")
      // The valid unmount is the consumer's second delivery: nothing was published in between.
      yield* Mount.unmount(valid).pipe(Effect.provide(context))
      const delivered = yield* Queue.takeAll(consumer.received)
      assert.deepStrictEqual([...delivered].map((r) => r.body?.action), ["mount", "unmount"])
    }).pipe(Effect.provide(TestDatabaseLive)), { timeout: 120_000 })
})

