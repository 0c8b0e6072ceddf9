/**
 * The mount table parser, on recorded lines and on a real tmpfs mounted under a temporary directory.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import * as MountInfo from "../../src/server/MountInfo.js"
import { serverDirs, sh } from "../support/dmsServer.js"

const sample = [
  "22 27 0:21 / /proc rw,relatime - proc proc rw",
  "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard",
  "61 27 0:52 / /var/lib/trilio/triliovault-mounts/nfs\\040prod rw,relatime shared:1 master:2 - nfs4 192.0.2.10:/backups rw,vers=4.2",
  "62 27 0:53 / /var/lib/trilio/triliovault-mounts/s3 rw,nosuid,nodev - fuse.s3fs s3fs:bucket rw,user_id=0",
  "63 27 0:54 / /var/lib/trilio/triliovault-mounts/s3 rw - tmpfs other rw",
  "garbage line",
  ""
].join("\n")

describe("MountInfo", () => {
  it("parses fields, optional fields and octal escapes", () => {
    const entries = MountInfo.parse(sample)
    assert.strictEqual(entries.length, 5)
    const nfs = entries[2]!
    assert.deepStrictEqual(
      { mountPoint: nfs.mountPoint, fsType: nfs.fsType, source: nfs.source, id: nfs.id, parentId: nfs.parentId },
      { mountPoint: "/var/lib/trilio/triliovault-mounts/nfs prod", fsType: "nfs4", source: "192.0.2.10:/backups", id: 61, parentId: 27 }
    )
  })

  it("at() returns the top of stacked mounts; under() only strictly below", () => {
    const entries = MountInfo.parse(sample)
    assert.strictEqual(MountInfo.at(entries, "/var/lib/trilio/triliovault-mounts/s3")?.source, "other")
    assert.isUndefined(MountInfo.at(entries, "/var/lib/trilio/triliovault-mounts"))
    assert.deepStrictEqual(
      MountInfo.under(entries, "/var/lib/trilio/triliovault-mounts").map((e) => e.id),
      [61, 62, 63]
    )
    assert.deepStrictEqual(MountInfo.under(entries, "/var/lib/trilio/triliovault-mount"), [])
    assert.isTrue(MountInfo.isFuse("fuse.s3fs"))
    assert.isTrue(MountInfo.isFuse("fuse"))
    assert.isFalse(MountInfo.isFuse("nfs4"))
  })

  it.scopedLive("reads a real mount (a tmpfs whose source plays an NFS export) from /proc/self/mountinfo", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const mountPoint = path.join(dirs.base, "with space")
      fs.mkdirSync(mountPoint)
      yield* Effect.acquireRelease(
        sh("mount", ["-t", "tmpfs", "-o", "size=1m", "192.0.2.10:/exports/a", mountPoint]),
        () => Effect.ignore(sh("umount", ["-l", mountPoint]))
      )
      const entry = MountInfo.at(yield* MountInfo.read(), mountPoint)
      assert.deepInclude(entry, { mountPoint, source: "192.0.2.10:/exports/a", fsType: "tmpfs" })
      yield* sh("umount", [mountPoint])
      assert.isUndefined(MountInfo.at(yield* MountInfo.read(), mountPoint))
    }))
})
