/**
 * mount / unmount / mountScoped over the memory ledger and the memory broker with a model server:
 * shared mounts, pending outcomes, idempotency, and releases. Interleavings are forced with Deferreds.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Broker from "../src/Broker.js"
import * as DmsConfig from "../src/DmsConfig.js"
import { DatabaseError, MountError, TimeoutError, ValidationError } from "../src/DmsError.js"
import * as Ledger from "../src/Ledger.js"
import * as Mount from "../src/Mount.js"
import * as Holds from "../src/internal/holds.js"
import * as FakeServer from "./support/fakeServer.js"

const HOST = "compute-01"
const PATH = "/var/lib/trilio/triliovault-mounts/t1"

const nfs = (jobid: number, overrides: { target?: string; host?: string; path?: string } = {}) => ({
  context: { user_id: "user-123", request_id: `req-${jobid}` },
  keystone_token: "token",
  job: { jobid, status: "running", action: "backup" },
  host: overrides.host ?? HOST,
  backup_target: {
    id: overrides.target ?? "t1",
    type: "nfs",
    filesystem_export: "192.168.1.100:/backups",
    filesystem_export_mount_path: overrides.path ?? PATH,
    nfs_mount_opts: "rw,sync,hard"
  }
})

/** A fresh model server, memory ledger and memory broker per test. */
const setup = (config: DmsConfig.Options = {}) => {
  const server = FakeServer.make()
  const state = Ledger.makeMemoryState()
  const layer = Layer.mergeAll(
    DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 5, lockTimeout: 30, ...config }),
    Ledger.layerMemory({ state }),
    Broker.layerMemory(server.handler)
  )
  return { server, layer, state }
}

const holders = (host = HOST, target = "t1") =>
  Effect.map(Mount.getActiveMounts({ host, backupTargetId: target }), (rows) => rows.map((r) => r.jobId).sort((a, b) => a - b))

describe("Mount", () => {
  it.live("N jobs mounting one target concurrently cause one physical mount; the last unmount one unmount message", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      const jobs = Array.from({ length: 8 }, (_, i) => 100 + i)
      const results = yield* Effect.forEach(jobs, (j) => Mount.mount(nfs(j)), { concurrency: "unbounded" })
      assert.strictEqual(results.filter((r) => r.physicallyMounted).length, 1)
      assert.strictEqual(results.filter((r) => r.reusedExisting).length, 7)
      assert.isTrue(results.every((r) => r.mountPath === PATH))
      assert.deepStrictEqual(yield* holders(), jobs)
      // Every mount asked the server (to verify), but the host changed state once.
      assert.strictEqual(server.received.filter((r) => r.action === "mount").length, 8)
      assert.deepStrictEqual(server.transitions, [{ host: HOST, path: PATH, to: "mounted" }])

      const unmounts = yield* Effect.forEach(jobs, (j) => Mount.unmount(nfs(j)), { concurrency: "unbounded" })
      assert.strictEqual(unmounts.filter((u) => u.unmounted).length, 1)
      assert.deepStrictEqual(unmounts.map((u) => u.activeMountsRemaining).sort(), [0, 1, 2, 3, 4, 5, 6, 7])
      assert.strictEqual(server.received.filter((r) => r.action === "unmount").length, 1)
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
      assert.deepStrictEqual(yield* holders(), [])
    }).pipe(Effect.provide(layer))
  })

  it.live("a mount racing the last unmount waits for it and remounts; never unmounted under a holder", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      const atServer = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      server.gate = (r) => r.action === "unmount" ? Deferred.succeed(atServer, undefined).pipe(Effect.zipRight(Deferred.await(gate))) : Effect.void
      const last = yield* Mount.unmount(nfs(1)).pipe(Effect.fork)
      yield* Deferred.await(atServer)
      const racer = yield* Mount.mount(nfs(2)).pipe(Effect.fork)
      yield* Deferred.succeed(gate, undefined)
      const u = yield* Fiber.join(last)
      const m = yield* Fiber.join(racer)
      assert.isTrue(u.unmounted)
      assert.isTrue(m.physicallyMounted)
      assert.isTrue(server.isMounted(HOST, PATH), "the racing job's mount is really there")
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted", "mounted"])
      assert.deepStrictEqual(yield* holders(), [2])
    }).pipe(Effect.provide(layer))
  })

  it.live("a host that lost the mount (reboot) is remounted by the next mount, not reported reused", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      server.reboot(HOST)
      const second = yield* Mount.mount(nfs(2))
      assert.isTrue(second.physicallyMounted)
      assert.isFalse(second.reusedExisting)
      assert.isTrue(server.isMounted(HOST, PATH))
    }).pipe(Effect.provide(layer))
  })

  it.live("the first holder is told it mounted even when the server answers \"already mounted\"", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      // The server mounted it for this very request, died before replying, and answered the redelivered
      // request after its restart (found by the model test, seed 381641672).
      server.mounts.set(HOST, new Map([[PATH, "t1"]]))
      const first = yield* Mount.mount(nfs(1))
      assert.isTrue(first.physicallyMounted)
      assert.isFalse(first.reusedExisting)
      const second = yield* Mount.mount(nfs(2))
      assert.isTrue(second.reusedExisting, "another job holds it: reused")
      assert.deepStrictEqual(yield* holders(), [1, 2])
    }).pipe(Effect.provide(layer))
  })

  it.live("a release whose ledger write committed but reported an error is found in the ledger: released, no phantom hold", () => {
    const server = FakeServer.make()
    const state = Ledger.makeMemoryState()
    // The connection dies after the commit: the write is done, but the write reports a DatabaseError.
    const lostAck = { armed: false }
    const flaky = Layer.map(Ledger.layerMemory({ state }), (ctx) => {
      // Without its release outside the lease: job 1's release is the lease's write.
      const { releaseShared: _, ...ledger } = Context.get(ctx, Ledger.Ledger)
      return Context.make(Ledger.Ledger, {
        ...ledger,
        withTargetLock: (id, host, body, options) =>
          ledger.withTargetLock(id, host, (lease) =>
            body({
              ...lease,
              write: (w) =>
                lostAck.armed && w.job?.mounted === false
                  ? Effect.zipRight(
                    Effect.sync(() => void (lostAck.armed = false)).pipe(Effect.zipRight(lease.write(w))),
                    Effect.fail(new DatabaseError({ operation: "ledger write", reason: "connection lost after commit" }))
                  )
                  : lease.write(w)
            }), options)
      })
    })
    const layer = Layer.mergeAll(
      DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 5, lockTimeout: 30 }),
      flaky,
      Broker.layerMemory(server.handler)
    )
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(2)) // another holder, so job 1's release is a ledger write only
      yield* Mount.mount(nfs(1))
      lostAck.armed = true
      // The failure is checked against the ledger before it is reported: the release is in it.
      const lost = yield* Mount.unmount(nfs(1))
      assert.deepInclude(lost, { unmounted: false, activeMountsRemaining: 1 })
      assert.isFalse(lostAck.armed, "the write did report a failure")
      const retried = yield* Effect.flip(Mount.unmount(nfs(1)))
      assert.strictEqual((retried as MountError).reason, "no-active-mount", "the write had committed")
      // Found by the model test (seed 381641672): the stale count made every later release of the job
      // only decrement it, and the row stayed active for ever.
      yield* Mount.mount(nfs(1))
      const released = yield* Mount.unmount(nfs(1))
      assert.isFalse(released.unmounted)
      assert.deepStrictEqual(yield* holders(), [2])
    }).pipe(Effect.provide(layer))
  })

  it.live("a mount whose reply timed out and that completed late is resolved by the next operation", () => {
    const { server, layer } = setup({ timeout: 0.3 })
    return Effect.gen(function*() {
      const late = yield* Deferred.make<void>()
      server.gate = (r) => (r.body.job as { jobid: number }).jobid === 1 ? Deferred.await(late) : Effect.void
      const error = yield* Effect.flip(Mount.mount(nfs(1)))
      assert.instanceOf(error, TimeoutError)
      assert.strictEqual((error as TimeoutError).phase, "reply")
      assert.deepStrictEqual(yield* holders(), [], "a mount that timed out records no holder")
      // The server completes it after the client gave up (it arrived before its deadline).
      server.gate = () => Effect.void
      yield* Deferred.succeed(late, undefined)
      yield* Effect.yieldNow()
      // The next operation resolves the unknown outcome first: no holders → unmount, then its own mount.
      const next = yield* Mount.mount(nfs(2))
      assert.isTrue(next.physicallyMounted)
      assert.deepStrictEqual(yield* holders(), [2])
      assert.isTrue(server.isMounted(HOST, PATH))
      const actions = server.received.map((r) => r.action)
      assert.deepStrictEqual(actions.slice(-2), ["unmount", "mount"])
    }).pipe(Effect.provide(layer))
  })

  it.live("a mount of unknown outcome is undone at its own path, even when the next request names another", () => {
    const { server, layer } = setup({ timeout: 0.3 })
    const other = "/var/lib/trilio/triliovault-mounts/t1-moved"
    return Effect.gen(function*() {
      const late = yield* Deferred.make<void>()
      server.gate = (r) => (r.body.job as { jobid: number }).jobid === 1 ? Deferred.await(late) : Effect.void
      assert.instanceOf(yield* Effect.flip(Mount.mount(nfs(1))), TimeoutError)
      server.gate = () => Effect.void
      yield* Deferred.succeed(late, undefined)
      yield* Effect.yieldNow()
      assert.isTrue(server.isMounted(HOST, PATH), "the timed-out mount completed late")
      // Nobody holds the target, so job 2 may mount it elsewhere; the late mount must not leak.
      const next = yield* Mount.mount(nfs(2, { path: other }))
      assert.isTrue(next.physicallyMounted)
      assert.isFalse(server.isMounted(HOST, PATH), "the late mount was unmounted where it landed")
      assert.isTrue(server.isMounted(HOST, other))
      assert.deepStrictEqual(server.received.slice(-2).map((r) => [r.action, r.path]), [["unmount", PATH], ["mount", other]])
    }).pipe(Effect.provide(layer))
  })

  it.live("an operation that ends before publishing leaves no pending mark, so the next one waits for nothing", () => {
    const { server, layer, state } = setup({ timeout: 30 })
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      // Refused under the lease before anything is sent: another path while job 1 holds the target,
      // and an unmount by a job that holds nothing.
      assert.instanceOf(yield* Effect.flip(Mount.mount(nfs(2, { path: "/var/lib/trilio/triliovault-mounts/x" }))), ValidationError)
      const none = yield* Effect.flip(Mount.unmount(nfs(3)))
      assert.strictEqual((none as MountError).reason, "no-active-mount")
      assert.isTrue([...state.locks.values()].every((l) => l.pending === null && l.owner === null))
      // With a 30 s request timeout, a leftover mark would make this wait 31 s (the test times out first).
      yield* Mount.unmount(nfs(1))
      assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "unmount"])
    }).pipe(Effect.provide(layer))
  })

  it.live("a late unmount never pulls a mount that a newer job holds", () => {
    const { server, layer } = setup({ timeout: 0.3 })
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      const late = yield* Deferred.make<void>()
      server.gate = (r) => (r.action === "unmount" ? Deferred.await(late) : Effect.void)
      const error = yield* Effect.flip(Mount.unmount(nfs(1)))
      assert.instanceOf(error, TimeoutError)
      assert.deepStrictEqual(yield* holders(), [1], "only the unmount's success flips the row")
      server.gate = () => Effect.void
      yield* Deferred.succeed(late, undefined) // the late unmount runs now
      yield* Effect.yieldNow()
      const next = yield* Mount.mount(nfs(2))
      assert.isTrue(server.isMounted(HOST, PATH), "job 2 holds a mount that is really there")
      assert.isTrue(next.physicallyMounted, "remounted during this call")
      assert.isFalse(next.reusedExisting)
      assert.deepStrictEqual(yield* holders(), [1, 2])
    }).pipe(Effect.provide(layer))
  })

  it.live("a mount of target A blocked in the server does not delay target B", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const atServer = yield* Deferred.make<void>()
      server.gate = (r) => r.targetId === "A" ? Deferred.succeed(atServer, undefined).pipe(Effect.zipRight(Deferred.await(gate))) : Effect.void
      const a = yield* Mount.mount(nfs(1, { target: "A", path: "/m/a" })).pipe(Effect.fork)
      yield* Deferred.await(atServer)
      const b = yield* Mount.mount(nfs(2, { target: "B", path: "/m/b" }))
      assert.isTrue(b.physicallyMounted)
      assert.isNull(yield* Fiber.poll(a).pipe(Effect.map(Option.getOrNull)), "A is still waiting")
      yield* Deferred.succeed(gate, undefined)
      yield* Fiber.join(a)
    }).pipe(Effect.provide(layer))
  })

  it.live("every call repeated 10 times gives the same outcome and ledger: a repeated mount holds once", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      for (let i = 0; i < 10; i++) {
        const r = yield* Mount.mount(nfs(7))
        assert.strictEqual(r.mountPath, PATH)
      }
      assert.strictEqual((yield* Mount.getLedgerHistory("t1")).length, 1)
      assert.deepStrictEqual(yield* holders(), [7])
      // A repeated mount is a no-op: job 7 holds the target once, and one unmount releases it.
      assert.isTrue((yield* Mount.unmount(nfs(7))).unmounted)
      for (let i = 0; i < 10; i++) {
        const e = yield* Effect.flip(Mount.unmount(nfs(7)))
        assert.instanceOf(e, MountError)
        assert.strictEqual((e as MountError).reason, "no-active-mount")
        assert.strictEqual(e.message, "No active mount found for this job")
      }
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
      const history = yield* Mount.getLedgerHistory("t1")
      assert.deepStrictEqual(history.map((h) => [h.jobId, h.mounted]), [[7, false]])
    }).pipe(Effect.provide(layer))
  })

  it.live("a server error leaves the ledger true: no row on mount, still mounted on the last unmount", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      server.failNext = { action: "mount", message: "Mount failed: Permission denied" }
      const e1 = yield* Effect.flip(Mount.mount(nfs(1)))
      assert.instanceOf(e1, MountError)
      assert.deepInclude(e1 as MountError, { reason: "server", errorMsg: "Mount failed: Permission denied" })
      assert.deepStrictEqual(yield* holders(), [])
      yield* Mount.mount(nfs(1))
      server.failNext = { action: "unmount", message: "umount: target is busy" }
      const e2 = yield* Effect.flip(Mount.unmount(nfs(1)))
      assert.strictEqual(e2.message, "umount: target is busy")
      assert.deepStrictEqual(yield* holders(), [1])
      assert.isTrue((yield* Mount.unmount(nfs(1))).unmounted, "a retry succeeds")
      assert.deepStrictEqual(yield* holders(), [])
    }).pipe(Effect.provide(layer))
  })

  it.live("bad input fails before any I/O: nothing sent, nothing written", () => {
    const { server, layer, state } = setup()
    return Effect.gen(function*() {
      const bad: Array<unknown> = [
        { ...nfs(1), job: { jobid: "job-12345" } },
        { ...nfs(1), backup_target: { ...nfs(1).backup_target, filesystem_export: null } },
        null
      ]
      const isValidationError = (e: unknown) => assert.isTrue(e instanceof ValidationError, String(e))
      for (const request of bad) {
        isValidationError(yield* Effect.flip(Mount.mount(request)))
        isValidationError(yield* Effect.flip(Mount.unmount(request)))
      }
      // An S3 mount needs a token (unmounting does not): without one in the request or the config.
      const s3 = { ...nfs(1), keystone_token: null, backup_target: { id: "s3t", type: "s3", secret_ref: "http://barbican/s", filesystem_export_mount_path: "/m/s3" } }
      const noToken = yield* Effect.flip(Mount.mount(s3))
      isValidationError(noToken)
      assert.include(noToken.message, "keystone_token")
      assert.deepStrictEqual(server.received, [])
      assert.strictEqual(state.locks.size, 0)
      assert.strictEqual(state.rows.length, 0)
    }).pipe(Effect.provide(layer))
  })

  it.live("an S3 request without a token uses KEYSTONE_TOKEN from the configuration", () => {
    const { server, layer } = setup({ keystoneToken: "from-config" })
    return Effect.gen(function*() {
      const s3 = { job: { jobid: 1 }, host: HOST, backup_target: { id: "s3t", type: "s3", secret_ref: "http://barbican/s", filesystem_export_mount_path: "/m/s3" } }
      yield* Mount.mount(s3)
      assert.strictEqual(server.received[0]!.body.keystone_token, "from-config")
      assert.strictEqual(server.received[0]!.body.action, "mount")
    }).pipe(Effect.provide(layer))
  })

  it.live("only an S3 mount carries a token: NFS mounts, unmounts and forced deletes do not; the KEYSTONE_TOKEN fallback is warned without the token", () => {
    const { server, layer } = setup({ keystoneToken: "from-config-token" })
    const logged: Array<string> = []
    const logger = Logger.make(({ annotations, message }) => void logged.push(`${String(message)} ${JSON.stringify([...HashMap.entries(annotations)])}`))
    return Effect.gen(function*() {
      const s3 = (jobid: number, token?: string) => ({
        job: { jobid },
        host: HOST,
        ...(token === undefined ? {} : { keystone_token: token }),
        backup_target: { id: "s3t", type: "s3", secret_ref: "https://barbican.example/v1/secrets/s", filesystem_export_mount_path: "/m/s3" }
      })
      yield* Mount.mount(nfs(1))
      yield* Mount.unmount(nfs(1))
      yield* Mount.mount(nfs(2))
      yield* Mount.softDeleteEntry(2, "t1", { force: true })
      yield* Mount.mount(s3(3))
      yield* Mount.mount(s3(4, "own-token"))
      yield* Mount.unmount(s3(3, "own-token"))
      yield* Mount.unmount(s3(4))
      assert.deepStrictEqual(
        server.received.map((r) => [r.action, (r.body.backup_target as { type: string }).type, r.body.keystone_token]),
        [
          ["mount", "nfs", undefined],
          ["unmount", "nfs", undefined],
          ["mount", "nfs", undefined],
          ["unmount", "nfs", undefined],
          ["mount", "s3", "from-config-token"],
          ["mount", "s3", "own-token"],
          ["unmount", "s3", undefined]
        ]
      )
      assert.isTrue(server.received.every((r) => r.action === "mount" && (r.body.backup_target as { type: string }).type === "s3" || !("keystone_token" in r.body)))
      const warnings = logged.filter((l) => l.includes("using KEYSTONE_TOKEN"))
      assert.strictEqual(warnings.length, 1, "warned once: job 4 brought its own token")
      assert.include(warnings[0]!, "https://barbican.example/v1/secrets/s")
      assert.notInclude(logged.join("\n"), "from-config-token")
    }).pipe(Effect.provide(layer), Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
  })

  it.live("a target has one mount path per host while it is held", () => {
    const { layer } = setup()
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      const e = yield* Effect.flip(Mount.mount(nfs(2, { path: "/elsewhere" })))
      assert.instanceOf(e, ValidationError)
      assert.deepStrictEqual(yield* holders(), [1])
      yield* Mount.unmount(nfs(1))
      assert.strictEqual((yield* Mount.mount(nfs(2, { path: "/elsewhere" }))).mountPath, "/elsewhere")
    }).pipe(Effect.provide(layer))
  })
})

describe("Mount.mountScoped", () => {
  it.live("a scope's release that is retried gives its scope back once: another open scope of the job keeps the target", () => {
    const server = FakeServer.make()
    // The first lease taken after arming fails its read, as a dropped connection would: the release retries.
    const failNextRead = { armed: false }
    const flaky = Layer.map(Ledger.layerMemory(), (ctx) => {
      const ledger = Context.get(ctx, Ledger.Ledger)
      return Context.make(Ledger.Ledger, {
        ...ledger,
        withTargetLock: (id, host, body, options) =>
          ledger.withTargetLock(id, host, (lease) =>
            body({
              ...lease,
              read: (jobId) =>
                failNextRead.armed
                  ? Effect.zipRight(
                    Effect.sync(() => void (failNextRead.armed = false)),
                    Effect.fail(new DatabaseError({ operation: "read", reason: "connection lost" }))
                  )
                  : lease.read(jobId)
            }), options)
      })
    })
    const layer = Layer.mergeAll(
      DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 5, lockTimeout: 30 }),
      flaky,
      Broker.layerMemory(server.handler)
    )
    return Effect.gen(function*() {
      const vm1Done = yield* Deferred.make<void>()
      const vm2In = yield* Deferred.make<void>()
      const vm1 = yield* Mount.withMount(nfs(5), () =>
        Effect.zipRight(Deferred.await(vm2In), Effect.sync(() => void (failNextRead.armed = true)))).pipe(
          Effect.zipRight(Deferred.succeed(vm1Done, undefined)),
          Effect.fork
        )
      yield* Mount.withMount(nfs(5), () =>
        Effect.gen(function*() {
          yield* Deferred.succeed(vm2In, undefined)
          yield* Deferred.await(vm1Done)
          assert.isFalse(failNextRead.armed, "vm1's release failed once and was retried")
          assert.isTrue(server.isMounted(HOST, PATH), "vm2's scope still holds it after vm1's retried release")
        }))
      yield* Fiber.join(vm1)
      assert.isFalse(server.isMounted(HOST, PATH))
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
    }).pipe(Effect.provide(layer))
  })

  it.live("releases on success, on failure and on interruption", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      const path = yield* Mount.withMount(nfs(1), (m) => Effect.succeed(m.mountPath))
      assert.strictEqual(path, PATH)
      assert.isFalse(server.isMounted(HOST, PATH))

      const failed = yield* Effect.exit(Mount.withMount(nfs(2), () => Effect.fail("backup failed" as const)))
      assert.deepStrictEqual(failed, Exit.fail("backup failed" as const))
      assert.isFalse(server.isMounted(HOST, PATH))

      const inside = yield* Deferred.make<void>()
      const fiber = yield* Mount.withMount(nfs(3), () => Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Effect.never))).pipe(Effect.fork)
      yield* Deferred.await(inside)
      assert.isTrue(server.isMounted(HOST, PATH))
      yield* Fiber.interrupt(fiber)
      assert.isFalse(server.isMounted(HOST, PATH))
      assert.deepStrictEqual(yield* holders(), [])
    }).pipe(Effect.provide(layer))
  })

  it.live("a failing release is retried, and never masks the body's error", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      const exit = yield* Effect.exit(
        Mount.withMount(nfs(1), () =>
          Effect.sync(() => (server.failNext = { action: "unmount", message: "umount: target is busy" })).pipe(
            Effect.zipRight(Effect.fail("body error" as const))
          ))
      )
      assert.deepStrictEqual(exit, Exit.fail("body error" as const))
      assert.strictEqual(server.received.filter((r) => r.action === "unmount").length, 2, "failed once, retried once")
      assert.isFalse(server.isMounted(HOST, PATH))
    }).pipe(Effect.provide(layer))
  })

  it.live("two holds of one job in one process: only the last release unmounts", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      const firstDone = yield* Deferred.make<void>()
      const secondIn = yield* Deferred.make<void>()
      const vm1 = yield* Mount.withMount(nfs(5), () => Deferred.await(secondIn)).pipe(
        Effect.zipRight(Deferred.succeed(firstDone, undefined)),
        Effect.fork
      )
      yield* Mount.withMount(nfs(5), () =>
        Effect.gen(function*() {
          yield* Deferred.succeed(secondIn, undefined)
          yield* Deferred.await(firstDone)
          assert.isTrue(server.isMounted(HOST, PATH), "still mounted after the first VM's release")
        }))
      yield* Fiber.join(vm1)
      assert.isFalse(server.isMounted(HOST, PATH))
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
    }).pipe(Effect.provide(layer))
  })
})

describe("Mount.softDeleteEntry", () => {
  it.live("refuses a mounted row without force; with force unmounts it first (as the last holder)", () => {
    const { server, layer } = setup()
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      assert.isFalse(yield* Mount.softDeleteEntry(1, "t1"))
      assert.isTrue(server.isMounted(HOST, PATH))
      assert.isTrue(yield* Mount.softDeleteEntry(1, "t1", { force: true }))
      assert.isFalse(server.isMounted(HOST, PATH))
      assert.isTrue(Option.isNone(yield* Mount.getMountStatus(1, "t1")))
      const [row] = yield* Mount.getLedgerHistory("t1")
      assert.deepInclude(row!, { mounted: false, deleted: true })
    }).pipe(Effect.provide(layer))
  })
})

describe("Mount metrics", () => {
  it.live("count calls by operation and outcome, and record their duration", () => {
    const { server, layer } = setup()
    const count = (operation: string, outcome: string) =>
      Metric.value(Mount.operationsTotal.pipe(Metric.tagged("operation", operation), Metric.tagged("outcome", outcome))).pipe(
        Effect.map((s) => s.count)
      )
    const durations = Metric.value(Mount.operationDuration.pipe(Metric.tagged("operation", "mount"))).pipe(Effect.map((s) => s.count))
    return Effect.gen(function*() {
      const before = yield* Effect.all([count("mount", "success"), count("mount", "ValidationError"), count("unmount", "MountError"), durations])
      yield* Mount.mount(nfs(1))
      yield* Effect.flip(Mount.mount({ job: { jobid: "x" } }))
      server.failNext = { action: "unmount", message: "busy" }
      yield* Effect.flip(Mount.unmount(nfs(1)))
      const after = yield* Effect.all([count("mount", "success"), count("mount", "ValidationError"), count("unmount", "MountError"), durations])
      assert.deepStrictEqual(after.map((a, i) => a - before[i]!), [1, 1, 1, 2])
    }).pipe(Effect.provide(layer))
  })
})

/** A memory ledger over `state` that counts the leases taken and the releases tried without one. */
const counting = (state: Ledger.MemoryState, counts: { leases: number; shared: number }) =>
  Layer.map(Ledger.layerMemory({ state }), (ctx) => {
    const ledger = Context.get(ctx, Ledger.Ledger)
    return Context.make(Ledger.Ledger, {
      ...ledger,
      withTargetLock: (id, host, body, options) =>
        Effect.suspend(() => {
          counts.leases++
          return ledger.withTargetLock(id, host, body, options)
        }),
      releaseShared: (id, host, body, options) =>
        ledger.releaseShared!(id, host, (release) =>
          body((jobId, mountPath) =>
            Effect.suspend(() => {
              counts.shared++
              return release(jobId, mountPath)
            })), options)
    })
  })

describe("Mount: a release that other jobs keep mounted", () => {
  it.live("is one conditional statement: no lease, no message; scopes of the job still open keep the row; the last holder unmounts", () => {
    const server = FakeServer.make()
    const counts = { leases: 0, shared: 0 }
    const layer = Layer.mergeAll(
      DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 5, lockTimeout: 30 }),
      counting(Ledger.makeMemoryState(), counts),
      Broker.layerMemory(server.handler)
    )
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      yield* Mount.mount(nfs(2))
      yield* Mount.acquire(nfs(5))
      yield* Mount.acquire(nfs(5))
      const before = { ...counts }
      const released = yield* Mount.unmount(nfs(1))
      assert.deepInclude(released, { unmounted: false, activeMountsRemaining: 2 })
      assert.deepStrictEqual(counts, { leases: before.leases, shared: before.shared + 1 }, "no lease taken")
      assert.deepStrictEqual(yield* holders(), [2, 5])
      // A scope of job 5 ends while another is open: the row stays, and no release is tried without the lease.
      yield* Mount.release(nfs(5))
      assert.deepStrictEqual(counts, { leases: before.leases + 1, shared: before.shared + 1 })
      assert.deepStrictEqual(yield* holders(), [2, 5])
      yield* Mount.release(nfs(5))
      assert.deepStrictEqual(counts, { leases: before.leases + 1, shared: before.shared + 2 })
      assert.deepStrictEqual(yield* holders(), [2])
      // The last holder: tried, refused, and unmounted under the lease.
      const last = yield* Mount.unmount(nfs(2))
      assert.deepInclude(last, { unmounted: true, activeMountsRemaining: 0 })
      assert.deepStrictEqual(counts, { leases: before.leases + 2, shared: before.shared + 3 })
      assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "mount", "mount", "mount", "unmount"])
      const none = yield* Effect.flip(Mount.unmount(nfs(1)))
      assert.strictEqual((none as MountError).reason, "no-active-mount")
    }).pipe(Effect.provide(layer))
  })

  it.live("at another path than the recorded one fails as it always did, and releases nothing", () => {
    const { layer, server } = setup()
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(1))
      yield* Mount.mount(nfs(2))
      const error = yield* Effect.flip(Mount.unmount(nfs(1, { path: "/var/lib/trilio/triliovault-mounts/other" })))
      assert.instanceOf(error, ValidationError)
      assert.include(error.message, PATH)
      assert.deepStrictEqual(yield* holders(), [1, 2])
      assert.isFalse(server.received.some((r) => r.action === "unmount"))
    }).pipe(Effect.provide(layer))
  })

  it.live("a scope of the job mounted through another client of this process meanwhile is never released with it", () => {
    const server = FakeServer.make()
    const state = Ledger.makeMemoryState()
    const config = DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 5, lockTimeout: 30 })
    const decided = Deferred.unsafeMake<void>(FiberId.none)
    const go = Deferred.unsafeMake<void>(FiberId.none)
    // Client A stops after it read the job's holds (none but its plain mount), just before its statement.
    const paused = Layer.map(Ledger.layerMemory({ state }), (ctx) => {
      const ledger = Context.get(ctx, Ledger.Ledger)
      return Context.make(Ledger.Ledger, {
        ...ledger,
        releaseShared: (id, host, body, options) =>
          ledger.releaseShared!(id, host, (release) =>
            body((jobId, mountPath) =>
              Deferred.succeed(decided, undefined).pipe(Effect.zipRight(Deferred.await(go)), Effect.zipRight(release(jobId, mountPath))))
            , options)
      })
    })
    const a = Layer.mergeAll(config, paused, Broker.layerMemory(server.handler))
    const b = Layer.mergeAll(config, Ledger.layerMemory({ state }), Broker.layerMemory(server.handler))
    return Effect.gen(function*() {
      yield* Mount.mount(nfs(2)).pipe(Effect.provide(b))
      yield* Mount.mount(nfs(1)).pipe(Effect.provide(a))
      const location = yield* Effect.map(Ledger.Ledger, (l) => l.location).pipe(Effect.provide(b))
      const plainUnmount = yield* Mount.unmount(nfs(1)).pipe(Effect.provide(a), Effect.fork)
      yield* Deferred.await(decided)
      // Client B opens a scope of job 1: it holds the lease, and its final write waits for A's release.
      const scope = yield* Mount.acquire(nfs(1)).pipe(Effect.provide(b), Effect.fork)
      const key = { location, jobId: 1, targetId: "t1", host: HOST }
      // (Or, were its write not made to wait, until it is done.)
      yield* Effect.zipWith(Effect.sync(() => Holds.waiting(key)), Fiber.poll(scope), (n, done) => n > 0 || Option.isSome(done)).pipe(
        Effect.repeat({ schedule: Schedule.spaced("1 millis"), until: (ready) => ready }),
        Effect.timeout("10 seconds")
      )
      yield* Deferred.succeed(go, undefined)
      yield* Fiber.join(scope)
      const released = yield* Fiber.join(plainUnmount)
      // A's statement found the lease taken; under the lease it found B's scope, which keeps the row.
      assert.deepInclude(released, { unmounted: false })
      assert.include(released.message, "1 open scope(s) of the job in this process keep it")
      assert.deepStrictEqual(yield* holders().pipe(Effect.provide(b)), [1, 2])
      yield* Mount.release(nfs(1)).pipe(Effect.provide(b))
      assert.deepStrictEqual(yield* holders().pipe(Effect.provide(b)), [2])
    })
  })
})
