/**
 * A release that other jobs keep mounted (one conditional round trip, no lease) whose answer is lost
 * after it committed: the MySQL proxy swallows the answer and closes the connection. Against the real
 * MariaDB (a database per test) and RabbitMQ with a model DMS server: the release is found to have
 * landed, by its token on the lock row or, when a later operation of the pair wrote its own token first,
 * by the job's row; it is reported released, never "no active mount", and nothing is sent to the server.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Dms from "../../src/Dms.js"
import * as Mount from "../../src/Mount.js"
import { Backend, mysqlBackend } from "../support/backends.js"
import { mysqlProxy } from "../support/mysqlProxy.js"
import { RABBIT_URL, sweepQueues, uniqueHost } from "../support/rabbit.js"
import { guideNfs } from "../support/requests.js"
import { modelResponder } from "../support/responder.js"
import { urlOnPort } from "../support/tcp.js"

afterAll(sweepQueues)

const PATH = "/var/lib/trilio/triliovault-mounts/nfs-prod"
const request = (jobid: number, host: string) => guideNfs({ jobid, host, mountPath: PATH })
const unmountRequest = (jobid: number, host: string) => ({ ...request(jobid, host), action: "unmount" })

/** The shared release's round trip, and the query that looks whether one whose answer was lost landed. */
const SHARED_RELEASE = "INTO @dms_others"
const LANDED_CHECK = "AS mine"

/** A database of the test's own, dropped with its scope. */
const freshDatabase = Layer.build(Layer.fresh(mysqlBackend)).pipe(Effect.map(Context.get(Backend)))

/** A client's services on `dbUrl`, and a runner of effects with them. */
const client = (dbUrl: string) =>
  Effect.map(
    Layer.build(Dms.layer({ dbUrl, rabbitmqUrl: RABBIT_URL, timeout: 30 })),
    (services) => <A, E>(effect: Effect.Effect<A, E, Dms.Services>) => Effect.provide(effect, services)
  )

const setup = (label: string) =>
  Effect.gen(function*() {
    const backend = yield* freshDatabase
    const host = uniqueHost(label)
    const { server } = yield* modelResponder(host)
    const proxy = yield* mysqlProxy
    const run = yield* client(urlOnPort(backend.url!, proxy.port))
    const activeJobs = Effect.map(
      backend.query!<Array<{ jobid: number }>>(
        "SELECT jobid FROM backup_target_mount_ledger WHERE host = ? AND mounted = 1 AND deleted = 0 ORDER BY jobid",
        [host]
      ),
      (rows) => rows.map((r) => r.jobid)
    )
    const lockRow = Effect.map(
      backend.query!<Array<{ owner: string | null; pending_op: string | null }>>(
        "SELECT owner, pending_op FROM backup_target_mount_lock WHERE host = ?",
        [host]
      ),
      (rows) => ({ ...rows[0] })
    )
    return { backend, host, server, proxy, run, activeJobs, lockRow }
  })

describe("faults: a release that other jobs keep mounted, its answer lost", () => {
  it.scopedLive("after it committed: its token says it landed; released once, nothing sent to the server", () =>
    Effect.gen(function*() {
      const { activeJobs, host, lockRow, proxy, run, server } = yield* setup("shared-lost")
      yield* run(Mount.mount(request(1, host)))
      yield* run(Mount.mount(request(2, host)))
      const dropped = yield* proxy.dropAfter(SHARED_RELEASE)
      const released = yield* run(Mount.unmount(unmountRequest(1, host)))
      assert.isTrue(yield* Deferred.isDone(dropped), "the answer was swallowed and its connection closed")
      assert.deepInclude(released, { unmounted: false, activeMountsRemaining: 1 })
      assert.deepStrictEqual(yield* activeJobs, [2])
      assert.deepStrictEqual(yield* lockRow, { owner: null, pending_op: null })
      assert.isFalse(server.received.some((r) => r.action === "unmount"))
    }), { timeout: 60_000 })

  it.scopedLive("and another client's mount writing the lock row before the check: the job's row says it landed", () =>
    Effect.gen(function*() {
      const { activeJobs, backend, host, lockRow, proxy, run, server } = yield* setup("shared-overwritten")
      const other = yield* client(backend.url!)
      yield* run(Mount.mount(request(1, host)))
      yield* run(Mount.mount(request(2, host)))
      const dropped = yield* proxy.dropAfter(SHARED_RELEASE)
      const check = yield* proxy.hold(LANDED_CHECK)
      const release = yield* Effect.fork(run(Mount.unmount(unmountRequest(1, host))))
      yield* Deferred.await(check.arrived)
      assert.isTrue(yield* Deferred.isDone(dropped))
      // The release landed; before it looks, job 3's mount takes the lease and writes a token of its own.
      assert.deepStrictEqual(yield* activeJobs, [2])
      yield* other(Mount.mount(request(3, host)))
      yield* check.release
      assert.deepInclude(yield* Fiber.join(release), { unmounted: false, activeMountsRemaining: 2 })
      assert.deepStrictEqual(yield* activeJobs, [2, 3])
      assert.deepStrictEqual(yield* lockRow, { owner: null, pending_op: null })
      assert.isFalse(server.received.some((r) => r.action === "unmount"))
    }), { timeout: 60_000 })
})
