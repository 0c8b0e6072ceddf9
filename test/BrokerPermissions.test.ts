/**
 * Least-privilege broker users on the real RabbitMQ: users of the test's own get the README's permission
 * sets (`Broker.serverPermissions(host)`, `Broker.clientPermissions`); the server as a process with host
 * A's credentials and a client with the client's do a real S3 mount and unmount; host A's credentials
 * can neither consume nor declare host B's queue, and the client's cannot consume any `dms.*` queue.
 */
import { assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as path from "node:path"
import * as Broker from "../src/Broker.js"
import { serverDirs, spawnServer } from "./support/dmsServer.js"
import { brokerUser, declareHostQueue, deleteOnClose, uniqueHost } from "./support/rabbit.js"
import { startS3WithSecret } from "./support/s3.js"

const TOKEN = "gAAAA-permissions-token"

/** What the broker answers when `url`'s user tries `op` on a channel of its own: "ok" or the AMQP code. */
const attempt = (url: string, op: (channel: amqp.Channel) => Promise<unknown>) =>
  Effect.promise(async () => {
    const model = await amqp.connect(url, { noDelay: true })
    model.on("error", () => {})
    try {
      const channel = await model.createChannel()
      channel.on("error", () => {})
      return await op(channel).then(
        () => "ok",
        (e: { code?: unknown; message?: string }) => `${String(e.code)} ${/ACCESS_REFUSED|NOT_FOUND/.exec(e.message ?? "")?.[0] ?? e.message}`
      )
    } finally {
      await model.close().catch(() => undefined)
    }
  })

describe("Least-privilege broker users", () => {
  it.scopedLive("server and client with the documented permissions: a mount round trip; nothing more", () =>
    Effect.gen(function*() {
      const hostA = uniqueHost("perm-a")
      const hostB = uniqueHost("perm-b")
      const queueA = Broker.queueName(hostA)
      yield* deleteOnClose(queueA)
      const queueB = yield* declareHostQueue(hostB)
      const serverA = yield* brokerUser("server-a", Broker.serverPermissions(hostA))
      const client = yield* brokerUser("client", Broker.clientPermissions)

      const dirs = yield* serverDirs
      const { barbican, secretRef } = yield* startS3WithSecret(TOKEN)
      const server = yield* spawnServer(
        ["--node-id", hostA, "--mount-base", dirs.base, "--run-dir", dirs.run, "--config", path.join(dirs.root, "none.conf"), "--barbican-url", barbican.url],
        { DMS_RABBITMQ_URL: serverA.url }
      )
      yield* server.waitForOutput(`consuming ${queueA}`).pipe(Effect.timeout("60 seconds"))

      const broker = Context.get(yield* Layer.build(Broker.layerAmqp({ url: client.url })), Broker.Broker)
      const mountPath = path.join(dirs.base, "target-perm")
      const body = (action: string) => ({
        job: { jobid: 1 },
        host: hostA,
        action,
        keystone_token: TOKEN,
        backup_target: { id: "target-perm", type: "s3", filesystem_export_mount_path: mountPath, secret_ref: secretRef }
      })
      const mounted = yield* broker.request(hostA, body("mount"), { timeout: "60 seconds" })
      assert.strictEqual(mounted.success_msg, `S3 target mounted successfully at ${mountPath}`, JSON.stringify(mounted))
      const unmounted = yield* broker.request(hostA, body("unmount"), { timeout: "60 seconds" })
      assert.strictEqual(unmounted.success_msg, `Target unmounted successfully from ${mountPath}`, JSON.stringify(unmounted))

      // Host A's credentials on host B's queue.
      const refused = "403 ACCESS_REFUSED"
      assert.strictEqual(yield* attempt(serverA.url, (ch) => ch.consume(queueB, () => {})), refused, "A consumes B's queue")
      assert.strictEqual(yield* attempt(serverA.url, (ch) => ch.get(queueB)), refused, "A gets from B's queue")
      assert.strictEqual(yield* attempt(serverA.url, (ch) => ch.assertQueue(queueB, { durable: true })), refused, "A declares B's queue")
      assert.strictEqual(yield* attempt(serverA.url, (ch) => ch.deleteQueue(queueB)), refused, "A deletes B's queue")
      assert.strictEqual(
        yield* attempt(serverA.url, (ch) => ch.assertQueue(Broker.queueName(uniqueHost("perm-new")), { durable: true })),
        refused,
        "A declares another host's queue that does not exist yet"
      )
      // The client's credentials on every dms.* queue.
      for (const q of [queueA, queueB]) {
        assert.strictEqual(yield* attempt(client.url, (ch) => ch.consume(q, () => {})), refused, `the client consumes ${q}`)
        assert.strictEqual(yield* attempt(client.url, (ch) => ch.get(q)), refused, `the client gets from ${q}`)
        assert.strictEqual(yield* attempt(client.url, (ch) => ch.purgeQueue(q)), refused, `the client purges ${q}`)
      }
      assert.strictEqual(
        yield* attempt(client.url, (ch) => ch.assertQueue(Broker.queueName(uniqueHost("perm-client")), { durable: true })),
        refused,
        "the client declares a dms.* queue"
      )
      // The same operations are allowed to the owner: the refusals above are the permissions, not the test.
      assert.strictEqual(yield* attempt(serverA.url, (ch) => ch.assertQueue(queueA, { durable: true })), "ok")
      // The passive check the client makes before a request needs no permission (RabbitMQ 3.10).
      assert.strictEqual(yield* attempt(client.url, (ch) => ch.checkQueue(queueA)), "ok")
    }), { timeout: 120_000 })
})
