/**
 * The server over the real RabbitMQ, in process, with an injected command runner (tmpfs plays NFS):
 * the Python server's answers (recorded fixtures), the Python client's request shape, refusals that
 * execute nothing, acks, per-path FIFO with parallel paths, the exclusive consumer, `status`, and a
 * shutdown that finishes the request in flight.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import * as MountInfo from "../../src/server/MountInfo.js"
import * as Server from "../../src/server/Server.js"
import {
  type Call,
  playNfsMount,
  pollUntil,
  recordingRunner,
  type RecordingRunner,
  rpc,
  type ServerDirs,
  serverDirs,
  sh
} from "../support/dmsServer.js"
import { deleteOnClose, queueInfo, RABBIT_URL, uniqueHost } from "../support/rabbit.js"

const FIXTURES = path.resolve(import.meta.dirname, "../fixtures/python")
const FIXTURE_BASE = "/var/lib/trilio/triliovault-mounts"
const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), "utf8"))

/** A fixture with its mount paths moved under the test's base. */
const rebase = (value: unknown, base: string): any => JSON.parse(JSON.stringify(value).split(FIXTURE_BASE).join(base))

const realistic = (call: Call) => (call.command === "mount" ? playNfsMount(call) : sh(call.command, call.args))

const mounterLayer = (dirs: ServerDirs, runner: RecordingRunner) =>
  Layer.effect(
    Mounter.Mounter,
    Mounter.make({ mountBase: dirs.base, runDir: dirs.run, nfsFsTypes: ["nfs", "nfs4", "tmpfs"] })
  ).pipe(
    Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)),
    Layer.provide(Barbican.layer())
  )

interface Running {
  readonly host: string
  readonly queue: string
  readonly server: Server.Service
  readonly dirs: ServerDirs
  readonly runner: RecordingRunner
}

const startServer = (label: string) =>
  Effect.gen(function*() {
    const dirs = yield* serverDirs
    const runner = recordingRunner()
    runner.behave = realistic
    const host = uniqueHost(label)
    yield* deleteOnClose(Broker.queueName(host))
    const ctx = yield* Layer.build(Server.layer({ nodeId: host, rabbitmqUrl: RABBIT_URL }).pipe(Layer.provide(mounterLayer(dirs, runner))))
    const server = Context.get(ctx, Server.Server)
    yield* server.ready.pipe(Effect.timeout("20 seconds"))
    return { host, queue: server.queue, server, dirs, runner } satisfies Running
  })

const nfsRequest = (base: string, id: string, action: string, extra: Record<string, unknown> = {}) => ({
  job: { jobid: 12345 },
  host: "ignored",
  action,
  backup_target: {
    id,
    type: "nfs",
    filesystem_export: "192.0.2.10:/backups",
    filesystem_export_mount_path: path.join(base, id),
    nfs_mount_opts: "rw,sync,hard,intr,nfsvers=4",
    ...extra
  }
})

const setProperties = (props: Record<string, unknown>) =>
  Object.entries(props).filter(([, v]) => v !== undefined && !(typeof v === "object" && v !== null && Object.keys(v).length === 0)).map(([k]) => k).sort()

const unacked = (queue: string) =>
  Effect.sync(() => {
    const out = execFileSync("rabbitmqctl", ["list_queues", "name", "messages_unacknowledged", "-q", "--no-table-headers"], {
      encoding: "utf8",
      timeout: 60_000
    })
    const line = out.split("\n").find((l) => l.split("\t")[0] === queue)
    return line === undefined ? -1 : Number(line.split("\t")[1])
  })

describe("Server", () => {
  it.scopedLive("answers as the Python server does (recorded replies)", () =>
    Effect.gen(function*() {
      const { dirs, queue, runner } = yield* startServer("fixtures")
      const cases = [
        "python-server-reply-mount-success",
        "python-server-reply-mount-already-mounted",
        "python-server-reply-unmount-success",
        "python-server-reply-unmount-not-mounted",
        "python-server-reply-mount-missing-export",
        "python-server-reply-unknown-action",
        "python-server-reply-invalid-json"
      ]
      for (const name of cases) {
        const f = rebase(fixture(name), dirs.base)
        const reply = yield* rpc(queue, f.request.body, { correlationId: f.request.properties.correlation_id })
        const expected = f.reply.body
        assert.deepStrictEqual(
          { status: reply.body.status, error_msg: reply.body.error_msg, success_msg: reply.body.success_msg },
          expected,
          name
        )
        assert.deepStrictEqual(setProperties(reply.properties as unknown as Record<string, unknown>), ["contentType", "correlationId"], name)
        assert.strictEqual(reply.properties.correlationId, f.reply.properties.correlation_id, name)
        assert.strictEqual(reply.properties.contentType, "application/json", name)
      }
      // Exactly one mount and one unmount ran; the rest were answered without executing anything.
      assert.deepStrictEqual(runner.calls.map((c) => c.command), ["mount", "umount"])
    }))

  it.scopedLive("serves the Python client's requests: top-level jobid, no expiration, an amq.gen reply queue", () =>
    Effect.gen(function*() {
      const { dirs, queue } = yield* startServer("pyclient")
      const mount = rebase(fixture("python-client-request-mount"), dirs.base)
      const p = mount.body.backup_target.filesystem_export_mount_path
      const r1 = yield* rpc(queue, mount.body, { style: "python" })
      assert.deepInclude(r1.body, { status: "success", error_msg: null, success_msg: `NFS target mounted successfully at ${p}`, already_mounted: false })
      const r2 = yield* rpc(queue, mount.body, { style: "python" })
      assert.deepInclude(r2.body, { status: "success", success_msg: `Already mounted at ${p}`, already_mounted: true })
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), p)?.source, "192.0.2.10:/exports/fixture-target")
      const unmount = rebase(fixture("python-client-request-unmount"), dirs.base)
      const r3 = yield* rpc(queue, unmount.body, { style: "python" })
      assert.deepInclude(r3.body, { status: "success", success_msg: `Target unmounted successfully from ${p}` })
      assert.isUndefined(MountInfo.at(yield* MountInfo.read(), p))
    }))

  it.scopedLive("refuses, without executing anything, requests past their deadline, injections, bad paths and bad JSON; all are acked", () =>
    Effect.gen(function*() {
      const { dirs, queue, runner, server } = yield* startServer("refuse")
      const expired = yield* rpc(queue, nfsRequest(dirs.base, "late", "mount"), {
        headers: { [Broker.DEADLINE_HEADER]: Date.now() - 1000 }
      })
      assert.strictEqual(expired.body.status, "error")
      assert.include(expired.body.error_msg, "Request expired before it could start")
      const refusals: ReadonlyArray<[unknown, string]> = [
        [nfsRequest(dirs.base, "inj1", "mount", { nfs_mount_opts: "rw,exec" }), `option "exec" is not allowed`],
        [nfsRequest(dirs.base, "inj2", "mount", { nfs_mount_opts: "rw;reboot" }), `"rw;reboot" is not a mount option`],
        [nfsRequest(dirs.base, "inj3", "mount", { nfs_mount_opts: "-o remount" }), `"-o remount" is not a mount option`],
        [nfsRequest(dirs.base, "x", "mount", { filesystem_export_mount_path: "/etc/dms" }), "is not inside the mount base"],
        [nfsRequest(dirs.base, "x", "mount", { filesystem_export_mount_path: `${dirs.base}/../x` }), "Expected a path without '..' segments"],
        [nfsRequest(dirs.base, "x", "mount", { filesystem_export: "-oremount:/x" }), "filesystem_export"],
        [nfsRequest(dirs.base, "x", "mount", { deleted: true }), "the backup target is deleted"],
        [{ ...nfsRequest(dirs.base, "s3", "mount"), backup_target: { id: "s3", type: "s3", filesystem_export_mount_path: `${dirs.base}/s3`, secret_ref: "http://127.0.0.1:9/v1/secrets/x" } }, "Missing keystone_token for S3 mount"],
        [{ action: "mount" }, "invalid request: backup_target"],
        [{ backup_target: {} }, "Unknown action: None"],
        ["[1,2]", "Invalid request: expected a JSON object"],
        ["\u0000\u0001garbage", "Invalid JSON format in request"]
      ]
      for (const [body, message] of refusals) {
        const reply = yield* rpc(queue, body as object)
        assert.strictEqual(reply.body.status, "error", JSON.stringify(body))
        assert.include(reply.body.error_msg, message, JSON.stringify(body))
      }
      assert.deepStrictEqual(runner.calls, [], "nothing executed")
      assert.deepStrictEqual(fs.readdirSync(dirs.base), [], "nothing created")
      assert.strictEqual(server.stats().received, refusals.length + 1, "each delivered once: no redelivery")
      assert.strictEqual(yield* pollUntil(unacked(queue), (n) => n === 0), 0, "all acked")
      assert.deepInclude(yield* queueInfo(queue), { messageCount: 0, consumerCount: 1 })
    }))

  it.scopedLive("requests for one path run one at a time in arrival order; other paths run in parallel", () =>
    Effect.gen(function*() {
      const { dirs, queue, runner, server } = yield* startServer("fifo")
      const pathA = path.join(dirs.base, "a")
      const arrivedA = yield* Deferred.make<void>()
      const releaseA = yield* Deferred.make<void>()
      runner.behave = (call) =>
        call.command === "mount" && call.resolved.at(-1) === pathA
          ? Deferred.succeed(arrivedA, undefined).pipe(Effect.zipRight(Deferred.await(releaseA)), Effect.zipRight(playNfsMount(call)))
          : realistic(call)
      const mountA = yield* Effect.fork(rpc(queue, nfsRequest(dirs.base, "a", "mount")))
      yield* Deferred.await(arrivedA)
      const unmountA = yield* Effect.fork(rpc(queue, nfsRequest(dirs.base, "a", "unmount")))
      yield* pollUntil(Effect.sync(() => server.stats().received), (n) => n === 2)
      const mountB = yield* rpc(queue, nfsRequest(dirs.base, "b", "mount"))
      assert.strictEqual(mountB.body.status, "success", "path b is not held up by path a")
      assert.deepStrictEqual(runner.calls.map((c) => [c.command, c.resolved.at(-1)]), [["mount", pathA], ["mount", path.join(dirs.base, "b")]])
      assert.strictEqual(server.stats().queued, 1, "a's unmount waits behind a's mount")
      yield* Deferred.succeed(releaseA, undefined)
      const [ra, ua] = [yield* Fiber.join(mountA), yield* Fiber.join(unmountA)]
      assert.strictEqual(ra.body.success_msg, `NFS target mounted successfully at ${pathA}`)
      assert.strictEqual(ua.body.success_msg, `Target unmounted successfully from ${pathA}`)
      assert.deepStrictEqual(runner.calls.map((c) => [c.command, c.resolved.at(-1)]), [
        ["mount", pathA],
        ["mount", path.join(dirs.base, "b")],
        ["umount", pathA]
      ])
    }))

  it.scopedLive("status lists the mounts under the base with their target ids", () =>
    Effect.gen(function*() {
      const { dirs, queue } = yield* startServer("status")
      yield* rpc(queue, nfsRequest(dirs.base, "t1", "mount"))
      yield* rpc(queue, nfsRequest(dirs.base, "t2", "mount", { filesystem_export: "192.0.2.11:/other" }))
      const stranger = path.join(dirs.base, "stranger")
      fs.mkdirSync(stranger)
      yield* sh("mount", ["-t", "tmpfs", "-o", "size=1m", "somewhere:/else", stranger])
      const reply = yield* rpc(queue, { action: "status" })
      assert.strictEqual(reply.body.status, "success")
      const mounts = (reply.body.mounts as Array<Mounter.StatusEntry>).map((m) => [m.backup_target_id, m.mount_path, m.source, m.mounted])
      assert.sameDeepMembers(mounts, [
        ["t1", path.join(dirs.base, "t1"), "192.0.2.10:/backups", true],
        ["t2", path.join(dirs.base, "t2"), "192.0.2.11:/other", true],
        [null, stranger, "somewhere:/else", true]
      ])
    }))

  it.scopedLive("one exclusive consumer: a second server waits and takes over when the first stops", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const host = uniqueHost("exclusive")
      yield* deleteOnClose(Broker.queueName(host))
      const build = (runner: RecordingRunner, scope: Scope.Scope) =>
        Layer.buildWithScope(
          Server.layer({ nodeId: host, rabbitmqUrl: RABBIT_URL, reconnectSchedule: Schedule.spaced("100 millis") }).pipe(
            Layer.provide(mounterLayer(dirs, runner))
          ),
          scope
        ).pipe(Effect.map((ctx) => Context.get(ctx, Server.Server)))
      const scope1 = yield* Scope.make()
      const scope2 = yield* Scope.make()
      yield* Effect.addFinalizer(() => Effect.zipRight(Scope.close(scope1, Exit.void), Scope.close(scope2, Exit.void)))
      const runner1 = recordingRunner()
      const runner2 = recordingRunner()
      runner1.behave = realistic
      runner2.behave = realistic
      const first = yield* build(runner1, scope1)
      yield* first.ready
      const second = yield* build(runner2, scope2)
      const r1 = yield* rpc(first.queue, nfsRequest(dirs.base, "x", "mount"))
      assert.strictEqual(r1.body.status, "success")
      assert.strictEqual((yield* queueInfo(first.queue))?.consumerCount, 1)
      assert.strictEqual(second.stats().received, 0)
      yield* Scope.close(scope1, Exit.void)
      yield* second.ready.pipe(Effect.timeout("20 seconds"))
      const r2 = yield* rpc(first.queue, nfsRequest(dirs.base, "x", "mount"))
      assert.strictEqual(r2.body.success_msg, `Already mounted at ${path.join(dirs.base, "x")}`)
      assert.strictEqual(second.stats().received, 1)
    }))

  it.scopedLive("stopping finishes the request in flight, stops consuming, and leaves mounts in place", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const host = uniqueHost("stop")
      yield* deleteOnClose(Broker.queueName(host))
      const runner = recordingRunner()
      const pathA = path.join(dirs.base, "a")
      const arrived = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      runner.behave = (call) =>
        call.command === "mount"
          ? Deferred.succeed(arrived, undefined).pipe(Effect.zipRight(Deferred.await(release)), Effect.zipRight(playNfsMount(call)))
          : realistic(call)
      const scope = yield* Scope.make()
      yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
      const ctx = yield* Layer.buildWithScope(
        Server.layer({ nodeId: host, rabbitmqUrl: RABBIT_URL }).pipe(Layer.provide(mounterLayer(dirs, runner))),
        scope
      )
      const server = Context.get(ctx, Server.Server)
      yield* server.ready
      const inFlight = yield* Effect.fork(rpc(server.queue, nfsRequest(dirs.base, "a", "mount")))
      yield* Deferred.await(arrived)
      const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
      // It stops consuming first…
      const info = yield* pollUntil(queueInfo(server.queue), (i) => i?.consumerCount === 0)
      assert.strictEqual(info?.consumerCount, 0)
      // …and a request sent now waits in the queue for the next server.
      const waiting = yield* Effect.fork(rpc(server.queue, nfsRequest(dirs.base, "b", "mount"), { timeout: "3 seconds" }))
      yield* Deferred.succeed(release, undefined)
      const reply = yield* Fiber.join(inFlight)
      assert.strictEqual(reply.body.success_msg, `NFS target mounted successfully at ${pathA}`)
      yield* Fiber.join(closing)
      assert.isTrue(Exit.isFailure(yield* Fiber.await(waiting)), "nobody answers after the stop")
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), pathA)?.source, "192.0.2.10:/backups", "the mount stays")
      assert.deepStrictEqual(runner.calls.map((c) => c.command), ["mount"])
    }))
})
