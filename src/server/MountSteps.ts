/**
 * What NFS and S3 mounts, and unmounts, share: the mount table, the time left before a deadline, one
 * operation at a time per path and per target, confinement, the state files and the FUSE daemons,
 * and the rules that a mount path serves one target and a target has one mount path per host.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as fs from "node:fs/promises"
import * as KeyedMutex from "../internal/keyedMutex.js"
import type * as CommandRunner from "./CommandRunner.js"
import type * as Confinement from "./Confinement.js"
import type * as FuseDaemon from "./FuseDaemon.js"
import * as MountInfo from "./MountInfo.js"
import { mountFailure, MounterError, type Operation } from "./MounterError.js"
import * as MountState from "./MountState.js"

/**
 * The shared steps.
 *
 * @since 0.1.0
 * @category models
 */
export interface Steps {
  readonly runner: CommandRunner.Service
  readonly confinement: Confinement.Confinement
  readonly store: MountState.Store
  readonly daemons: FuseDaemon.Registry
  readonly mountCommand: string
  readonly umountCommand: string
  /** How long a FUSE daemon gets to exit after its unmount, and after SIGTERM. */
  readonly stopGrace: Duration.Duration
  readonly mountTable: (operation: Operation, p: string) => Effect.Effect<ReadonlyArray<MountInfo.Entry>, MounterError>
  /** The time a command may take: the command timeout, or less when the deadline is nearer. */
  readonly timeLeft: (operation: Operation, p: string, deadline: number, step: string) => Effect.Effect<Duration.Duration, MounterError>
  /**
   * Confines the requested path to its mount point, then runs `body` holding the locks of the mount
   * point and of the target, with what the mount table shows there once they are held.
   */
  readonly atMountPoint: <A>(
    operation: Operation,
    requested: string,
    targetId: string,
    body: (mountPoint: string, current: MountInfo.Entry | undefined) => Effect.Effect<A, MounterError>
  ) => Effect.Effect<A, MounterError>
  /** The state of another target mounted at `mountPoint`. */
  readonly otherTargetAt: (mountPoint: string, targetId: string) => Effect.Effect<MountState.State | undefined>
  /** A mount path serves one target: refuses `targetId` where another target is mounted. */
  readonly refuseOtherTarget: (requested: string, mountPoint: string, targetId: string) => Effect.Effect<void, MounterError>
  /** A target has one mount path per host: refuses a second path while the first is mounted. */
  readonly refuseOtherPath: (targetId: string, requested: string, mountPoint: string) => Effect.Effect<void, MounterError>
  /** Writes the state of a mount. */
  readonly record: Record
  /** Writes the state of a mount found in place, unless it is recorded already. */
  readonly recordIfMissing: Record
  readonly removeEmptyDir: (dir: string) => Effect.Effect<void>
  /** The test-only hook of {@link Options.betweenCheckAndUse}; does nothing otherwise. */
  readonly betweenCheckAndUse: (stage: Stage, mountPoint: string) => Effect.Effect<void>
  /**
   * Runs `use` with the created mount point checked again and held open (`target` names the open
   * directory). If the directory was moved meanwhile, whatever `use` mounted on it is detached and the
   * mount is refused.
   */
  readonly withPinned: <A>(
    requested: string,
    mountPoint: string,
    use: (target: string) => Effect.Effect<A, MounterError>
  ) => Effect.Effect<A, MounterError>
}

/**
 * A point between a check of a mount path and its use: `mount` after the directory is created and
 * before it is checked again, `mount-command` after that check and before the mount command runs,
 * `unmount` before the parents of a mount point are checked again for the unmount command.
 *
 * @since 0.1.0
 * @category models
 */
export type Stage = "mount" | "mount-command" | "unmount"

type Record = (
  targetId: string,
  type: "nfs" | "s3",
  entry: MountInfo.Entry,
  requested: string,
  mountPoint: string,
  origin?: MountState.S3Origin
) => Effect.Effect<void>

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly runner: CommandRunner.Service
  readonly confinement: Confinement.Confinement
  readonly store: MountState.Store
  readonly daemons: FuseDaemon.Registry
  readonly commandTimeout: Duration.Duration
  readonly mountinfoFile: string
  readonly mountCommand: string
  readonly umountCommand: string
  readonly stopGrace: Duration.Duration
  /** Test-only: see {@link Stage}. */
  readonly betweenCheckAndUse?: ((stage: Stage, mountPoint: string) => Effect.Effect<void>) | undefined
}

/**
 * Makes the shared steps.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Steps => {
  const { store, commandTimeout } = options
  const pathLocks = KeyedMutex.make()
  const targetLocks = KeyedMutex.make()
  const mountTable = (operation: Operation, p: string) =>
    MountInfo.read(options.mountinfoFile).pipe(
      Effect.mapError((e) => new MounterError({ operation, path: p, reason: e.message, cause: e }))
    )
  const record: Record = (targetId, type, entry, requested, mountPoint, origin) =>
    store.write({
      ...origin,
      backup_target_id: targetId,
      type,
      source: entry.source,
      mount_path: mountPoint,
      requested_path: requested,
      fs_type: entry.fsType,
      mounted_at: new Date().toISOString()
    })
  const otherTargetAt = (mountPoint: string, targetId: string) =>
    Effect.map(store.all, (states) => states.find((s) => s.mount_path === mountPoint && s.backup_target_id !== targetId))
  const betweenCheckAndUse = options.betweenCheckAndUse ?? (() => Effect.void)
  const withPinned = <A>(requested: string, mountPoint: string, use: (target: string) => Effect.Effect<A, MounterError>) =>
    Effect.scoped(Effect.gen(function*() {
      yield* betweenCheckAndUse("mount", mountPoint)
      const pinned = yield* options.confinement.pin("mount", requested, mountPoint)
      const before = new Set((yield* mountTable("mount", requested)).map((e) => e.id))
      yield* betweenCheckAndUse("mount-command", mountPoint)
      const result = yield* Effect.exit(use(pinned.target))
      const where = yield* pinned.whereNow
      if (where === mountPoint) return yield* result
      // The directory moved between the check and mount(2): the mount went onto it, wherever it is now.
      const landed = where === undefined ? undefined : MountInfo.at(yield* mountTable("mount", requested), where)
      let detached = "nothing was mounted"
      if (where !== undefined && landed !== undefined && !before.has(landed.id)) {
        const undone = yield* Effect.either(
          options.runner.run({ command: options.umountCommand, args: ["-l", where], timeout: commandTimeout })
        )
        detached = Either.isRight(undone)
          ? `the mount that landed at ${where} was detached`
          : `the mount that landed at ${where} could NOT be detached: ${undone.left.message}`
      }
      return yield* Effect.fail(
        new MounterError({
          operation: "mount",
          path: requested,
          reason: `mount path ${requested} was moved (to ${where ?? "nowhere"}) while it was being mounted; ${detached}; refused`
        })
      )
    }))
  return {
    runner: options.runner,
    confinement: options.confinement,
    store,
    daemons: options.daemons,
    mountCommand: options.mountCommand,
    umountCommand: options.umountCommand,
    stopGrace: options.stopGrace,
    mountTable,
    timeLeft: (operation, p, deadline, step) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const left = deadline - now
        return left <= 0
          ? Effect.fail(new MounterError({ operation, path: p, reason: `the request's deadline passed before ${step}` }))
          : Effect.succeed(Duration.min(commandTimeout, Duration.millis(left)))
      }),
    atMountPoint: (operation, requested, targetId, body) =>
      Effect.gen(function*() {
        const mountPoint = yield* options.confinement.confine(operation, requested, yield* mountTable(operation, requested))
        const locked = Effect.flatMap(mountTable(operation, requested), (table) => body(mountPoint, MountInfo.at(table, mountPoint)))
        return yield* pathLocks.withLock(
          mountPoint,
          Duration.infinity,
          () => undefined as never,
          targetLocks.withLock(MountState.fileKey(targetId), Duration.infinity, () => undefined as never, locked)
        )
      }),
    record,
    otherTargetAt,
    refuseOtherTarget: (requested, mountPoint, targetId) =>
      Effect.flatMap(otherTargetAt(mountPoint, targetId), (other) =>
        other === undefined
          ? Effect.void
          : mountFailure(requested)(
            `${requested} is already mounted for target ${other.backup_target_id}; refusing to mount ${targetId} there`,
            true
          )),
    refuseOtherPath: (targetId, requested, mountPoint) =>
      Effect.gen(function*() {
        const state = yield* store.read(targetId)
        if (state === undefined || state.mount_path === mountPoint) return
        const table = yield* mountTable("mount", requested)
        if (MountInfo.at(table, state.mount_path) !== undefined) {
          return yield* mountFailure(requested)(
            `target ${targetId} is already mounted at ${state.requested_path} on this host; a target has one mount path per host`,
            true
          )
        }
      }),
    recordIfMissing: (targetId, type, entry, requested, mountPoint, origin) =>
      Effect.gen(function*() {
        const state = yield* store.read(targetId)
        if (
          state !== undefined && state.mount_path === mountPoint && state.source === entry.source &&
          state.secret_ref === origin?.secret_ref
        ) return
        yield* record(targetId, type, entry, requested, mountPoint, origin)
      }),
    removeEmptyDir: (dir) => Effect.promise(() => fs.rmdir(dir).catch(() => undefined)),
    betweenCheckAndUse,
    withPinned
  }
}
