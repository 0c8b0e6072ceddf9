/**
 * S3 end to end, for real: a local S3 server (s3rver) on loopback, s3fs from Debian's packages, a fake
 * Barbican, this server consuming the real RabbitMQ, and the client (ledger in SQLite) on the other
 * side. The FUSE mounts are real: files written under the mount path become objects in the bucket.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as Dms from "../../src/Dms.js"
import * as Mount from "../../src/Mount.js"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import * as MountInfo from "../../src/server/MountInfo.js"
import * as Server from "../../src/server/Server.js"
import { startBarbican, startRecorder } from "../support/barbican.js"
import {
  awaitGone,
  awaitMountState,
  isAlive,
  pollUntil,
  processesUsing,
  recordingRunner,
  rpc,
  type ServerDirs,
  serverDirs,
  sh
} from "../support/dmsServer.js"
import { deleteOnClose, RABBIT_URL, uniqueHost } from "../support/rabbit.js"
import { S3_ACCESS_KEY, S3_SECRET_KEY, startS3 } from "../support/s3.js"

const GOOD_TOKEN = "gAAAA-good-keystone-token"

const setup = (label: string, options: { readonly endpoint?: "fake" | "none" } = {}) =>
  Effect.gen(function*() {
    const dirs = yield* serverDirs
    const s3 = yield* startS3()
    const barbican = yield* startBarbican
    const secretRef = barbican.addSecret("s3-creds", GOOD_TOKEN, {
      aws_access_key_id: S3_ACCESS_KEY,
      aws_secret_access_key: S3_SECRET_KEY,
      vault_s3_bucket: s3.bucket,
      vault_s3_endpoint_url: s3.endpoint,
      vault_s3_region_name: "us-east-1",
      vault_s3_ssl: "false"
    })
    const runner = recordingRunner()
    runner.behave = (call) => CommandRunner.run({ command: call.command, args: call.args, timeout: Duration.millis(call.timeoutMs) })
    const host = uniqueHost(label)
    yield* deleteOnClose(Broker.queueName(host))
    const mounter = Layer.effect(Mounter.Mounter, Mounter.make({ mountBase: dirs.base, runDir: dirs.run, commandTimeout: "30 seconds" })).pipe(
      Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)),
      Layer.provide(Barbican.layer(options.endpoint === "none" ? {} : { endpoint: barbican.url }))
    )
    const ctx = yield* Layer.build(Server.layer({ nodeId: host, rabbitmqUrl: RABBIT_URL }).pipe(Layer.provide(mounter)))
    const server = Context.get(ctx, Server.Server)
    yield* server.ready.pipe(Effect.timeout("20 seconds"))
    return { dirs, s3, barbican, secretRef, runner, host, server }
  })

const s3Request = (host: string, dirs: ServerDirs, secretRef: string, jobid: number, token = GOOD_TOKEN) => ({
  job: { jobid },
  host,
  keystone_token: token,
  backup_target: {
    id: "target-s3",
    type: "s3",
    status: "available",
    filesystem_export_mount_path: path.join(dirs.base, "target-s3"),
    secret_ref: secretRef
  }
})

const fuseSpawns = (runner: ReturnType<typeof recordingRunner>) => runner.calls.filter((c) => c.command === "s3fs")

describe("S3 end to end (s3rver + s3fs + fake Barbican + RabbitMQ)", () => {
  it.scopedLive("two jobs share one real S3 mount through the client: one physical mount, one physical unmount", () =>
    Effect.gen(function*() {
      const { dirs, s3, barbican, secretRef, runner, host } = yield* setup("s3-share")
      const client = Dms.layer({ dbUrl: `sqlite:${path.join(dirs.root, "ledger.db")}`, rabbitmqUrl: RABBIT_URL, timeout: 60 })
      const mountPath = path.join(dirs.base, "target-s3")
      const files = {
        pid: path.join(dirs.run, "s3", "target-s3.pid"),
        passwd: path.join(dirs.run, "s3", "target-s3.passwd"),
        log: path.join(dirs.run, "s3", "target-s3.log"),
        state: path.join(dirs.run, "state", "target-s3.json")
      }
      yield* Effect.gen(function*() {
        const m1 = yield* Mount.mount(s3Request(host, dirs, secretRef, 1))
        assert.deepInclude(m1, { mountPath, physicallyMounted: true, reusedExisting: false, message: `S3 target mounted successfully at ${mountPath}` })
        const m2 = yield* Mount.mount(s3Request(host, dirs, secretRef, 2))
        assert.deepInclude(m2, { physicallyMounted: false, reusedExisting: true, message: `Already mounted at ${mountPath}` })

        // Really mounted, by one daemon whose PID file names it; no secret on its command line, in its
        // environment, in its log, or left on disk.
        const entry = MountInfo.at(yield* MountInfo.read(), mountPath)
        assert.deepInclude(entry, { fsType: "fuse.s3fs", source: `s3fs:${s3.bucket}` })
        assert.strictEqual(fuseSpawns(runner).length, 1)
        const pid = Number(fs.readFileSync(files.pid, "utf8"))
        assert.isTrue(isAlive(pid))
        const argv = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
        assert.strictEqual(path.basename(argv[0]!), "s3fs")
        assert.include(argv, mountPath)
        const environ = fs.readFileSync(`/proc/${pid}/environ`, "utf8")
        for (const secret of [S3_SECRET_KEY, GOOD_TOKEN]) {
          assert.notInclude(argv.join(" "), secret)
          assert.notInclude(environ, secret)
          assert.notInclude(fs.readFileSync(files.log, "utf8"), secret)
        }
        assert.isFalse(fs.existsSync(files.passwd), "the passwd file is removed once mounted")
        assert.deepInclude(JSON.parse(fs.readFileSync(files.state, "utf8")), { backup_target_id: "target-s3", type: "s3" })
        assert.deepStrictEqual(
          barbican.requests().map((r) => [r.path, r.token, r.status]),
          [["/v1/secrets/s3-creds", GOOD_TOKEN, 200], ["/v1/secrets/s3-creds/payload", GOOD_TOKEN, 200]],
          "credentials read once, for the physical mount"
        )

        // A file written under the mount path is an object in the bucket.
        yield* Effect.promise(() => fs.promises.writeFile(path.join(mountPath, "vm-001.img"), "backup data"))
        assert.strictEqual(yield* pollUntil(s3.object("vm-001.img"), (o) => o === "backup data"), "backup data")
        const listed = yield* Effect.promise(() => fs.promises.readdir(mountPath))
        assert.deepStrictEqual(listed, ["vm-001.img"])

        const u1 = yield* Mount.unmount({ ...s3Request(host, dirs, secretRef, 1), action: "unmount" })
        assert.deepInclude(u1, { unmounted: false, activeMountsRemaining: 1 })
        assert.isDefined(MountInfo.at(yield* MountInfo.read(), mountPath), "still mounted for job 2")
        const u2 = yield* Mount.unmount({ ...s3Request(host, dirs, secretRef, 2), action: "unmount" })
        assert.deepInclude(u2, { unmounted: true, activeMountsRemaining: 0, message: `Target unmounted successfully from ${mountPath}` })
        assert.isUndefined(MountInfo.at(yield* MountInfo.read(), mountPath))
        assert.isTrue(yield* awaitGone(pid), "the FUSE daemon is gone")
        for (const f of Object.values(files).filter((f) => f !== files.log)) assert.isFalse(fs.existsSync(f), f)
        assert.isFalse(fs.existsSync(mountPath), "the empty mount directory is removed")
        assert.strictEqual(yield* s3.object("vm-001.img"), "backup data", "the data stays in the bucket")
        assert.strictEqual(fuseSpawns(runner).length, 1)
        assert.deepStrictEqual(
          runner.calls.filter((c) => c.command === "umount").map((c) => c.args),
          [[mountPath]],
          "one physical unmount"
        )
      }).pipe(Effect.provide(client))
    }), { timeout: 60_000 })

  it.scopedLive("a wrong token: Barbican answers 401, the reply names the cause, nothing is started", () =>
    Effect.gen(function*() {
      const { dirs, secretRef, runner, server } = yield* setup("s3-401")
      const reply = yield* rpc(server.queue, { ...s3Request("h", dirs, secretRef, 1, "wrong-token"), action: "mount" })
      assert.strictEqual(reply.body.status, "error")
      assert.include(reply.body.error_msg, "401 Unauthorized")
      assert.include(reply.body.error_msg, "Keystone token is invalid or expired")
      assert.notInclude(reply.body.error_msg, "wrong-token")
      assert.deepStrictEqual(fuseSpawns(runner), [])
      assert.deepStrictEqual(processesUsing(dirs.root), [])
      assert.deepStrictEqual(fs.readdirSync(path.join(dirs.run, "s3")), [])
      assert.deepStrictEqual(fs.readdirSync(dirs.base), [])
    }), { timeout: 60_000 })

  it.scopedLive("wrong S3 keys: s3fs exits, the reply says why, no process, credentials or mount left", () =>
    Effect.gen(function*() {
      const { dirs, barbican, runner, server, s3 } = yield* setup("s3-badkeys")
      const secretRef = barbican.addSecret("bad-keys", GOOD_TOKEN, {
        aws_access_key_id: "NOT-THE-KEY",
        aws_secret_access_key: "not-the-secret",
        bucket: s3.bucket,
        endpoint_url: s3.endpoint
      })
      const reply = yield* rpc(server.queue, { ...s3Request("h", dirs, secretRef, 1), action: "mount" })
      assert.strictEqual(reply.body.status, "error")
      assert.include(reply.body.error_msg, `the S3 driver s3fs could not mount ${path.join(dirs.base, "target-s3")}: it exited`)
      assert.include(reply.body.error_msg, "invalid credentials")
      assert.notInclude(reply.body.error_msg, "not-the-secret")
      assert.strictEqual(fuseSpawns(runner).length, 1)
      assert.deepStrictEqual(processesUsing(dirs.root), [])
      assert.deepStrictEqual(fs.readdirSync(path.join(dirs.run, "s3")).filter((f) => !f.endsWith(".log")), [])
      assert.notInclude(fs.readFileSync(path.join(dirs.run, "s3", "target-s3.log"), "utf8"), "not-the-secret")
      assert.isUndefined(MountInfo.at(yield* MountInfo.read(), path.join(dirs.base, "target-s3")))
      assert.isFalse(fs.existsSync(path.join(dirs.base, "target-s3")))
    }), { timeout: 60_000 })

  it.scopedLive("a mount whose FUSE daemon died is detected, detached and mounted again (never 'already mounted')", () =>
    Effect.gen(function*() {
      const { dirs, secretRef, runner, server } = yield* setup("s3-dead")
      const mountPath = path.join(dirs.base, "target-s3")
      const body = { ...s3Request("h", dirs, secretRef, 1), action: "mount" }
      const first = yield* rpc(server.queue, body)
      assert.strictEqual(first.body.success_msg, `S3 target mounted successfully at ${mountPath}`)
      const pid = Number(fs.readFileSync(path.join(dirs.run, "s3", "target-s3.pid"), "utf8"))
      process.kill(pid, "SIGKILL")
      assert.isTrue(yield* awaitGone(pid))
      assert.isDefined(MountInfo.at(yield* MountInfo.read(), mountPath), "the dead mount stays in the table")
      const again = yield* rpc(server.queue, body)
      assert.deepInclude(again.body, { status: "success", success_msg: `S3 target mounted successfully at ${mountPath}`, already_mounted: false })
      assert.deepStrictEqual(runner.calls.filter((c) => c.command === "umount").map((c) => c.args), [["-l", mountPath]])
      const pid2 = Number(fs.readFileSync(path.join(dirs.run, "s3", "target-s3.pid"), "utf8"))
      assert.notStrictEqual(pid2, pid)
      assert.isTrue(isAlive(pid2))
      yield* Effect.promise(() => fs.promises.writeFile(path.join(mountPath, "after.txt"), "ok"))
      const un = yield* rpc(server.queue, { ...body, action: "unmount" })
      assert.strictEqual(un.body.status, "success")
      yield* awaitMountState(mountPath, (e) => e === undefined)
      assert.isTrue(yield* awaitGone(pid2))
    }), { timeout: 60_000 })

  it.scopedLive("an S3 path already mounted from another source is refused; nothing is started", () =>
    Effect.gen(function*() {
      const { dirs, secretRef, runner, server, s3 } = yield* setup("s3-other")
      const mountPath = path.join(dirs.base, "target-s3")
      fs.mkdirSync(mountPath)
      yield* sh("mount", ["-t", "tmpfs", "-o", "size=1m", "other:/export", mountPath])
      const reply = yield* rpc(server.queue, { ...s3Request("h", dirs, secretRef, 1), action: "mount" })
      assert.strictEqual(reply.body.status, "error")
      assert.include(reply.body.error_msg, `${mountPath} is already mounted from other:/export (tmpfs), not bucket ${s3.bucket}`)
      assert.deepStrictEqual(fuseSpawns(runner), [])
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), mountPath)?.source, "other:/export")
    }), { timeout: 60_000 })

  it.scopedLive("another tenant's secret_ref for a mounted target is refused: nothing fetched, nothing started, the first mount untouched", () =>
    Effect.gen(function*() {
      const { dirs, secretRef, barbican, runner, server, s3 } = yield* setup("s3-tenant")
      const mountPath = path.join(dirs.base, "target-s3")
      const first = yield* rpc(server.queue, { ...s3Request("h", dirs, secretRef, 1), action: "mount" })
      assert.strictEqual(first.body.status, "success")
      const entry = MountInfo.at(yield* MountInfo.read(), mountPath)!
      const pid = Number(fs.readFileSync(path.join(dirs.run, "s3", "target-s3.pid"), "utf8"))
      assert.deepInclude(JSON.parse(fs.readFileSync(path.join(dirs.run, "state", "target-s3.json"), "utf8")), {
        secret_ref: secretRef,
        bucket: s3.bucket,
        endpoint: s3.endpoint
      })
      const otherRef = barbican.addSecret("other-tenant", "other-token", {
        aws_access_key_id: S3_ACCESS_KEY,
        aws_secret_access_key: S3_SECRET_KEY,
        bucket: "other-tenants-bucket",
        endpoint_url: s3.endpoint
      })
      const reads = barbican.requests().length
      const reply = yield* rpc(server.queue, { ...s3Request("h", dirs, otherRef, 2, "other-token"), action: "mount" })
      assert.strictEqual(reply.body.status, "error")
      assert.include(reply.body.error_msg, `${mountPath} is already mounted from another secret_ref (${secretRef})`)
      assert.include(reply.body.error_msg, "unmount it first")
      assert.strictEqual(barbican.requests().length, reads, "nothing fetched")
      assert.strictEqual(fuseSpawns(runner).length, 1, "nothing started")
      assert.deepStrictEqual(runner.calls.filter((c) => c.command === "umount"), [], "nothing detached")
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), mountPath)?.id, entry.id, "the first mount is untouched")
      assert.isTrue(isAlive(pid))

      // A state file written before secret_refs were recorded: the mount cannot be attributed, so it is
      // not reused either.
      const stateFile = path.join(dirs.run, "state", "target-s3.json")
      const { bucket: _b, endpoint: _e, secret_ref: _s, ...older } = JSON.parse(fs.readFileSync(stateFile, "utf8"))
      fs.writeFileSync(stateFile, JSON.stringify(older))
      const again = yield* rpc(server.queue, { ...s3Request("h", dirs, secretRef, 3), action: "mount" })
      assert.include(again.body.error_msg, "has no record of the secret_ref it was mounted from")
      assert.strictEqual(fuseSpawns(runner).length, 1)
      assert.strictEqual(MountInfo.at(yield* MountInfo.read(), mountPath)?.id, entry.id)
    }), { timeout: 60_000 })

  it.scopedLive("without a Barbican endpoint configured an S3 mount is refused, naming the setting; nothing fetched or started", () =>
    Effect.gen(function*() {
      const { dirs, secretRef, barbican, runner, server } = yield* setup("s3-noendpoint", { endpoint: "none" })
      const reply = yield* rpc(server.queue, { ...s3Request("h", dirs, secretRef, 1), action: "mount" })
      assert.strictEqual(reply.body.status, "error")
      assert.include(reply.body.error_msg, "no Barbican endpoint is configured")
      assert.include(reply.body.error_msg, "barbican_url")
      assert.deepStrictEqual(barbican.requests(), [])
      assert.deepStrictEqual(runner.calls, [])
      assert.deepStrictEqual(fs.readdirSync(dirs.base), [])
    }), { timeout: 60_000 })

  it.scopedLive("a secret_ref outside the Barbican endpoint is refused by the server before it fetches anything", () =>
    Effect.gen(function*() {
      const { dirs, barbican, runner, server } = yield* setup("s3-foreign")
      const elsewhere = yield* startRecorder
      const reply = yield* rpc(server.queue, { ...s3Request("h", dirs, `${elsewhere.url}/v1/secrets/s3-creds`, 1), action: "mount" })
      assert.include(reply.body.error_msg, "not under the configured Barbican endpoint")
      assert.deepStrictEqual(elsewhere.requests(), [])
      assert.deepStrictEqual(barbican.requests(), [])
      assert.deepStrictEqual(runner.calls, [])
    }), { timeout: 60_000 })
})
