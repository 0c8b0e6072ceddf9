/**
 * Live (real MariaDB, real RabbitMQ, a model DMS server on the host's queue): holds never leak and are
 * never pulled from under a job. The guide's sequence with a retried mount, through the Promise facade
 * and the Effect API; two scopes of one job in two `DMSClient`s of one process, and across `close()`.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as net from "node:net"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Dms from "../../src/Dms.js"
import { TimeoutError } from "../../src/DmsError.js"
import * as Mount from "../../src/Mount.js"
import { DatabaseException, DMSClient, MountContext, RabbitMQException } from "../../src/promise.js"
import { Backend, mysqlBackend } from "../support/backends.js"
import { RABBIT_URL, uniqueHost } from "../support/rabbit.js"
import { guideNfs } from "../support/requests.js"
import { modelServer } from "../support/responder.js"
import { silentListener, urlOnPort } from "../support/tcp.js"

const PATH = "/var/lib/trilio/triliovault-mounts/nfs-prod"
const request = (jobid: number, host: string) => guideNfs({ jobid, host, mountPath: PATH })
const unmountRequest = (jobid: number, host: string) => ({ ...request(jobid, host), action: "unmount" })

/** mount/unmount as a user of one API sees them: the guide's response fields. */
interface Api {
  readonly mount: (request: unknown) => Effect.Effect<{ physically_mounted?: boolean | undefined; reused_existing?: boolean | undefined }>
  readonly unmount: (request: unknown) => Effect.Effect<{ unmounted?: boolean | undefined; active_mounts_remaining?: number | undefined }>
  readonly active: (host: string) => Effect.Effect<ReadonlyArray<number>>
}

const promiseApi = (dbUrl: string) =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => new DMSClient({ dbUrl, rabbitmqUrl: RABBIT_URL, timeout: 30 })),
      (c) => Effect.promise(() => c.close())
    ),
    (client): Api => ({
      mount: (r) =>
        Effect.promise(() => client.mount(r)).pipe(
          Effect.tap((m) => assert.strictEqual(m.status, "success", JSON.stringify(m)))
        ),
      unmount: (r) =>
        Effect.promise(() => client.unmount(r)).pipe(
          Effect.tap((u) => assert.strictEqual(u.status, "success", JSON.stringify(u)))
        ),
      active: (host) => Effect.promise(() => client.getActiveMounts({ host })).pipe(Effect.map((rows) => rows.map((m) => m.jobId)))
    })
  )

const effectApi = (dbUrl: string) =>
  Effect.map(
    Effect.acquireRelease(
      Effect.sync(() => ManagedRuntime.make(Dms.layer({ dbUrl, rabbitmqUrl: RABBIT_URL, timeout: 30 }))),
      (runtime) => Effect.promise(() => runtime.dispose())
    ),
    (runtime): Api => {
      const run = <A>(effect: Effect.Effect<A, unknown, Dms.Services>) => Effect.promise(() => runtime.runPromise(effect))
      return {
        mount: (r) =>
          run(Mount.mount(r)).pipe(Effect.map((m) => ({ physically_mounted: m.physicallyMounted, reused_existing: m.reusedExisting }))),
        unmount: (r) =>
          run(Mount.unmount(r)).pipe(Effect.map((u) => ({ unmounted: u.unmounted, active_mounts_remaining: u.activeMountsRemaining }))),
        active: (host) => run(Mount.getActiveMounts({ host })).pipe(Effect.map((rows) => rows.map((m) => m.jobId)))
      }
    }
  )

describe("live: holds never leak", () => {
  layer(Layer.fresh(mysqlBackend), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    for (const [name, makeApi] of [["the Promise facade", promiseApi], ["the Effect API", effectApi]] as const) {
      it.scoped(`the guide's sequence with a retried mount, through ${name}: unmounted after the last job, nothing held`, () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const host = uniqueHost("guide-retry")
          const server = yield* modelServer(host)
          const api = yield* makeApi(backend.url!)
          assert.deepInclude(yield* api.mount(request(1001, host)), { physically_mounted: true })
          assert.deepInclude(yield* api.mount(request(1002, host)), { reused_existing: true })
          // Job 1001 mounts again (a retry after an unclear answer, or "ensure mounted"): a no-op.
          assert.deepInclude(yield* api.mount(request(1001, host)), { reused_existing: true, physically_mounted: false })
          assert.deepStrictEqual(yield* api.active(host), [1001, 1002])
          assert.deepInclude(yield* api.unmount(unmountRequest(1001, host)), { unmounted: false, active_mounts_remaining: 1 })
          assert.deepInclude(yield* api.unmount(unmountRequest(1002, host)), { unmounted: true, active_mounts_remaining: 0 })
          assert.deepStrictEqual(yield* api.active(host), [])
          assert.isFalse(server.isMounted(host, PATH))
          assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        }))

      it.scoped(`the retry sequence through ${name}: mount, mount, unmount → physically unmounted, nothing active`, () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const host = uniqueHost("retry")
          const server = yield* modelServer(host)
          const api = yield* makeApi(backend.url!)
          yield* api.mount(request(7, host))
          yield* api.mount(request(7, host))
          assert.deepInclude(yield* api.unmount(unmountRequest(7, host)), { unmounted: true, active_mounts_remaining: 0 })
          assert.deepStrictEqual(yield* api.active(host), [])
          assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
          // Every mount asked the server (it verifies the mount); the host changed state twice.
          assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "mount", "unmount"])
        }))
    }

    it.scoped("two scopes of one job in two DMSClients of one process: mounted until the last ends, unmounted once", () =>
      Effect.gen(function*() {
        const backend = yield* Backend
        const host = uniqueHost("two-clients")
        const server = yield* modelServer(host)
        const open = () =>
          Effect.acquireRelease(
            Effect.sync(() => new DMSClient({ dbUrl: backend.url!, rabbitmqUrl: RABBIT_URL, timeout: 30 })),
            (c) => Effect.promise(() => c.close())
          )
        const [a, b] = [yield* open(), yield* open()]
        const vm1 = yield* Effect.promise(() => MountContext.enter(a, request(4242, host)))
        const vm2 = yield* Effect.promise(() => MountContext.enter(b, request(4242, host)))
        yield* Effect.promise(() => vm1.exit())
        assert.isTrue(server.isMounted(host, PATH), "vm2's scope still holds it")
        assert.deepStrictEqual((yield* Effect.promise(() => b.getActiveMounts({ host }))).map((m) => m.jobId), [4242])
        // A plain unmount of the job does not pull it from under the open scope either.
        assert.deepInclude(yield* Effect.promise(() => a.unmount(unmountRequest(4242, host))), { status: "success", unmounted: false })
        assert.isTrue(server.isMounted(host, PATH))
        yield* Effect.promise(() => vm2.exit())
        assert.isFalse(server.isMounted(host, PATH))
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        assert.deepStrictEqual(yield* Effect.promise(() => a.getActiveMounts({ host })), [])
      }))

    it.scoped("across close(): a client closed and used again keeps counting the job's scopes", () =>
      Effect.gen(function*() {
        const backend = yield* Backend
        const host = uniqueHost("close-reuse")
        const server = yield* modelServer(host)
        const client = yield* Effect.acquireRelease(
          Effect.sync(() => new DMSClient({ dbUrl: backend.url!, rabbitmqUrl: RABBIT_URL, timeout: 30 })),
          (c) => Effect.promise(() => c.close())
        )
        const vm1 = yield* Effect.promise(() => MountContext.enter(client, request(5151, host)))
        // The guide's BackupManager closes its client in `finally`; the next VM's backup uses it again.
        yield* Effect.promise(() => client.close())
        const vm2 = yield* Effect.promise(() => MountContext.enter(client, request(5151, host)))
        yield* Effect.promise(() => client.close())
        yield* Effect.promise(() => vm1.exit())
        assert.isTrue(server.isMounted(host, PATH), "vm2's scope still holds it")
        yield* Effect.promise(() => vm2.exit())
        assert.isFalse(server.isMounted(host, PATH))
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        assert.deepStrictEqual(yield* Effect.promise(() => client.getActiveMounts({ host })), [])
      }))

    it.scoped("a mount whose deadline passed before it was published is 'nothing happened': no pending mark", () =>
      Effect.gen(function*() {
        const backend = yield* Backend
        const silent = yield* silentListener // accepts, never speaks AMQP: the client waits in its handshake
        const runtime = yield* Effect.acquireRelease(
          Effect.sync(() =>
            ManagedRuntime.make(Dms.layer({ dbUrl: backend.url!, rabbitmqUrl: urlOnPort(RABBIT_URL, silent.port), timeout: 0.5 }))
          ),
          (r) => Effect.zipRight(silent.dropAll, Effect.promise(() => r.dispose()))
        )
        const host = uniqueHost("never-published")
        yield* Effect.promise(() => runtime.runPromise(Mount.getActiveMounts({ host }))) // the ledger is up
        yield* Deferred.await(silent.accepted)
        const error = yield* Effect.promise(() => runtime.runPromise(Effect.flip(Mount.mount(request(31, host)))))
        assert.instanceOf(error, TimeoutError)
        assert.strictEqual((error as TimeoutError).phase, "publish")
        const locks = yield* backend.query!<Array<{ pending_op: string | null; owner: string | null }>>(
          "SELECT pending_op, owner FROM backup_target_mount_lock WHERE host = ?",
          [host]
        )
        assert.deepStrictEqual(locks.map((l) => [l.pending_op, l.owner]), [[null, null]], "no mark, no lease left")
      }))
  })
})

/** A loopback port nothing listens on (bound, then closed). */
const closedPort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

describe("live: DMSClient.connect checks both services up front", () => {
  layer(Layer.fresh(mysqlBackend), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("connects to the real MariaDB and RabbitMQ; an unreachable database or broker throws the guide's exception", () =>
      Effect.gen(function*() {
        const backend = yield* Backend
        const client = yield* Effect.promise(() => DMSClient.connect({ dbUrl: backend.url!, rabbitmqUrl: RABBIT_URL }))
        yield* Effect.promise(() => client.connect()) // again, on a connected client
        yield* Effect.promise(() => client.close())

        const port = yield* closedPort
        const noDatabase = yield* Effect.promise(() =>
          DMSClient.connect({ dbUrl: `mysql://root@127.0.0.1:${port}/nothing`, rabbitmqUrl: RABBIT_URL }).then(
            () => undefined,
            (e: unknown) => e
          )
        )
        assert.instanceOf(noDatabase, DatabaseException)
        const noBroker = yield* Effect.promise(() =>
          DMSClient.connect({
            dbUrl: backend.url!,
            rabbitmqUrl: urlOnPort(RABBIT_URL, port),
            broker: { connectTimeout: "1 second" }
          }).then(() => undefined, (e: unknown) => e)
        )
        assert.instanceOf(noBroker, RabbitMQException)
        // The lazy constructor does not connect: the same configuration fails only when used.
        const lazy = new DMSClient({ dbUrl: backend.url!, rabbitmqUrl: urlOnPort(RABBIT_URL, port), broker: { connectTimeout: "1 second" } })
        const later = yield* Effect.promise(() => lazy.connect().then(() => undefined, (e: unknown) => e))
        assert.instanceOf(later, RabbitMQException)
        yield* Effect.promise(() => lazy.close())
      }))
  })
})
