/**
 * Holds never leak (issue 12), each fault forced against the real MariaDB (a database per test) and the
 * real RabbitMQ with a model DMS server on the host's queue: a resolution that meets no consumer keeps
 * the earlier operation's mark; a final write whose connection is lost after COMMIT, or held while the
 * mount is interrupted, leaves no hold the caller does not know about; a release whose lock wait and
 * reply stall gives up within its releaseTimeout and leaves what it could not do recorded; nothing is
 * sent for a mount the ledger records no path or type for.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Broker from "../../src/Broker.js"
import * as Dms from "../../src/Dms.js"
import { BrokerError, MountError, TimeoutError } from "../../src/DmsError.js"
import * as Mount from "../../src/Mount.js"
import { lockKey } from "../../src/internal/store.js"
import { type ClientOptions, DMSClient, MountContext, MountException } from "../../src/promise.js"
import { Backend, mysqlBackend } from "../support/backends.js"
import type * as FakeServer from "../support/fakeServer.js"
import { queueInfo, RABBIT_URL, sweepQueues, uniqueHost } from "../support/rabbit.js"
import { guideNfs } from "../support/requests.js"
import { mysqlProxy } from "../support/mysqlProxy.js"
import { modelResponder } from "../support/responder.js"
import { urlOnPort } from "../support/tcp.js"

afterAll(sweepQueues)

const PATH = "/var/lib/trilio/triliovault-mounts/nfs-prod"
const TARGET = "target-nfs-prod"
const request = (jobid: number, host: string) => guideNfs({ jobid, host, mountPath: PATH })
const unmountRequest = (jobid: number, host: string) => ({ ...request(jobid, host), action: "unmount" })

/** A database of the test's own, dropped with its scope. */
const freshDatabase = Layer.build(Layer.fresh(mysqlBackend)).pipe(Effect.map(Context.get(Backend)))

/** The client's services (the Effect API), closed with the scope. */
const services = (options: Dms.Options) => Layer.build(Dms.layer({ rabbitmqUrl: RABBIT_URL, ...options }))

/** A Promise client (the guide's API), closed with the scope. */
const promiseClient = (dbUrl: string, options: ClientOptions = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => new DMSClient({ dbUrl, rabbitmqUrl: RABBIT_URL, timeout: 30, ...options })),
    (c) => Effect.promise(() => c.close())
  )

/** The mount's last write for a job without a row: the fenced INSERT (and the lock row's update). */
const FINAL_MOUNT_WRITE = "INSERT INTO backup_target_mount_ledger"

interface LockRow {
  readonly pending_op: string | null
  readonly pending_deadline: Date | null
  readonly pending_path: string | null
  readonly pending_type: string | null
  readonly owner: string | null
}

const lockRows = (backend: Context.Tag.Service<Backend>, host: string) =>
  backend.query!<Array<LockRow>>(
    "SELECT pending_op, pending_deadline, pending_path, pending_type, owner FROM backup_target_mount_lock WHERE host = ?",
    [host]
  ).pipe(Effect.map((rows) => rows.map((r) => ({ ...r }))))

/** The jobs the ledger says hold a target on the host. */
const activeJobs = (backend: Context.Tag.Service<Backend>, host: string) =>
  backend.query!<Array<{ jobid: number }>>(
    "SELECT jobid FROM backup_target_mount_ledger WHERE host = ? AND mounted = 1 AND deleted = 0 ORDER BY jobid",
    [host]
  ).pipe(Effect.map((rows) => rows.map((r) => r.jobid)))

/**
 * Another client (a Ledger of its own) holds the (target, host) lease until `letGo`; let go with the
 * scope at the latest.
 */
const holdLease = (backend: Context.Tag.Service<Backend>, host: string) =>
  Effect.gen(function*() {
    const other = yield* backend.build()
    const locked = yield* Deferred.make<void>()
    const letGo = yield* Deferred.make<void>()
    yield* Effect.addFinalizer(() => Deferred.succeed(letGo, undefined))
    const holder = yield* Effect.fork(
      other.withTargetLock(TARGET, host, () => Effect.zipRight(Deferred.succeed(locked, undefined), Deferred.await(letGo)))
    )
    yield* Deferred.await(locked)
    return { letGo: Effect.zipRight(Deferred.succeed(letGo, undefined), Fiber.join(holder)) }
  })

/** A database of the test's own, and a model DMS server on a host of its own. */
const setup = (label: string) =>
  Effect.gen(function*() {
    const backend = yield* freshDatabase
    const host = uniqueHost(label)
    return { backend, host, ...(yield* modelResponder(host)) }
  })

/** Nothing held, nothing pending, no lease left, and the host matches the ledger (not mounted). */
const settled = (backend: Context.Tag.Service<Backend>, server: FakeServer.FakeServer, host: string) =>
  Effect.gen(function*() {
    assert.deepStrictEqual(yield* activeJobs(backend, host), [], "nothing is held")
    assert.deepInclude((yield* lockRows(backend, host))[0], { pending_op: null, owner: null })
    assert.isFalse(server.isMounted(host, PATH), "the host matches the ledger")
  })

const jobOf = (body: Readonly<Record<string, unknown>>) => (body.job as { jobid?: number } | undefined)?.jobid

describe("faults: holds never leak", () => {
  it.scopedLive("a resolution that finds no consumer for the host keeps the earlier mark; once a server consumes again, the next operation resolves it", () =>
    Effect.gen(function*() {
      const { backend, host, responder, server } = yield* setup("no-consumer")
      const late = yield* Deferred.make<void>()
      server.gate = (r) => (r.action === "mount" && jobOf(r.body) === 1 ? Deferred.await(late) : Effect.void)
      // Every request checks the host's queue afresh (no answer cached from before the consumer left), and
      // gives up on a queue without consumer well within the request's deadline.
      const client = yield* services({
        dbUrl: backend.url!,
        timeout: 1,
        broker: { queueCheckCacheTtl: "1 millis", fastFailWindow: "100 millis" }
      })

      const timedOut = yield* Effect.flip(Mount.mount(request(1, host))).pipe(Effect.provide(client))
      assert.instanceOf(timedOut, TimeoutError)
      assert.strictEqual((timedOut as TimeoutError).phase, "reply")
      const marked = yield* lockRows(backend, host)
      assert.deepInclude(marked[0], { pending_op: "mount", pending_path: PATH, pending_type: "nfs", owner: null })

      // The server stops consuming; the mount it had taken completes after its client gave up.
      yield* responder.detach
      assert.strictEqual((yield* queueInfo(Broker.queueName(host)))?.consumerCount, 0)
      yield* Deferred.succeed(late, undefined)
      yield* Queue.take(responder.replied)
      assert.isTrue(server.isMounted(host, PATH), "the late mount landed: the host no longer matches the ledger")

      const noServer = yield* Effect.flip(Mount.mount(request(2, host))).pipe(Effect.provide(client))
      assert.instanceOf(noServer, BrokerError)
      assert.isTrue((noServer as BrokerError).notDelivered)
      assert.match(noServer.message, new RegExp(`no DMS server for host ${host}`))
      assert.deepStrictEqual(yield* lockRows(backend, host), marked, "the earlier mount's mark is kept as it was")
      assert.deepStrictEqual(yield* activeJobs(backend, host), [], "nothing is recorded as held")
      assert.deepStrictEqual(server.received.map((r) => [r.action, jobOf(r.body)]), [["mount", 1]], "nothing reached a server")

      // A server consumes the queue again: the next operation undoes the late mount, then mounts.
      yield* modelResponder(host, server)
      const resolved = yield* Mount.mount(request(2, host)).pipe(Effect.provide(client))
      assert.isTrue(resolved.physicallyMounted)
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted", "mounted"])
      assert.deepInclude((yield* lockRows(backend, host))[0], { pending_op: null, owner: null })
      assert.deepStrictEqual(yield* activeJobs(backend, host), [2])
      yield* Mount.unmount(unmountRequest(2, host)).pipe(Effect.provide(client))
      assert.isFalse(server.isMounted(host, PATH))
    }), { timeout: 60_000 })

  it.scopedLive("a mount whose final write commits but reports a lost connection: MountContext.enter succeeds, exit() unmounts once", () =>
    Effect.gen(function*() {
      const { backend, host, server } = yield* setup("lost-commit")
      const proxy = yield* mysqlProxy
      const client = yield* promiseClient(urlOnPort(backend.url!, proxy.port))
      const dropped = yield* proxy.dropAfter(FINAL_MOUNT_WRITE)

      const entered = yield* Effect.promise(() =>
        MountContext.enter(client, request(21, host)).then((context) => ({ context }), (error: unknown) => ({ error }))
      )
      assert.isTrue(yield* Deferred.isDone(dropped), "the server answered the write and the client lost the connection")
      assert.deepStrictEqual(yield* activeJobs(backend, host), [21], "the write committed: the row says the job holds it")
      if ("error" in entered) return assert.fail(`enter threw while the row says the job holds the target: ${String(entered.error)}`)
      assert.strictEqual(entered.context.getMountPath(), PATH)

      yield* Effect.promise(() => entered.context.exit())
      assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "unmount"])
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
      yield* settled(backend, server, host)
    }), { timeout: 60_000 })

  it.scopedLive("a mount interrupted while its final write is held gives the hold back once the write lands: nothing held, mounted then unmounted", () =>
    Effect.gen(function*() {
      const { backend, host, server } = yield* setup("interrupted")
      const proxy = yield* mysqlProxy
      const client = yield* services({ dbUrl: urlOnPort(backend.url!, proxy.port), timeout: 30 })
      const write = yield* proxy.hold(FINAL_MOUNT_WRITE)
      // Should an assertion fail first, the client's pools must not wait for the held write when closing.
      yield* Effect.addFinalizer(() => write.release)

      const mounting = yield* Effect.fork(Mount.mount(request(31, host)).pipe(Effect.provide(client)))
      yield* Deferred.await(write.arrived)
      // Signalled while the write is in flight (the fiber's mailbox has it before the write's answer).
      yield* Fiber.interruptAsFork(mounting, yield* Effect.fiberId)
      yield* write.release
      const exit = yield* Fiber.await(mounting)
      assert.isTrue(Exit.isInterrupted(exit), `the caller's interruption wins: ${String(exit)}`)

      yield* settled(backend, server, host)
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
    }), { timeout: 60_000 })

  it.scopedLive("a release whose lock wait stalls gives up within releaseTimeout while another client holds the lease; the row stays held and the job's next unmount releases it", () =>
    Effect.gen(function*() {
      const { backend, host, server } = yield* setup("lock-stall")
      const client = yield* promiseClient(backend.url!, { lockTimeout: 300 })
      const context = yield* Effect.promise(() => MountContext.enter(client, request(41, host), { releaseTimeout: "1 second" }))
      const lease = yield* holdLease(backend, host)

      yield* Effect.promise(() => context.exit())
      const [row] = yield* lockRows(backend, host)
      assert.isNotNull(row!.owner, "exit() returned while the other client still holds the lease")
      assert.isNull(row!.pending_op, "no unmount was sent")
      assert.deepStrictEqual(yield* activeJobs(backend, host), [41], "what it could not release stays recorded: the job's row")
      assert.deepStrictEqual(server.received.map((r) => r.action), ["mount"])

      yield* lease.letGo
      const released = yield* Effect.promise(() => client.unmount(unmountRequest(41, host)))
      assert.deepInclude(released, { status: "success", unmounted: true, active_mounts_remaining: 0 })
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
      yield* settled(backend, server, host)
    }), { timeout: 60_000 })

  it.scopedLive("a release whose lock wait and reply both stall gives up within releaseTimeout, before the unmount's deadline; the next unmount resolves what it left", () =>
    Effect.gen(function*() {
      const { backend, host, responder, server } = yield* setup("release-stall")
      const proxy = yield* mysqlProxy
      const atServer = yield* Deferred.make<void>()
      const answer = yield* Deferred.make<void>()
      server.gate = (r) => (r.action === "unmount" ? Effect.zipRight(Deferred.succeed(atServer, undefined), Deferred.await(answer)) : Effect.void)
      yield* Effect.addFinalizer(() => Deferred.succeed(answer, undefined))
      const client = yield* promiseClient(urlOnPort(backend.url!, proxy.port), { timeout: 8 })
      const context = yield* Effect.promise(() => MountContext.enter(client, request(42, host), { releaseTimeout: "2 seconds" }))
      yield* Queue.take(responder.replied)
      const lease = yield* holdLease(backend, host)
      const queued = yield* proxy.seen("UPDATE backup_target_mount_lock SET waiter = ")

      const exiting = yield* Effect.fork(Effect.promise(() => context.exit()))
      yield* Deferred.await(queued) // the release found the lease taken and waits for its turn
      yield* lease.letGo
      yield* Deferred.await(atServer) // it took the lease and sent the unmount, which gets no reply
      yield* Fiber.join(exiting)
      const [row] = yield* backend.query!<Array<Record<string, unknown>>>(
        `SELECT pending_op, pending_path, owner, pending_deadline > UTC_TIMESTAMP(3) AS ahead
          FROM backup_target_mount_lock WHERE host = ?`,
        [host]
      )
      assert.deepStrictEqual(
        { ...row },
        { pending_op: "unmount", pending_path: PATH, owner: null, ahead: 1 },
        "exit() returned before the unmount's own deadline, and left it pending"
      )
      assert.deepStrictEqual(yield* activeJobs(backend, host), [42], "the unmount's outcome is not known: the row still holds")

      // The stall ends: the server runs the unmount after its client gave up.
      yield* Deferred.succeed(answer, undefined)
      yield* Queue.take(responder.replied)
      // The ledger says the job holds it: the next unmount waits out the deadline, brings the host back to
      // that, then releases.
      const released = yield* Effect.promise(() => client.unmount(unmountRequest(42, host)))
      assert.deepInclude(released, { status: "success", unmounted: true })
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted", "mounted", "unmounted"])
      yield* settled(backend, server, host)
    }), { timeout: 60_000 })

  for (
    const [what, olderMark] of [
      ["a mounted row whose path and type the ledger does not record", false],
      ["such a row with a pending mark an older client left without path or type", true]
    ] as const
  ) {
    it.scopedLive(`a forced soft delete of ${what} fails with unknown-mount and sends nothing`, () =>
      Effect.gen(function*() {
        const { backend, host, server } = yield* setup("unknown-mount")
        const client = yield* promiseClient(backend.url!)
        yield* Effect.promise(() => client.getActiveMounts({ host })) // creates the tables
        // As the Python client writes it: the row only, no lock row with a path or type.
        yield* backend.query!("INSERT INTO backup_target_mount_ledger (backup_target_id, jobid, host, mounted) VALUES (?, 51, ?, 1)", [
          TARGET,
          host
        ])
        if (olderMark) {
          yield* backend.query!(
            `INSERT INTO backup_target_mount_lock (lock_key, backup_target_id, host, pending_op, pending_deadline)
              VALUES (?, ?, ?, 'unmount', UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE)`,
            [lockKey(TARGET, host).key, TARGET, host]
          )
        }

        const error = yield* Effect.promise(() =>
          client.softDeleteEntry(51, TARGET, { host, force: true }).then((deleted) => ({ deleted }), (e: unknown) => e)
        )
        assert.instanceOf(error, MountException)
        assert.strictEqual(((error as MountException).error as MountError).reason, "unknown-mount")
        assert.deepStrictEqual(server.received, [], "no request reached the server")
        assert.deepStrictEqual(yield* activeJobs(backend, host), [51], "the row is neither released nor deleted")
        assert.deepInclude((yield* lockRows(backend, host))[0], { pending_op: olderMark ? "unmount" : null, owner: null })
      }), { timeout: 60_000 })
  }
})
