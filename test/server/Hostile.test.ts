/**
 * Hostile senders on the real RabbitMQ, the server in process with a recording command runner: a
 * `reply_to` that is not a reply queue (another host's `dms.<host>`, an arbitrary queue) gets the request
 * neither run nor answered, and nothing is delivered there; an oversized body is refused unparsed with a
 * reply naming the limit; a body whose validation message would be huge gets a truncated one.
 */
import { assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import { randomUUID } from "node:crypto"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import * as Server from "../../src/server/Server.js"
import { recordingRunner, rpc, serverDirs } from "../support/dmsServer.js"
import { admin, declareHostQueue, deleteOnClose, queueInfo, RABBIT_URL, uniqueHost } from "../support/rabbit.js"

const startServer = (label: string, options: Partial<Server.Options> = {}) =>
  Effect.gen(function*() {
    const dirs = yield* serverDirs
    const runner = recordingRunner()
    const host = uniqueHost(label)
    yield* deleteOnClose(Broker.queueName(host))
    const mounter = Layer.effect(Mounter.Mounter, Mounter.make({ mountBase: dirs.base, runDir: dirs.run })).pipe(
      Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)),
      Layer.provide(Barbican.layer())
    )
    const ctx = yield* Layer.build(Server.layer({ ...options, nodeId: host, rabbitmqUrl: RABBIT_URL }).pipe(Layer.provide(mounter)))
    const server = Context.get(ctx, Server.Server)
    yield* server.ready.pipe(Effect.timeout("20 seconds"))
    return { host, queue: server.queue, server, dirs, runner }
  })

const mountRequest = (base: string, id: string, extra: Record<string, unknown> = {}) => ({
  job: { jobid: 1 },
  host: "ignored",
  action: "mount",
  backup_target: {
    id,
    type: "nfs",
    filesystem_export: "192.0.2.10:/backups",
    filesystem_export_mount_path: path.join(base, id),
    nfs_mount_opts: "rw,sync",
    ...extra
  }
})

/** Publishes raw bodies with a chosen `reply_to`, and waits until the broker has them queued (confirms). */
const publishWithReplyTo = (queue: string, items: ReadonlyArray<{ readonly replyTo: string; readonly body: unknown }>) =>
  Effect.acquireUseRelease(
    Effect.promise(async () => {
      const model = await amqp.connect(RABBIT_URL, { noDelay: true })
      model.on("error", () => {})
      return model
    }),
    (model) =>
      Effect.promise(async () => {
        const channel = await model.createConfirmChannel()
        channel.on("error", () => {})
        for (const { body, replyTo } of items) {
          channel.sendToQueue(queue, Buffer.from(JSON.stringify(body)), {
            contentType: "application/json",
            correlationId: randomUUID(),
            replyTo
          })
        }
        await channel.waitForConfirms()
      }),
    (model) => Effect.promise(() => model.close().catch(() => undefined))
  )

describe("Hostile senders (server)", () => {
  it("isReplyQueue accepts only direct reply-to and server-named queues", () => {
    for (const ok of ["amq.rabbitmq.reply-to", "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMjM0NTY3OAAAAAEAAAAA.c3o0bg==", "amq.gen-JzTY20BRgKO-HjmUJj0wLg"]) {
      assert.isTrue(Server.isReplyQueue(ok), ok)
    }
    for (const bad of ["dms.compute-02", "dms.", "victim", "", "amq.gen-", "amq.rabbitmq.reply-toX", "amq.gen-a b", "amq.direct", "Amq.gen-abc"]) {
      assert.isFalse(Server.isReplyQueue(bad), bad)
    }
  })

  it.scopedLive("a reply_to naming another host's queue or an arbitrary queue: nothing executed, nothing delivered there", () =>
    Effect.gen(function*() {
      const { dirs, queue, runner, server } = yield* startServer("replyto")
      const otherHostQueue = yield* declareHostQueue(uniqueHost("replyto-victim"))
      const arbitraryQueue = uniqueHost("replyto-arbitrary")
      yield* deleteOnClose(arbitraryQueue)
      const { channel } = yield* admin
      yield* Effect.promise(() => channel.assertQueue(arbitraryQueue, { durable: false }))
      yield* publishWithReplyTo(queue, [
        { replyTo: otherHostQueue, body: mountRequest(dirs.base, "victim-a") },
        { replyTo: arbitraryQueue, body: mountRequest(dirs.base, "victim-b") },
        { replyTo: otherHostQueue, body: { action: "status" } },
        { replyTo: queue, body: { action: "bogus" } }
      ])
      // Confirmed, hence queued before this one: when it is answered, the four were delivered.
      const control = yield* rpc(queue, { action: "status" }, { style: "python" })
      assert.strictEqual(control.body.status, "success", "a server-named (amq.gen-…) reply queue is answered")
      const stats = server.stats()
      assert.strictEqual(stats.received, 5)
      assert.strictEqual(stats.refusedReplyTo, 4)
      assert.deepStrictEqual(runner.calls, [], "nothing executed")
      for (const q of [otherHostQueue, arbitraryQueue, queue]) {
        const info = yield* queueInfo(q)
        assert.strictEqual(info?.messageCount, 0, `nothing delivered to ${q}`)
      }
    }))

  it.scopedLive("a body over the limit is refused unparsed with a reply naming the limit; nothing executed", () =>
    Effect.gen(function*() {
      const { dirs, queue, runner } = yield* startServer("oversized")
      const valid = mountRequest(dirs.base, "big")
      const padding = "x".repeat(Server.DEFAULT_MAX_BODY_BYTES)
      const reply = yield* rpc(queue, { ...valid, padding })
      assert.strictEqual(reply.body.status, "error")
      assert.match(reply.body.error_msg, new RegExp(`^Request too large: \\d+ bytes, the limit is ${Server.DEFAULT_MAX_BODY_BYTES} bytes`))
      // Not JSON at all, yet refused for its size: the parser never saw it.
      const notJson = yield* rpc(queue, `{${padding}`)
      assert.match(notJson.body.error_msg, /^Request too large/)
      assert.deepStrictEqual(runner.calls, [], "nothing executed")
      // The same request under the limit is run (the recording runner mounts nothing, so the server
      // then reports the path not mounted: what matters is that it got that far).
      yield* rpc(queue, valid)
      assert.deepStrictEqual(runner.calls.map((c) => c.command).slice(0, 1), ["mount"], "the request under the limit ran")
    }))

  it.scopedLive("a configured limit; a body with thousands of bad values gets a truncated message", () =>
    Effect.gen(function*() {
      const { dirs, queue, runner } = yield* startServer("truncated", { maxBodyBytes: 32 * 1024 })
      const small = yield* rpc(queue, { ...mountRequest(dirs.base, "t"), padding: "x".repeat(33 * 1024) })
      assert.match(small.body.error_msg, /the limit is 32768 bytes/)
      const opts = Array.from({ length: 3000 }, (_, i) => i)
      const reply = yield* rpc(queue, mountRequest(dirs.base, "t", { nfs_mount_opts: opts, status: opts }))
      assert.strictEqual(reply.body.status, "error")
      const message: string = reply.body.error_msg
      assert.isAtMost(message.length, Server.MAX_MESSAGE_CHARS + 80)
      assert.match(message, /^invalid request: backup_target\./)
      assert.match(message, /… \(truncated; \d+ characters in all\)$/)
      assert.deepStrictEqual(runner.calls, [], "nothing executed")
    }))

  it("decodeRequest: the size is checked before parsing; messages are truncated", () => {
    const over = Server.decodeRequest(Buffer.alloc(100, "{"), { maxBodyBytes: 99 })
    assert.deepStrictEqual(over, Either.left(Server.messages.tooLarge(100, 99)))
    assert.deepStrictEqual(Server.decodeRequest(Buffer.alloc(99, "{"), { maxBodyBytes: 99 }), Either.left(Server.messages.invalidJson))
    const action = "a".repeat(10_000)
    const unknown = Server.decodeRequest(JSON.stringify({ action }))
    assert.isTrue(Either.isLeft(unknown) && unknown.left.length < Server.MAX_MESSAGE_CHARS + 80)
  })
})
