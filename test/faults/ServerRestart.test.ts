/**
 * The server as a real process: killed with SIGKILL, a restarted server adopts the live FUSE daemon
 * from its PID file; SIGTERM stops consuming, finishes the request in flight and leaves the mount in
 * place. Real S3 mounts (s3rver + s3fs), a fake Barbican, the real RabbitMQ.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as MountInfo from "../../src/server/MountInfo.js"
import { awaitGone, isAlive, rpc, serverDirs, spawnServer } from "../support/dmsServer.js"
import { deleteOnClose, RABBIT_URL, uniqueHost } from "../support/rabbit.js"
import { startS3WithSecret } from "../support/s3.js"

const TOKEN = "gAAAA-restart-token"

const setup = (label: string) =>
  Effect.gen(function*() {
    const dirs = yield* serverDirs
    const { barbican, s3, secretRef } = yield* startS3WithSecret(TOKEN)
    const host = uniqueHost(label)
    const queue = Broker.queueName(host)
    yield* deleteOnClose(queue)
    const start = spawnServer(
      ["--node-id", host, "--mount-base", dirs.base, "--run-dir", dirs.run, "--config", path.join(dirs.root, "none.conf"), "--barbican-url", barbican.url],
      { DMS_RABBITMQ_URL: RABBIT_URL }
    ).pipe(Effect.tap((p) => p.waitForOutput(`consuming ${queue}`)))
    const mountPath = path.join(dirs.base, "target-s3")
    const body = (action: string) => ({
      jobid: 7,
      action,
      keystone_token: TOKEN,
      backup_target: { id: "target-s3", type: "s3", filesystem_export_mount_path: mountPath, secret_ref: secretRef }
    })
    return { dirs, s3, barbican, queue, start, mountPath, body, pidFile: path.join(dirs.run, "s3", "target-s3.pid") }
  })

describe("server process faults", () => {
  it.scopedLive("a server killed with SIGKILL leaves the FUSE daemon running; the restarted server adopts it", () =>
    Effect.gen(function*() {
      const { barbican, queue, start, mountPath, body, pidFile } = yield* setup("adopt")
      const first = yield* start
      const mounted = yield* rpc(queue, body("mount"), { style: "python" })
      assert.strictEqual(mounted.body.success_msg, `S3 target mounted successfully at ${mountPath}`)
      const daemon = Number(fs.readFileSync(pidFile, "utf8"))

      yield* first.signal("SIGKILL")
      assert.strictEqual(yield* first.exited, "SIGKILL")
      assert.isTrue(isAlive(daemon), "the daemon lives in its own session")
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), mountPath)?.fsType, "fuse.s3fs")

      const second = yield* start
      yield* second.waitForOutput("adopted a live FUSE daemon")
      const status = yield* rpc(queue, { action: "status" })
      assert.deepStrictEqual(
        status.body.mounts.map((m: any) => [m.backup_target_id, m.mount_path, m.pid, m.daemon_alive, m.mounted]),
        [["target-s3", mountPath, daemon, true, true]]
      )
      const reads = barbican.requests().length
      const again = yield* rpc(queue, body("mount"), { style: "python" })
      assert.deepInclude(again.body, { status: "success", success_msg: `Already mounted at ${mountPath}`, already_mounted: true })
      assert.strictEqual(barbican.requests().length, reads, "an adopted, live mount needs no credentials")

      const unmounted = yield* rpc(queue, body("unmount"), { style: "python" })
      assert.strictEqual(unmounted.body.success_msg, `Target unmounted successfully from ${mountPath}`)
      assert.isTrue(yield* awaitGone(daemon), "the adopted daemon is stopped")
      assert.isUndefined(MountInfo.at(yield* MountInfo.read(), mountPath))
      assert.isFalse(fs.existsSync(pidFile))

      yield* second.signal("SIGTERM")
      assert.strictEqual(yield* second.exited, 0)
    }), { timeout: 90_000 })

  it.scopedLive("SIGTERM: stops consuming, finishes the request in flight, exits 0, leaves the mount in place", () =>
    Effect.gen(function*() {
      const { barbican, queue, start, mountPath, body, pidFile } = yield* setup("sigterm")
      const server = yield* start
      const gate = barbican.hold()
      const inFlight = yield* Effect.fork(rpc(queue, body("mount")))
      yield* gate.arrived
      yield* server.signal("SIGTERM")
      yield* server.waitForOutput("stopping: waiting for 1 running request(s)")
      yield* gate.release
      const reply = yield* Fiber.join(inFlight)
      assert.strictEqual(reply.body.success_msg, `S3 target mounted successfully at ${mountPath}`)
      assert.strictEqual(yield* server.exited, 0)
      assert.include(server.output(), "stopped consuming; mounts are left in place")
      const daemon = Number(fs.readFileSync(pidFile, "utf8"))
      assert.isTrue(isAlive(daemon))
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), mountPath)?.source.startsWith("s3fs:"), true)
    }), { timeout: 90_000 })
})
