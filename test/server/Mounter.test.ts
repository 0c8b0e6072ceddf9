/**
 * The Mounter with NFS: the command runner is injected (this kernel has no NFS client), so the tests
 * check the exact argv, the option allow-list, the unmount fallbacks and the timeouts; the mount table
 * is the real one, where a tmpfs whose source is the export plays the NFS mount.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import {
  awaitGone,
  type Call,
  failWith,
  playNfsMount,
  pollUntil,
  recordingRunner,
  type RecordingRunner,
  type ServerDirs,
  serverDirs,
  sh
} from "../support/dmsServer.js"
import * as MountInfo from "../../src/server/MountInfo.js"

const makeMounter = (dirs: ServerDirs, runner: RecordingRunner, extra: Partial<Mounter.Options> = {}) =>
  Mounter.make({ mountBase: dirs.base, runDir: dirs.run, nfsFsTypes: ["nfs", "nfs4", "tmpfs"], ...extra }).pipe(
    Effect.provideService(CommandRunner.CommandRunner, runner.service),
    Effect.provideService(Barbican.Barbican, Barbican.make())
  )

/** mount plays NFS with a tmpfs; umount really unmounts. */
const realistic = (call: Call) =>
  call.command === "mount" ? playNfsMount(call) : sh(call.command, call.args)

const nfs = (p: string, options: string | null = "rw,sync,hard,intr,nfsvers=4", exp = "192.0.2.10:/backups"): Mounter.MountSpec => ({
  type: "nfs",
  targetId: "target-nfs",
  path: p,
  export: exp,
  options
})

const mountedAt = (p: string) => Effect.map(MountInfo.read(), (t) => MountInfo.at(t, p))

describe("NFS options and exports", () => {
  it("keeps allowed options and always adds nosuid,nodev,noexec (noexec not when exec is allowed by configuration)", () => {
    assert.deepStrictEqual(Mounter.checkNfsOptions("rw,sync,hard,intr,nfsvers=4"), Either.right("rw,sync,hard,intr,nfsvers=4,nosuid,nodev,noexec"))
    assert.deepStrictEqual(Mounter.checkNfsOptions(null), Either.right("nosuid,nodev,noexec"))
    assert.deepStrictEqual(Mounter.checkNfsOptions(null, { allowExec: true }), Either.right("nosuid,nodev"))
    assert.deepStrictEqual(Mounter.checkNfsOptions("rw,noexec", { allowExec: true }), Either.right("rw,noexec,nosuid,nodev"))
    assert.deepStrictEqual(Mounter.checkNfsOptions(" nolock, soft,timeo=180,intr,nosuid "), Either.right("nolock,soft,timeo=180,intr,nosuid,nodev,noexec"))
    assert.deepStrictEqual(Mounter.checkNfsOptions("sec=krb5p,proto=tcp6,vers=4.2"), Either.right("sec=krb5p,proto=tcp6,vers=4.2,nosuid,nodev,noexec"))
  })

  it("refuses exec, suid, dev, unknown options, bad values and anything that is not an option", () => {
    const refused: ReadonlyArray<[string, string]> = [
      ["rw,exec", `option "exec" is not allowed`],
      ["suid", `option "suid" is not allowed`],
      ["dev,rw", `option "dev" is not allowed`],
      ["defaults", `option "defaults" is not allowed`],
      ["remount", `option "remount" is not allowed`],
      ["rw,bg", `option "bg" is not allowed`],
      ["nfsvers=5", "bad value for nfsvers"],
      ["rw;reboot", `"rw;reboot" is not a mount option`],
      ["-o remount", `"-o remount" is not a mount option`],
      ["rw,context=system_u:object_r:nfs_t", `option "context" is not allowed`],
      ["timeo=1 0", `"timeo=1 0" is not a mount option`]
    ]
    for (const [raw, message] of refused) {
      const result = Mounter.checkNfsOptions(raw)
      assert.isTrue(Either.isLeft(result), raw)
      assert.include(Either.getLeft(result).pipe((o) => (o._tag === "Some" ? o.value : "")), message, raw)
    }
  })

  it("accepts host:/path exports and refuses ones that could be read as options", () => {
    for (const ok of ["192.0.2.10:/backups", "[fd00::1]:/export", "nfs-1.example.com:/a/b", "host:/"]) {
      assert.isTrue(Either.isRight(Mounter.checkNfsExport(ok)), ok)
    }
    for (const bad of ["-oremount:/x", "host:relative", "host:/a b", "host:/a/../b", "a;b:/x", "host", ":/x"]) {
      assert.isTrue(Either.isLeft(Mounter.checkNfsExport(bad)), bad)
    }
  })
})

describe("Mounter (nfs)", () => {
  it.scopedLive("mounts with the exact argv, verifies the mount table, then is idempotent; unmounts and removes the directory", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "nfs-a")
      const first = yield* mounter.mount(nfs(p), Infinity)
      assert.deepStrictEqual(first, { alreadyMounted: false, mountPoint: p, message: `NFS target mounted successfully at ${p}` })
      assert.deepStrictEqual(runner.calls.map((c) => [c.command, ...c.resolved]), [
        ["mount", "--no-canonicalize", "-t", "nfs", "-o", "rw,sync,hard,intr,nfsvers=4,nosuid,nodev,noexec", "192.0.2.10:/backups", p]
      ])
      assert.match(runner.calls[0]!.args.at(-1)!, new RegExp(`^/proc/${process.pid}/fd/\\d+$`), "the target is the checked directory, held open")
      assert.strictEqual((yield* mountedAt(p))?.source, "192.0.2.10:/backups")
      const state = JSON.parse(fs.readFileSync(path.join(dirs.run, "state", "target-nfs.json"), "utf8"))
      assert.deepInclude(state, { backup_target_id: "target-nfs", type: "nfs", source: "192.0.2.10:/backups", mount_path: p })

      const again = yield* mounter.mount(nfs(p), Infinity)
      assert.deepStrictEqual(again, { alreadyMounted: true, mountPoint: p, message: `Already mounted at ${p}` })
      assert.strictEqual(runner.calls.length, 1, "nothing executed for a mount that is already there")

      const status = yield* mounter.status
      assert.deepStrictEqual(status.map((s) => [s.backup_target_id, s.mount_path, s.mounted]), [["target-nfs", p, true]])

      const un = yield* mounter.unmount({ targetId: "target-nfs", type: "nfs", path: p }, Infinity)
      assert.deepStrictEqual(un, { wasMounted: true, mountPoint: p, message: `Target unmounted successfully from ${p}` })
      assert.deepStrictEqual(runner.calls.slice(1).map((c) => [c.command, ...c.args]), [["umount", p]])
      assert.isUndefined(yield* mountedAt(p))
      assert.isFalse(fs.existsSync(p), "the empty mount directory is removed")
      assert.isFalse(fs.existsSync(path.join(dirs.run, "state", "target-nfs.json")))
      assert.deepStrictEqual(yield* mounter.status, [])

      const none = yield* mounter.unmount({ targetId: "target-nfs", type: "nfs", path: p }, Infinity)
      assert.deepStrictEqual(none, { wasMounted: false, mountPoint: p, message: `Target not mounted at ${p}` })
      assert.strictEqual(runner.calls.length, 2, "nothing executed to unmount what is not mounted")
    }))

  it.scopedLive("NFS mounts run with nosuid,nodev,noexec by default, and without noexec only when the configuration allows exec", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      runner.behave = realistic
      const strict = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "plain")
      yield* strict.mount(nfs(p, null), Infinity)
      const allowing = yield* makeMounter(dirs, runner, { nfsAllowExec: true })
      const q = path.join(dirs.base, "exec")
      yield* allowing.mount({ ...nfs(q, "rw"), targetId: "target-exec" }, Infinity)
      assert.deepStrictEqual(runner.calls.map((c) => [c.command, ...c.resolved]), [
        ["mount", "--no-canonicalize", "-t", "nfs", "-o", "nosuid,nodev,noexec", "192.0.2.10:/backups", p],
        ["mount", "--no-canonicalize", "-t", "nfs", "-o", "rw,nosuid,nodev", "192.0.2.10:/backups", q]
      ])
    }))

  it.scopedLive("a mount command that succeeds without mounting (the path is the local directory) is an error", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      const mounter = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "fake")
      const error = yield* Effect.flip(mounter.mount(nfs(p), Infinity))
      assert.include(error.message, "does not show 192.0.2.10:/backups in the mount table; the path is NOT mounted")
      assert.strictEqual(runner.calls.length, 1)
      assert.isFalse(fs.existsSync(path.join(dirs.run, "state", "target-nfs.json")))
    }))

  it.scopedLive("a mount that shows another source afterwards is an error", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      runner.behave = (call) => sh("mount", ["--no-canonicalize", "-t", "tmpfs", "-o", "size=1m", "203.0.113.9:/elsewhere", call.args.at(-1)!])
      const mounter = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "wrong")
      const error = yield* Effect.flip(mounter.mount(nfs(p), Infinity))
      assert.include(error.message, "shows 203.0.113.9:/elsewhere (tmpfs) instead of 192.0.2.10:/backups")
    }))

  it.scopedLive("a path already mounted from another source is refused; nothing is executed", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      const mounter = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "taken")
      fs.mkdirSync(p)
      yield* sh("mount", ["-t", "tmpfs", "-o", "size=1m", "198.51.100.1:/other", p])
      const error = yield* Effect.flip(mounter.mount(nfs(p), Infinity))
      assert.include(error.message, `${p} is already mounted from 198.51.100.1:/other (tmpfs); refusing to mount 192.0.2.10:/backups there`)
      assert.isTrue(error.refused)
      assert.deepStrictEqual(runner.calls, [])
    }))

  it.scopedLive("paths outside the base, with '..', through symbolic links, on files or inside other mounts are refused; nothing is executed", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      const mounter = yield* makeMounter(dirs, runner)
      const outside = path.join(dirs.root, "outside")
      fs.mkdirSync(outside)
      fs.symlinkSync(outside, path.join(dirs.base, "link"))
      fs.writeFileSync(path.join(dirs.base, "file"), "x")
      const nested = path.join(dirs.base, "nested")
      fs.mkdirSync(nested)
      yield* sh("mount", ["-t", "tmpfs", "-o", "size=1m", "192.0.2.10:/backups", nested])
      const cases: ReadonlyArray<[string, string]> = [
        [`${dirs.base}/../escape`, "must not contain '..'"],
        [`${dirs.base}/a/../../escape`, "must not contain '..'"],
        ["/etc/dms-evil", "is not inside the mount base"],
        [dirs.base, "is not inside the mount base"],
        [`${dirs.base}-sibling/x`, "is not inside the mount base"],
        ["relative/path", "must be an absolute path"],
        [`${dirs.base}/link/x`, "goes through a symbolic link"],
        [`${dirs.base}/link`, "goes through a symbolic link"],
        [`${dirs.base}/file`, "is not a directory"],
        [`${nested}/inner`, "is inside another mount"]
      ]
      for (const [p, message] of cases) {
        const error = yield* Effect.flip(mounter.mount(nfs(p), Infinity))
        assert.include(error.message, message, p)
        assert.isTrue(error.refused, p)
        const unError = yield* Effect.flip(mounter.unmount({ targetId: "target-nfs", type: "nfs", path: p }, Infinity))
        assert.include(unError.message, message, `unmount ${p}`)
      }
      assert.deepStrictEqual(runner.calls, [])
      assert.deepStrictEqual(fs.readdirSync(outside), [], "nothing created through the link")
      assert.isFalse(fs.existsSync(path.join(dirs.root, "escape")))
    }))

  it.scopedLive("option and export injection is refused before anything runs", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      const mounter = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "inj")
      for (const options of ["rw,exec", "rw;reboot", "-o remount"]) {
        const error = yield* Effect.flip(mounter.mount(nfs(p, options), Infinity))
        assert.include(error.message, "invalid nfs_mount_opts", options)
      }
      const error = yield* Effect.flip(mounter.mount(nfs(p, "rw", "-oremount:/x"), Infinity))
      assert.include(error.message, "invalid filesystem_export")
      assert.deepStrictEqual(runner.calls, [])
      assert.isFalse(fs.existsSync(p))
    }))

  it.scopedLive("unmount falls back from umount to umount -f to umount -l", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "busy")
      yield* mounter.mount(nfs(p), Infinity)
      runner.calls.length = 0
      runner.behave = (call) =>
        call.args[0] === "-l" ? sh("umount", call.args) : failWith(call, `umount: ${p}: target is busy.`)
      const result = yield* mounter.unmount({ targetId: "target-nfs", type: "nfs", path: p }, Infinity)
      assert.isTrue(result.wasMounted)
      assert.deepStrictEqual(runner.calls.map((c) => [c.command, ...c.args]), [["umount", p], ["umount", "-f", p], ["umount", "-l", p]])
      assert.isUndefined(yield* mountedAt(p))
    }))

  it.scopedLive("when every unmount fails the error says why and the mount stays recorded", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner)
      const p = path.join(dirs.base, "stuck")
      yield* mounter.mount(nfs(p), Infinity)
      runner.behave = (call) => failWith(call, `umount: ${p}: target is busy.`)
      const error = yield* Effect.flip(mounter.unmount({ targetId: "target-nfs", type: "nfs", path: p }, Infinity))
      assert.include(error.message, `cannot unmount ${p}`)
      assert.include(error.message, "target is busy")
      assert.strictEqual(runner.calls.filter((c) => c.command === "umount").length, 3)
      assert.isDefined(yield* mountedAt(p))
      assert.deepStrictEqual((yield* mounter.status).map((s) => s.backup_target_id), ["target-nfs"])
    }))

  it.scopedLive("a hung mount command is killed when the request's time runs out", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const pidFile = path.join(dirs.root, "hung.pid")
      const script = path.join(dirs.root, "hung-mount")
      fs.writeFileSync(script, `#!/bin/sh\necho $$ > ${pidFile}\nexec sleep 300\n`, { mode: 0o755 })
      const runner = recordingRunner()
      runner.behave = (call) => CommandRunner.run({ command: call.command, args: call.args, timeout: Duration.millis(call.timeoutMs) })
      const mounter = yield* makeMounter(dirs, runner, { mountCommand: script })
      const started = Date.now()
      const error = yield* Effect.flip(mounter.mount(nfs(path.join(dirs.base, "hung")), Date.now() + 700))
      assert.include(error.message, "did not finish within")
      assert.isAtMost(runner.calls[0]!.timeoutMs, 700, "the timeout is sized from the time left")
      assert.isBelow(Date.now() - started, 5_000)
      const pid = Number(fs.readFileSync(pidFile, "utf8"))
      assert.isTrue(yield* awaitGone(pid, "5 seconds"), "the hung command was killed")
    }))

  it.scopedLive("without a deadline, commands are bounded by the command timeout", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      runner.behave = (call) => CommandRunner.run({ command: "sleep", args: ["300"], timeout: Duration.millis(call.timeoutMs) })
      const mounter = yield* makeMounter(dirs, runner, { commandTimeout: "300 millis" })
      const error = yield* Effect.flip(mounter.mount(nfs(path.join(dirs.base, "slow")), Infinity))
      assert.include(error.message, "did not finish within 300 ms")
    }))

  it.scopedLive("a request past its deadline runs nothing", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      const mounter = yield* makeMounter(dirs, runner)
      const error = yield* Effect.flip(mounter.mount(nfs(path.join(dirs.base, "late")), Date.now() - 1))
      assert.include(error.message, "deadline passed")
      assert.deepStrictEqual(runner.calls, [])
    }))

  it.scopedLive("a target has one mount path per host", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner)
      const p1 = path.join(dirs.base, "one")
      yield* mounter.mount(nfs(p1), Infinity)
      const error = yield* Effect.flip(mounter.mount(nfs(path.join(dirs.base, "two")), Infinity))
      assert.include(error.message, `target target-nfs is already mounted at ${p1}`)
      // …and a path has one target: another target is refused there, even from the same export.
      const other = yield* Effect.flip(mounter.mount({ ...nfs(p1), targetId: "other-target" }, Infinity))
      assert.include(other.message, `${p1} is already mounted for target target-nfs; refusing to mount other-target there`)
      const otherUnmount = yield* Effect.flip(mounter.unmount({ targetId: "other-target", type: "nfs", path: p1 }, Infinity))
      assert.include(otherUnmount.message, `${p1} is mounted for target target-nfs, not other-target; refusing to unmount it`)
      assert.strictEqual(runner.calls.length, 1)
      yield* pollUntil(mounter.status, (s) => s.length === 1)
    }))
})

/**
 * A local user who can write under the mount base swaps a component of the mount path for a symbolic
 * link between the check and the use. The test-only hook runs the swap at each such point.
 */
describe("Mounter: confinement without a race", () => {
  type Stage = Parameters<NonNullable<Mounter.Options["betweenCheckAndUse"]>>[0]

  /** Runs `swap` once, at `stage`. */
  const swapAt = (stage: Stage, swap: () => void): Partial<Mounter.Options> => {
    let done = false
    return {
      betweenCheckAndUse: (s) =>
        Effect.sync(() => {
          if (s !== stage || done) return
          done = true
          swap()
        })
    }
  }

  /** Replaces the directory `dir` with a link to `to`; the directory itself is kept as `<dir>.old`. */
  const swapForLink = (dir: string, to: string) => () => {
    fs.renameSync(dir, `${dir}.old`)
    fs.symlinkSync(to, dir)
  }

  /** A tmpfs mounted by the test, detached in the scope's finalizer. */
  const tmpfsAt = (dir: string, source: string) =>
    Effect.acquireRelease(
      Effect.zipRight(Effect.sync(() => fs.mkdirSync(dir, { recursive: true })), sh("mount", ["-t", "tmpfs", "-o", "size=1m", source, dir])),
      () => Effect.ignore(sh("umount", ["-l", dir]))
    )

  const outsideDir = (dirs: ServerDirs) =>
    Effect.sync(() => {
      const outside = path.join(dirs.root, "outside")
      fs.mkdirSync(path.join(outside, "m"), { recursive: true })
      return outside
    })

  const mountsAtOrUnder = (dir: string) =>
    Effect.map(MountInfo.read(), (t) => [...(MountInfo.at(t, dir) === undefined ? [] : [dir]), ...MountInfo.under(t, dir).map((e) => e.mountPoint)])

  it.scopedLive("a mount point swapped for a link after its creation is refused; nothing runs, nothing is mounted; the path mounts once restored", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const outside = yield* outsideDir(dirs)
      const p = path.join(dirs.base, "swapped")
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner, swapAt("mount", swapForLink(p, outside)))
      const error = yield* Effect.flip(mounter.mount(nfs(p), Infinity))
      assert.strictEqual(error.message, `mount path ${p} changed after it was checked: ${p} is now a symbolic link; refused`)
      assert.isTrue(error.refused)
      assert.deepStrictEqual(runner.calls, [], "mount never ran")
      assert.deepStrictEqual(yield* mountsAtOrUnder(outside), [], "nothing mounted outside the base")
      assert.deepStrictEqual(yield* mountsAtOrUnder(dirs.base), [], "nothing mounted under the base")
      assert.isFalse(fs.existsSync(path.join(dirs.run, "state", "target-nfs.json")))

      fs.unlinkSync(p)
      fs.renameSync(`${p}.old`, p)
      const mounted = yield* mounter.mount(nfs(p), Infinity)
      assert.isFalse(mounted.alreadyMounted)
      assert.strictEqual((yield* mountedAt(p))?.source, "192.0.2.10:/backups")
      yield* mounter.unmount({ targetId: "target-nfs", type: "nfs", path: p }, Infinity)
      assert.isUndefined(yield* mountedAt(p))
    }))

  it.scopedLive("an intermediate component swapped for a link after the mount point's creation is refused; nothing is mounted", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const outside = yield* outsideDir(dirs)
      const parent = path.join(dirs.base, "x")
      const p = path.join(parent, "m")
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner, swapAt("mount", swapForLink(parent, outside)))
      const error = yield* Effect.flip(mounter.mount(nfs(p), Infinity))
      assert.strictEqual(error.message, `mount path ${p} changed after it was checked: ${parent} is now a symbolic link; refused`)
      assert.isTrue(error.refused)
      assert.deepStrictEqual(runner.calls, [])
      assert.deepStrictEqual(yield* mountsAtOrUnder(outside), [])
      assert.deepStrictEqual(yield* mountsAtOrUnder(dirs.base), [])
    }))

  it.scopedLive("a swap after the re-check, before mount runs, mounts only the checked directory, which is then detached and refused", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const outside = yield* outsideDir(dirs)
      const p = path.join(dirs.base, "late-swap")
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner, swapAt("mount-command", swapForLink(p, path.join(outside, "m"))))
      const error = yield* Effect.flip(mounter.mount(nfs(p), Infinity))
      assert.strictEqual(
        error.message,
        `mount path ${p} was moved (to ${p}.old) while it was being mounted; the mount that landed at ${p}.old was detached; refused`
      )
      assert.deepStrictEqual(runner.calls.map((c) => [c.command, ...c.resolved]), [
        ["mount", "--no-canonicalize", "-t", "nfs", "-o", "rw,sync,hard,intr,nfsvers=4,nosuid,nodev,noexec", "192.0.2.10:/backups", `${p}.old`],
        ["umount", "-l", `${p}.old`]
      ], "mount went onto the directory that was checked, not through the link")
      assert.deepStrictEqual(yield* mountsAtOrUnder(outside), [], "nothing mounted outside the base")
      assert.deepStrictEqual(yield* mountsAtOrUnder(dirs.base), [], "nothing left mounted")
      assert.isFalse(fs.existsSync(path.join(dirs.run, "state", "target-nfs.json")))
    }))

  it.scopedLive("an unmount whose path was swapped for a link is refused and unmounts nothing", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const outside = yield* outsideDir(dirs)
      const parent = path.join(dirs.base, "x")
      const p = path.join(parent, "m")
      yield* tmpfsAt(path.join(outside, "m"), "198.51.100.7:/decoy")
      const runner = recordingRunner()
      runner.behave = realistic
      const mounter = yield* makeMounter(dirs, runner, swapAt("unmount", swapForLink(parent, outside)))
      yield* mounter.mount(nfs(p), Infinity)
      const moved = path.join(`${parent}.old`, "m")
      yield* Effect.addFinalizer(() => Effect.ignore(sh("umount", ["-l", moved])))
      runner.calls.length = 0
      const error = yield* Effect.flip(mounter.unmount({ targetId: "target-nfs", type: "nfs", path: p }, Infinity))
      assert.strictEqual(error.message, `mount path ${p} changed after it was checked: ${parent} is now a symbolic link; refused`)
      assert.isTrue(error.refused)
      assert.deepStrictEqual(runner.calls, [], "umount never ran")
      assert.strictEqual((yield* mountedAt(path.join(outside, "m")))?.source, "198.51.100.7:/decoy", "the decoy is still mounted")
      assert.strictEqual((yield* mountedAt(moved))?.source, "192.0.2.10:/backups", "the target's mount is left alone")
    }))
})
