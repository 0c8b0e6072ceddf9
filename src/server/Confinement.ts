/**
 * Confinement of mount paths: a mount path must lie strictly inside the mount base, with no `..`, no
 * symbolic link anywhere below the base, and not inside another mount.
 *
 * The first check ({@link Confinement.confine}) runs before the locks are taken and the directory is
 * created; a local user who can write under the base could swap a component for a symbolic link after
 * it. So the directory is checked again where it is used: {@link Confinement.pin} walks the path once
 * more, opens the mount point without following links and keeps it open, and the mount command is
 * given that open directory (`/proc/<pid>/fd/<n>`), not the path. {@link Confinement.recheckParents}
 * does the same walk for an unmount, up to the parent (a mount point is never `stat`ed).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { constants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as MountInfo from "./MountInfo.js"
import { MounterError, type Operation } from "./MounterError.js"

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | null)?.code

/**
 * Confinement under one mount base.
 *
 * @since 0.1.0
 * @category models
 */
export interface Confinement {
  /**
   * The real mount point for a requested path: strictly inside the base, no `..`, no symbolic link
   * below the base, not inside another mount. Parents are not created here.
   */
  readonly confine: (
    operation: Operation,
    requested: string,
    table: ReadonlyArray<MountInfo.Entry>
  ) => Effect.Effect<string, MounterError>
  /** Creates the mount point (and its parents). */
  readonly ensureDir: (operation: Operation, requested: string, mountPoint: string) => Effect.Effect<void, MounterError>
  /**
   * Checks the created mount point again (every component below the base a real directory, not a
   * symbolic link) and opens it without following links, for the scope. The open directory is where
   * the path pointed when it was checked, whatever is swapped in later.
   */
  readonly pin: (operation: Operation, requested: string, mountPoint: string) => Effect.Effect<Pinned, MounterError, Scope.Scope>
  /** Checks again that every component between the base and the mount point is a real directory. */
  readonly recheckParents: (operation: Operation, requested: string, mountPoint: string) => Effect.Effect<void, MounterError>
}

/**
 * A checked mount point, held open.
 *
 * @since 0.1.0
 * @category models
 */
export interface Pinned {
  /** The open directory as a path another process can mount on: `/proc/<pid>/fd/<n>`. */
  readonly target: string
  /** Where the open directory is now (it moves with a rename of it or of a parent). */
  readonly whereNow: Effect.Effect<string | undefined>
}

/**
 * Confinement under `mountBase` (real path), as configured (`configuredBase`, maybe through a link).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: { readonly configuredBase: string; readonly mountBase: string }): Confinement => {
  const { configuredBase, mountBase } = options
  const confine = (operation: Operation, requested: string, table: ReadonlyArray<MountInfo.Entry>) =>
    Effect.gen(function*() {
      const refuse = (reason: string) => Effect.fail(new MounterError({ operation, path: requested, reason, refused: true }))
      if (!path.isAbsolute(requested) || requested.includes("\0")) {
        return yield* refuse(`mount path ${JSON.stringify(requested)} must be an absolute path`)
      }
      if (requested.split("/").includes("..")) return yield* refuse(`mount path ${requested} must not contain '..'`)
      const lexical = path.resolve(requested)
      const rel = [configuredBase, mountBase]
        .map((b) => path.relative(b, lexical))
        .find((r) => r !== "" && !r.startsWith("..") && !path.isAbsolute(r))
      if (rel === undefined) {
        return yield* refuse(`mount path ${requested} is not inside the mount base ${configuredBase}`)
      }
      const parts = rel.split(path.sep)
      let current = mountBase
      for (let i = 0; i < parts.length; i++) {
        const next = path.join(current, parts[i]!)
        const last = i === parts.length - 1
        // Never stat a mount point: a dead NFS server would hang us.
        if (MountInfo.at(table, next) !== undefined) {
          if (last) return next
          return yield* refuse(`mount path ${requested} is inside another mount (${next})`)
        }
        const st = yield* Effect.promise(() => fs.lstat(next).then((s) => s, (e) => errnoOf(e) ?? "error"))
        if (st === "ENOENT") return path.join(current, ...parts.slice(i))
        if (typeof st === "string") return yield* refuse(`cannot check mount path ${requested} (${st})`)
        if (st.isSymbolicLink()) {
          return yield* refuse(`mount path ${requested} goes through a symbolic link (${next}); refused`)
        }
        if (!st.isDirectory()) return yield* refuse(`mount path ${requested} is not a directory (${next})`)
        current = next
      }
      return current
    })
  const ensureDir = (operation: Operation, requested: string, mountPoint: string) =>
    Effect.tryPromise({
      try: () => fs.mkdir(mountPoint, { recursive: true, mode: 0o755 }),
      catch: (e) =>
        new MounterError({ operation, path: requested, reason: `cannot create ${mountPoint}: ${(e as Error).message}`, cause: e })
    }).pipe(Effect.asVoid)
  const refuse = (operation: Operation, requested: string, reason: string) =>
    Effect.fail(new MounterError({ operation, path: requested, reason, refused: true }))
  // Each component below the base, down to and including `upTo`: a real directory, never a link.
  const walk = (operation: Operation, requested: string, upTo: string) =>
    Effect.gen(function*() {
      const rel = path.relative(mountBase, upTo)
      if (rel === "") return
      if (rel.startsWith("..") || path.isAbsolute(rel)) {
        return yield* refuse(operation, requested, `mount path ${requested} is no longer inside the mount base ${configuredBase}`)
      }
      let current = mountBase
      for (const part of rel.split(path.sep)) {
        current = path.join(current, part)
        const st = yield* Effect.promise(() => fs.lstat(current).then((s) => s, (e) => errnoOf(e) ?? "error"))
        if (typeof st === "string") {
          return yield* refuse(operation, requested, `mount path ${requested} changed after it was checked: ${current} (${st}); refused`)
        }
        if (st.isSymbolicLink()) {
          return yield* refuse(
            operation,
            requested,
            `mount path ${requested} changed after it was checked: ${current} is now a symbolic link; refused`
          )
        }
        if (!st.isDirectory()) {
          return yield* refuse(operation, requested, `mount path ${requested} changed after it was checked: ${current} is not a directory; refused`)
        }
      }
    })
  const fdPath = (fd: number) => `/proc/self/fd/${fd}`
  const pin = (operation: Operation, requested: string, mountPoint: string) =>
    Effect.gen(function*() {
      yield* walk(operation, requested, mountPoint)
      const handle = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => fs.open(mountPoint, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW),
          catch: (e) =>
            new MounterError({
              operation,
              path: requested,
              reason: errnoOf(e) === "ELOOP"
                ? `mount path ${requested} changed after it was checked: ${mountPoint} is now a symbolic link; refused`
                : `cannot open ${mountPoint}: ${(e as Error).message}`,
              refused: true,
              cause: e
            })
        }),
        (h) => Effect.promise(() => h.close().catch(() => undefined))
      )
      // The kernel's name for the open directory: a link in any component shows as where it led.
      const whereNow = Effect.promise(() => fs.readlink(fdPath(handle.fd)).then((p) => p, () => undefined))
      const where = yield* whereNow
      if (where !== mountPoint) {
        return yield* refuse(
          operation,
          requested,
          `mount path ${requested} changed after it was checked: ${mountPoint} leads to ${where ?? "nothing"}; refused`
        )
      }
      return { target: `/proc/${process.pid}/fd/${handle.fd}`, whereNow }
    })
  const recheckParents = (operation: Operation, requested: string, mountPoint: string) =>
    walk(operation, requested, path.dirname(mountPoint))
  return { confine, ensureDir, pin, recheckParents }
}
