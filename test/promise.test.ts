/**
 * The guide's API for plain TypeScript: DMSClient, MountContext, withMount and the exceptions.
 */
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import mysql from "mysql2/promise"
import * as Dms from "../src/Dms.js"
import * as Ledger from "../src/Ledger.js"
import {
  DatabaseException,
  DMSClient,
  DMSClientException,
  MountContext,
  MountException,
  RequestTimeoutException,
  RequestValidationException,
  withMount
} from "../src/promise.js"
import * as FakeServer from "./support/fakeServer.js"
import { guideNfs } from "./support/requests.js"
import { MYSQL_HOST, MYSQL_PORT, uniqueName } from "./support/mysql.js"

const request = (jobid = 12345) => guideNfs({ jobid })

const clients: Array<DMSClient> = []
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()))
})

/** A client on the memory ledger and an in-process model server. */
const memoryClient = (options: { timeout?: number } = {}) => {
  const server = FakeServer.make()
  const client = new DMSClient({
    layer: Dms.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: options.timeout ?? 5, server: server.handler })
  })
  clients.push(client)
  return { client, server }
}

describe("DMSClient", () => {
  it("mounts, reports, and unmounts as the guide shows", async () => {
    const { client, server } = memoryClient()
    const mounted = await client.mount(request())
    assert.deepStrictEqual(mounted, {
      status: "success",
      error_msg: null,
      success_msg: "NFS target mounted successfully at /var/lib/trilio/triliovault-mounts/nfs-prod",
      mount_path: "/var/lib/trilio/triliovault-mounts/nfs-prod",
      reused_existing: false,
      physically_mounted: true
    })
    const status = await client.getMountStatus(12345, "target-nfs-prod")
    assert.isNotNull(status)
    assert.strictEqual(status!.mounted, true)
    assert.strictEqual(status!.host, "compute-01")
    assert.instanceOf(status!.createdAt, Date)
    assert.deepStrictEqual((await client.getActiveMounts({ host: "compute-01" })).map((m) => m.jobId), [12345])
    assert.deepStrictEqual(await client.getActiveMounts({ backupTargetId: "nope" }), [])

    const req = request()
    req.action = "unmount"
    const unmounted = await client.unmount(req)
    assert.deepInclude(unmounted, { status: "success", error_msg: null, unmounted: true, active_mounts_remaining: 0 })
    assert.deepStrictEqual(server.received.map((r) => r.action), ["mount", "unmount"])
    assert.deepStrictEqual(await client.unmount(req), {
      status: "error",
      error_msg: "No active mount found for this job",
      success_msg: null
    })
    const history = await client.getLedgerHistory("target-nfs-prod", 20)
    assert.deepStrictEqual(history.map((h) => [h.jobId, h.mounted]), [[12345, false]])
    assert.isTrue(await client.softDeleteEntry(12345, "target-nfs-prod"))
    assert.isNull(await client.getMountStatus(12345, "target-nfs-prod"))
  })

  it("returns a server's failure as an error response", async () => {
    const { client, server } = memoryClient()
    server.failNext = { action: "mount", message: "Mount failed: Permission denied" }
    assert.deepStrictEqual(await client.mount(request()), {
      status: "error",
      error_msg: "Mount failed: Permission denied",
      success_msg: null
    })
  })

  it("throws the guide's exceptions", async () => {
    const { client, server } = memoryClient({ timeout: 0.2 })
    const bad = request() as unknown as { job: { jobid: unknown } }
    bad.job.jobid = "job-12345"
    const e1 = await client.mount(bad).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(e1, RequestValidationException)
    assert.instanceOf(e1, DMSClientException)
    assert.include((e1 as Error).message, "job.jobid")
    server.gate = () => Effect.never
    const e2 = await client.mount(request()).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(e2, RequestTimeoutException)
    assert.strictEqual((e2 as RequestTimeoutException).error?._tag, "TimeoutError")
  })
})

describe("DMSClient.reconcile", () => {
  it("reports drift as a plain object, repairs it, and throws the guide's exceptions", async () => {
    const { client, server } = memoryClient()
    await client.mount(request(1))
    server.reboot("compute-01")
    const report = await client.reconcile("compute-01")
    assert.deepInclude(report, { host: "compute-01", statusSupported: true, statusMessage: null, repair: false, clean: false })
    assert.deepStrictEqual(report.stale.map((s) => [s.backupTargetId, [...s.jobIds], s.action]), [["target-nfs-prod", [1], "none"]])
    assert.deepInclude(report.counts, { held: 1, stale: 1, orphans: 0, pending: 0, remaining: 1 })
    assert.deepStrictEqual(JSON.parse(JSON.stringify(report.stale)), report.stale, "plain data: no Option, no class")

    const repaired = await client.reconcile("compute-01", { repair: true, requests: [request(1)] })
    assert.strictEqual(repaired.stale[0]!.action, "remounted")
    assert.isTrue(repaired.clean)
    assert.isTrue(server.isMounted("compute-01", "/var/lib/trilio/triliovault-mounts/nfs-prod"))
    assert.isTrue((await client.reconcile("compute-01")).clean)

    const sent = server.received.length
    const bad = await client.reconcile("", { repair: true }).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(bad, RequestValidationException)
    assert.include((bad as Error).message, "host: Expected a non-empty host name")
    assert.strictEqual(server.received.length, sent, "nothing sent")
  })
})

describe("MountContext", () => {
  it("mounts on enter and unmounts on exit, also with await using", async () => {
    const { client, server } = memoryClient()
    const ctx = await MountContext.enter(client, request())
    assert.strictEqual(ctx.getMountPath(), "/var/lib/trilio/triliovault-mounts/nfs-prod")
    assert.isTrue(server.isMounted("compute-01", ctx.getMountPath()))
    await ctx.exit()
    await ctx.exit()
    assert.isFalse(server.isMounted("compute-01", ctx.getMountPath()))
    {
      await using scoped = await MountContext.enter(client, request(2))
      assert.isTrue(server.isMounted("compute-01", scoped.getMountPath()))
    }
    assert.isFalse(server.isMounted("compute-01", "/var/lib/trilio/triliovault-mounts/nfs-prod"))
    assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted", "mounted", "unmounted"])
  })

  it("withMount unmounts when the callback throws, and rethrows its error", async () => {
    const { client, server } = memoryClient()
    const error = await withMount(client, request(), async (mount) => {
      assert.isTrue(server.isMounted("compute-01", mount.getMountPath()))
      throw new Error("backup failed")
    }).then(() => undefined, (e: unknown) => e)
    assert.strictEqual((error as Error).message, "backup failed")
    assert.isFalse(server.isMounted("compute-01", "/var/lib/trilio/triliovault-mounts/nfs-prod"))
    assert.deepStrictEqual(await client.getActiveMounts(), [])
  })

  it("throws MountException when the server refuses the mount", async () => {
    const { client, server } = memoryClient()
    server.failNext = { action: "mount", message: "Mount failed: Permission denied" }
    const error = await MountContext.enter(client, request()).then(() => undefined, (e: unknown) => e)
    assert.instanceOf(error, MountException)
    assert.strictEqual((error as Error).message, "Mount failed: Permission denied")
  })
})

describe("DMSClient against a database that is down at the first call", () => {
  it("connects again on the next call instead of remembering the failure", async () => {
    const database = uniqueName("dms_late")
    const server = FakeServer.make()
    const dbUrl = `mysql://root@${MYSQL_HOST}:${MYSQL_PORT}/${database}`
    const client = new DMSClient({
      layer: Dms.layer({
        dbUrl,
        rabbitmqUrl: "memory:",
        server: server.handler
      })
    })
    clients.push(client)
    const admin = await mysql.createConnection({ host: MYSQL_HOST, port: MYSQL_PORT, user: "root" })
    try {
      const first = await client.getActiveMounts().then(() => undefined, (e: unknown) => e)
      assert.instanceOf(first, DatabaseException)
      assert.include((first as Error).message, database)
      await admin.query(`CREATE DATABASE \`${database}\``)
      await Effect.runPromise(Ledger.migrate({ url: dbUrl }))
      assert.deepStrictEqual(await client.getActiveMounts(), [])
      assert.strictEqual((await client.mount(request())).status, "success")
    } finally {
      await client.close()
      await admin.query(`DROP DATABASE IF EXISTS \`${database}\``)
      await admin.end()
    }
  })
})
