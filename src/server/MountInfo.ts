/**
 * The host's mount table, read from `/proc/self/mountinfo`. Reading it never touches a mounted file
 * system, so it cannot hang on a dead NFS server the way `stat` of a mount point does.
 *
 * Line format (proc(5)): `id parent major:minor root mount-point options [optional…] - fstype source
 * super-options`, with space, tab, newline and backslash escaped as octal (`\040`).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs/promises"

/**
 * The default mount table of this process's mount namespace.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_FILE = "/proc/self/mountinfo"

/**
 * One mount.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly id: number
  readonly parentId: number
  readonly root: string
  readonly mountPoint: string
  readonly options: string
  readonly fsType: string
  readonly source: string
  readonly superOptions: string
}

/**
 * Undoes the kernel's octal escapes (`\040` → space).
 *
 * @since 0.1.0
 * @category utils
 */
export const unescape = (field: string): string =>
  field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)))

/**
 * Parses the text of a mountinfo file; malformed lines are skipped.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (text: string): ReadonlyArray<Entry> => {
  const entries: Array<Entry> = []
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    const fields = line.split(" ")
    const dash = fields.indexOf("-", 6)
    if (dash < 0 || fields.length < dash + 3) continue
    const id = Number(fields[0])
    const parentId = Number(fields[1])
    if (!Number.isInteger(id) || !Number.isInteger(parentId)) continue
    entries.push({
      id,
      parentId,
      root: unescape(fields[3]!),
      mountPoint: unescape(fields[4]!),
      options: fields[5]!,
      fsType: unescape(fields[dash + 1]!),
      source: unescape(fields[dash + 2]!),
      superOptions: fields[dash + 3] ?? ""
    })
  }
  return entries
}

/**
 * Reads and parses a mountinfo file.
 *
 * @since 0.1.0
 * @category constructors
 */
export const read = (file: string = DEFAULT_FILE): Effect.Effect<ReadonlyArray<Entry>, Error> =>
  Effect.tryPromise({
    try: () => fs.readFile(file, "utf8"),
    catch: (e) => new Error(`cannot read ${file}: ${e instanceof Error ? e.message : String(e)}`)
  }).pipe(Effect.map(parse))

/**
 * The mount visible at `mountPoint` (the last one mounted there: mounts stack), if any.
 *
 * @since 0.1.0
 * @category utils
 */
export const at = (entries: ReadonlyArray<Entry>, mountPoint: string): Entry | undefined => {
  let found: Entry | undefined
  for (const e of entries) if (e.mountPoint === mountPoint) found = e
  return found
}

/**
 * The mounts strictly below `dir` (`dir/…`).
 *
 * @since 0.1.0
 * @category utils
 */
export const under = (entries: ReadonlyArray<Entry>, dir: string): ReadonlyArray<Entry> => {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`
  return entries.filter((e) => e.mountPoint.startsWith(prefix))
}

/**
 * Whether the file-system type is a FUSE one (`fuse`, `fuse.s3fs`, `fuseblk`).
 *
 * @since 0.1.0
 * @category utils
 */
export const isFuse = (fsType: string): boolean => fsType === "fuse" || fsType.startsWith("fuse.") || fsType === "fuseblk"
