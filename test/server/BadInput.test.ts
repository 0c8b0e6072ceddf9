/**
 * Thousands of generated bodies published straight to a real server's queue (RabbitMQ, the server in
 * process with a recording command runner and a recording Barbican): bytes that are not JSON, JSON of
 * the wrong shape, unknown actions, mount and unmount bodies with broken targets, path traversal and
 * paths outside the mount base, NFS option and export injection, huge bodies. Every one gets an error
 * reply (except `status`, the one valid no-op mixed in: it reads the mount table and runs nothing);
 * no command runs, Barbican is never asked, nothing is created under the mount base.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import fc from "fast-check"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import * as Server from "../../src/server/Server.js"
import { badRequest, validRequest } from "../support/badRequests.js"
import { pollUntil, recordingRunner, serverDirs } from "../support/dmsServer.js"
import { deleteOnClose, RABBIT_URL, uniqueHost } from "../support/rabbit.js"

interface Body {
  readonly kind: string
  readonly content: Buffer
  /** A valid request that does nothing (status): answered with success. */
  readonly noOp?: boolean
}

const json = (kind: string, value: unknown, noOp = false): Body => ({
  kind,
  content: Buffer.from(JSON.stringify(value) ?? "undefined"),
  ...(noOp ? { noOp } : {})
})

/** Bodies for a server whose mount base is `base` (a symbolic link to outside is at `<base>/escape`). */
const bodies = (base: string): fc.Arbitrary<Body> => {
  const inBase = path.join(base, "target-a")
  const validMount = validRequest("nfs", "ignored", inBase)
  return fc.oneof(
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 600 }).map((b) => ({ kind: "not JSON (random bytes)", content: Buffer.from(b) })) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 1, max: JSON.stringify(validMount).length - 1 }).map((n) => ({
        kind: "not JSON (truncated request)",
        content: Buffer.from(JSON.stringify(validMount).slice(0, n))
      }))
    },
    {
      weight: 1,
      arbitrary: fc.oneof(fc.jsonValue({ maxDepth: 2 }).filter((v) => typeof v !== "object" || v === null || Array.isArray(v)), fc.constantFrom(null, [], [validMount], "mount"))
        .map((v) => json("JSON that is not an object", v))
    },
    {
      weight: 2,
      arbitrary: fc.oneof(
        fc.constantFrom(undefined, null, "", "MOUNT", "Mount", "mount ", " unmount", "unmount\u0000", "delete", "rm -rf /", "status\n", "ｍｏｕｎｔ", 1, true, ["mount"], { $ne: null }),
        fc.string({ maxLength: 20 }).filter((s) => s !== "mount" && s !== "unmount" && s !== "status")
      ).map((action) => json("missing or unknown action", { ...validMount, action }))
    },
    { weight: 8, arbitrary: badRequest("ignored", inBase, { targetOnly: true }).filter((b) => typeof b.request === "object" && b.request !== null && !Array.isArray(b.request)).map((b) => json(`mount: ${b.kind}`, { ...(b.request as object), action: "mount" })) },
    {
      weight: 4,
      arbitrary: badRequest("ignored", inBase, {
        targetOnly: true,
        fields: ["backup_target", "backup_target.id", "backup_target.type", "backup_target.filesystem_export_mount_path"]
      }).map((b) => json(`unmount: ${b.kind}`, { ...(b.request as object), action: "unmount" }))
    },
    {
      weight: 2,
      arbitrary: fc.tuple(
        fc.constantFrom<"mount" | "unmount">("mount", "unmount"),
        fc.constantFrom("/etc/dms", "/", "/tmp", path.dirname(base), `${base}`, `${base}/escape/x`, `${base}/escape`, `${base}//../x`, `/proc/self`)
      ).map(([action, p]) => json(`${action}: outside the mount base or through a symlink`, { ...validRequest("nfs", "ignored", p), action }))
    },
    {
      weight: 1,
      arbitrary: fc.tuple(fc.integer({ min: 100_000, max: 2_000_000 }), fc.constantFrom("backup_target.id", "junk", "action")).map(([n, where]) => {
        const big = "A".repeat(n)
        const body = where === "backup_target.id"
          ? { ...validMount, backup_target: { ...(validMount.backup_target as object), id: big } }
          : where === "action"
          ? { ...validMount, action: big }
          : { ...validMount, action: "explode", junk: big }
        return json("huge body", body)
      })
    },
    { weight: 1, arbitrary: fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }).map((junk) => json("status (valid no-op)", { ...junk, action: "status" }, true)) }
  )
}

/** Replies by kind, printed at the end for the report. */
const tally = new Map<string, { error: number; success: number }>()
afterAll(() => {
  const rows = [...tally].sort((a, b) => b[1].error + b[1].success - a[1].error - a[1].success)
  const total = rows.reduce((n, [, c]) => n + c.error + c.success, 0)
  console.log(`bodies sent to the server: ${total}\n${rows.map(([k, c]) => `    ${k}: ${c.error} error, ${c.success} success`).join("\n")}`)
})

/** One connection that publishes raw bodies to a queue and collects the replies by correlation id. */
const publisher = (queue: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const model = await amqp.connect(RABBIT_URL, { noDelay: true })
      model.on("error", () => {})
      const channel = await model.createChannel()
      channel.on("error", () => {})
      const waiting = new Map<string, (reply: { status?: unknown; error_msg?: unknown }) => void>()
      await channel.consume("amq.rabbitmq.reply-to", (msg) => {
        if (msg === null) return
        const done = waiting.get(String(msg.properties.correlationId))
        waiting.delete(String(msg.properties.correlationId))
        done?.(JSON.parse(msg.content.toString("utf8")))
      }, { noAck: true })
      const send = (content: Buffer) =>
        new Promise<{ status?: unknown; error_msg?: unknown }>((resolve) => {
          const correlationId = randomUUID()
          waiting.set(correlationId, resolve)
          channel.sendToQueue(queue, content, { contentType: "application/json", correlationId, replyTo: "amq.rabbitmq.reply-to" })
        })
      return { model, send, pending: () => waiting.size }
    }),
    ({ model }) => Effect.promise(() => model.close().catch(() => undefined))
  )

describe("Bad input (server)", () => {
  it.scopedLive("4,000 generated bodies on the queue: every one an error reply (status a success), nothing executed", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      fs.symlinkSync(fs.mkdtempSync(path.join(dirs.root, "outside-")), path.join(dirs.base, "escape"))
      const runner = recordingRunner()
      const barbicanCalls: Array<string> = []
      const barbican = Layer.succeed(Barbican.Barbican, {
        check: Either.right,
        s3Credentials: (secretRef) =>
          Effect.suspend(() => {
            barbicanCalls.push(secretRef)
            return Effect.fail(new Barbican.BarbicanError({ secretRef, reason: "the test's Barbican answers nothing" }))
          })
      })
      const mounter = Layer.effect(Mounter.Mounter, Mounter.make({ mountBase: dirs.base, runDir: dirs.run })).pipe(
        Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)),
        Layer.provide(barbican)
      )
      const host = uniqueHost("bad-bodies")
      yield* deleteOnClose(Broker.queueName(host))
      // Thousands of refusals would each log a warning: keep the output to errors.
      const ctx = yield* Layer.build(Server.layer({ nodeId: host, rabbitmqUrl: RABBIT_URL }).pipe(Layer.provide(mounter))).pipe(
        Effect.provide(Logger.minimumLogLevel(LogLevel.Error))
      )
      const server = Context.get(ctx, Server.Server)
      yield* server.ready.pipe(Effect.timeout("20 seconds"))
      const pub = yield* publisher(server.queue)

      let sent = 0
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(fc.array(bodies(dirs.base), { minLength: 200, maxLength: 200 }), async (batch) => {
            const replies = await Promise.all(batch.map((b) => pub.send(b.content)))
            sent += batch.length
            for (const [i, reply] of replies.entries()) {
              const body = batch[i]!
              const entry = tally.get(body.kind) ?? { error: 0, success: 0 }
              if (reply.status === "success") entry.success++
              else entry.error++
              tally.set(body.kind, entry)
              const expected = body.noOp === true ? "success" : "error"
              if (reply.status !== expected) {
                throw new Error(`${body.kind}: expected ${expected}, got ${JSON.stringify(reply).slice(0, 300)} for ${body.content.toString("utf8").slice(0, 300)}`)
              }
              if (expected === "error") assert.isTrue(typeof reply.error_msg === "string" && reply.error_msg.length > 0, body.kind)
            }
            assert.deepStrictEqual(runner.calls, [], "no command executed")
            assert.deepStrictEqual(barbicanCalls, [], "Barbican never asked")
          }),
          { numRuns: 20 }
        )
      )
      assert.strictEqual(sent, 4_000)
      assert.deepStrictEqual(runner.calls, [], "no command executed")
      assert.deepStrictEqual(fs.readdirSync(dirs.base), ["escape"], "nothing created under the mount base")
      assert.deepStrictEqual(fs.readdirSync(path.join(dirs.run, "state")), [], "no state file written")
      const stats = yield* pollUntil(Effect.sync(() => server.stats()), (s) => s.replied === sent)
      assert.strictEqual(stats.received, sent, "each body delivered once")
      assert.strictEqual(stats.replied, sent, "each body answered and acked")
      assert.strictEqual(pub.pending(), 0)
    }), { timeout: 120_000 })
})
