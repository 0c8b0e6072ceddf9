/**
 * When an S3 mount counts as mounted, with the interleavings forced. s3fs checks the keys in FUSE's
 * init, after the mount already shows; when the check fails it unmounts, then exits. A check of the new
 * mount that lands in that gap answers from the bare directory underneath. Here the Mounter runs real
 * s3fs against a local S3 server (s3rver); the check (`stat`, through the recording runner) is where
 * the test steps in: it stops the test's own daemon and detaches its mount (the gap, held open), or
 * plays S3 refusing the lookup while the mount stays.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import * as MountInfo from "../../src/server/MountInfo.js"
import { awaitGone, type Call, failWith, processesUsing, recordingRunner, serverDirs, sh } from "../support/dmsServer.js"
import { startS3WithSecret } from "../support/s3.js"

const TOKEN = "gAAAA-probe-token"

const setup = (check: (call: Call, ctx: { readonly pidFile: string; readonly mountPath: string }) => Effect.Effect<CommandRunner.Output, CommandRunner.CommandError>) =>
  Effect.gen(function*() {
    const dirs = yield* serverDirs
    const { barbican, secretRef } = yield* startS3WithSecret(TOKEN)
    const mountPath = path.join(dirs.base, "target-s3")
    const pidFile = path.join(dirs.run, "s3", "target-s3.pid")
    const runner = recordingRunner()
    runner.behave = (call) => (call.command === "stat" ? check(call, { pidFile, mountPath }) : sh(call.command, call.args))
    const mounter = yield* Mounter.make({ mountBase: dirs.base, runDir: dirs.run, daemonStopGrace: "500 millis" }).pipe(
      Effect.provideService(CommandRunner.CommandRunner, runner.service),
      Effect.provideService(Barbican.Barbican, Barbican.make({ endpoint: barbican.url }))
    )
    const spec: Mounter.MountSpec = { type: "s3", targetId: "target-s3", path: mountPath, secretRef, token: Redacted.make(TOKEN) }
    return { dirs, mounter, spec, mountPath, pidFile, runner }
  })

/** Nothing is left: no daemon, no mount, no state, PID or passwd file, no mount directory. */
const assertNothingLeft = (dirs: { readonly root: string; readonly run: string }, mountPath: string, daemon: number) =>
  Effect.gen(function*() {
    assert.isTrue(yield* awaitGone(daemon), "the daemon is stopped")
    assert.deepStrictEqual(processesUsing(dirs.root), [])
    assert.isUndefined(MountInfo.at(yield* MountInfo.read(), mountPath))
    assert.deepStrictEqual(fs.readdirSync(path.join(dirs.run, "s3")).filter((f) => !f.endsWith(".log")), [])
    assert.deepStrictEqual(fs.readdirSync(path.join(dirs.run, "state")), [])
    assert.isFalse(fs.existsSync(mountPath))
  })

describe("S3 mount readiness (real s3fs, forced interleavings)", () => {
  it.scopedLive("a driver that unmounts after the mount showed, and has not exited yet, is never reported mounted", () =>
    Effect.gen(function*() {
      let daemon = 0
      const { dirs, mounter, spec, mountPath, runner } = yield* setup((call, { pidFile, mountPath }) =>
        Effect.gen(function*() {
          // The gap, held open: the daemon is alive (stopped) and its mount gone from the table, so the
          // lookup answers from the bare directory, as it does when s3fs gave up and unmounts.
          daemon = Number(fs.readFileSync(pidFile, "utf8"))
          process.kill(daemon, "SIGSTOP")
          yield* sh("umount", ["-l", mountPath]).pipe(Effect.orDie)
          return yield* sh(call.command, call.args)
        })
      )
      const error = yield* Effect.flip(mounter.mount(spec, Infinity))
      assert.include(error.reason, `the S3 driver s3fs could not mount ${mountPath}: the mount went away`)
      assert.strictEqual(runner.calls.filter((c) => c.command === "stat").length, 1)
      assert.notStrictEqual(daemon, 0)
      yield* assertNothingLeft(dirs, mountPath, daemon)
    }), { timeout: 60_000 })

  it.scopedLive("a mount whose lookup S3 refuses is not mounted: the daemon is stopped and the mount removed", () =>
    Effect.gen(function*() {
      let daemon = 0
      const { dirs, mounter, spec, mountPath } = yield* setup((call, { pidFile }) =>
        Effect.sync(() => (daemon = Number(fs.readFileSync(pidFile, "utf8")))).pipe(
          Effect.zipRight(failWith(call, `stat: cannot statx '${call.args[2]}': Operation not permitted`))
        )
      )
      const error = yield* Effect.flip(mounter.mount(spec, Infinity))
      assert.include(error.reason, `the S3 driver s3fs could not mount ${mountPath}: the new mount does not answer`)
      assert.include(error.reason, "Operation not permitted")
      assert.notStrictEqual(daemon, 0)
      yield* assertNothingLeft(dirs, mountPath, daemon)
    }), { timeout: 60_000 })

  it.scopedLive("a good mount answers the lookup with 'no such file' and stays: mounted", () =>
    Effect.gen(function*() {
      const { mounter, spec, mountPath, runner } = yield* setup((call) => sh(call.command, call.args))
      const mounted = yield* mounter.mount(spec, Infinity)
      assert.deepStrictEqual(mounted, { alreadyMounted: false, mountPoint: mountPath, message: `S3 target mounted successfully at ${mountPath}` })
      const [check] = runner.calls.filter((c) => c.command === "stat")
      assert.match(check!.args[2]!, new RegExp(`^${mountPath}/\\.dms-mount-check-[0-9a-f-]{36}$`))
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), mountPath)?.fsType, "fuse.s3fs")
      yield* mounter.unmount({ targetId: "target-s3", type: "s3", path: mountPath }, Infinity)
      assert.isUndefined(MountInfo.at(yield* MountInfo.read(), mountPath))
    }), { timeout: 60_000 })
})
