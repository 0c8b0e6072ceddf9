/**
 * The request of `mount` and `unmount`, from flags or from a guide-format JSON file (`--request`),
 * flags overriding the file. It is validated before any configuration is read or any connection made,
 * and a bad field is named as the user wrote it: `--mount-path`, or `request.json: backup_target.id`.
 *
 * @since 0.1.0
 */
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as CliValidationError from "@effect/cli/ValidationError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as os from "node:os"
import * as DmsError from "../DmsError.js"
import * as Protocol from "../Protocol.js"
import { BadInput } from "./Failure.js"
import * as SecretFlags from "./SecretFlags.js"

const invalidValue = (name: string, reason: string) =>
  Effect.fail(CliValidationError.invalidValue(HelpDoc.p(`--${name}: ${reason}`)))

/**
 * An integer flag whose error names it: `--job-id: expected an integer, got "abc"`.
 *
 * @since 0.1.0
 * @category options
 */
export const integer = (name: string): Options.Options<number> =>
  Options.text(name).pipe(
    Options.withPseudoName("integer"),
    Options.mapEffect((text) =>
      /^[-+]?\d+$/.test(text.trim()) && Number.isSafeInteger(Number(text))
        ? Effect.succeed(Number(text))
        : invalidValue(name, `expected an integer, got ${JSON.stringify(text)}`)
    )
  )

/**
 * A flag with a fixed set of values whose error names it: `--target-type: expected s3 or nfs, got "smb"`.
 *
 * @since 0.1.0
 * @category options
 */
export const choice = <const A extends string>(name: string, values: ReadonlyArray<A>): Options.Options<A> =>
  Options.text(name).pipe(
    Options.withPseudoName(values.join(" | ")),
    Options.mapEffect((text) =>
      values.includes(text as A)
        ? Effect.succeed(text as A)
        : invalidValue(name, `expected ${values.join(" or ")}, got ${JSON.stringify(text)}`)
    )
  )

/**
 * `--json`: print machine-readable JSON only.
 *
 * @since 0.1.0
 * @category options
 */
export const json = Options.boolean("json").pipe(Options.withDescription("print machine-readable JSON (and nothing else) on stdout"))

/**
 * `--verbose`: print the cause chain of an error.
 *
 * @since 0.1.0
 * @category options
 */
export const verbose = Options.boolean("verbose").pipe(
  Options.withDescription("on failure, also print the chain of causes")
)

/**
 * `--timeout <seconds>`: overrides DMS_REQUEST_TIMEOUT / timeout.
 *
 * @since 0.1.0
 * @category options
 */
export const timeout = integer("timeout").pipe(
  Options.withDescription("seconds to wait for the DMS server (default: DMS_REQUEST_TIMEOUT, timeout in client.conf, or 300)"),
  Options.optional
)

const optionalText = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.optional)

/**
 * The flags that make a request.
 *
 * @since 0.1.0
 * @category options
 */
export const requestOptions = {
  jobId: integer("job-id").pipe(Options.withDescription("the job (an integer, 1 … 2147483647)"), Options.optional),
  targetId: optionalText("target-id", "the backup target's id"),
  targetType: choice("target-type", ["s3", "nfs"]).pipe(
    Options.withDescription("s3 or nfs (default: nfs with --nfs-export, s3 with --secret-ref)"),
    Options.optional
  ),
  host: optionalText("host", "the compute host whose DMS server mounts it (default: this host's name)"),
  mountPath: optionalText("mount-path", "where the target is mounted on the host (filesystem_export_mount_path)"),
  nfsExport: optionalText("nfs-export", "NFS: the export, host:/path"),
  nfsOpts: optionalText("nfs-opts", "NFS: mount options, e.g. rw,sync,hard,nfsvers=4"),
  secretRef: optionalText("secret-ref", "S3: the Barbican secret with the credentials"),
  token: Options.redacted("token").pipe(
    Options.withDescription(
      "the Keystone token for Barbican (default: KEYSTONE_TOKEN); visible in the process list here: prefer --token-file"
    ),
    Options.optional
  ),
  tokenFile: optionalText("token-file", "a file (mode 600) holding the Keystone token (default: KEYSTONE_TOKEN_FILE)"),
  request: optionalText("request", "a JSON file with a full request in the guide's format; flags override its fields"),
  timeout,
  json,
  verbose
} as const

/**
 * The parsed request flags.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestFlags {
  readonly jobId: Option.Option<number>
  readonly targetId: Option.Option<string>
  readonly targetType: Option.Option<"s3" | "nfs">
  readonly host: Option.Option<string>
  readonly mountPath: Option.Option<string>
  readonly nfsExport: Option.Option<string>
  readonly nfsOpts: Option.Option<string>
  readonly secretRef: Option.Option<string>
  readonly token: Option.Option<Redacted.Redacted<string>>
  readonly tokenFile: Option.Option<string>
  readonly request: Option.Option<string>
}

/** Wire path → the flag that sets it. */
const flags: ReadonlyArray<readonly [string, string]> = [
  ["job.jobid", "--job-id"],
  ["jobid", "--job-id"],
  ["host", "--host"],
  ["keystone_token", "--token"],
  ["backup_target.id", "--target-id"],
  ["backup_target.type", "--target-type"],
  ["backup_target.filesystem_export_mount_path", "--mount-path"],
  ["backup_target.filesystem_export", "--nfs-export"],
  ["backup_target.nfs_mount_opts", "--nfs-opts"],
  ["backup_target.secret_ref", "--secret-ref"]
]

/**
 * A request built from flags and an optional file, with the fields the flags set.
 *
 * @since 0.1.0
 * @category models
 */
export interface Built {
  /** The request object, in the guide's wire shape (validated by `Mount.mount`/`Mount.unmount`). */
  readonly body: Record<string, unknown>
  /** The decoded request (validated). */
  readonly request: Protocol.MountRequest
}

const readFile = (file: string): Effect.Effect<Record<string, unknown>, BadInput> =>
  Effect.try({
    try: () => fs.readFileSync(file, "utf8"),
    catch: (e) => new BadInput({ field: "--request", reason: `cannot read ${file}: ${(e as Error).message}` })
  }).pipe(
    Effect.flatMap((text) =>
      Effect.try({
        try: () => JSON.parse(text) as unknown,
        catch: (e) => new BadInput({ field: "--request", reason: `${file} is not valid JSON: ${(e as Error).message}` })
      })
    ),
    Effect.filterOrFail(
      (v): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v),
      () => new BadInput({ field: "--request", reason: `${file} must hold a JSON object (the guide's request)` })
    )
  )

const record = (v: unknown): Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {}

const set = (target: Record<string, unknown>, key: string, value: Option.Option<unknown>, given: Set<string>, path: string) => {
  if (Option.isSome(value)) {
    target[key] = value.value
    given.add(path)
  }
}

/**
 * The token of `--token` (with a warning: it is in the process list) or `--token-file` (with a warning
 * when the file is open to other users); both at once are refused.
 */
const token = (flagsIn: RequestFlags): Effect.Effect<Option.Option<Redacted.Redacted<string>>, DmsError.ValidationError> =>
  Effect.zipRight(
    Option.isNone(flagsIn.tokenFile)
      ? SecretFlags.warnToken("--token", flagsIn.token, ["--token-file <file>", "KEYSTONE_TOKEN_FILE", "KEYSTONE_TOKEN in the environment"])
      : Effect.void,
    SecretFlags.fromFlags("--token", flagsIn.token, "--token-file", flagsIn.tokenFile)
  )

/**
 * Builds and validates the request for `action`. Bad fields fail with a `ValidationError` whose paths
 * name the flag (`--mount-path (backup_target.filesystem_export_mount_path)`) or the file's field.
 *
 * @since 0.1.0
 * @category constructors
 */
export const build = (flagsIn: RequestFlags, action: Protocol.Action): Effect.Effect<Built, DmsError.ValidationError | BadInput> =>
  Effect.gen(function*() {
    const file = Option.getOrUndefined(flagsIn.request)
    const base = file === undefined ? {} : yield* readFile(file)
    const given = new Set<string>()
    const body: Record<string, unknown> = { ...base }
    const job: Record<string, unknown> = { ...record(base.job) }
    set(job, "jobid", flagsIn.jobId, given, "job.jobid")
    // The Python client's top-level jobid is an alias of job.jobid: a flag replaces both.
    if (Option.isSome(flagsIn.jobId) && "jobid" in body) delete body.jobid
    if (Object.keys(job).length > 0 || !("jobid" in body)) body.job = job
    set(body, "host", flagsIn.host, given, "host")
    if (body.host === undefined) {
      body.host = os.hostname()
      given.add("host")
    }
    set(body, "keystone_token", Option.map(yield* token(flagsIn), Redacted.value), given, "keystone_token")
    const target: Record<string, unknown> = { ...record(base.backup_target) }
    set(target, "id", flagsIn.targetId, given, "backup_target.id")
    set(target, "filesystem_export_mount_path", flagsIn.mountPath, given, "backup_target.filesystem_export_mount_path")
    set(target, "filesystem_export", flagsIn.nfsExport, given, "backup_target.filesystem_export")
    set(target, "nfs_mount_opts", flagsIn.nfsOpts, given, "backup_target.nfs_mount_opts")
    set(target, "secret_ref", flagsIn.secretRef, given, "backup_target.secret_ref")
    const inferred: Option.Option<"s3" | "nfs"> = Option.orElse(flagsIn.targetType, () =>
      target.type !== undefined
        ? Option.none()
        : Option.isSome(flagsIn.nfsExport)
        ? Option.some("nfs" as const)
        : Option.isSome(flagsIn.secretRef)
        ? Option.some("s3" as const)
        : Option.none())
    set(target, "type", inferred, given, "backup_target.type")
    body.backup_target = target
    body.action = action
    const request = yield* Protocol.decodeMountRequest(body).pipe(
      Effect.mapError((e) => relabel(e, given, file))
    )
    return { body, request }
  })

/**
 * Names each bad field as the user wrote it: the flag (with the request field) when a flag set it or
 * there is no file, else the file's field.
 *
 * @since 0.1.0
 * @category utils
 */
export const relabel = (error: DmsError.ValidationError, given: ReadonlySet<string>, file: string | undefined) =>
  new DmsError.ValidationError({
    subject: error.subject,
    issues: error.issues.map((issue) => {
      const flag = flags.find(([wire]) => issue.path === wire || issue.path.startsWith(`${wire}.`))
      const fromFlag = flag !== undefined && (file === undefined || given.has(flag[0]))
      const path = fromFlag
        ? `${flag[1]} (${issue.path})`
        : file !== undefined
        ? `${file}: ${issue.path === "" ? "(top level)" : issue.path}`
        : issue.path
      return new DmsError.Issue({ path, message: issue.message })
    })
  })
