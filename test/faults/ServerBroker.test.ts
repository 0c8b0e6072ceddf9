/**
 * The server and a broker that drops its connection: it reconnects by itself, and a request that was
 * running when the connection dropped is redelivered (it was not acked) and answered after all.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import * as MountInfo from "../../src/server/MountInfo.js"
import * as Server from "../../src/server/Server.js"
import { playNfsMount, recordingRunner, rpc, serverDirs, sh } from "../support/dmsServer.js"
import { closeConnectionNamed, deleteOnClose, RABBIT_URL, uniqueConnectionName, uniqueHost } from "../support/rabbit.js"

describe("server and broker faults", () => {
  it.scopedLive("reconnects after the broker closes its connection; the request in flight is redelivered and answered", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const host = uniqueHost("reconnect")
      const connectionName = uniqueConnectionName("server")
      yield* deleteOnClose(Broker.queueName(host))
      const runner = recordingRunner()
      const arrived = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      let first = true
      runner.behave = (call) => {
        if (call.command !== "mount") return sh(call.command, call.args)
        if (!first) return playNfsMount(call)
        first = false
        return Deferred.succeed(arrived, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.zipRight(playNfsMount(call)))
      }
      const mounter = Layer.effect(
        Mounter.Mounter,
        Mounter.make({ mountBase: dirs.base, runDir: dirs.run, nfsFsTypes: ["nfs", "nfs4", "tmpfs"] })
      ).pipe(Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)), Layer.provide(Barbican.layer()))
      const ctx = yield* Layer.build(
        Server.layer({ nodeId: host, rabbitmqUrl: RABBIT_URL, connectionName, reconnectSchedule: Schedule.spaced("200 millis") }).pipe(
          Layer.provide(mounter)
        )
      )
      const server = Context.get(ctx, Server.Server)
      yield* server.ready
      const p = path.join(dirs.base, "t")
      const request = {
        action: "mount",
        backup_target: { id: "t", type: "nfs", filesystem_export: "192.0.2.10:/backups", filesystem_export_mount_path: p }
      }
      const inFlight = yield* Effect.fork(rpc(server.queue, request, { timeout: "30 seconds" }))
      yield* Deferred.await(arrived)
      yield* closeConnectionNamed(connectionName)
      yield* Deferred.succeed(release, undefined)
      const reply = yield* Fiber.join(inFlight)
      // The first run's reply was lost with the connection; the redelivered request found the mount.
      assert.deepInclude(reply.body, { status: "success", success_msg: `Already mounted at ${p}`, already_mounted: true })
      assert.strictEqual(server.stats().received, 2)
      assert.deepStrictEqual(runner.calls.map((c) => c.command), ["mount"])
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), p)?.source, "192.0.2.10:/backups")
      const next = yield* rpc(server.queue, { action: "status" })
      assert.strictEqual(next.body.status, "success")
    }), { timeout: 90_000 })
})
