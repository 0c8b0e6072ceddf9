/**
 * The Mounter's files under the run directory: a state file per mount, `state/<target>.json` (target
 * id, type, source, path), which lets `status` answer with target ids; and, per S3 target,
 * `s3/<target>.pid` (the FUSE daemon), `s3/<target>.passwd` (s3fs's keys, only while it starts) and
 * `s3/<target>.log` (the daemon's output).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { createHash } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"

/**
 * The file name used for a target id under the run directory: the id itself when it is a plain name,
 * else an encoded or hashed form (ids can hold `/` or be very long).
 *
 * @since 0.1.0
 * @category utils
 */
export const fileKey = (targetId: string): string => {
  if (/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/.test(targetId) && targetId !== "." && targetId !== "..") return targetId
  const encoded = encodeURIComponent(targetId).replace(/\./g, "%2E").replace(/\*/g, "%2A")
  return encoded.length <= 200 ? encoded : `sha256-${createHash("sha256").update(targetId).digest("hex")}`
}

/**
 * A mount's state file.
 *
 * @since 0.1.0
 * @category models
 */
export const State = Schema.Struct({
  backup_target_id: Schema.String,
  type: Schema.Literal("nfs", "s3"),
  source: Schema.String,
  mount_path: Schema.String,
  requested_path: Schema.String,
  fs_type: Schema.String,
  mounted_at: Schema.String,
  /** S3: the secret the mount was made from (its URL is not a secret), absent in older files. */
  secret_ref: Schema.optional(Schema.String),
  /** S3: the bucket and endpoint its secret named. */
  bucket: Schema.optional(Schema.String),
  endpoint: Schema.optional(Schema.NullOr(Schema.String))
})

/**
 * A mount's state file.
 *
 * @since 0.1.0
 * @category models
 */
export type State = typeof State.Type

/**
 * What an S3 mount was made from, as its state file records it.
 *
 * @since 0.1.0
 * @category models
 */
export type S3Origin = Pick<State, "secret_ref" | "bucket" | "endpoint">

/**
 * Writes a file atomically (temp + rename), with the given mode.
 *
 * @since 0.1.0
 * @category utils
 */
export const writeAtomic = (file: string, content: string, mode: number) =>
  Effect.tryPromise({
    try: async () => {
      const tmp = `${file}.${process.pid}.tmp`
      await fs.rm(tmp, { force: true })
      await fs.writeFile(tmp, content, { mode, flag: "wx" })
      await fs.rename(tmp, file)
    },
    catch: (e) => e as Error
  })

/**
 * Removes a file if it is there.
 *
 * @since 0.1.0
 * @category utils
 */
export const removeFile = (file: string) => Effect.promise(() => fs.rm(file, { force: true }).catch(() => undefined))

/**
 * A target's files.
 *
 * @since 0.1.0
 * @category models
 */
export interface Files {
  readonly pid: string
  readonly passwd: string
  readonly log: string
  readonly state: string
}

/**
 * The files under one run directory.
 *
 * @since 0.1.0
 * @category models
 */
export interface Store {
  readonly s3Dir: string
  readonly stateDir: string
  /** Creates the directories (0700). */
  readonly prepare: Effect.Effect<void, Error>
  readonly files: (targetId: string) => Files
  /** The state of a target; undefined when there is none or it cannot be read. */
  readonly read: (targetId: string) => Effect.Effect<State | undefined>
  readonly all: Effect.Effect<ReadonlyArray<State>>
  /** Writes a state file; a failure is logged, not raised (the mount is there either way). */
  readonly write: (state: State) => Effect.Effect<void>
  readonly readPid: (file: string) => Effect.Effect<number | undefined>
}

/**
 * The files under `runDir`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (runDir: string): Store => {
  const s3Dir = path.join(runDir, "s3")
  const stateDir = path.join(runDir, "state")
  const files = (targetId: string): Files => {
    const key = fileKey(targetId)
    return {
      pid: path.join(s3Dir, `${key}.pid`),
      passwd: path.join(s3Dir, `${key}.passwd`),
      log: path.join(s3Dir, `${key}.log`),
      state: path.join(stateDir, `${key}.json`)
    }
  }
  const readState = (file: string): Effect.Effect<State | undefined> =>
    Effect.promise(() => fs.readFile(file, "utf8").then((t) => t, () => undefined)).pipe(
      Effect.map((text) => {
        if (text === undefined) return undefined
        try {
          return Option.getOrUndefined(Schema.decodeUnknownOption(State)(JSON.parse(text)))
        } catch {
          return undefined
        }
      })
    )
  return {
    s3Dir,
    stateDir,
    prepare: Effect.tryPromise({
      try: async () => {
        await fs.mkdir(s3Dir, { recursive: true, mode: 0o700 })
        await fs.mkdir(stateDir, { recursive: true, mode: 0o700 })
      },
      catch: (e) => e as Error
    }),
    files,
    read: (targetId) => readState(files(targetId).state),
    all: Effect.promise(() => fs.readdir(stateDir).catch(() => [] as Array<string>)).pipe(
      Effect.flatMap((names) => Effect.forEach(names.filter((n) => n.endsWith(".json")), (n) => readState(path.join(stateDir, n)))),
      Effect.map((states) => states.filter((s): s is State => s !== undefined))
    ),
    write: (state) =>
      writeAtomic(files(state.backup_target_id).state, `${JSON.stringify(state, null, 2)}\n`, 0o600).pipe(
        Effect.catchAll((e) => Effect.logWarning(`cannot write the state file: ${e.message}`))
      ),
    readPid: (file) =>
      Effect.promise(() => fs.readFile(file, "utf8").then((t) => t, () => "")).pipe(
        Effect.map((t) => (/^\s*[0-9]+\s*$/.test(t) ? Number(t.trim()) : undefined))
      )
  }
}
