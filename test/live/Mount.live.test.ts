/**
 * Live: the real MariaDB (and SQLite) ledger, the real RabbitMQ, and a model DMS server on the host's
 * queue. The guide's flows through the Promise facade, the backup workflow example, and two client
 * processes sharing one target on one host.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { BackupManager } from "../../examples/backup-workflow.js"
import { DMSClient, MountContext } from "../../src/promise.js"
import { Backend, mysqlBackend, sqliteBackend, tempDir } from "../support/backends.js"
import { spawnTs } from "../support/process.js"
import { RABBIT_URL, uniqueHost } from "../support/rabbit.js"
import { guideNfs } from "../support/requests.js"
import { modelServer } from "../support/responder.js"

const request = (jobid: number, host: string, mountPath: string) => guideNfs({ jobid, host, mountPath })

const client = (dbUrl: string) =>
  Effect.acquireRelease(
    Effect.sync(() => new DMSClient({ dbUrl, rabbitmqUrl: RABBIT_URL, timeout: 30 })),
    (c) => Effect.promise(() => c.close())
  )

describe("live: the guide's flows", () => {
  layer(mysqlBackend, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("mount, status, active mounts, history, unmount and the mount context through DMSClient", () =>
      Effect.gen(function*() {
        const backend = yield* Backend
        const host = uniqueHost("guide")
        const server = yield* modelServer(host)
        const dms = yield* client(backend.url!)
        const path1 = "/var/lib/trilio/triliovault-mounts/nfs-prod"
        const mounted = yield* Effect.promise(() => dms.mount(request(12345, host, path1)))
        assert.deepInclude(mounted, { status: "success", error_msg: null, mount_path: path1, physically_mounted: true })
        const second = yield* Effect.promise(() => dms.mount(request(12346, host, path1)))
        assert.deepInclude(second, { status: "success", reused_existing: true, physically_mounted: false })
        const status = yield* Effect.promise(() => dms.getMountStatus(12345, "target-nfs-prod", host))
        assert.isTrue(status?.mounted)
        const active = yield* Effect.promise(() => dms.getActiveMounts({ host }))
        assert.deepStrictEqual(active.map((m) => m.jobId), [12345, 12346])
        const first = yield* Effect.promise(() => dms.unmount({ ...request(12345, host, path1), action: "unmount" }))
        assert.deepInclude(first, { status: "success", unmounted: false, active_mounts_remaining: 1 })
        const last = yield* Effect.promise(() => dms.unmount({ ...request(12346, host, path1), action: "unmount" }))
        assert.deepInclude(last, { status: "success", unmounted: true, active_mounts_remaining: 0 })
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        const history = yield* Effect.promise(() => dms.getLedgerHistory("target-nfs-prod", 10))
        assert.includeMembers(history.map((h) => h.jobId), [12345, 12346])

        const ctx = yield* Effect.promise(() => MountContext.enter(dms, request(12347, host, path1)))
        assert.isTrue(server.isMounted(host, ctx.getMountPath()))
        yield* Effect.promise(() => ctx.exit())
        assert.isFalse(server.isMounted(host, path1))
        assert.deepStrictEqual(yield* Effect.promise(() => dms.getActiveMounts({ host })), [])
      }))

    it.scoped("the backup workflow example runs end to end", () =>
      Effect.gen(function*() {
        const backend = yield* Backend
        const host = uniqueHost("backup")
        const server = yield* modelServer(host)
        const dir = yield* tempDir
        const manager = new BackupManager(new DMSClient({ dbUrl: backend.url!, rabbitmqUrl: RABBIT_URL, timeout: 30 }))
        const ok = yield* Effect.promise(() =>
          manager.backupVm("vm-001", {
            id: "target-backup",
            type: "nfs",
            filesystem_export: "192.168.1.100:/backups",
            filesystem_export_mount_path: dir
          }, 4242, host)
        )
        assert.isTrue(ok)
        // The model server does not really mount: the example wrote into the directory itself.
        assert.isTrue(fs.existsSync(path.join(dir, "vm-001.img")))
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        const check = yield* client(backend.url!)
        const [row] = yield* Effect.promise(() => check.getLedgerHistory("target-backup"))
        assert.deepInclude(row!, { jobId: 4242, host, mounted: false })
      }))
  })
})

for (const [name, backendLayer] of [["mysql", mysqlBackend], ["sqlite", sqliteBackend]] as const) {
  describe(`live: two client processes share a target on one host (${name})`, () => {
    layer(backendLayer, { excludeTestServices: true, timeout: "90 seconds" })((it) => {
      it.scoped("one physical mount for both, one physical unmount after the last", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const host = uniqueHost(`procs-${name}`)
          const server = yield* modelServer(host)
          const args = JSON.stringify({ dbUrl: backend.url, rabbitmqUrl: RABBIT_URL })
          const [a, b] = yield* Effect.all([
            spawnTs("test/support/clientWorker.ts", [args]),
            spawnTs("test/support/clientWorker.ts", [args])
          ])
          yield* Effect.all([a!.waitFor("ready"), b!.waitFor("ready")], { concurrency: "unbounded" })
          const mountPath = "/var/lib/trilio/triliovault-mounts/shared"
          const run = (child: typeof a, op: "mount" | "unmount", jobid: number) =>
            Effect.gen(function*() {
              yield* child!.send(`${op} ${JSON.stringify({ ...request(jobid, host, mountPath), action: op })}`)
              return JSON.parse((yield* child!.take(`${op} `)).slice(op.length + 1)) as Record<string, unknown>
            })
          // Both processes mount at the same time.
          const [ma, mb] = yield* Effect.all([run(a, "mount", 1), run(b, "mount", 2)], { concurrency: "unbounded" })
          assert.strictEqual(ma.status, "success", JSON.stringify(ma))
          assert.strictEqual(mb.status, "success", JSON.stringify(mb))
          assert.strictEqual([ma, mb].filter((m) => m.physically_mounted === true).length, 1)
          assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted"])
          const ua = yield* run(a, "unmount", 1)
          assert.deepInclude(ua, { status: "success", unmounted: false, active_mounts_remaining: 1 })
          assert.isTrue(server.isMounted(host, mountPath))
          const ub = yield* run(b, "unmount", 2)
          assert.deepInclude(ub, { status: "success", unmounted: true })
          assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
          yield* Effect.all([a!.send("exit"), b!.send("exit")])
          assert.deepStrictEqual(yield* Effect.all([a!.exited, b!.exited]), [0, 0])
        }))
    })
  })
}
