/**
 * NFS mounts: `mount --no-canonicalize -t nfs -o <opts>,nosuid,nodev,noexec <host:/path> /proc/<pid>/fd/<n>`
 * (`noexec` left out when the configuration allows exec; the target is the checked mount point held
 * open, see Confinement.pin), with the options checked
 * against an allow-list (`exec`, `suid`, `dev` and anything unknown are refused) and the export checked
 * so it cannot be read as an option (the checks live in internal/nfs.ts: the client refuses the same
 * input before any I/O). Afterwards the export must show in the mount table at the path.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Nfs from "../internal/nfs.js"
import * as MountInfo from "./MountInfo.js"
import type { Mounted } from "./Mounter.js"
import { mountFailure, type MounterError } from "./MounterError.js"
import type * as MountSteps from "./MountSteps.js"

/**
 * An NFS target to mount.
 *
 * @since 0.1.0
 * @category models
 */
export interface Spec {
  readonly type: "nfs"
  readonly targetId: string
  readonly path: string
  readonly export: string
  /** `nfs_mount_opts` as sent (comma-separated), checked against the allow-list. */
  readonly options?: string | null | undefined
}

/**
 * Checks `nfs_mount_opts` against the allow-list and returns the options to pass (`nosuid,nodev,noexec`
 * always added, `noexec` not when `allowExec`), or why they are refused.
 *
 * @since 0.1.0
 * @category nfs
 */
export const checkNfsOptions = (
  raw: string | null | undefined,
  options: { readonly allowExec?: boolean | undefined } = {}
): Either.Either<string, string> => Either.mapLeft(Nfs.checkOptions(raw, options), (reason) => `invalid nfs_mount_opts: ${reason}`)

/**
 * Checks an NFS export (`host:/path`, `[v6]:/path`): a host name or address (never starting with `-`,
 * so it cannot be read as an option) and an absolute path without whitespace or control characters.
 *
 * @since 0.1.0
 * @category nfs
 */
export const checkNfsExport = (exp: string): Either.Either<string, string> =>
  Either.mapLeft(Nfs.checkExport(exp), (reason) => `invalid filesystem_export: ${reason}`)

const normalizeNfsSource = (s: string): string => {
  const i = s.lastIndexOf(":/")
  if (i < 0) return s
  const host = s.slice(0, i).toLowerCase()
  let p = s.slice(i + 1).replace(/\/{2,}/g, "/")
  while (p.length > 1 && p.endsWith("/")) p = p.slice(0, -1)
  return `${host}:${p}`
}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** File-system types an NFS mount may show as. */
  readonly fsTypes: ReadonlyArray<string>
  /** Programs on NFS targets may run (no `noexec`). */
  readonly allowExec: boolean
}

/**
 * The NFS mount over the shared steps.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (steps: MountSteps.Steps, options: Options) => {
  const { confinement, mountTable, runner } = steps
  const nfsFsTypes = options.fsTypes
  return (spec: Spec, deadline: number): Effect.Effect<Mounted, MounterError> =>
    Effect.gen(function*() {
      const fail = mountFailure(spec.path)
      const exp = checkNfsExport(spec.export)
      if (Either.isLeft(exp)) return yield* fail(exp.left, true)
      const opts = checkNfsOptions(spec.options, { allowExec: options.allowExec })
      if (Either.isLeft(opts)) return yield* fail(opts.left, true)
      return yield* steps.atMountPoint("mount", spec.path, spec.targetId, (mountPoint, current) =>
        Effect.gen(function*() {
          const expected = normalizeNfsSource(spec.export)
          if (current !== undefined) {
            yield* steps.refuseOtherTarget(spec.path, mountPoint, spec.targetId)
            if (normalizeNfsSource(current.source) === expected && nfsFsTypes.includes(current.fsType)) {
              yield* steps.recordIfMissing(spec.targetId, "nfs", current, spec.path, mountPoint)
              return { alreadyMounted: true, mountPoint, message: `Already mounted at ${spec.path}` }
            }
            return yield* fail(
              `${spec.path} is already mounted from ${current.source} (${current.fsType}); refusing to mount ${spec.export} there`,
              true
            )
          }
          yield* steps.refuseOtherPath(spec.targetId, spec.path, mountPoint)
          yield* confinement.ensureDir("mount", spec.path, mountPoint)
          // mount(8) is given the checked directory, held open, and told not to resolve it into a path.
          const after = yield* steps.withPinned(spec.path, mountPoint, (target) =>
            Effect.gen(function*() {
              const timeout = yield* steps.timeLeft("mount", spec.path, deadline, "running mount")
              yield* runner.run({
                command: steps.mountCommand,
                args: ["--no-canonicalize", "-t", "nfs", "-o", opts.right, spec.export, target],
                timeout
              }).pipe(Effect.catchAll((e) => fail(`NFS mount of ${spec.export} at ${spec.path} failed: ${e.message}`, false, e)))
              return MountInfo.at(yield* mountTable("mount", spec.path), mountPoint)
            }))
          if (after === undefined || normalizeNfsSource(after.source) !== expected || !nfsFsTypes.includes(after.fsType)) {
            return yield* fail(
              after === undefined
                ? `mount reported success, but ${spec.path} does not show ${spec.export} in the mount table; the path is NOT mounted`
                : `mount reported success, but ${spec.path} shows ${after.source} (${after.fsType}) instead of ${spec.export}`
            )
          }
          yield* steps.record(spec.targetId, "nfs", after, spec.path, mountPoint)
          return { alreadyMounted: false, mountPoint, message: `NFS target mounted successfully at ${spec.path}` }
        }))
    })
}
