/**
 * Mounts and unmounts backup targets on this host, safely.
 *
 * - **Confinement**: a mount path must lie strictly inside the mount base, with no `..`, no symbolic
 *   link anywhere below the base, and not inside another mount.
 * - **Mount table, not stat**: whether a path is mounted, and from what, is read from
 *   `/proc/self/mountinfo` (a `stat` of a dead NFS mount hangs). Mount is idempotent: mounted with the
 *   expected source → success; from another source → refused. After mounting, the expected source
 *   must show there, else the mount failed (a "mounted" that is the local directory would send backups
 *   to local disk).
 * - **nfs**: `mount -t nfs -o <opts>,nosuid,nodev <host:/path> <path>`; options are checked against an
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
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { createHash, randomUUID } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import * as KeyedMutex from "../internal/keyedMutex.js"
import * as Nfs from "../internal/nfs.js"
import * as Barbican from "./Barbican.js"
import * as CommandRunner from "./CommandRunner.js"
import * as MountInfo from "./MountInfo.js"
import type * as ServerConfig from "./ServerConfig.js"

// ---------------------------------------------------------------------------------------------------
// Models

/**
 * What to mount.
 *
 * @since 0.1.0
 * @category models
 */
export type MountSpec =
  | {
    readonly type: "nfs"
    readonly targetId: string
    readonly path: string
    readonly export: string
    /** `nfs_mount_opts` as sent (comma-separated), checked against the allow-list. */
    readonly options?: string | null | undefined
  }
  | {
    readonly type: "s3"
    readonly targetId: string
    readonly path: string
    readonly secretRef: string
    readonly token: Redacted.Redacted<string>
  }

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
 * @category errors
 */
export class MounterError extends Schema.TaggedError<MounterError>()("MounterError", {
  operation: Schema.Literal("mount", "unmount", "status"),
  path: Schema.String,
  reason: Schema.String,
  /** Nothing was executed (refused before any command ran). */
  refused: Schema.optional(Schema.Boolean),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return this.reason
  }
}

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
  /** File-system types an NFS mount may show as. Default `nfs`, `nfs4`. */
  readonly nfsFsTypes?: ReadonlyArray<string> | undefined
  /** Default `mount`. */
  readonly mountCommand?: string | undefined
  /** Default `umount`. */
  readonly umountCommand?: string | undefined
  /** How long a FUSE daemon gets to exit after its unmount, and after SIGTERM. Default 2 s. */
  readonly daemonStopGrace?: Duration.DurationInput | undefined
}

// ---------------------------------------------------------------------------------------------------
// NFS options and exports (the checks live in internal/nfs.ts: the client refuses the same input
// before any I/O)

/**
 * Checks `nfs_mount_opts` against the allow-list and returns the options to pass (`nosuid,nodev`
 * always added), or why they are refused.
 *
 * @since 0.1.0
 * @category nfs
 */
export const checkNfsOptions = (raw: string | null | undefined): Either.Either<string, string> =>
  Either.mapLeft(Nfs.checkOptions(raw), (reason) => `invalid nfs_mount_opts: ${reason}`)

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

// ---------------------------------------------------------------------------------------------------
// S3 driver arguments

const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/
const REGION = /^[A-Za-z0-9_-]{1,64}$/

/**
 * The mount-table source an s3fs mount of `bucket` shows (set with `-o fsname=`).
 *
 * @since 0.1.0
 * @category s3
 */
export const s3fsSource = (bucket: string): string => `s3fs:${bucket}`

/**
 * How to start a FUSE driver for a bucket: argv and environment, plus the passwd file content for
 * s3fs. Values that reach `-o` are checked so they cannot add options.
 *
 * @since 0.1.0
 * @category s3
 */
export const s3Invocation = (
  driver: ServerConfig.S3Driver,
  command: string,
  creds: Barbican.S3Credentials,
  mountPoint: string,
  passwdFile: string,
  extraOptions: ReadonlyArray<string>
): Either.Either<
  { readonly command: string; readonly args: ReadonlyArray<string>; readonly env: Readonly<Record<string, string>>; readonly passwd: Option.Option<Redacted.Redacted<string>> },
  string
> => {
  if (!BUCKET.test(creds.bucket)) return Either.left(`the secret names an invalid bucket ${JSON.stringify(creds.bucket)}`)
  if (!REGION.test(creds.region)) return Either.left(`the secret names an invalid region ${JSON.stringify(creds.region)}`)
  let endpoint: string | undefined
  if (Option.isSome(creds.endpointUrl)) {
    const raw = creds.endpointUrl.value
    const withScheme = /^[a-z]+:\/\//i.test(raw) ? raw : `${Option.getOrElse(creds.ssl, () => true) ? "https" : "http"}://${raw}`
    let url: URL
    try {
      url = new URL(withScheme)
    } catch {
      return Either.left("the secret's endpoint_url is not a URL")
    }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || url.username !== "" || url.password !== "") {
      return Either.left("the secret's endpoint_url must be a plain http(s) URL")
    }
    endpoint = url.href.replace(/\/+$/, "")
    if (/[\s,]/.test(endpoint)) return Either.left("the secret's endpoint_url must not contain commas or spaces")
  }
  if (driver === "s3vaultfuse") {
    const env: Record<string, string> = {
      vault_s3_bucket: creds.bucket,
      vault_s3_region_name: creds.region,
      vault_data_directory: mountPoint,
      AWS_ACCESS_KEY_ID: Redacted.value(creds.accessKeyId),
      AWS_SECRET_ACCESS_KEY: Redacted.value(creds.secretAccessKey)
    }
    if (endpoint !== undefined) env.vault_s3_endpoint_url = endpoint
    if (Option.isSome(creds.ssl)) env.vault_s3_ssl = String(creds.ssl.value)
    if (Option.isSome(creds.sslVerify)) env.vault_s3_ssl_verify = String(creds.sslVerify.value)
    if (Option.isSome(creds.signatureVersion)) env.vault_s3_signature_version = creds.signatureVersion.value
    if (Option.isSome(creds.authVersion)) env.vault_s3_auth_version = creds.authVersion.value
    return Either.right({ command, args: [], env, passwd: Option.none() })
  }
  const options = [
    `passwd_file=${passwdFile}`,
    `fsname=${s3fsSource(creds.bucket)}`,
    "subtype=s3fs",
    `endpoint=${creds.region}`
  ]
  if (endpoint !== undefined) options.push(`url=${endpoint}`, "use_path_request_style")
  if (Option.contains(creds.sslVerify, false)) options.push("no_check_certificate", "ssl_verify_hostname=0")
  const sig = Option.getOrUndefined(creds.signatureVersion)?.toLowerCase()
  if (sig === "s3v4" || sig === "v4") options.push("sigv4")
  else if (sig === "s3" || sig === "s3v2" || sig === "v2") options.push("sigv2")
  options.push(...extraOptions)
  if (options.some((o) => o.includes(",") || /\s/.test(o))) return Either.left("an s3fs option would contain a comma or a space")
  return Either.right({
    command,
    args: [creds.bucket, mountPoint, "-f", "-o", options.join(",")],
    env: {},
    passwd: Option.some(Redacted.make(`${Redacted.value(creds.accessKeyId)}:${Redacted.value(creds.secretAccessKey)}\n`))
  })
}

// ---------------------------------------------------------------------------------------------------
// Files

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

interface State {
  readonly backup_target_id: string
  readonly type: "nfs" | "s3"
  readonly source: string
  readonly mount_path: string
  readonly requested_path: string
  readonly fs_type: string
  readonly mounted_at: string
}

const StateSchema = Schema.Struct({
  backup_target_id: Schema.String,
  type: Schema.Literal("nfs", "s3"),
  source: Schema.String,
  mount_path: Schema.String,
  requested_path: Schema.String,
  fs_type: Schema.String,
  mounted_at: Schema.String
})

const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | null)?.code

/** Writes a file atomically (temp + rename), with the given mode. */
const writeAtomic = (file: string, content: string, mode: number) =>
  Effect.tryPromise({
    try: async () => {
      const tmp = `${file}.${process.pid}.tmp`
      await fs.rm(tmp, { force: true })
      await fs.writeFile(tmp, content, { mode, flag: "wx" })
      await fs.rename(tmp, file)
    },
    catch: (e) => e as Error
  })

const removeFile = (file: string) => Effect.promise(() => fs.rm(file, { force: true }).catch(() => undefined))

// ---------------------------------------------------------------------------------------------------
// Processes

/** Whether a process exists and is not a zombie (a zombie still answers `kill(pid, 0)`). */
const isAlive = (pid: number): Effect.Effect<boolean> =>
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

/** Whether `pid` is a FUSE daemon serving `mountPoint` (its argv or, for s3vaultfuse, its environment names it). */
const servesPath = (pid: number, mountPoint: string): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    const argv = yield* readNulList(`/proc/${pid}/cmdline`)
    if (argv.includes(mountPoint)) return true
    const env = yield* readNulList(`/proc/${pid}/environ`)
    return env.includes(`vault_data_directory=${mountPoint}`)
  })

interface FoundDaemon {
  readonly pid: number
  /** The bucket it serves, when its argv or environment tells. */
  readonly bucket: string | undefined
}

/** Finds a live FUSE daemon serving `mountPoint` by scanning /proc (for mounts made by another server). */
const findDaemon = (mountPoint: string): Effect.Effect<FoundDaemon | undefined> =>
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

// ---------------------------------------------------------------------------------------------------
// The service

/**
 * Makes the Mounter: prepares the base and run directories, adopts live FUSE daemons from their PID
 * files (and removes the files of dead ones).
 *
 * @since 0.1.0
 * @category constructors
 */
/** The failure of a mount of `path`; `refused` when nothing was attempted. */
const mountFailure = (path: string) => (reason: string, refused = false, cause?: unknown) =>
  Effect.fail(
    new MounterError({
      operation: "mount",
      path,
      reason,
      ...(refused ? { refused } : {}),
      ...(cause === undefined ? {} : { cause })
    })
  )

export const make = (
  options: Options
): Effect.Effect<Service, MounterError, CommandRunner.CommandRunner | Barbican.Barbican> =>
  Effect.gen(function*() {
    const runner = yield* CommandRunner.CommandRunner
    const barbican = yield* Barbican.Barbican
    const driver = options.s3Driver ?? "s3fs"
    const s3Command = options.s3Command ?? driver
    const commandTimeout = Duration.decode(options.commandTimeout ?? Duration.seconds(120))
    const mountinfoFile = options.mountinfoFile ?? MountInfo.DEFAULT_FILE
    const nfsFsTypes = options.nfsFsTypes ?? ["nfs", "nfs4"]
    const mountCommand = options.mountCommand ?? "mount"
    const umountCommand = options.umountCommand ?? "umount"
    const stopGrace = Duration.decode(options.daemonStopGrace ?? Duration.seconds(2))
    const configuredBase = path.resolve(options.mountBase)
    const runDir = path.resolve(options.runDir)
    const s3Dir = path.join(runDir, "s3")
    const stateDir = path.join(runDir, "state")

    const setupError = (reason: string, cause?: unknown) =>
      new MounterError({ operation: "status", path: configuredBase, reason, ...(cause === undefined ? {} : { cause }) })
    const mountBase = yield* Effect.tryPromise({
      try: async () => {
        await fs.mkdir(configuredBase, { recursive: true, mode: 0o755 })
        await fs.mkdir(s3Dir, { recursive: true, mode: 0o700 })
        await fs.mkdir(stateDir, { recursive: true, mode: 0o700 })
        return await fs.realpath(configuredBase)
      },
      catch: (e) => setupError(`cannot prepare ${configuredBase} and ${runDir}: ${(e as Error).message}`, e)
    })

    const pathLocks = KeyedMutex.make()
    const targetLocks = KeyedMutex.make()
    const withLocks = <A, E>(mountPoint: string, targetId: string, effect: Effect.Effect<A, E>) =>
      pathLocks.withLock(
        mountPoint,
        Duration.infinity,
        () => undefined as never,
        targetLocks.withLock(fileKey(targetId), Duration.infinity, () => undefined as never, effect)
      )

    /** PIDs of FUSE daemons this server runs or adopted, by target file key. */
    const daemons = new Map<string, { readonly pid: number; readonly mountPoint: string; readonly handle?: CommandRunner.Daemon }>()

    const files = (targetId: string) => {
      const key = fileKey(targetId)
      return {
        pid: path.join(s3Dir, `${key}.pid`),
        passwd: path.join(s3Dir, `${key}.passwd`),
        log: path.join(s3Dir, `${key}.log`),
        state: path.join(stateDir, `${key}.json`)
      }
    }

    const mountTable = (operation: MounterError["operation"], p: string) =>
      MountInfo.read(mountinfoFile).pipe(
        Effect.mapError((e) => new MounterError({ operation, path: p, reason: e.message, cause: e }))
      )

    const readState = (file: string): Effect.Effect<State | undefined> =>
      Effect.promise(() => fs.readFile(file, "utf8").then((t) => t, () => undefined)).pipe(
        Effect.map((text) => {
          if (text === undefined) return undefined
          try {
            return Option.getOrUndefined(Schema.decodeUnknownOption(StateSchema)(JSON.parse(text)))
          } catch {
            return undefined
          }
        })
      )

    const allStates = Effect.promise(() => fs.readdir(stateDir).catch(() => [] as Array<string>)).pipe(
      Effect.flatMap((names) =>
        Effect.forEach(names.filter((n) => n.endsWith(".json")), (n) => readState(path.join(stateDir, n)))
      ),
      Effect.map((states) => states.filter((s): s is State => s !== undefined))
    )

    const readPid = (file: string): Effect.Effect<number | undefined> =>
      Effect.promise(() => fs.readFile(file, "utf8").then((t) => t, () => "")).pipe(
        Effect.map((t) => (/^\s*[0-9]+\s*$/.test(t) ? Number(t.trim()) : undefined))
      )

    // ---------------------------------------------------------------------------------------------
    // Confinement

    /**
     * The real mount point for a requested path: strictly inside the base, no `..`, no symbolic link
     * below the base, not inside another mount. Parents are not created here.
     */
    const confine = (operation: MounterError["operation"], requested: string, table: ReadonlyArray<MountInfo.Entry>) =>
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

    // ---------------------------------------------------------------------------------------------
    // Time

    const timeLeft = (operation: MounterError["operation"], p: string, deadline: number, step: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const left = deadline - now
        return left <= 0
          ? Effect.fail(new MounterError({ operation, path: p, reason: `the request's deadline passed before ${step}` }))
          : Effect.succeed(Duration.min(commandTimeout, Duration.millis(left)))
      })

    // ---------------------------------------------------------------------------------------------
    // Daemons

    /** Polls until the process is gone, for at most `within`; true if it is gone. */
    const waitGone = (pid: number, within: Duration.Duration) =>
      isAlive(pid).pipe(
        Effect.filterOrFail((alive) => !alive, () => "alive" as const),
        Effect.retry(Schedule.spaced(Duration.millis(25)).pipe(Schedule.upTo(within))),
        Effect.as(true),
        Effect.orElseSucceed(() => false)
      )

    /** Stops a FUSE daemon: it normally exits by itself once unmounted; then SIGTERM, then SIGKILL. */
    const stopDaemon = (pid: number, mountPoint: string) =>
      Effect.gen(function*() {
        if (!(yield* isAlive(pid))) return
        // A PID file may outlive its process, and the PID be reused: only kill what serves this path.
        if (!(yield* servesPath(pid, mountPoint))) return
        if (yield* waitGone(pid, stopGrace)) return
        yield* Effect.logInfo("the FUSE daemon did not exit after the unmount; sending SIGTERM").pipe(Effect.annotateLogs({ pid }))
        signal(pid, "SIGTERM")
        if (yield* waitGone(pid, stopGrace)) return
        yield* Effect.logWarning("the FUSE daemon ignored SIGTERM; sending SIGKILL").pipe(Effect.annotateLogs({ pid }))
        signal(pid, "SIGKILL")
        yield* waitGone(pid, stopGrace)
      })

    const signal = (pid: number, sig: NodeJS.Signals) => {
      // The daemon leads its own session and process group.
      if (!CommandRunner.killGroup(pid, sig)) {
        try {
          process.kill(pid, sig)
        } catch {
          // gone
        }
      }
    }

    const removeS3Files = (targetId: string) => {
      const f = files(targetId)
      return Effect.all([removeFile(f.pid), removeFile(f.passwd)], { discard: true })
    }

    /** Adopts live daemons from PID files at start; removes the files of dead ones. */
    const adopt = Effect.gen(function*() {
      const states = yield* allStates
      const names = yield* Effect.promise(() => fs.readdir(s3Dir).catch(() => [] as Array<string>))
      for (const name of names) {
        const full = path.join(s3Dir, name)
        if (name.endsWith(".passwd")) {
          // A passwd file only lives while a daemon starts: a leftover is from a crash mid-mount.
          yield* removeFile(full)
          continue
        }
        if (!name.endsWith(".pid")) continue
        const key = name.slice(0, -".pid".length)
        const state = states.find((s) => fileKey(s.backup_target_id) === key)
        const pid = yield* readPid(full)
        const alive = pid !== undefined && state !== undefined && (yield* isAlive(pid)) &&
          (yield* servesPath(pid, state.mount_path))
        if (alive && pid !== undefined && state !== undefined) {
          daemons.set(key, { pid, mountPoint: state.mount_path })
          yield* Effect.logInfo("adopted a live FUSE daemon").pipe(
            Effect.annotateLogs({ pid, backupTargetId: state.backup_target_id, mountPath: state.mount_path })
          )
        } else {
          yield* removeFile(full)
          yield* Effect.logInfo("removed the PID file of a FUSE daemon that is gone").pipe(Effect.annotateLogs({ file: full }))
        }
      }
    })
    yield* adopt

    const daemonFor = (targetId: string) =>
      Effect.gen(function*() {
        const key = fileKey(targetId)
        const known = daemons.get(key)
        if (known !== undefined) return known
        const pid = yield* readPid(files(targetId).pid)
        return pid === undefined ? undefined : { pid, mountPoint: "" }
      })

    // ---------------------------------------------------------------------------------------------
    // Mount

    const writeState = (state: State) =>
      writeAtomic(files(state.backup_target_id).state, `${JSON.stringify(state, null, 2)}\n`, 0o600).pipe(
        Effect.catchAll((e) => Effect.logWarning(`cannot write the state file: ${e.message}`))
      )

    const ensureDir = (operation: MounterError["operation"], requested: string, mountPoint: string) =>
      Effect.tryPromise({
        try: () => fs.mkdir(mountPoint, { recursive: true, mode: 0o755 }),
        catch: (e) =>
          new MounterError({ operation, path: requested, reason: `cannot create ${mountPoint}: ${(e as Error).message}`, cause: e })
      })

    const otherTargetAt = (mountPoint: string, targetId: string) =>
      Effect.map(allStates, (states) => states.find((s) => s.mount_path === mountPoint && s.backup_target_id !== targetId))

    /** A mount path serves one target: refuses `targetId` where another target is mounted. */
    const refuseOtherTarget = (requested: string, mountPoint: string, targetId: string) =>
      Effect.flatMap(otherTargetAt(mountPoint, targetId), (other) =>
        other === undefined
          ? Effect.void
          : mountFailure(requested)(
            `${requested} is already mounted for target ${other.backup_target_id}; refusing to mount ${targetId} there`,
            true
          ))

    const stateFor = (targetId: string) => readState(files(targetId).state)

    const mountNfs = (spec: Extract<MountSpec, { type: "nfs" }>, deadline: number) =>
      Effect.gen(function*() {
        const fail = mountFailure(spec.path)
        const exp = checkNfsExport(spec.export)
        if (Either.isLeft(exp)) return yield* fail(exp.left, true)
        const opts = checkNfsOptions(spec.options)
        if (Either.isLeft(opts)) return yield* fail(opts.left, true)
        const table = yield* mountTable("mount", spec.path)
        const mountPoint = yield* confine("mount", spec.path, table)
        return yield* withLocks(
          mountPoint,
          spec.targetId,
          Effect.gen(function*() {
            const expected = normalizeNfsSource(spec.export)
            const current = MountInfo.at(yield* mountTable("mount", spec.path), mountPoint)
            if (current !== undefined) {
              yield* refuseOtherTarget(spec.path, mountPoint, spec.targetId)
              if (normalizeNfsSource(current.source) === expected && nfsFsTypes.includes(current.fsType)) {
                yield* recordIfMissing(spec.targetId, "nfs", current, spec.path, mountPoint)
                return { alreadyMounted: true, mountPoint, message: `Already mounted at ${spec.path}` }
              }
              return yield* fail(
                `${spec.path} is already mounted from ${current.source} (${current.fsType}); refusing to mount ${spec.export} there`,
                true
              )
            }
            yield* refuseOtherPath(spec.targetId, spec.path, mountPoint)
            yield* ensureDir("mount", spec.path, mountPoint)
            const timeout = yield* timeLeft("mount", spec.path, deadline, "running mount")
            yield* runner.run({
              command: mountCommand,
              args: ["-t", "nfs", "-o", opts.right, spec.export, mountPoint],
              timeout
            }).pipe(Effect.catchAll((e) => fail(`NFS mount of ${spec.export} at ${spec.path} failed: ${e.message}`, false, e)))
            const after = MountInfo.at(yield* mountTable("mount", spec.path), mountPoint)
            if (after === undefined || normalizeNfsSource(after.source) !== expected || !nfsFsTypes.includes(after.fsType)) {
              return yield* fail(
                after === undefined
                  ? `mount reported success, but ${spec.path} does not show ${spec.export} in the mount table; the path is NOT mounted`
                  : `mount reported success, but ${spec.path} shows ${after.source} (${after.fsType}) instead of ${spec.export}`
              )
            }
            yield* writeState({
              backup_target_id: spec.targetId,
              type: "nfs",
              source: after.source,
              mount_path: mountPoint,
              requested_path: spec.path,
              fs_type: after.fsType,
              mounted_at: new Date().toISOString()
            })
            return { alreadyMounted: false, mountPoint, message: `NFS target mounted successfully at ${spec.path}` }
          })
        )
      })

    /** A target has one mount path per host: refuse a second path while the first is mounted. */
    const refuseOtherPath = (targetId: string, requested: string, mountPoint: string) =>
      Effect.gen(function*() {
        const state = yield* stateFor(targetId)
        if (state === undefined || state.mount_path === mountPoint) return
        const table = yield* mountTable("mount", requested)
        if (MountInfo.at(table, state.mount_path) !== undefined) {
          return yield* Effect.fail(
            new MounterError({
              operation: "mount",
              path: requested,
              reason: `target ${targetId} is already mounted at ${state.requested_path} on this host; a target has one mount path per host`,
              refused: true
            })
          )
        }
      })

    const recordIfMissing = (
      targetId: string,
      type: "nfs" | "s3",
      entry: MountInfo.Entry,
      requested: string,
      mountPoint: string
    ) =>
      Effect.gen(function*() {
        const state = yield* stateFor(targetId)
        if (state !== undefined && state.mount_path === mountPoint && state.source === entry.source) return
        yield* writeState({
          backup_target_id: targetId,
          type,
          source: entry.source,
          mount_path: mountPoint,
          requested_path: requested,
          fs_type: entry.fsType,
          mounted_at: new Date().toISOString()
        })
      })

    const scrub = (text: string, creds: Barbican.S3Credentials) =>
      [Redacted.value(creds.accessKeyId), Redacted.value(creds.secretAccessKey)]
        .filter((s) => s.length > 0)
        .reduce((t, s) => t.split(s).join("***"), text)

    const logTail = (file: string, creds: Barbican.S3Credentials) =>
      Effect.promise(() => fs.readFile(file, "utf8").catch(() => "")).pipe(
        Effect.map((t) => {
          const lines = scrub(t, creds).split("\n").map((l) => l.trim()).filter((l) => l !== "")
          const important = lines.filter((l) => /\[(CRT|ERR)\]|error|fail|invalid|denied/i.test(l))
          return (important.length > 0 ? important : lines).slice(-3).join(" / ")
        })
      )

    /** Whether an s3 mount entry is the one expected for `bucket`. */
    const s3SourceMatches = (entry: MountInfo.Entry, bucket: string | undefined, daemon: FoundDaemon | undefined) => {
      if (!MountInfo.isFuse(entry.fsType)) return false
      if (driver === "s3fs" && bucket !== undefined && entry.source === s3fsSource(bucket)) return true
      // A mount made without our fsname (another server, or s3vaultfuse): its daemon tells the bucket.
      return daemon !== undefined && bucket !== undefined && daemon.bucket === bucket
    }

    const mountS3 = (spec: Extract<MountSpec, { type: "s3" }>, deadline: number) =>
      Effect.gen(function*() {
        const fail = mountFailure(spec.path)
        const table = yield* mountTable("mount", spec.path)
        const mountPoint = yield* confine("mount", spec.path, table)
        return yield* withLocks(
          mountPoint,
          spec.targetId,
          Effect.gen(function*() {
            const f = files(spec.targetId)
            const key = fileKey(spec.targetId)
            const current = MountInfo.at(yield* mountTable("mount", spec.path), mountPoint)
            if (current !== undefined) {
              yield* refuseOtherTarget(spec.path, mountPoint, spec.targetId)
              const state = yield* stateFor(spec.targetId)
              const known = yield* daemonFor(spec.targetId)
              const knownAlive = known !== undefined && (yield* isAlive(known.pid)) && (yield* servesPath(known.pid, mountPoint))
              if (
                state !== undefined && state.mount_path === mountPoint && state.source === current.source &&
                MountInfo.isFuse(current.fsType) && knownAlive
              ) {
                return { alreadyMounted: true, mountPoint, message: `Already mounted at ${spec.path}` }
              }
              // Not ours, or its daemon is gone: find out what it is.
              const found = knownAlive && known !== undefined ? { pid: known.pid, bucket: undefined } : yield* findDaemon(mountPoint)
              if (found === undefined && MountInfo.isFuse(current.fsType)) {
                // A FUSE mount whose daemon died ("Transport endpoint is not connected"): detach it and mount again.
                yield* Effect.logWarning("the S3 mount's FUSE daemon is gone; detaching the dead mount and mounting again").pipe(
                  Effect.annotateLogs({ mountPath: mountPoint })
                )
                const timeout = yield* timeLeft("mount", spec.path, deadline, "detaching a dead FUSE mount")
                yield* runner.run({ command: umountCommand, args: ["-l", mountPoint], timeout }).pipe(
                  Effect.catchAll((e) => fail(`cannot detach the dead FUSE mount at ${spec.path}: ${e.message}`, false, e))
                )
              } else {
                const creds = yield* barbican.s3Credentials(spec.secretRef, spec.token, {
                  timeout: yield* timeLeft("mount", spec.path, deadline, "reading the credentials")
                }).pipe(Effect.mapError((e) => new MounterError({ operation: "mount", path: spec.path, reason: e.message, cause: e })))
                if (s3SourceMatches(current, creds.bucket, found)) {
                  if (found !== undefined) {
                    daemons.set(key, { pid: found.pid, mountPoint })
                    yield* writeAtomic(f.pid, `${found.pid}\n`, 0o644).pipe(Effect.ignore)
                  }
                  yield* recordIfMissing(spec.targetId, "s3", current, spec.path, mountPoint)
                  return { alreadyMounted: true, mountPoint, message: `Already mounted at ${spec.path}` }
                }
                return yield* fail(
                  `${spec.path} is already mounted from ${current.source} (${current.fsType}), not bucket ${creds.bucket}; refusing to mount over it`,
                  true
                )
              }
            }
            yield* refuseOtherPath(spec.targetId, spec.path, mountPoint)
            const creds = yield* barbican.s3Credentials(spec.secretRef, spec.token, {
              timeout: yield* timeLeft("mount", spec.path, deadline, "reading the credentials")
            }).pipe(Effect.mapError((e) => new MounterError({ operation: "mount", path: spec.path, reason: e.message, cause: e })))
            const invocation = s3Invocation(driver, s3Command, creds, mountPoint, f.passwd, options.s3fsOptions ?? [])
            if (Either.isLeft(invocation)) return yield* fail(invocation.left, true)
            const inv = invocation.right
            yield* ensureDir("mount", spec.path, mountPoint)
            const timeout = yield* timeLeft("mount", spec.path, deadline, "starting the FUSE driver")
            return yield* Effect.gen(function*() {
              if (Option.isSome(inv.passwd)) {
                yield* removeFile(f.passwd)
                yield* writeAtomic(f.passwd, Redacted.value(inv.passwd.value), 0o600).pipe(
                  Effect.catchAll((e) => fail(`cannot write the s3fs passwd file: ${e.message}`, false, e))
                )
              }
              const daemon = yield* runner.spawnDaemon({ command: inv.command, args: inv.args, env: inv.env, logFile: f.log }).pipe(
                Effect.catchAll((e) => fail(`cannot start the S3 driver: ${e.message}`, false, e))
              )
              daemons.set(key, { pid: daemon.pid, mountPoint, handle: daemon })
              yield* writeAtomic(f.pid, `${daemon.pid}\n`, 0o644).pipe(Effect.ignore)
              // Ready when the mount shows; failed when the daemon exits first or time runs out.
              const ready = yield* mountTable("mount", spec.path).pipe(
                Effect.map((t) => MountInfo.at(t, mountPoint)),
                Effect.flatMap((entry) =>
                  entry !== undefined
                    ? Effect.succeed(Option.some(entry))
                    : daemon.hasExited()
                    ? Effect.succeed(Option.none())
                    : Effect.fail("pending" as const)
                ),
                Effect.retry(Schedule.spaced(Duration.millis(50)).pipe(Schedule.upTo(timeout))),
                Effect.catchAll(() => Effect.succeed(Option.none<MountInfo.Entry>()))
              )
              const driverFailed = (what: string) =>
                Effect.flatMap(logTail(f.log, creds), (tail) =>
                  fail(`the S3 driver ${path.basename(inv.command)} could not mount ${spec.path}: ${what}${tail === "" ? "" : `: ${tail}`}`))
              if (Option.isNone(ready)) {
                return yield* daemon.hasExited()
                  ? driverFailed("it exited")
                  : driverFailed(`the mount did not show within ${Duration.toMillis(timeout)} ms`)
              }
              const entry = ready.value
              if (!MountInfo.isFuse(entry.fsType) || (driver === "s3fs" && entry.source !== s3fsSource(creds.bucket))) {
                return yield* fail(`${spec.path} shows ${entry.source} (${entry.fsType}) instead of the S3 bucket ${creds.bucket}`)
              }
              // The mount shows before the driver has checked the bucket and the keys (s3fs does that in
              // FUSE's init, after the mount; when the check fails it unmounts and exits). So: one lookup
              // of a name that does not exist, in a time-bounded child process. It waits for that check,
              // and goes to the bucket with the keys: a driver that serves it answers "no such file";
              // refused keys give another error. The answer counts only if the same mount is still there
              // afterwards: a driver that gave up unmounts before it exits, and a lookup that lands in
              // that gap answers from the bare directory underneath ("no such file" too).
              const probeTimeout = yield* timeLeft("mount", spec.path, deadline, "checking the new mount")
              const probe = yield* Effect.either(
                runner.run({ command: "stat", args: ["-c", "%F", path.join(mountPoint, `.dms-mount-check-${randomUUID()}`)], timeout: probeTimeout })
              )
              const answered = Either.isRight(probe) || (probe.left.reason === "exit" && /No such file or directory/.test(probe.left.stderr))
              const after = yield* Effect.map(mountTable("mount", spec.path), (t) => MountInfo.at(t, mountPoint))
              const stillMounted = after !== undefined && after.id === entry.id
              if (!answered || !stillMounted || daemon.hasExited()) {
                // A driver that gave up exits right away: let it, so its log says why.
                yield* Effect.ignore(Effect.timeout(daemon.exited, stopGrace))
                return yield* driverFailed(
                  daemon.hasExited()
                    ? "it exited"
                    : !stillMounted
                    ? "the mount went away"
                    : `the new mount does not answer (${Either.isLeft(probe) ? probe.left.message : "?"})`
                )
              }
              yield* removeFile(f.passwd)
              yield* writeState({
                backup_target_id: spec.targetId,
                type: "s3",
                source: entry.source,
                mount_path: mountPoint,
                requested_path: spec.path,
                fs_type: entry.fsType,
                mounted_at: new Date().toISOString()
              })
              return { alreadyMounted: false, mountPoint, message: `S3 target mounted successfully at ${spec.path}` }
            }).pipe(
              // On any failure after the start: no daemon, no credentials, no half mount left behind.
              Effect.onError(() =>
                Effect.gen(function*() {
                  yield* removeFile(f.passwd)
                  const d = daemons.get(key)
                  if (d !== undefined) {
                    daemons.delete(key)
                    const still = MountInfo.at(yield* Effect.orElseSucceed(mountTable("mount", spec.path), () => []), mountPoint)
                    if (still !== undefined) {
                      yield* runner.run({ command: umountCommand, args: ["-l", mountPoint], timeout: Duration.seconds(10) }).pipe(Effect.ignore)
                    }
                    signal(d.pid, "SIGTERM")
                    if (!(yield* waitGone(d.pid, stopGrace))) signal(d.pid, "SIGKILL")
                    yield* waitGone(d.pid, stopGrace)
                  }
                  yield* removeFile(f.pid)
                  yield* removeEmptyDir(mountPoint)
                })
              )
            )
          })
        )
      })

    const removeEmptyDir = (dir: string) =>
      Effect.promise(() => fs.rmdir(dir).catch(() => undefined))

    // ---------------------------------------------------------------------------------------------
    // Unmount

    const unmountChain = (spec: UnmountSpec, mountPoint: string, deadline: number) =>
      Effect.gen(function*() {
        const attempts: ReadonlyArray<ReadonlyArray<string>> = [[mountPoint], ["-f", mountPoint], ["-l", mountPoint]]
        const errors: Array<string> = []
        for (let i = 0; i < attempts.length; i++) {
          const left = yield* Effect.either(timeLeft("unmount", spec.path, deadline, "unmounting"))
          if (Either.isLeft(left)) {
            errors.push(left.left.reason)
            break
          }
          // Leave time for the fallbacks that remain.
          const budget = Duration.millis(Math.max(1, Math.floor(Duration.toMillis(left.right) / (attempts.length - i))))
          const args = attempts[i]!
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
        const key = fileKey(spec.targetId)
        const state = yield* stateFor(spec.targetId)
        const daemon = yield* daemonFor(spec.targetId)
        if (daemon !== undefined && (daemon.mountPoint === "" || daemon.mountPoint === mountPoint)) {
          yield* stopDaemon(daemon.pid, mountPoint)
          daemons.delete(key)
          yield* removeS3Files(spec.targetId)
        }
        if (state !== undefined && state.mount_path === mountPoint) yield* removeFile(files(spec.targetId).state)
        yield* removeEmptyDir(mountPoint)
      })

    const unmount = (spec: UnmountSpec, deadline: number) =>
      Effect.gen(function*() {
        const table = yield* mountTable("unmount", spec.path)
        const mountPoint = yield* confine("unmount", spec.path, table)
        return yield* withLocks(
          mountPoint,
          spec.targetId,
          Effect.gen(function*() {
            const current = MountInfo.at(yield* mountTable("unmount", spec.path), mountPoint)
            if (current === undefined) {
              yield* cleanupTarget(spec, mountPoint)
              return { wasMounted: false, mountPoint, message: `Target not mounted at ${spec.path}` }
            }
            const other = yield* otherTargetAt(mountPoint, spec.targetId)
            if (other !== undefined && (yield* stateFor(spec.targetId))?.mount_path !== mountPoint) {
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
            const known = yield* daemonFor(spec.targetId)
            const daemon = known !== undefined && known.pid > 0 && (yield* isAlive(known.pid))
              ? known
              : MountInfo.isFuse(current.fsType)
              ? yield* Effect.map(findDaemon(mountPoint), (d) => (d === undefined ? undefined : { pid: d.pid, mountPoint }))
              : undefined
            yield* unmountChain(spec, mountPoint, deadline)
            if (daemon !== undefined) yield* stopDaemon(daemon.pid, mountPoint)
            yield* cleanupTarget(spec, mountPoint)
            return { wasMounted: true, mountPoint, message: `Target unmounted successfully from ${spec.path}` }
          })
        )
      })

    // ---------------------------------------------------------------------------------------------
    // Status

    const status = Effect.gen(function*() {
      const table = yield* mountTable("status", configuredBase)
      const states = yield* allStates
      const out: Array<StatusEntry> = []
      for (const s of states) {
        const entry = MountInfo.at(table, s.mount_path)
        let pid: number | null = null
        let alive: boolean | null = null
        if (s.type === "s3") {
          const d = yield* daemonFor(s.backup_target_id)
          pid = d?.pid ?? null
          alive = d === undefined ? false : (yield* isAlive(d.pid)) && (yield* servesPath(d.pid, s.mount_path))
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
export const layer = (
  options: Options
): Layer.Layer<Mounter, MounterError, CommandRunner.CommandRunner | Barbican.Barbican> => Layer.effect(Mounter, make(options))
