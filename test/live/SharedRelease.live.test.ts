/**
 * Live (real MariaDB, real RabbitMQ, a model DMS server on the host's queue; the client's database
 * connections through a proxy that logs every query): a job's release that other jobs keep mounted is
 * one round trip to the database and nothing to the server; two such releases of the last two holders,
 * both in flight at once, cause exactly one physical unmount; a lease held by another client makes the
 * release wait for it; a release at another path fails as it always did.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Dms from "../../src/Dms.js"
import { ValidationError } from "../../src/DmsError.js"
import * as Mount from "../../src/Mount.js"
import { lockKey } from "../../src/internal/store.js"
import { Backend, mysqlBackend } from "../support/backends.js"
import { adminConnection } from "../support/mysql.js"
import { mysqlProxy } from "../support/mysqlProxy.js"
import { RABBIT_URL, uniqueHost } from "../support/rabbit.js"
import { guideNfs } from "../support/requests.js"
import { modelServer } from "../support/responder.js"
import { urlOnPort } from "../support/tcp.js"

const PATH = "/var/lib/trilio/triliovault-mounts/nfs-prod"
const TARGET = "target-nfs-prod"
const request = (jobid: number, host: string, mountPath = PATH) => guideNfs({ jobid, host, mountPath })
const unmountRequest = (jobid: number, host: string, mountPath = PATH) => ({ ...request(jobid, host, mountPath), action: "unmount" })

/** The client's services (the Effect API) on `dbUrl`, closed with the scope. */
const client = (dbUrl: string) => Layer.build(Dms.layer({ dbUrl, rabbitmqUrl: RABBIT_URL, timeout: 30 }))

/** Runs `effect` with a client's services. */
const via = (services: Context.Context<Dms.Services>) => <A, E>(effect: Effect.Effect<A, E, Dms.Services>) => Effect.provide(effect, services)

/** The queries of the ledger's tables the proxy forwarded from position `from` on. */
const ledgerQueries = (queries: ReadonlyArray<string>, from: number) => queries.slice(from).filter((q) => q.includes("backup_target_mount"))

/** A fresh database's backend, a model server on a host of its own, and a client whose ledger goes through a logging proxy. */
const setup = (label: string) =>
  Effect.gen(function*() {
    const backend = yield* Backend
    const host = uniqueHost(label)
    const server = yield* modelServer(host)
    const proxy = yield* mysqlProxy
    const services = yield* client(urlOnPort(backend.url!, proxy.port))
    return { backend, host, server, proxy, run: via(services) }
  })

interface LockRow {
  readonly owner: string | null
  readonly pending_op: string | null
}

const lockRow = (backend: Context.Tag.Service<Backend>, host: string) =>
  Effect.map(
    backend.query!<Array<LockRow>>("SELECT owner, pending_op FROM backup_target_mount_lock WHERE host = ?", [host]),
    (rows) => ({ owner: rows[0]?.owner ?? null, pending_op: rows[0]?.pending_op ?? null })
  )

const activeJobs = (backend: Context.Tag.Service<Backend>, host: string) =>
  Effect.map(
    backend.query!<Array<{ jobid: number }>>(
      "SELECT jobid FROM backup_target_mount_ledger WHERE host = ? AND mounted = 1 AND deleted = 0 ORDER BY jobid",
      [host]
    ),
    (rows) => rows.map((r) => r.jobid)
  )

describe("live: a release that other jobs keep mounted", () => {
  layer(Layer.fresh(mysqlBackend), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("is one round trip to the database, and nothing to the server: no lease, no pending mark", () =>
      Effect.gen(function*() {
        const { backend, host, proxy, run, server } = yield* setup("shared-one")
        yield* run(Mount.mount(request(1, host)))
        yield* run(Mount.mount(request(2, host)))
        const from = proxy.queries.length
        const released = yield* run(Mount.unmount(unmountRequest(1, host)))
        assert.deepInclude(released, { unmounted: false, activeMountsRemaining: 1 })
        const sent = ledgerQueries(proxy.queries, from)
        assert.strictEqual(sent.length, 1, sent.join("\n---\n"))
        assert.include(sent[0]!, "INTO @dms_others")
        assert.notInclude(sent[0]!, "SET owner = ", "the lease was not taken")
        assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "mount"])
        assert.deepStrictEqual(yield* activeJobs(backend, host), [2])
        assert.deepStrictEqual(yield* lockRow(backend, host), { owner: null, pending_op: null })
        // The last holder's release is tried the same way, refused, and unmounts under the lease.
        const last = yield* run(Mount.unmount(unmountRequest(2, host)))
        assert.deepInclude(last, { unmounted: true, activeMountsRemaining: 0 })
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        assert.deepStrictEqual(yield* activeJobs(backend, host), [])
      }))

    it.scoped("at another path than the recorded one fails with the path mismatch, and releases nothing", () =>
      Effect.gen(function*() {
        const { backend, host, run, server } = yield* setup("shared-path")
        yield* run(Mount.mount(request(1, host)))
        yield* run(Mount.mount(request(2, host)))
        const error = yield* Effect.flip(run(Mount.unmount(unmountRequest(1, host, `${PATH}-elsewhere`))))
        assert.instanceOf(error, ValidationError)
        assert.include(error.message, `at ${PATH}`)
        assert.deepStrictEqual(yield* activeJobs(backend, host), [1, 2])
        assert.deepStrictEqual(yield* lockRow(backend, host), { owner: null, pending_op: null })
        assert.isFalse(server.received.some((r) => r.action === "unmount"))
      }))

    it.scoped("waits for a lease another client holds, then releases under it", () =>
      Effect.gen(function*() {
        const { backend, host, proxy, run, server } = yield* setup("shared-leased")
        yield* run(Mount.mount(request(1, host)))
        yield* run(Mount.mount(request(2, host)))
        // Another client holds the lease (a mount of its own, say) until let go.
        const other = yield* backend.build()
        const locked = yield* Deferred.make<void>()
        const letGo = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(
          other.withTargetLock(TARGET, host, () => Effect.zipRight(Deferred.succeed(locked, undefined), Deferred.await(letGo)))
        )
        yield* Deferred.await(locked)
        const tried = yield* proxy.seen("INTO @dms_others")
        const waiting = yield* proxy.seen("UPDATE backup_target_mount_lock SET owner = ")
        const release = yield* Effect.fork(run(Mount.unmount(unmountRequest(1, host))))
        yield* Deferred.await(tried)
        yield* Deferred.await(waiting)
        // Its one statement wrote nothing; it waits for the lease.
        assert.deepStrictEqual(yield* activeJobs(backend, host), [1, 2])
        assert.isTrue(Option.isNone(yield* Fiber.poll(release)))
        yield* Deferred.succeed(letGo, undefined)
        yield* Fiber.join(holder)
        assert.deepInclude(yield* Fiber.join(release), { unmounted: false, activeMountsRemaining: 1 })
        assert.deepStrictEqual(yield* activeJobs(backend, host), [2])
        assert.deepStrictEqual(yield* lockRow(backend, host), { owner: null, pending_op: null })
        assert.isFalse(server.received.some((r) => r.action === "unmount"))
      }))

    it.scoped("the last two holders released at once through two clients, both statements in flight: one physical unmount", () =>
      Effect.gen(function*() {
        const { backend, host, run, server } = yield* setup("shared-race")
        const b = via(yield* client(backend.url!))
        yield* run(Mount.mount(request(1, host)))
        yield* b(Mount.mount(request(2, host)))
        // A transaction of the test's own holds the lock row: both releases read their snapshot (each
        // sees the other job holding) and then wait for the row in their UPDATE, which cannot end before
        // the row is let go.
        const database = new URL(backend.url!).pathname.slice(1)
        const blocker = yield* adminConnection()
        yield* Effect.promise(() => blocker.query(`USE \`${database}\``))
        yield* Effect.promise(() => blocker.query("BEGIN"))
        yield* Effect.promise(() => blocker.query("SELECT owner FROM backup_target_mount_lock WHERE lock_key = ? FOR UPDATE", [lockKey(TARGET, host).key]))
        const one = yield* Effect.fork(run(Mount.unmount(unmountRequest(1, host))))
        const two = yield* Effect.fork(b(Mount.unmount(unmountRequest(2, host))))
        const waitingForTheRow = Effect.map(
          Effect.promise(() =>
            blocker.query(
              "SELECT COUNT(*) AS n FROM information_schema.processlist WHERE db = ? AND info LIKE 'UPDATE %SET e.mounted = 0%'",
              [database]
            )
          ),
          ([rows]) => Number((rows as Array<{ n: unknown }>)[0]!.n)
        )
        yield* waitingForTheRow.pipe(Effect.repeat({ schedule: Schedule.spaced("5 millis"), until: (n) => n === 2 }), Effect.timeout("20 seconds"))
        yield* Effect.promise(() => blocker.query("COMMIT"))
        const results = [yield* Fiber.join(one), yield* Fiber.join(two)]
        assert.deepStrictEqual(
          results.map((r) => [r.unmounted, r.activeMountsRemaining]).sort(),
          [[false, 1], [true, 0]],
          "one released beside the other, which then was the last holder"
        )
        assert.strictEqual(server.received.filter((r) => r.action === "unmount").length, 1)
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        assert.deepStrictEqual(yield* activeJobs(backend, host), [])
        assert.deepStrictEqual(yield* lockRow(backend, host), { owner: null, pending_op: null })
      }))
  })
})
