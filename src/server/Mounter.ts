/**
 * Mounts and unmounts backup targets on this host, safely.
 *
 * - **Confinement**: a mount path must lie strictly inside the mount base, with no `..`, no symbolic
 *   link anywhere below the base, and not inside another mount; checked again where it is used (see
 *   Confinement.ts): NFS is mounted on the checked directory held open, never on the path.
 * - **Mount table, not stat**: whether a path is mounted, and from what, is read from
 *   `/proc/self/mountinfo` (a `stat` of a dead NFS mount hangs). Mount is idempotent: mounted with the
 *   expected source → success; from another source → refused. After mounting, the expected source
 *   must show there, else the mount failed (a "mounted" that is the local directory would send backups
 *   to local disk).
 * - **nfs**: `mount --no-canonicalize -t nfs -o <opts>,nosuid,nodev,noexec <host:/path> /proc/<pid>/fd/<n>` (`noexec` unless allowed); options are checked against an
 *   allow-list (`exec`, `suid`, `dev` and anything unknown are refused).
 * - **s3**: credentials from Barbican, handed to the FUSE driver — `s3fs -f` through a 0600 passwd file
 *   (removed once mounted), or `s3vaultfuse` through its environment — never on a command line, never
 *   in a log. The daemon runs in its own session; `<run dir>/s3/<target>.pid` names it, and a restarted
 *   server adopts the live ones. Mounted means: the mount shows, a lookup through it reaches the bucket
 *   with the keys ("no such file" for a name that does not exist), and the same mount still shows after
 *   that answer.
 * - **Unmount** is idempotent (not mounted → success): `umount`, then `umount -f`, then `umount -l`, each
 *   time-bounded; then the FUSE daemon is stopped (SIGTERM, then SIGKILL), its files removed, and the
 *   empty mount directory removed.
 * - A state file per mount, `<run dir>/state/<target>.json` (target id, type, source, path), lets
 *   `status` answer with target ids.
 * - Operations on one path, and on one target, run one at a time; others run in parallel.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as Barbican from "./Barbican.js"
import * as CommandRunner from "./CommandRunner.js"
import * as Confinement from "./Confinement.js"
import * as FuseDaemon from "./FuseDaemon.js"
import * as MountInfo from "./MountInfo.js"
import { MounterError } from "./MounterError.js"
import * as MountState from "./MountState.js"
import * as MountSteps from "./MountSteps.js"
import * as NfsMount from "./NfsMount.js"
import * as S3Mount from "./S3Mount.js"
import type * as ServerConfig from "./ServerConfig.js"
import * as Spans from "./Spans.js"

export {
  /**
   * A mount or unmount that failed or was refused; the message is the reply's `error_msg`.
   *
   * @since 0.1.0
   * @category errors
   */
  MounterError
} from "./MounterError.js"

export {
  /**
   * Checks an NFS export.
   *
   * @since 0.1.0
   * @category nfs
   */
  checkNfsExport,
  /**
   * Checks `nfs_mount_opts` against the allow-list.
   *
   * @since 0.1.0
   * @category nfs
   */
  checkNfsOptions
} from "./NfsMount.js"

export {
  /**
   * How to start a FUSE driver for a bucket.
   *
   * @since 0.1.0
   * @category s3
   */
  s3Invocation,
  /**
   * The mount-table source an s3fs mount of a bucket shows.
   *
   * @since 0.1.0
   * @category s3
   */
  s3fsSource
} from "./S3Mount.js"

export {
  /**
   * The file name used for a target id under the run directory.
   *
   * @since 0.1.0
   * @category utils
   */
  fileKey
} from "./MountState.js"

// ---------------------------------------------------------------------------------------------------
// Models

/**
 * What to mount.
 *
 * @since 0.1.0
 * @category models
 */
export type MountSpec = NfsMount.Spec | S3Mount.Spec
/**
 * What to unmount.
 *
 * @since 0.1.0
 * @category models
 */
export interface UnmountSpec {
  readonly targetId: string
  readonly type: "nfs" | "s3"
  readonly path: string
}

/**
 * A successful mount.
 *
 * @since 0.1.0
 * @category models
 */
export interface Mounted {
  /** It was already mounted with the expected source; nothing was done. */
  readonly alreadyMounted: boolean
  /** The real mount point. */
  readonly mountPoint: string
  readonly message: string
}

/**
 * A successful unmount.
 *
 * @since 0.1.0
 * @category models
 */
export interface Unmounted {
  /** It was mounted (and now is not). */
  readonly wasMounted: boolean
  readonly mountPoint: string
  readonly message: string
}

/**
 * One mount under the base, as `status` lists it.
 *
 * @since 0.1.0
 * @category models
 */
export interface StatusEntry {
  /** The target id from the state file; null for a mount under the base this server did not record. */
  readonly backup_target_id: string | null
  readonly type: "nfs" | "s3" | null
  readonly mount_path: string
  readonly source: string | null
  readonly fs_type: string | null
  /** Shows in the mount table. */
  readonly mounted: boolean
  /** The FUSE daemon's PID (S3). */
  readonly pid: number | null
  /** For S3: the daemon is alive. */
  readonly daemon_alive: boolean | null
}

/**
 * A mount or unmount that failed or was refused; the message is the reply's `error_msg`.
 *
 * @since 0.1.0

/**
 * The Mounter service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Mounts, giving up at `deadline` (epoch ms; `Infinity` for none). */
  readonly mount: (spec: MountSpec, deadline: number) => Effect.Effect<Mounted, MounterError>
  readonly unmount: (spec: UnmountSpec, deadline: number) => Effect.Effect<Unmounted, MounterError>
  /** The mounts under the base: those recorded in state files, and any other. */
  readonly status: Effect.Effect<ReadonlyArray<StatusEntry>, MounterError>
  /** The real mount base. */
  readonly mountBase: string
}

/**
 * The Mounter tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Mounter extends Context.Tag("trilio-dms/server/Mounter")<Mounter, Service>() {}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly mountBase: string
  readonly runDir: string
  readonly s3Driver?: ServerConfig.S3Driver | undefined
  /** The FUSE driver's command; default: the driver's name. */
  readonly s3Command?: string | undefined
  readonly s3fsOptions?: ReadonlyArray<string> | undefined
  /** The longest one command may take. Default 120 s. */
  readonly commandTimeout?: Duration.DurationInput | undefined
  /** Default `/proc/self/mountinfo`. */
  readonly mountinfoFile?: string | undefined
  /** Programs on NFS targets may run: no `noexec` is added. Default false. */
  readonly nfsAllowExec?: boolean | undefined
  /** File-system types an NFS mount may show as. Default `nfs`, `nfs4`. */
  readonly nfsFsTypes?: ReadonlyArray<string> | undefined
  /** Default `mount`. */
  readonly mountCommand?: string | undefined
  /** Default `umount`. */
  readonly umountCommand?: string | undefined
  /** How long a FUSE daemon gets to exit after its unmount, and after SIGTERM. Default 2 s. */
  readonly daemonStopGrace?: Duration.DurationInput | undefined
  /**
   * Internal, for tests only: runs at each point between a check of a mount path and its use (see
   * `MountSteps.Stage`), so a test can swap the path for a symbolic link there. Never set in production.
   *
   * @internal
   */
  readonly betweenCheckAndUse?: ((stage: MountSteps.Stage, mountPoint: string) => Effect.Effect<void>) | undefined
}

/**
 * Makes the Mounter: prepares the base and run directories, adopts live FUSE daemons from their PID
 * files (and removes the files of dead ones).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options
): Effect.Effect<Service, MounterError, CommandRunner.CommandRunner | Barbican.Barbican> =>
  Effect.gen(function*() {
    const runner = Spans.runner(yield* CommandRunner.CommandRunner)
    const barbican = Spans.barbican(yield* Barbican.Barbican)
    const driver = options.s3Driver ?? "s3fs"
    const configuredBase = path.resolve(options.mountBase)
    const runDir = path.resolve(options.runDir)
    const store = MountState.make(runDir)

    const setupError = (reason: string, cause?: unknown) =>
      new MounterError({ operation: "status", path: configuredBase, reason, ...(cause === undefined ? {} : { cause }) })
    const mountBase = yield* Effect.tryPromise({
      try: async () => {
        await fs.mkdir(configuredBase, { recursive: true, mode: 0o755 })
        return await fs.realpath(configuredBase)
      },
      catch: (e) => setupError(`cannot prepare ${configuredBase} and ${runDir}: ${(e as Error).message}`, e)
    }).pipe(
      Effect.zipLeft(Effect.mapError(store.prepare, (e) => setupError(`cannot prepare ${configuredBase} and ${runDir}: ${e.message}`, e)))
    )

    const daemons = FuseDaemon.makeRegistry(store)
    yield* daemons.adopt
    const steps = MountSteps.make({
      runner,
      confinement: Spans.confinement(Confinement.make({ configuredBase, mountBase })),
      store,
      daemons,
      commandTimeout: Duration.decode(options.commandTimeout ?? Duration.seconds(120)),
      mountinfoFile: options.mountinfoFile ?? MountInfo.DEFAULT_FILE,
      mountCommand: options.mountCommand ?? "mount",
      umountCommand: options.umountCommand ?? "umount",
      stopGrace: Duration.decode(options.daemonStopGrace ?? Duration.seconds(2)),
      betweenCheckAndUse: options.betweenCheckAndUse
    })
    const { mountTable, umountCommand, stopGrace } = steps
    const mountNfs = NfsMount.make(steps, {
      fsTypes: options.nfsFsTypes ?? ["nfs", "nfs4"],
      allowExec: options.nfsAllowExec ?? false
    })
    const mountS3 = S3Mount.make(steps, {
      barbican,
      driver,
      command: options.s3Command ?? driver,
      s3fsOptions: options.s3fsOptions ?? []
    })

    // ---------------------------------------------------------------------------------------------
    // Unmount

    const unmountChain = (spec: UnmountSpec, mountPoint: string, mounted: MountInfo.Entry, deadline: number) =>
      Effect.gen(function*() {
        const attempts: ReadonlyArray<ReadonlyArray<string>> = [[mountPoint], ["-f", mountPoint], ["-l", mountPoint]]
        const errors: Array<string> = []
        for (let i = 0; i < attempts.length; i++) {
          const left = yield* Effect.either(steps.timeLeft("unmount", spec.path, deadline, "unmounting"))
          if (Either.isLeft(left)) {
            errors.push(left.left.reason)
            break
          }
          // Leave time for the fallbacks that remain.
          const budget = Duration.millis(Math.max(1, Math.floor(Duration.toMillis(left.right) / (attempts.length - i))))
          const args = attempts[i]!
          // umount(8) resolves the path again: a parent swapped for a link would unmount elsewhere.
          yield* steps.confinement.recheckParents("unmount", spec.path, mountPoint)
          if (MountInfo.at(yield* mountTable("unmount", spec.path), mountPoint)?.id !== mounted.id) {
            return yield* Effect.fail(
              new MounterError({
                operation: "unmount",
                path: spec.path,
                reason: `${spec.path} changed after it was checked: the mount table no longer shows the same mount there; refused`,
                refused: true
              })
            )
          }
          const result = yield* Effect.either(runner.run({ command: umountCommand, args, timeout: budget }))
          const table = yield* mountTable("unmount", spec.path)
          if (MountInfo.at(table, mountPoint) === undefined) return
          errors.push(Either.isLeft(result) ? result.left.message : `${umountCommand} ${args.join(" ")} left it mounted`)
          if (i < attempts.length - 1) {
            yield* Effect.logWarning(`unmount attempt failed; trying ${umountCommand} ${attempts[i + 1]!.join(" ")}`).pipe(
              Effect.annotateLogs({ mountPath: mountPoint, error: errors[errors.length - 1] })
            )
          }
        }
        return yield* Effect.fail(
          new MounterError({ operation: "unmount", path: spec.path, reason: `cannot unmount ${spec.path}: ${errors.join("; ")}` })
        )
      })

    const cleanupTarget = (spec: UnmountSpec, mountPoint: string) =>
      Effect.gen(function*() {
                const state = yield* store.read(spec.targetId)
        const daemon = yield* daemons.daemonFor(spec.targetId)
        if (daemon !== undefined && (daemon.mountPoint === "" || daemon.mountPoint === mountPoint)) {
          yield* FuseDaemon.stop(daemon.pid, mountPoint, stopGrace)
          daemons.delete(spec.targetId)
          yield* daemons.removeFiles(spec.targetId)
        }
        if (state !== undefined && state.mount_path === mountPoint) yield* MountState.removeFile(store.files(spec.targetId).state)
        yield* steps.removeEmptyDir(mountPoint)
      })

    const unmount = (spec: UnmountSpec, deadline: number) =>
      Effect.gen(function*() {
        return yield* steps.atMountPoint("unmount", spec.path, spec.targetId, (mountPoint, current) =>
          Effect.gen(function*() {
            if (current === undefined) {
              yield* cleanupTarget(spec, mountPoint)
              return { wasMounted: false, mountPoint, message: `Target not mounted at ${spec.path}` }
            }
            const other = yield* steps.otherTargetAt(mountPoint, spec.targetId)
            if (other !== undefined && (yield* store.read(spec.targetId))?.mount_path !== mountPoint) {
              return yield* Effect.fail(
                new MounterError({
                  operation: "unmount",
                  path: spec.path,
                  reason: `${spec.path} is mounted for target ${other.backup_target_id}, not ${spec.targetId}; refusing to unmount it`,
                  refused: true
                })
              )
            }
            // Find the daemon before unmounting: afterwards nothing in the mount table points to it.
            const known = yield* daemons.daemonFor(spec.targetId)
            const daemon = known !== undefined && known.pid > 0 && (yield* FuseDaemon.isAlive(known.pid))
              ? known
              : MountInfo.isFuse(current.fsType)
              ? yield* Effect.map(FuseDaemon.find(mountPoint), (d) => (d === undefined ? undefined : { pid: d.pid, mountPoint }))
              : undefined
            yield* steps.betweenCheckAndUse("unmount", mountPoint)
            yield* unmountChain(spec, mountPoint, current, deadline)
            if (daemon !== undefined) yield* FuseDaemon.stop(daemon.pid, mountPoint, stopGrace)
            yield* cleanupTarget(spec, mountPoint)
            return { wasMounted: true, mountPoint, message: `Target unmounted successfully from ${spec.path}` }
          }))
      })

    // ---------------------------------------------------------------------------------------------
    // Status

    const status = Effect.gen(function*() {
      const table = yield* mountTable("status", configuredBase)
      const states = yield* store.all
      const out: Array<StatusEntry> = []
      for (const s of states) {
        const entry = MountInfo.at(table, s.mount_path)
        let pid: number | null = null
        let alive: boolean | null = null
        if (s.type === "s3") {
          const d = yield* daemons.daemonFor(s.backup_target_id)
          pid = d?.pid ?? null
          alive = d === undefined ? false : (yield* FuseDaemon.isAlive(d.pid)) && (yield* FuseDaemon.servesPath(d.pid, s.mount_path))
        }
        out.push({
          backup_target_id: s.backup_target_id,
          type: s.type,
          mount_path: s.mount_path,
          source: entry?.source ?? s.source,
          fs_type: entry?.fsType ?? s.fs_type,
          mounted: entry !== undefined,
          pid,
          daemon_alive: alive
        })
      }
      for (const e of MountInfo.under(table, mountBase)) {
        if (out.some((o) => o.mount_path === e.mountPoint)) continue
        out.push({
          backup_target_id: null,
          type: null,
          mount_path: e.mountPoint,
          source: e.source,
          fs_type: e.fsType,
          mounted: true,
          pid: null,
          daemon_alive: null
        })
      }
      return out
    })

    return {
      mount: (spec, deadline) =>
        (spec.type === "nfs" ? mountNfs(spec, deadline) : mountS3(spec, deadline)).pipe(
          Effect.withSpan("dms.server.mount", { attributes: { "dms.backup_target_id": spec.targetId, "dms.type": spec.type } })
        ),
      unmount: (spec, deadline) =>
        unmount(spec, deadline).pipe(
          Effect.withSpan("dms.server.unmount", { attributes: { "dms.backup_target_id": spec.targetId } })
        ),
      status,
      mountBase
    }
  })

/**
 * The Mounter as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
/**
 * The Mounter as a layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<Mounter, MounterError, CommandRunner.CommandRunner | Barbican.Barbican> => Layer.effect(Mounter, make(options))
