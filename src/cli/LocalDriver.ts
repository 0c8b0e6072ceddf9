/**
 * The demo's mount driver: makes a local directory (the "backup target") appear at a mount path. It
 * uses a bind mount where this process may mount, a tmpfs where only that is permitted, and otherwise
 * a plain directory, and says which. Whether a path is mounted is read from `/proc/self/mountinfo`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as MountInfo from "../server/MountInfo.js"

/**
 * How the driver makes a target appear at its mount path.
 *
 * @since 0.1.0
 * @category models
 */
export type Kind = "bind" | "tmpfs" | "directory"

/**
 * The driver.
 *
 * @since 0.1.0
 * @category models
 */
export interface Driver {
  readonly kind: Kind
  /** What it does, for the demo's header: `bind mounts (mount --bind)`, or why it uses plain directories. */
  readonly description: string
  /** The command it runs to mount, as printed: `mount --bind <source> <path>`. */
  readonly mountCommand: (source: string, target: string) => string
  readonly mount: (source: string, target: string) => Effect.Effect<"mounted" | "already-mounted", string>
  readonly unmount: (target: string) => Effect.Effect<"unmounted" | "not-mounted", string>
  readonly isMounted: (target: string) => Effect.Effect<boolean>
}

const run = (file: string, args: ReadonlyArray<string>): Effect.Effect<void, string> =>
  Effect.async<void, string>((resume) => {
    const child = execFile(file, [...args], { timeout: 10_000 }, (error, _stdout, stderr) => {
      if (error === null) resume(Effect.void)
      else {
        const code = (error as NodeJS.ErrnoException).code
        const detail = code === "ENOENT" ? `${file}: command not found` : String(stderr).trim().split("\n")[0] || error.message
        resume(Effect.fail(detail))
      }
    })
    return Effect.sync(() => void child.kill("SIGKILL"))
  })

const mountedAt = (target: string): Effect.Effect<boolean> =>
  MountInfo.read().pipe(
    Effect.map((entries) => MountInfo.at(entries, path.resolve(target)) !== undefined),
    Effect.orElseSucceed(() => false)
  )

const commands = {
  bind: (source: string, target: string) => ["--bind", source, target],
  tmpfs: (_source: string, target: string) => ["-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", target]
} as const

const mountDriver = (kind: "bind" | "tmpfs"): Driver => ({
  kind,
  description: kind === "bind"
    ? "bind mounts (mount --bind): backups land in the target directory"
    : "tmpfs mounts (mount -t tmpfs; bind mounts are not permitted here): backups vanish at the unmount",
  mountCommand: (source, target) => `mount ${commands[kind](source, target).join(" ")}`,
  isMounted: mountedAt,
  mount: (source, target) =>
    Effect.gen(function*() {
      if (yield* mountedAt(target)) return "already-mounted" as const
      yield* Effect.try({ try: () => fs.mkdirSync(target, { recursive: true }), catch: (e) => (e as Error).message })
      yield* run("mount", commands[kind](source, target))
      if (!(yield* mountedAt(target))) return yield* Effect.fail(`${target} does not show in the mount table after mount`)
      return "mounted" as const
    }),
  unmount: (target) =>
    Effect.gen(function*() {
      if (!(yield* mountedAt(target))) return "not-mounted" as const
      yield* run("umount", [target])
      if (yield* mountedAt(target)) return yield* Effect.fail(`${target} is still mounted after umount`)
      return "unmounted" as const
    })
})

const directoryDriver = (reason: string): Driver => {
  const mounted = new Set<string>()
  return {
    kind: "directory",
    description: `plain directories, NOT real mounts (${reason}); backups stay in the mount path`,
    mountCommand: (_source, target) => `mkdir -p ${target}`,
    isMounted: (target) => Effect.sync(() => mounted.has(path.resolve(target))),
    mount: (_source, target) =>
      Effect.try({
        try: () => {
          const key = path.resolve(target)
          if (mounted.has(key)) return "already-mounted" as const
          fs.mkdirSync(key, { recursive: true })
          mounted.add(key)
          return "mounted" as const
        },
        catch: (e) => (e as Error).message
      }),
    unmount: (target) => Effect.sync(() => (mounted.delete(path.resolve(target)) ? "unmounted" as const : "not-mounted" as const))
  }
}

/**
 * Which driver to use: the best permitted (`auto`), or one in particular.
 *
 * @since 0.1.0
 * @category models
 */
export type Choice = "auto" | Kind

/**
 * Finds the best driver this process may use (or checks the one chosen), by trying a bind mount and
 * then a tmpfs in a scratch directory under `workDir` (removed afterwards). A chosen mount kind that is
 * not permitted fails with the reason.
 *
 * @since 0.1.0
 * @category constructors
 */
export const probe = (workDir: string, choice: Choice = "auto"): Effect.Effect<Driver, string> =>
  Effect.gen(function*() {
    if (choice === "directory") return directoryDriver("chosen with --driver directory")
    const scratch = path.join(workDir, `.probe-${process.pid}`)
    const source = path.join(scratch, "source")
    const target = path.join(scratch, "target")
    const ready = yield* Effect.try(() => {
      fs.mkdirSync(source, { recursive: true })
      fs.mkdirSync(target, { recursive: true })
    }).pipe(Effect.either)
    if (ready._tag === "Left") {
      if (choice !== "auto") return yield* Effect.fail(`cannot create ${scratch}`)
      return directoryDriver(`cannot create ${scratch}`)
    }
    const reasons: Array<string> = []
    let found: Driver | undefined
    for (const kind of choice === "auto" ? (["bind", "tmpfs"] as const) : [choice]) {
      const driver = mountDriver(kind)
      const tried = yield* Effect.either(
        Effect.zipRight(driver.mount(source, target), driver.unmount(target))
      )
      if (tried._tag === "Right") {
        found = driver
        break
      }
      reasons.push(tried.left)
      // Never leave the probe mounted (e.g. a mount that worked but did not show as expected).
      yield* Effect.ignore(run("umount", [target]))
    }
    yield* Effect.sync(() => {
      if (fs.existsSync(target) && MountInfo.at(MountInfo.parse(readMountInfo()), path.resolve(target)) !== undefined) return
      fs.rmSync(scratch, { recursive: true, force: true })
    })
    if (found !== undefined) return found
    if (choice !== "auto") return yield* Effect.fail(`${choice} mounts are not permitted here: ${reasons[0] ?? "unknown reason"}`)
    return directoryDriver(`mounting is not permitted here: ${reasons[0] ?? "unknown reason"}`)
  })

const readMountInfo = (): string => {
  try {
    return fs.readFileSync(MountInfo.DEFAULT_FILE, "utf8")
  } catch {
    return ""
  }
}
