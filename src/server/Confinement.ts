/**
 * Confinement of mount paths: a mount path must lie strictly inside the mount base, with no `..`, no
 * symbolic link anywhere below the base, and not inside another mount.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
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
  return { confine, ensureDir }
}
