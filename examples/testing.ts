/**
 * A backup product's own unit tests with `trilio-dms/testing`: the whole client on memory and a fake
 * DMS server that says what got mounted, so the tests need no database, no RabbitMQ and no handler of
 * their own. A vitest file (`@effect/vitest`); the project's tests run it (test/testing.test.ts).
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { Mount } from "trilio-dms"
import { withMount } from "trilio-dms/promise"
import { FakeDmsServer, TestDms } from "trilio-dms/testing"

// The product's code under test: back up a VM with its target mounted for the length of the copy.
const request = (jobid: number) => ({
  keystone_token: "token",
  job: { jobid, action: "backup" },
  host: "compute-01",
  backup_target: {
    id: "target-nfs-prod",
    type: "nfs",
    filesystem_export: "192.168.1.100:/backups",
    filesystem_export_mount_path: "/var/lib/trilio/triliovault-mounts/nfs-prod"
  }
})

export const backupVm = <E, R>(jobId: number, copy: (mountPath: string) => Effect.Effect<void, E, R>) =>
  Mount.withMount(request(jobId), (mount) => copy(mount.mountPath))

describe("backupVm (Effect)", () => {
  it.effect("mounts the target for the copy and unmounts it afterwards", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      const seen: Array<boolean> = []
      yield* backupVm(12345, (path) => Effect.sync(() => seen.push(server.isMounted("compute-01", path))))
      assert.deepStrictEqual(seen, [true], "mounted during the copy")
      assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
    }).pipe(Effect.provide(TestDms.layer())))

  it.effect("a refused mount fails the backup with the server's message; nothing is copied", () =>
    Effect.gen(function*() {
      const server = yield* FakeDmsServer.FakeDmsServer
      server.fail("mount", "Mount failed: Permission denied")
      let copied = false
      const error = yield* Effect.flip(backupVm(12345, () => Effect.sync(() => void (copied = true))))
      assert.strictEqual(error._tag, "MountError")
      assert.strictEqual(error.message, "Mount failed: Permission denied")
      assert.isFalse(copied)
      assert.deepStrictEqual(yield* Mount.getActiveMounts(), [], "no job holds it")
    }).pipe(Effect.provide(TestDms.layer())))
})

describe("backupVm (Promise)", () => {
  it("mounts through a DMSClient on memory", async () => {
    const { client, server } = TestDms.client()
    try {
      const path = await withMount(client, request(12345), async (mount) => mount.getMountPath())
      assert.strictEqual(path, "/var/lib/trilio/triliovault-mounts/nfs-prod")
      assert.deepStrictEqual(server.received.map((r) => [r.action, r.jobId]), [["mount", 12345], ["unmount", 12345]])
      assert.isFalse(server.isMounted("compute-01", path))
    } finally {
      await client.close()
    }
  })
})
