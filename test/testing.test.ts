/**
 * trilio-dms/testing as a user's unit tests use it: imported by the package's names, the whole client
 * on memory (`TestDms.layer()`, `TestDms.client()`), and the fake server's state and scripts. Also runs
 * the README's example tests (examples/testing.ts).
 */
import "../examples/testing.js"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { Mount, Reconcile } from "trilio-dms"
import { FakeDmsServer, TestDms } from "trilio-dms/testing"

const HOST = "compute-01"
const pathOf = (target: string) => `/var/lib/trilio/triliovault-mounts/${target}`

/** A guide-shaped NFS request, as a backup product builds it. */
const request = (jobid: number, target = "target-nfs-prod") => ({
  keystone_token: "token",
  job: { jobid, action: "backup" },
  host: HOST,
  backup_target: {
    id: target,
    type: "nfs",
    filesystem_export: "192.168.1.100:/backups",
    filesystem_export_mount_path: pathOf(target)
  }
})

describe("TestDms.layer: the whole client on memory", () => {
  it.effect("a backup of two VMs sharing a target: one physical mount, one unmount after the last", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      const first = yield* Mount.mount(request(1))
      const second = yield* Mount.mount(request(2))
      assert.isTrue(first.physicallyMounted)
      assert.isTrue(second.reusedExisting)
      assert.deepStrictEqual(server.mountedTargets(HOST), ["target-nfs-prod"])
      assert.isTrue(server.isMounted(HOST, pathOf("target-nfs-prod")))
      assert.deepInclude(yield* Mount.unmount(request(1)), { unmounted: false, activeMountsRemaining: 1 })
      assert.isTrue(server.isMounted(HOST, pathOf("target-nfs-prod")), "job 2 still holds it")
      assert.deepInclude(yield* Mount.unmount(request(2)), { unmounted: true, activeMountsRemaining: 0 })
      assert.deepStrictEqual(server.transitions, [
        { host: HOST, path: pathOf("target-nfs-prod"), to: "mounted" },
        { host: HOST, path: pathOf("target-nfs-prod"), to: "unmounted" }
      ])
      assert.deepStrictEqual(server.received.map((r) => [r.action, r.jobId]), [["mount", 1], ["mount", 2], ["unmount", 2]])
      assert.deepStrictEqual(server.mountedTargets(HOST), [])
    }).pipe(Effect.provide(TestDms.layer())))

  it.effect("each build of the layer is a fresh world", () =>
    Effect.gen(function*() {
      yield* Mount.mount(request(1)).pipe(Effect.provide(TestDms.layer()))
      const [active, server] = yield* Effect.all([Mount.getActiveMounts(), FakeDmsServer.FakeDmsServer]).pipe(
        Effect.provide(TestDms.layer())
      )
      assert.deepStrictEqual(active, [])
      assert.deepStrictEqual(server.received, [])
    }))

  it.effect("a scripted failure is the server's MountError; a predicate picks the request", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      server.fail((r) => r.jobId === 2, "Mount failed: Permission denied")
      yield* Mount.mount(request(1, "t1"))
      const error = yield* Effect.flip(Mount.mount(request(2, "t2")))
      assert.strictEqual(error._tag, "MountError")
      assert.deepInclude(error, { reason: "server", errorMsg: "Mount failed: Permission denied", backupTargetId: "t2" })
      assert.deepStrictEqual(server.mountedTargets(HOST), ["t1"])
      assert.deepStrictEqual((yield* Mount.getActiveMounts()).map((m) => m.jobId), [1], "the refused job holds nothing")
      yield* Mount.mount(request(2, "t2"))
      assert.deepStrictEqual(server.mountedTargets(HOST), ["t1", "t2"], "a script applies once by default")
      server.fail("unmount", "Unmount failed: device is busy", { times: 2 })
      for (const _ of [1, 2]) assert.strictEqual((yield* Effect.flip(Mount.unmount(request(1, "t1")))).message, "Unmount failed: device is busy")
      assert.isTrue((yield* Mount.unmount(request(1, "t1"))).unmounted)
    }).pipe(Effect.provide(TestDms.layer())))

  it.effect("a request held at the server: another target's job goes on meanwhile and finishes first", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      const done: Array<string> = []
      const held = server.hold((r) => r.targetId === "slow")
      const slow = yield* Mount.mount(request(1, "slow")).pipe(Effect.tap(() => done.push("job 1")), Effect.fork)
      yield* held.arrived
      yield* Mount.mount(request(2, "fast")).pipe(Effect.tap(() => done.push("job 2")))
      assert.deepStrictEqual(done, ["job 2"], "job 1 is still at the server")
      assert.isFalse(server.isMounted(HOST, pathOf("slow")))
      yield* held.release
      yield* Fiber.join(slow)
      assert.deepStrictEqual(done, ["job 2", "job 1"])
      assert.deepStrictEqual(server.mountedTargets(HOST), ["fast", "slow"])
    }).pipe(Effect.provide(TestDms.layer())))

  it.effect("a server slower than the timeout: TimeoutError { phase: 'reply' }; reconcile unmounts what it left", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      const held = server.hold("mount")
      const mount = yield* Effect.fork(Effect.flip(Mount.mount(request(1))))
      yield* held.arrived
      yield* TestClock.adjust("6 seconds")
      const error = yield* Fiber.join(mount)
      assert.strictEqual(error._tag, "TimeoutError")
      assert.strictEqual(error._tag === "TimeoutError" && error.phase, "reply")
      yield* held.release
      // The late mount completes on the host, as a real server's would.
      assert.strictEqual((yield* held.completed).status, "success")
      assert.isTrue(server.isMounted(HOST, pathOf("target-nfs-prod")))
      const report = yield* Reconcile.reconcile(HOST, { repair: true })
      assert.deepStrictEqual(report.pending.map((p) => [p.backupTargetId, p.op, p.action]), [["target-nfs-prod", "mount", "resolved"]])
      assert.isFalse(server.isMounted(HOST, pathOf("target-nfs-prod")))
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
    }).pipe(Effect.provide(TestDms.layer({ timeout: 5 }))))

  it.effect("a delayed reply on the TestClock: the mount waits for it", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      server.delay("mount", "2 seconds")
      const mount = yield* Effect.fork(Mount.mount(request(1)))
      yield* TestClock.adjust("1 second")
      assert.isFalse(server.isMounted(HOST, pathOf("target-nfs-prod")), "still delayed")
      yield* TestClock.adjust("1 second")
      assert.isTrue((yield* Fiber.join(mount)).physicallyMounted)
      assert.isTrue(server.isMounted(HOST, pathOf("target-nfs-prod")))
    }).pipe(Effect.provide(TestDms.layer())))

  it.effect("a host reboot behind the ledger's back: reconcile finds the stale target and remounts it", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      yield* Mount.mount(request(1))
      server.reboot(HOST)
      assert.isFalse(server.isMounted(HOST, pathOf("target-nfs-prod")))
      assert.isFalse(server.mounts.has(HOST), "asking does not give the rebooted host a mount table")
      const found = yield* Reconcile.reconcile(HOST)
      assert.deepStrictEqual(found.stale.map((s) => [s.backupTargetId, s.jobIds]), [["target-nfs-prod", [1]]])
      assert.isFalse(found.clean)
      const repaired = yield* Reconcile.reconcile(HOST, { repair: true, requests: [request(1)] })
      assert.deepStrictEqual(repaired.stale.map((s) => s.action), ["remounted"])
      assert.isTrue(server.isMounted(HOST, pathOf("target-nfs-prod")))
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "mounted"])
    }).pipe(Effect.provide(TestDms.layer())))

  it.effect("a server without status, as the Python one: reconcile says so", () =>
    Effect.gen(function*() {
      const report = yield* Reconcile.reconcile(HOST)
      assert.isFalse(report.statusSupported)
      assert.strictEqual(report.statusMessage, "Unknown action: status")
    }).pipe(Effect.provide(TestDms.layer({ server: FakeDmsServer.make({ supportsStatus: false }) }))))
})

describe("TestDms.client: a DMSClient on memory", () => {
  it("mounts and fails as the guide shows; the ledger outlives close()", async () => {
    const { client, server } = TestDms.client()
    try {
      assert.strictEqual((await client.mount(request(1))).status, "success")
      server.fail("mount", "Mount failed: Permission denied")
      assert.deepInclude(await client.mount(request(2, "other")), { status: "error", error_msg: "Mount failed: Permission denied" })
      await client.close()
      assert.deepStrictEqual((await client.getActiveMounts()).map((m) => [m.jobId, m.backupTargetId]), [[1, "target-nfs-prod"]])
      assert.deepInclude(await client.unmount({ ...request(1), action: "unmount" }), { status: "success", unmounted: true })
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
    } finally {
      await client.close()
    }
  })
})
