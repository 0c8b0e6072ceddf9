/**
 * The demo of `trilio-dms demo` (and `npm start`): three backup jobs share one backup target at the
 * same time.
 *
 * With no `DMS_DB_URL` / `DMS_RABBITMQ_URL` (nor client.conf), everything runs in this process: an
 * SQLite ledger under `~/.trilio-dms/demo/`, an in-process broker, and an in-process DMS server whose
 * driver mounts a local directory (a bind mount, a tmpfs, or a plain directory, as permitted). With
 * them set, the same demo runs against the real database, RabbitMQ, and the DMS server of `--host`.
 *
 * It prints each step: the one physical mount, the ledger rows, the releases, the physical unmount at
 * the last release, and the ledger history; it exits 0 when the target was mounted and unmounted
 * exactly once.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type * as Broker from "../Broker.js"
import * as Dms from "../Dms.js"
import * as Mount from "../Mount.js"
import * as Protocol from "../Protocol.js"
import * as Urls from "../internal/urls.js"
import * as Failure from "./Failure.js"
import * as LocalDriver from "./LocalDriver.js"
import * as Output from "./Output.js"
import * as Setup from "./Setup.js"

const JOBS = [1001, 1002, 1003] as const
const BACKUP_BYTES = 64 * 1024

/**
 * Where the demo keeps its files: `~/.trilio-dms/demo`.
 *
 * @since 0.1.0
 * @category constants
 */
export const demoDir = (): string => path.join(os.homedir(), ".trilio-dms", "demo")

/**
 * The in-process DMS server of the demo: mounts `filesystem_export`'s local directory at the request's
 * path with the driver, idempotently, as the real server answers. It only serves paths under the
 * demo's own directory.
 *
 * @since 0.1.0
 * @category server
 */
export const localServer = (
  driver: LocalDriver.Driver,
  dir: string,
  step: (who: string, text: string) => Effect.Effect<void>
): Broker.MemoryHandler =>
(request) =>
  Effect.gen(function*() {
    const body = request.body
    const target = (body.backup_target ?? {}) as Record<string, unknown>
    const mountPath = path.resolve(String(target.filesystem_export_mount_path ?? ""))
    const source = path.resolve(String(target.filesystem_export ?? "").replace(/^[^:]*:/, ""))
    const inside = (p: string, sub: string) => p.startsWith(path.join(dir, sub) + path.sep)
    if (!inside(mountPath, "mounts") || !inside(source, "targets")) {
      return Protocol.failure(`the demo server only serves paths under ${dir}`)
    }
    switch (body.action) {
      case "mount": {
        const done = yield* Effect.either(driver.mount(source, mountPath))
        if (done._tag === "Left") return Protocol.failure(`Mount failed: ${done.left}`)
        if (done.right === "already-mounted") {
          yield* step("server", `mount: ${mountPath} is already mounted; verified, nothing to do`)
          const reply = { ...Protocol.success(`Already mounted at ${mountPath}`), already_mounted: true }
          return reply
        }
        yield* step("server", `${driver.mountCommand(source, mountPath)}  <- PHYSICAL MOUNT`)
        const reply = { ...Protocol.success(`NFS target mounted successfully at ${mountPath}`), already_mounted: false }
        return reply
      }
      case "unmount": {
        const done = yield* Effect.either(driver.unmount(mountPath))
        if (done._tag === "Left") return Protocol.failure(`Unmount failed: ${done.left}`)
        if (done.right === "not-mounted") return Protocol.success(`Target not mounted at ${mountPath}`)
        yield* step("server", `${driver.kind === "directory" ? "release" : "umount"} ${mountPath}  <- PHYSICAL UNMOUNT`)
        return Protocol.success(`Target unmounted successfully from ${mountPath}`)
      }
      default:
        return Protocol.failure(`Unknown action: ${String(body.action)}`)
    }
  })

interface JobOutcome {
  readonly job: number
  readonly mount: Mount.MountResult
  readonly unmount: Mount.UnmountResult
}

/**
 * Runs the demo.
 *
 * @since 0.1.0
 * @category demo
 */
export const run = (args: {
  readonly host: Option.Option<string>
  readonly nfsExport: Option.Option<string>
  readonly mountPath: Option.Option<string>
  readonly timeout: Option.Option<number>
  readonly driver: LocalDriver.Choice
}) =>
  Effect.gen(function*() {
    const dir = demoDir()
    const start = yield* Clock.currentTimeMillis
    const step = (who: string, text: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Output.line(`${`+${((now - start) / 1000).toFixed(3)}s`.padStart(9)}  ${who.padEnd(8)}  ${text}`))

    const configOptions = Option.match(args.timeout, { onNone: () => ({}), onSome: (timeout) => ({ timeout }) })
    const resolved = yield* Setup.resolve(configOptions, {
      dbUrl: `sqlite:${path.join(dir, "ledger.db")}`,
      rabbitmqUrl: "memory:"
    })
    const dbUrl = Redacted.value(resolved.settings.dbUrl)
    const brokerUrl = Redacted.value(resolved.settings.rabbitmqUrl)
    const brokerLocation = Urls.parseBrokerUrl(brokerUrl)
    const local = typeof brokerLocation !== "string" && brokerLocation.kind === "memory"
    const run = randomBytes(3).toString("hex")
    const targetId = `demo-target-${run}`
    const host = Option.getOrElse(args.host, () => os.hostname())

    let driver: LocalDriver.Driver | undefined
    let source: string
    let mountPath: string
    if (local) {
      source = path.join(dir, "targets", targetId)
      mountPath = path.join(dir, "mounts", targetId)
      fs.mkdirSync(source, { recursive: true })
      fs.mkdirSync(path.dirname(mountPath), { recursive: true })
      fs.writeFileSync(path.join(source, "README"), `backup target ${targetId} of the trilio-dms demo\n`)
      driver = yield* LocalDriver.probe(dir, args.driver).pipe(
        Effect.mapError((reason) => new Failure.BadInput({ field: "--driver", reason }))
      )
    } else {
      source = ""
      mountPath = Option.getOrElse(args.mountPath, () => `/var/lib/trilio/triliovault-mounts/${targetId}`)
    }
    const nfsExport = Option.getOrElse(args.nfsExport, () => (local ? `localhost:${source}` : "127.0.0.1:/srv/trilio-demo"))

    const why = (key: "dbUrl" | "rabbitmqUrl", env: string) =>
      resolved.defaulted.includes(key) ? `; the default while ${env} is not set` : ""
    yield* Output.lines([
      `trilio-dms demo: ${JOBS.length} backup jobs share one backup target at the same time`,
      `  ledger   ${Urls.redactUrl(dbUrl)}${dbUrl.startsWith("sqlite:") ? ` (embedded SQLite${why("dbUrl", "DMS_DB_URL")})` : ""}`,
      `  broker   ${local ? `in-process (${why("rabbitmqUrl", "DMS_RABBITMQ_URL").slice(2) || "memory:"})` : Urls.redactUrl(brokerUrl)}`,
      `  server   ${
        local && driver !== undefined
          ? `in-process DMS server; driver: ${driver.description}`
          : `the DMS server of host ${host} (queue dms.${host})`
      }`,
      `  target   ${targetId} (nfs ${nfsExport})`,
      `  mount    ${mountPath} on host ${host}`,
      ""
    ])

    const handler = driver === undefined ? undefined : localServer(driver, dir, step)
    const layer = Dms.layerSettings(resolved.settings, { server: handler })
    const request = (job: number) => ({
      context: { user_id: "demo", tenant_id: "demo", request_id: `demo-${run}-${job}` },
      job: { jobid: job, progress: 0, status: "running", action: "backup", job_details: [] },
      host,
      backup_target: {
        id: targetId,
        type: "nfs",
        deleted: false,
        status: "available",
        filesystem_export: nfsExport,
        filesystem_export_mount_path: mountPath,
        nfs_mount_opts: "rw,sync,hard,nfsvers=4"
      }
    })

    const outcomes = yield* Effect.gen(function*() {
      const mountedCount = yield* Ref.make(0)
      const allMounted = yield* Deferred.make<void>()
      const proceed = yield* Deferred.make<void>()
      const released = yield* Effect.forEach(JOBS, () => Deferred.make<void>())

      const job = (index: number, id: number) =>
        Effect.gen(function*() {
          yield* step(`job ${id}`, "mount requested")
          const mounted = yield* Mount.mount(request(id))
          yield* step(
            `job ${id}`,
            mounted.physicallyMounted ? "mounted (this job caused the physical mount)" : "mounted (shares the existing mount)"
          )
          const n = yield* Ref.updateAndGet(mountedCount, (k) => k + 1)
          if (n === JOBS.length) yield* Deferred.succeed(allMounted, undefined)
          yield* Deferred.await(proceed)
          if (local) {
            const file = path.join(mounted.mountPath, `backup-job-${id}.img`)
            yield* Effect.sync(() => fs.writeFileSync(file, randomBytes(BACKUP_BYTES)))
            yield* step(`job ${id}`, `wrote ${path.basename(file)} (${BACKUP_BYTES / 1024} KiB) to the mount`)
          } else {
            yield* step(`job ${id}`, `backing up (remote host: nothing is written from here)`)
          }
          // Releases in job order, so the output reads the same every run.
          if (index > 0) yield* Deferred.await(released[index - 1]!)
          const unmounted = yield* Mount.unmount(request(id)).pipe(
            Effect.ensuring(Deferred.succeed(released[index]!, undefined))
          )
          yield* step(
            `job ${id}`,
            unmounted.unmounted
              ? "released: it was the last holder, so the target was physically unmounted"
              : `released: ${unmounted.activeMountsRemaining} other job(s) still hold it, ledger only (no server call)`
          )
          return { job: id, mount: mounted, unmount: unmounted } satisfies JobOutcome
        }).pipe(
          // A job that fails after mounting must not leave its hold behind.
          Effect.onError(() => Mount.release(request(id)))
        )

      const jobs = yield* Effect.fork(
        Effect.all(JOBS.map((id, i) => job(i, id)), { concurrency: "unbounded" })
      )
      yield* Effect.raceFirst(Deferred.await(allMounted), Effect.flatMap(jobs.await, () => Effect.void))
      const active = yield* Mount.getActiveMounts({ backupTargetId: targetId, host })
      yield* Output.lines(["", `ledger: ${active.length} active row(s) for ${targetId} on ${host}`])
      yield* Output.lines(Output.entriesTable(active).map((l) => `  ${l}`))
      yield* Output.line("")
      yield* Deferred.succeed(proceed, undefined)
      const result = yield* jobs.await.pipe(Effect.flatten)
      const history = yield* Mount.getLedgerHistory(targetId, 20)
      yield* Output.lines(["", `ledger history of ${targetId} (newest first):`])
      yield* Output.lines(Output.entriesTable(history, { history: true }).map((l) => `  ${l}`))
      return result
    }).pipe(Effect.provide(layer))

    const physicalMounts = outcomes.filter((o) => o.mount.physicallyMounted).length
    const physicalUnmounts = outcomes.filter((o) => o.unmount.unmounted).length
    const stillMounted = driver === undefined ? false : yield* driver.isMounted(mountPath)
    const backups = local && driver?.kind === "bind"
      ? fs.readdirSync(source).filter((f) => f.startsWith("backup-")).sort()
      : []
    const lines = [
      "",
      `summary: ${outcomes.length} jobs, ${physicalMounts} physical mount, ${physicalUnmounts} physical unmount` +
      (driver === undefined ? "" : `, ${stillMounted ? "STILL MOUNTED" : "nothing left mounted"}`)
    ]
    if (backups.length > 0) lines.push(`backups in the target directory ${source}: ${backups.join(", ")}`)
    lines.push(
      `look again: DMS_DB_URL=${Urls.redactUrl(dbUrl)} trilio-dms history --target-id ${targetId}`
    )
    yield* Output.lines(lines)
    if (physicalMounts !== 1 || physicalUnmounts !== 1 || stillMounted) {
      return yield* Failure.fail(
        { json: false, verbose: false },
        Failure.ExitCode.failed,
        `demo: expected exactly one physical mount and one physical unmount, got ${physicalMounts} and ${physicalUnmounts}${
          stillMounted ? ` (and ${mountPath} is still mounted)` : ""
        }`
      )
    }
  })
