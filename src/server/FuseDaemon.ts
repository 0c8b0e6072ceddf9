/**
 * FUSE daemons, found through `/proc`: whether one is alive, whether it serves a mount point (its argv
 * or, for s3vaultfuse, its environment names it), which one serves a mount point made by another
 * server, and stopping one (it normally exits by itself once unmounted; then SIGTERM, then SIGKILL).
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as CommandRunner from "./CommandRunner.js"
import * as MountState from "./MountState.js"

/**
 * Whether a process exists and is not a zombie (a zombie still answers `kill(pid, 0)`).
 *
 * @since 0.1.0
 * @category processes
 */
export const isAlive = (pid: number): Effect.Effect<boolean> =>
  Effect.promise(async () => {
    try {
      const stat = await fs.readFile(`/proc/${pid}/stat`, "utf8")
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
      return state !== "Z" && state !== "X" && state !== ""
    } catch {
      return false
    }
  })

const readNulList = (file: string): Effect.Effect<ReadonlyArray<string>> =>
  Effect.promise(() => fs.readFile(file, "utf8").then((t) => t.split("\0").filter((s) => s !== ""), () => []))

/**
 * Whether `pid` is a FUSE daemon serving `mountPoint` (its argv or, for s3vaultfuse, its environment
 * names it).
 *
 * @since 0.1.0
 * @category processes
 */
export const servesPath = (pid: number, mountPoint: string): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    const argv = yield* readNulList(`/proc/${pid}/cmdline`)
    if (argv.includes(mountPoint)) return true
    const env = yield* readNulList(`/proc/${pid}/environ`)
    return env.includes(`vault_data_directory=${mountPoint}`)
  })

/**
 * A live FUSE daemon serving a mount point.
 *
 * @since 0.1.0
 * @category models
 */
export interface Found {
  readonly pid: number
  /** The bucket it serves, when its argv or environment tells. */
  readonly bucket: string | undefined
}

/**
 * Finds a live FUSE daemon serving `mountPoint` by scanning /proc (for mounts made by another server).
 *
 * @since 0.1.0
 * @category processes
 */
export const find = (mountPoint: string): Effect.Effect<Found | undefined> =>
  Effect.gen(function*() {
    const pids = yield* Effect.promise(() =>
      fs.readdir("/proc").then((names) => names.filter((n) => /^[0-9]+$/.test(n)).map(Number), () => [] as Array<number>)
    )
    for (const pid of pids) {
      if (pid === process.pid) continue
      const argv = yield* readNulList(`/proc/${pid}/cmdline`)
      if (argv.includes(mountPoint)) {
        // s3fs bucket[:/prefix] mountpoint [options]
        const positional = argv.slice(1).filter((a, i, all) => !a.startsWith("-") && all[i - 1] !== "-o")
        const first = positional[0] === mountPoint ? undefined : positional[0]
        if (yield* isAlive(pid)) return { pid, bucket: first?.split(":")[0] }
      }
      const env = yield* readNulList(`/proc/${pid}/environ`)
      if (env.includes(`vault_data_directory=${mountPoint}`) && (yield* isAlive(pid))) {
        return { pid, bucket: env.find((e) => e.startsWith("vault_s3_bucket="))?.slice("vault_s3_bucket=".length) }
      }
    }
    return undefined
  })

/**
 * Signals a daemon's process group (it leads its own session), else the process.
 *
 * @since 0.1.0
 * @category processes
 */
export const signal = (pid: number, sig: NodeJS.Signals): void => {
  if (!CommandRunner.killGroup(pid, sig)) {
    try {
      process.kill(pid, sig)
    } catch {
      // gone
    }
  }
}

/**
 * Polls until the process is gone, for at most `within`; true if it is gone.
 *
 * @since 0.1.0
 * @category processes
 */
export const waitGone = (pid: number, within: Duration.Duration): Effect.Effect<boolean> =>
  isAlive(pid).pipe(
    Effect.filterOrFail((alive) => !alive, () => "alive" as const),
    Effect.retry(Schedule.spaced(Duration.millis(25)).pipe(Schedule.upTo(within))),
    Effect.as(true),
    Effect.orElseSucceed(() => false)
  )

/**
 * Stops the FUSE daemon serving `mountPoint`: it normally exits by itself once unmounted; then SIGTERM,
 * then SIGKILL, each given `grace`.
 *
 * @since 0.1.0
 * @category processes
 */
export const stop = (pid: number, mountPoint: string, grace: Duration.Duration): Effect.Effect<void> =>
  Effect.gen(function*() {
    if (!(yield* isAlive(pid))) return
    // A PID file may outlive its process, and the PID be reused: only kill what serves this path.
    if (!(yield* servesPath(pid, mountPoint))) return
    if (yield* waitGone(pid, grace)) return
    yield* Effect.logInfo("the FUSE daemon did not exit after the unmount; sending SIGTERM").pipe(Effect.annotateLogs({ pid }))
    signal(pid, "SIGTERM")
    if (yield* waitGone(pid, grace)) return
    yield* Effect.logWarning("the FUSE daemon ignored SIGTERM; sending SIGKILL").pipe(Effect.annotateLogs({ pid }))
    signal(pid, "SIGKILL")
    yield* waitGone(pid, grace)
  })

/**
 * A FUSE daemon this server runs or adopted.
 *
 * @since 0.1.0
 * @category models
 */
export interface Known {
  readonly pid: number
  /** Empty when only its PID file tells about it. */
  readonly mountPoint: string
  readonly handle?: CommandRunner.Daemon
}

/**
 * The FUSE daemons this server runs or adopted, by target file key.
 *
 * @since 0.1.0
 * @category models
 */
export interface Registry {
  readonly set: (targetId: string, daemon: Known) => void
  readonly get: (targetId: string) => Known | undefined
  readonly delete: (targetId: string) => void
  /** The known daemon of a target, else the PID its PID file names. */
  readonly daemonFor: (targetId: string) => Effect.Effect<Known | undefined>
  /** Adopts live daemons from PID files (at start); removes the files of dead ones and leftover passwd files. */
  readonly adopt: Effect.Effect<void>
  /** Removes a target's PID and passwd files. */
  readonly removeFiles: (targetId: string) => Effect.Effect<void>
}

/**
 * A registry over the run directory's files.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeRegistry = (store: MountState.Store): Registry => {
  const daemons = new Map<string, Known>()
  return {
    set: (targetId, daemon) => void daemons.set(MountState.fileKey(targetId), daemon),
    get: (targetId) => daemons.get(MountState.fileKey(targetId)),
    delete: (targetId) => void daemons.delete(MountState.fileKey(targetId)),
    daemonFor: (targetId) =>
      Effect.gen(function*() {
        const known = daemons.get(MountState.fileKey(targetId))
        if (known !== undefined) return known
        const pid = yield* store.readPid(store.files(targetId).pid)
        return pid === undefined ? undefined : { pid, mountPoint: "" }
      }),
    adopt: Effect.gen(function*() {
      const states = yield* store.all
      const names = yield* Effect.promise(() => fs.readdir(store.s3Dir).catch(() => [] as Array<string>))
      for (const name of names) {
        const full = path.join(store.s3Dir, name)
        if (name.endsWith(".passwd")) {
          // A passwd file only lives while a daemon starts: a leftover is from a crash mid-mount.
          yield* MountState.removeFile(full)
          continue
        }
        if (!name.endsWith(".pid")) continue
        const key = name.slice(0, -".pid".length)
        const state = states.find((s) => MountState.fileKey(s.backup_target_id) === key)
        const pid = yield* store.readPid(full)
        const alive = pid !== undefined && state !== undefined && (yield* isAlive(pid)) &&
          (yield* servesPath(pid, state.mount_path))
        if (alive && pid !== undefined && state !== undefined) {
          daemons.set(key, { pid, mountPoint: state.mount_path })
          yield* Effect.logInfo("adopted a live FUSE daemon").pipe(
            Effect.annotateLogs({ pid, backupTargetId: state.backup_target_id, mountPath: state.mount_path })
          )
        } else {
          yield* MountState.removeFile(full)
          yield* Effect.logInfo("removed the PID file of a FUSE daemon that is gone").pipe(Effect.annotateLogs({ file: full }))
        }
      }
    }),
    removeFiles: (targetId) => {
      const f = store.files(targetId)
      return Effect.all([MountState.removeFile(f.pid), MountState.removeFile(f.passwd)], { discard: true })
    }
  }
}
