/**
 * reconcile: one suite over the memory, SQLite and MariaDB ledgers with a model server behind the
 * memory broker (stale after a host reboot, an orphan left by a mount that completed after its client
 * timed out, pending marks, a mount racing a repair, a server without `status`, bad input), and one
 * run against the real DMS server over RabbitMQ (tmpfs plays NFS), so the status format is the real one.
 */
import { afterAll, assert, describe, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Broker from "../src/Broker.js"
import * as Dms from "../src/Dms.js"
import * as DmsConfig from "../src/DmsConfig.js"
import { TimeoutError, ValidationError } from "../src/DmsError.js"
import * as Ledger from "../src/Ledger.js"
import * as Mount from "../src/Mount.js"
import * as Reconcile from "../src/Reconcile.js"
import * as Barbican from "../src/server/Barbican.js"
import * as CommandRunner from "../src/server/CommandRunner.js"
import * as Mounter from "../src/server/Mounter.js"
import * as MountInfo from "../src/server/MountInfo.js"
import * as Server from "../src/server/Server.js"
import { Backend, backends } from "./support/backends.js"
import { type Call, playNfsMount, recordingRunner, rpc, serverDirs, sh } from "./support/dmsServer.js"
import * as FakeServer from "./support/fakeServer.js"
import { TestDatabase, TestDatabaseLive } from "./support/mysql.js"
import { deleteOnClose, RABBIT_URL, sweepQueues, uniqueHost } from "./support/rabbit.js"

afterAll(sweepQueues)

const unique = (label: string) => `${label}-${randomBytes(4).toString("hex")}`
const pathOf = (target: string) => `/var/lib/trilio/triliovault-mounts/${target}`

const nfs = (jobid: number, target: string, host: string, mountPath = pathOf(target)) => ({
  keystone_token: "token",
  job: { jobid },
  host,
  backup_target: {
    id: target,
    type: "nfs",
    filesystem_export: "192.168.1.100:/backups",
    filesystem_export_mount_path: mountPath,
    nfs_mount_opts: "rw,sync,hard"
  }
})

/** A model server, a new Ledger over the backend's tables, the memory broker, and a host of its own. */
const setup = (config: Partial<DmsConfig.Options> = {}) =>
  Effect.gen(function*() {
    const ledger = yield* (yield* Backend).build()
    const server = FakeServer.make()
    const context = yield* Layer.build(
      Layer.mergeAll(
        DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 5, lockTimeout: 30, ...config }),
        Layer.succeed(Ledger.Ledger, ledger),
        Broker.layerMemory(server.handler)
      )
    )
    const run = <A, E>(effect: Effect.Effect<A, E, Mount.Services>) => Effect.provide(effect, context)
    return { ledger, server, run, host: unique("compute") }
  })

/** Waits for the model server to finish a request it let through late (its handler runs on its own fiber). */
const settled = (check: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 1000 && !check(); i++) yield* Effect.sleep("1 millis")
    assert.isTrue(check(), "the model server finished the late request")
  })

/**
 * Waits until no stale request of a pending mark can run any more. The rule is about time (after its
 * deadline the broker drops the request and the server refuses it), so only the clock can settle it.
 */
const pastDeadline = (ledger: Ledger.Service, host: string, target: string) =>
  Effect.gen(function*() {
    const lock = (yield* ledger.getHostState(host)).locks.find((l) => l.backupTargetId === target)
    const pending = Option.getOrThrow(Option.flatMap(Option.fromNullable(lock), (l) => l.pending))
    const wait = pending.remainingMs + Duration.toMillis(Mount.PENDING_GRACE) + 20
    if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
  })

/** Writes a pending mark as a client killed mid-request leaves it, due `timeoutMs` from now (negative: long past). */
const leaveMark = (ledger: Ledger.Service, host: string, target: string, op: "mount" | "unmount", timeoutMs: number) =>
  ledger.withTargetLock(target, host, (lease) =>
    lease.write({ pending: { op, timeoutMs }, mountPath: pathOf(target), targetType: "nfs" }))

const actions = (server: FakeServer.FakeServer, host: string) =>
  server.received.filter((r) => r.host === host).map((r) => r.action)

for (const [name, backendLayer] of backends) {
  describe(`Reconcile (${name})`, () => {
    layer(backendLayer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
      it.scoped("stale after a host reboot: reported; repair marks it, and the next release remounts it first", () =>
        Effect.gen(function*() {
          const { host, ledger, run, server } = yield* setup()
          const t = unique("t")
          yield* run(Mount.mount(nfs(1, t, host)))
          yield* run(Mount.mount(nfs(2, t, host)))
          server.reboot(host)
          const sent = server.received.length

          const report = yield* run(Reconcile.reconcile(host))
          assert.isTrue(report.statusSupported)
          assert.deepStrictEqual(report.held, [{ backupTargetId: t, mountPath: pathOf(t), jobIds: [1, 2], onHost: false }])
          assert.deepStrictEqual(report.stale.map((s) => [s.backupTargetId, s.jobIds, s.action, s.reason]), [
            [t, [1, 2], "none", "the host does not have it mounted"]
          ])
          assert.deepStrictEqual([report.orphans, report.pending], [[], []])
          assert.deepInclude(report.counts, { stale: 1, remaining: 1, repaired: 0 })
          assert.isFalse(report.clean)
          assert.deepStrictEqual(server.received.slice(sent).map((r) => r.action), ["status"], "a report changes nothing")

          const repaired = yield* run(Reconcile.reconcile(host, { repair: true }))
          assert.strictEqual(repaired.stale[0]!.action, "marked")
          assert.match(repaired.stale[0]!.detail, /next operation on the target \(even a release\) remounts it/)
          assert.deepInclude(repaired.counts, { marked: 1, remaining: 0 })
          assert.isFalse(repaired.clean, "the host still lacks it")
          assert.isFalse(server.isMounted(host, pathOf(t)), "without a request nothing can be remounted")

          // Job 1 is not the last holder: a release sends nothing, except that the mark makes it remount first.
          const released = yield* run(Mount.unmount(nfs(1, t, host)))
          assert.isFalse(released.unmounted)
          assert.isTrue(server.isMounted(host, pathOf(t)), "remounted for job 2, which still holds it")
          assert.deepStrictEqual(actions(server, host).slice(-1), ["mount"])
          const after = yield* run(Reconcile.reconcile(host, { repair: true }))
          assert.isTrue(after.clean)
          assert.deepStrictEqual(after.held.map((h) => [h.jobIds, h.onHost]), [[[2], true]])
          assert.isTrue(Option.isNone((yield* ledger.getHostState(host)).locks[0]!.pending))
        }))

      it.scoped("stale with its request: remounted at once", () =>
        Effect.gen(function*() {
          const { host, ledger, run, server } = yield* setup()
          const t = unique("t")
          const other = unique("t")
          yield* run(Mount.mount(nfs(1, t, host)))
          yield* run(Mount.mount(nfs(3, other, host)))
          server.reboot(host)
          const report = yield* run(Reconcile.reconcile(host, { repair: true, requests: [nfs(1, t, host)] }))
          const byTarget = new Map(report.stale.map((s) => [s.backupTargetId, s.action]))
          assert.strictEqual(byTarget.get(t), "remounted")
          assert.strictEqual(byTarget.get(other), "marked", "no request for it")
          assert.isTrue(server.isMounted(host, pathOf(t)))
          assert.isFalse(server.isMounted(host, pathOf(other)))
          const state = yield* ledger.getHostState(host)
          assert.isTrue(Option.isNone(state.locks.find((l) => l.backupTargetId === t)!.pending), "nothing left pending")
          assert.isTrue(Option.isSome(state.locks.find((l) => l.backupTargetId === other)!.pending), "marked")
        }))

      it.scoped("orphan after a mount that completed after its client timed out: reported with its mark, unmounted by the repair", () =>
        Effect.gen(function*() {
          const { host, ledger, run, server } = yield* setup({ timeout: 0.3 })
          const t = unique("t")
          const late = yield* Deferred.make<void>()
          server.gate = (r) => (r.action === "mount" ? Deferred.await(late) : Effect.void)
          const error = yield* Effect.flip(run(Mount.mount(nfs(1, t, host))))
          assert.instanceOf(error, TimeoutError)
          server.gate = () => Effect.void
          yield* Deferred.succeed(late, undefined) // the server completes it after the client gave up
          yield* settled(() => server.isMounted(host, pathOf(t)))

          const report = yield* run(Reconcile.reconcile(host))
          assert.deepStrictEqual(report.orphans.map((o) => [o.backupTargetId, o.mountPath, o.action]), [[t, pathOf(t), "none"]])
          assert.deepStrictEqual(report.pending.map((p) => [p.backupTargetId, p.op, p.jobIds]), [[t, "mount", []]])
          assert.deepStrictEqual(report.stale, [])

          yield* pastDeadline(ledger, host, t)
          const repaired = yield* run(Reconcile.reconcile(host, { repair: true }))
          assert.strictEqual(repaired.pending[0]!.action, "resolved")
          assert.strictEqual(repaired.orphans[0]!.action, "unmounted")
          assert.isFalse(server.isMounted(host, pathOf(t)))
          assert.deepStrictEqual(server.transitions.filter((x) => x.host === host).map((x) => x.to), ["mounted", "unmounted"])
          assert.isTrue((yield* run(Reconcile.reconcile(host))).clean)
        }))

      it.scoped("pending marks of a killed client are resolved: the host driven to the ledger's state", () =>
        Effect.gen(function*() {
          const { host, ledger, run, server } = yield* setup()
          const held = unique("held")
          const free = unique("free")
          yield* run(Mount.mount(nfs(5, held, host)))
          const longAgo = -60_000
          yield* leaveMark(ledger, host, held, "mount", longAgo)
          yield* leaveMark(ledger, host, free, "unmount", longAgo)
          const report = yield* run(Reconcile.reconcile(host, { repair: true }))
          const pending = new Map(report.pending.map((p) => [p.backupTargetId, p]))
          assert.isTrue(pending.get(held)!.expired)
          assert.deepInclude(pending.get(held)!, { action: "resolved", jobIds: [5] })
          assert.match(pending.get(held)!.detail, /the host has it mounted, as the ledger says/)
          assert.deepInclude(pending.get(free)!, { action: "resolved", jobIds: [] })
          assert.isTrue(server.isMounted(host, pathOf(held)))
          assert.isTrue(report.clean)
          assert.isTrue((yield* ledger.getHostState(host)).locks.every((l) => Option.isNone(l.pending)))
        }))

      it.scoped("a pending mark whose deadline has not passed is not settled: the pair is left untouched", () =>
        Effect.gen(function*() {
          const { host, ledger, run, server } = yield* setup()
          const t = unique("t")
          // A client died mid-request; its request may still reach the server until the deadline.
          server.mounts.set(host, new Map([[pathOf(t), t]]))
          yield* leaveMark(ledger, host, t, "mount", 60_000)
          const { deadline } = Option.getOrThrow((yield* ledger.getHostState(host)).locks[0]!.pending)
          const report = yield* run(Reconcile.reconcile(host, { repair: true }))
          assert.deepStrictEqual(report.pending.map((p) => [p.backupTargetId, p.expired, p.action]), [[t, false, "left"]])
          assert.deepStrictEqual(report.orphans.map((o) => [o.backupTargetId, o.action]), [[t, "left"]])
          assert.include(report.orphans[0]!.detail, `may still run until ${deadline.toISOString()}`)
          assert.isTrue(server.isMounted(host, pathOf(t)))
          assert.deepStrictEqual(actions(server, host), ["status"], "nothing sent but the status query")
          const lock = (yield* ledger.getHostState(host)).locks[0]!
          assert.strictEqual(Option.getOrThrow(lock.pending).deadline.getTime(), deadline.getTime(), "the mark stays")
          assert.isFalse(report.clean)
        }))

      it.scoped("a mount racing a repair: an orphan held before the repair's lease is not unmounted", () =>
        Effect.gen(function*() {
          const { host, run, server } = yield* setup()
          const t = unique("t")
          // A mount on the host that no job holds (its record was lost).
          server.mounts.set(host, new Map([[pathOf(t), t]]))
          const atMount = yield* Deferred.make<void>()
          const releaseMount = yield* Deferred.make<void>()
          const atStatus = yield* Deferred.make<void>()
          server.gate = (r) =>
            r.action === "mount"
              ? Deferred.succeed(atMount, undefined).pipe(Effect.zipRight(Deferred.await(releaseMount)))
              : r.action === "status"
              ? Deferred.succeed(atStatus, undefined)
              : Effect.void
          // Job 2's mount holds the pair's lease and waits at the server…
          const job = yield* Effect.fork(run(Mount.mount(nfs(2, t, host))))
          yield* Deferred.await(atMount)
          // …while reconcile reads the ledger (no holder yet) and the host's status (mounted): an orphan.
          const reconciling = yield* Effect.fork(run(Reconcile.reconcile(host, { repair: true })))
          yield* Deferred.await(atStatus)
          yield* Deferred.succeed(releaseMount, undefined)
          const mounted = yield* Fiber.join(job)
          const report = yield* Fiber.join(reconciling)
          // The host had it, but no other job did: job 2 is the first holder, so its mount counts as the
          // physical one (its release will be the unmount).
          assert.isTrue(mounted.physicallyMounted)
          assert.isFalse(mounted.reusedExisting)
          assert.deepStrictEqual(report.orphans.map((o) => [o.backupTargetId, o.action]), [[t, "skipped"]])
          assert.match(report.orphans[0]!.detail, /held now by job\(s\) 2: not unmounted/)
          assert.isTrue(server.isMounted(host, pathOf(t)))
          assert.notInclude(actions(server, host), "unmount")
          assert.deepStrictEqual((yield* run(Mount.getActiveMounts({ host }))).map((r) => r.jobId), [2])
        }))

      it.scoped("a server without status (the Python one): says so, reports the ledger, resolves what needs no host knowledge", () =>
        Effect.gen(function*() {
          const { host, ledger, run, server } = yield* setup()
          server.supportsStatus = false
          const held = unique("held")
          const late = unique("late")
          yield* run(Mount.mount(nfs(1, held, host)))
          // A mount that completed after its client was killed (mark left), and a mark on the held target.
          server.mounts.get(host)!.set(pathOf(late), late)
          const longAgo = -60_000
          yield* leaveMark(ledger, host, late, "mount", longAgo)
          yield* leaveMark(ledger, host, held, "mount", longAgo)

          const report = yield* run(Reconcile.reconcile(host))
          assert.isFalse(report.statusSupported)
          assert.strictEqual(report.statusMessage, "Unknown action: status")
          assert.deepStrictEqual(report.held, [{ backupTargetId: held, mountPath: pathOf(held), jobIds: [1], onHost: null }])
          assert.deepStrictEqual([report.stale, report.orphans, report.mounts], [[], [], []])
          assert.sameMembers(report.pending.map((p) => p.backupTargetId), [held, late])
          assert.deepStrictEqual(yield* run(Reconcile.hostStatus(host)), { supported: false, message: "Unknown action: status" })

          const repaired = yield* run(Reconcile.reconcile(host, { repair: true }))
          const pending = new Map(repaired.pending.map((p) => [p.backupTargetId, p]))
          assert.strictEqual(pending.get(late)!.action, "resolved")
          assert.isFalse(server.isMounted(host, pathOf(late)), "no holder: unmounted without needing status")
          assert.strictEqual(pending.get(held)!.action, "left")
          assert.match(pending.get(held)!.detail, /cannot tell whether it is mounted; remounting needs its request/)
          assert.isTrue(server.isMounted(host, pathOf(held)), "untouched")
          assert.isFalse(repaired.clean)
          // With its request, the held target's mark is resolved too (an idempotent, verifying mount).
          const withRequest = yield* run(Reconcile.reconcile(host, { repair: true, requests: [nfs(1, held, host)] }))
          assert.deepStrictEqual(withRequest.pending.map((p) => [p.backupTargetId, p.action]), [[held, "resolved"]])
          assert.isTrue(withRequest.clean)
        }))

      it.scoped("foreign mounts (no target id) are reported and left alone", () =>
        Effect.gen(function*() {
          const { host, run, server } = yield* setup()
          server.foreign.push({ host, path: "/var/lib/trilio/triliovault-mounts/by-hand" })
          const report = yield* run(Reconcile.reconcile(host, { repair: true }))
          assert.deepStrictEqual(report.orphans.map((o) => [o.backupTargetId, o.mountPath, o.action]), [
            [null, "/var/lib/trilio/triliovault-mounts/by-hand", "left"]
          ])
          assert.match(report.orphans[0]!.detail, /did not make it/)
          assert.deepStrictEqual(actions(server, host), ["status"])
          assert.isFalse(report.clean)
        }))

      it.scoped("bad input is a ValidationError naming the field, before any I/O", () =>
        Effect.gen(function*() {
          const { host, ledger, run, server } = yield* setup()
          const cases: ReadonlyArray<readonly [unknown, unknown, string]> = [
            ["", {}, "host: Expected a non-empty host name"],
            ["a b", {}, "host: Expected a host name without whitespace"],
            ["h".repeat(300), {}, "host: Expected a host name of at most 251 bytes"],
            [42, {}, "host: Expected string, actual 42"],
            [host, { repair: "yes" }, "repair: Expected a boolean"],
            [host, { requests: "all" }, "requests: Expected an array"],
            [host, { requests: [nfs(1, "t", "elsewhere")] }, `requests[0].host: Expected the reconciled host`],
            [host, { requests: [{ ...nfs(1, "t", host), job: { jobid: "x" } }] }, "requests[0].job.jobid"],
            [host, { requests: [nfs(1, "t", host), nfs(2, "t", host)] }, "requests[1].backup_target.id: a second request"]
          ]
          for (const [h, options, message] of cases) {
            const error = yield* Effect.flip(run(Reconcile.reconcile(h as string, options as Reconcile.ReconcileOptions)))
            assert.instanceOf(error, ValidationError)
            assert.include(error.message, message)
          }
          const badStatus = yield* Effect.flip(run(Reconcile.hostStatus("")))
          assert.instanceOf(badStatus, ValidationError)
          assert.include(badStatus.message, "host: Expected a non-empty host name")
          assert.deepStrictEqual(server.received, [], "no message was sent")
          assert.deepStrictEqual((yield* ledger.getHostState(host)).locks, [], "nothing was written")
        }))
    })
  })
}

// ---------------------------------------------------------------------------------------------------
// The real DMS server

const realistic = (call: Call) => (call.command === "mount" ? playNfsMount(call) : sh(call.command, call.args))
const mountTable = () => MountInfo.parse(fs.readFileSync("/proc/self/mountinfo", "utf8"))

describe("Reconcile against the real DMS server (RabbitMQ, MariaDB, tmpfs as NFS)", () => {
  layer(TestDatabaseLive, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
    it.scoped("stale, orphan and foreign mounts from the server's real status; repaired", () =>
      Effect.gen(function*() {
        const db = yield* TestDatabase
        const dirs = yield* serverDirs
        const runner = recordingRunner()
        runner.behave = realistic
        const host = uniqueHost("reconcile")
        yield* deleteOnClose(Broker.queueName(host))
        const serverContext = yield* Layer.build(
          Server.layer({ nodeId: host, rabbitmqUrl: RABBIT_URL }).pipe(
            Layer.provide(
              Layer.effect(Mounter.Mounter, Mounter.make({ mountBase: dirs.base, runDir: dirs.run, nfsFsTypes: ["nfs", "nfs4", "tmpfs"] })).pipe(
                Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)),
                Layer.provide(Barbican.layer())
              )
            )
          )
        )
        const server = Context.get(serverContext, Server.Server)
        yield* server.ready.pipe(Effect.timeout("20 seconds"))
        const client = yield* Layer.build(Dms.layer({ dbUrl: db.url, rabbitmqUrl: RABBIT_URL, timeout: 20 }))
        const run = <A, E>(effect: Effect.Effect<A, E, Mount.Services>) => Effect.provide(effect, client)
        const at = (id: string) => path.join(dirs.base, id)
        const request = (job: number, id: string) => nfs(job, id, host, at(id))

        yield* run(Mount.mount(request(1, "t1")))
        yield* run(Mount.mount(request(2, "t2")))
        // A reboot for t1: gone from the mount table behind the ledger's back (its state file stays).
        yield* sh("umount", [at("t1")])
        // t3 mounted with no ledger record (as a mount completing after its client gave up leaves it).
        const direct = yield* rpc(server.queue, { ...request(9, "t3"), action: "mount" })
        assert.strictEqual(direct.body.status, "success")
        // A mount under the base that the server did not make.
        fs.mkdirSync(at("stranger"))
        yield* sh("mount", ["-t", "tmpfs", "-o", "size=1m", "somewhere:/else", at("stranger")])

        const report = yield* run(Reconcile.reconcile(host))
        assert.isTrue(report.statusSupported)
        assert.sameDeepMembers(report.held.map((h) => [h.backupTargetId, h.jobIds, h.onHost]), [["t1", [1], false], ["t2", [2], true]])
        assert.deepStrictEqual(report.stale.map((s) => [s.backupTargetId, s.reason]), [
          ["t1", `the server recorded it at ${at("t1")}, but it is not in the host's mount table`]
        ])
        assert.sameDeepMembers(report.orphans.map((o) => [o.backupTargetId, o.mountPath, o.source]), [
          ["t3", at("t3"), "192.168.1.100:/backups"],
          [null, at("stranger"), "somewhere:/else"]
        ])

        const repaired = yield* run(Reconcile.reconcile(host, { repair: true, requests: [request(1, "t1")] }))
        assert.deepStrictEqual(repaired.stale.map((s) => [s.backupTargetId, s.action]), [["t1", "remounted"]])
        const orphans = new Map(repaired.orphans.map((o) => [o.backupTargetId, o]))
        assert.strictEqual(orphans.get("t3")!.action, "unmounted")
        assert.strictEqual(orphans.get(null)!.action, "left")
        const table = mountTable()
        assert.strictEqual(MountInfo.at(table, at("t1"))?.source, "192.168.1.100:/backups", "t1 is back")
        assert.isDefined(MountInfo.at(table, at("t2")), "t2 untouched")
        assert.isUndefined(MountInfo.at(table, at("t3")), "the orphan is gone")
        assert.isDefined(MountInfo.at(table, at("stranger")), "the foreign mount is left alone")
        assert.deepInclude(repaired.counts, { stale: 1, orphans: 2, repaired: 2, remaining: 1 })
        assert.deepStrictEqual(runner.calls.filter((c) => c.command === "umount").map((c) => c.args.at(-1)), [at("t3")])
      }))
  })
})
