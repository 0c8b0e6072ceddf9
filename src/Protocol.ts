/**
 * The wire schemas shared by the client and the server: the mount request of the user's guide
 * ("Complete Request Structure"), snake_case as on the wire, and the server's reply.
 *
 * Unknown fields are kept (the guide's requests carry application data the DMS does not read), so a
 * request decodes and encodes back to what the caller sent, with `keystone_token` held as `Redacted`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as DmsError from "./DmsError.js"
import * as Nfs from "./internal/nfs.js"

/** A nullable optional field: the guide writes `None` for absent values. */
const optionalNullable = <S extends Schema.Schema.Any>(schema: S) => Schema.optional(Schema.NullOr(schema))

/**
 * The largest job id: the ledger's `jobid` column is a signed INT.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_JOB_ID = 2_147_483_647

/**
 * The longest host name: `dms.<host>` must fit AMQP's 255-byte queue names.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_HOST_BYTES = 251

/**
 * A job id: an integer from 1 to 2147483647 (a string such as `"job-12345"` is refused, as the guide warns).
 *
 * @since 0.1.0
 * @category schemas
 */
export const JobId = Schema.Int.pipe(
  Schema.between(1, MAX_JOB_ID, {
    message: (issue) => `Expected an integer from 1 to ${MAX_JOB_ID}, actual ${JSON.stringify(issue.actual)}`
  })
).annotations({ identifier: "JobId" })

/**
 * A compute host name (the DMS server's node id): non-empty, at most 251 bytes, no whitespace or
 * control characters (they would end up in queue names, log lines and the ledger).
 *
 * @since 0.1.0
 * @category schemas
 */
export const Host = Schema.String.pipe(
  Schema.filter((s) =>
    s.length === 0
      ? "Expected a non-empty host name"
      // eslint-disable-next-line no-control-regex
      : /[\s\u0000-\u001f\u007f-\u009f]/.test(s)
      ? `Expected a host name without whitespace or control characters, actual ${Nfs.show(s)}`
      : Buffer.byteLength(s, "utf8") > MAX_HOST_BYTES
      ? `Expected a host name of at most ${MAX_HOST_BYTES} bytes (the queue dms.<host> must fit 255)`
      : true
  )
).annotations({ identifier: "Host" })

/**
 * A backup target id: 1 to 255 characters (the ledger column is VARCHAR(255)).
 *
 * @since 0.1.0
 * @category schemas
 */
export const BackupTargetId = Schema.String.pipe(
  Schema.filter((s) =>
    s.length === 0
      ? "Expected a non-empty backup target id"
      : s.length > 255
      ? `Expected a backup target id of at most 255 characters, actual length ${s.length}`
      : true
  )
).annotations({ identifier: "BackupTargetId" })

/**
 * The path a target is mounted at on the host: absolute, without `..` segments or NUL bytes.
 *
 * @since 0.1.0
 * @category schemas
 */
export const MountPath = Schema.String.pipe(
  Schema.filter((s) =>
    !s.startsWith("/")
      ? `Expected an absolute path, actual ${Nfs.show(s)}`
      : s.split("/").includes("..")
      ? `Expected a path without '..' segments, actual ${Nfs.show(s)}`
      : s.includes("\0")
      ? "Expected a path without NUL bytes"
      : s.length > 4096
      ? "Expected a path of at most 4096 characters"
      : true
  )
).annotations({ identifier: "MountPath" })

/**
 * An NFS export, `host:/path` (`192.168.1.100:/backups`, `[fd00::1]:/export`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const NfsExport = Schema.String.pipe(
  Schema.filter((s) => Either.match(Nfs.checkExport(s), { onLeft: (reason) => `Expected an NFS export: ${reason}`, onRight: () => true }))
).annotations({ identifier: "NfsExport" })

/**
 * NFS mount options (`nfs_mount_opts`, comma-separated), checked against the server's allow-list:
 * `exec`, `suid`, `dev` and unknown options are refused, and nothing can add an option or a flag.
 *
 * @since 0.1.0
 * @category schemas
 */
export const NfsMountOptions = Schema.String.pipe(
  Schema.filter((s) => Either.match(Nfs.checkOptions(s), { onLeft: (reason) => reason, onRight: () => true }))
).annotations({ identifier: "NfsMountOptions" })

/**
 * The caller's context (`context`); all fields optional, extra fields kept. `request_id` becomes a span
 * attribute.
 *
 * @since 0.1.0
 * @category schemas
 */
export const RequestContext = Schema.Struct({
  user_id: optionalNullable(Schema.String),
  tenant_id: optionalNullable(Schema.String),
  project_id: optionalNullable(Schema.String),
  request_id: optionalNullable(Schema.String)
}).annotations({ identifier: "RequestContext" })

/**
 * One entry of `job.job_details`.
 *
 * @since 0.1.0
 * @category schemas
 */
export const JobDetail = Schema.Struct({
  id: Schema.optional(Schema.String),
  data: optionalNullable(Schema.Record({ key: Schema.String, value: Schema.Unknown }))
}).annotations({ identifier: "JobDetail" })

/**
 * The job (`job`): only `jobid` is required.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Job = Schema.Struct({
  jobid: JobId,
  progress: optionalNullable(Schema.Number.pipe(Schema.between(0, 100))),
  status: optionalNullable(Schema.String),
  completed_at: optionalNullable(Schema.Unknown),
  action: optionalNullable(Schema.String),
  parent_jobid: optionalNullable(Schema.Int),
  job_details: optionalNullable(Schema.Array(JobDetail))
}).annotations({ identifier: "Job" })

const targetCommon = {
  id: BackupTargetId,
  deleted: optionalNullable(Schema.Boolean),
  filesystem_export_mount_path: MountPath,
  status: optionalNullable(Schema.String),
  nfs_mount_opts: optionalNullable(Schema.String)
}

/**
 * An NFS backup target: `filesystem_export` is required.
 *
 * @since 0.1.0
 * @category schemas
 */
export const NfsTarget = Schema.Struct({
  ...targetCommon,
  type: Schema.Literal("nfs"),
  filesystem_export: NfsExport,
  nfs_mount_opts: optionalNullable(NfsMountOptions),
  secret_ref: optionalNullable(Schema.String)
}).annotations({ identifier: "NfsTarget" })

/**
 * An S3 backup target: `secret_ref` (the Barbican secret holding the credentials) is required.
 *
 * @since 0.1.0
 * @category schemas
 */
export const S3Target = Schema.Struct({
  ...targetCommon,
  type: Schema.Literal("s3"),
  filesystem_export: optionalNullable(Schema.String),
  secret_ref: Schema.String.pipe(Schema.minLength(1, { message: () => "Expected a non-empty secret_ref" }))
}).annotations({ identifier: "S3Target" })

/**
 * A backup target (`backup_target`). A target marked `deleted` or with a `status` other than
 * `available` is refused.
 *
 * @since 0.1.0
 * @category schemas
 */
export const BackupTarget = Schema.Union(NfsTarget, S3Target).pipe(
  Schema.filter((t) => {
    if (t.deleted === true) return { path: ["deleted"], message: "the backup target is deleted" }
    if (t.status != null && t.status !== "available") {
      return { path: ["status"], message: `the backup target is not available (status ${Nfs.show(t.status)})` }
    }
    return undefined
  })
).annotations({ identifier: "BackupTarget" })

/**
 * A backup target, decoded.
 *
 * @since 0.1.0
 * @category models
 */
export type BackupTarget = typeof BackupTarget.Type

/**
 * The action a request asks for. The client's method decides it: `mount()` sends `"mount"` whatever
 * the request says.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Action = Schema.Literal("mount", "unmount")

/**
 * The actions a request can carry.
 *
 * @since 0.1.0
 * @category models
 */
export type Action = typeof Action.Type

/**
 * The mount request of the user's guide. Required: `job.jobid`, `host`, `backup_target` (`id`, `type`,
 * `filesystem_export_mount_path`; NFS also `filesystem_export`, S3 also `secret_ref`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const MountRequest = Schema.Struct({
  context: optionalNullable(RequestContext),
  keystone_token: optionalNullable(Schema.Redacted(Schema.String)),
  job: Job,
  host: Host,
  action: optionalNullable(Action),
  backup_target: BackupTarget
}).annotations({ identifier: "MountRequest" })

/**
 * A decoded mount request.
 *
 * @since 0.1.0
 * @category models
 */
export type MountRequest = typeof MountRequest.Type

/**
 * A mount request as it travels on the wire (JSON object, token in clear).
 *
 * @since 0.1.0
 * @category models
 */
export type MountRequestEncoded = typeof MountRequest.Encoded

const parseOptions = { errors: "all", onExcessProperty: "preserve" } as const

const decodeEither = Schema.decodeUnknownEither(MountRequest, parseOptions)

/**
 * Accepts the existing Python client's shape: a top-level `jobid` with no `job` object becomes
 * `job: { jobid }`; both present must agree.
 */
const normalizeAliases = (input: unknown): Either.Either<unknown, DmsError.ValidationError> => {
  if (typeof input !== "object" || input === null || Array.isArray(input) || !("jobid" in input)) {
    return Either.right(input)
  }
  const record = input as Record<string, unknown>
  const job = record.job
  if (job === undefined || job === null) return Either.right({ ...record, job: { jobid: record.jobid } })
  if (typeof job === "object" && !Array.isArray(job) && (job as Record<string, unknown>).jobid !== record.jobid) {
    return Either.left(
      DmsError.invalid("request", "jobid", "the top-level jobid disagrees with job.jobid; send one of them")
    )
  }
  return Either.right(input)
}

/**
 * Validates an untrusted request (a parsed JSON object), reporting every bad field with its path.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeMountRequestEither = (input: unknown): Either.Either<MountRequest, DmsError.ValidationError> =>
  typeof input === "object" && input !== null && decoded.has(input)
    ? Either.right(input as MountRequest)
    : Either.flatMap(normalizeAliases(input), (normalized) =>
      Either.map(
        Either.mapLeft(decodeEither(normalized), (e) => DmsError.fromParseError("request", e)),
        remember
      ))

// Requests this module decoded, frozen so they stay valid: a request validated once (by the Promise
// client before it connects, say) is not decoded again by the operation it is handed to. Only the
// objects the decoder built are frozen: unknown fields and `Schema.Unknown` values are the caller's own
// objects (kept by reference), which the caller may go on changing.
const decoded = new WeakSet<object>()
const freezeBuilt = (request: MountRequest): void => {
  Object.freeze(request)
  Object.freeze(request.backup_target)
  Object.freeze(request.job)
  if (request.context != null) Object.freeze(request.context)
  if (request.job.job_details != null) {
    for (const detail of request.job.job_details) Object.freeze(detail)
    Object.freeze(request.job.job_details)
  }
}
const remember = (request: MountRequest): MountRequest => {
  freezeBuilt(request)
  decoded.add(request)
  return request
}

/**
 * Validates an untrusted request as an Effect (no I/O).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeMountRequest = (input: unknown): Effect.Effect<MountRequest, DmsError.ValidationError> =>
  decodeMountRequestEither(input)

/**
 * Encodes a request for the wire with the given action (the token in clear, unknown fields kept).
 *
 * @since 0.1.0
 * @category encoding
 */
export const encodeMountRequest = (request: MountRequest, action: Action): MountRequestEncoded => {
  // The token is the schema's only transformation (every other field decodes to itself), so encoding
  // a decoded request is a copy with the token in clear: no second pass over the schema per request.
  const { keystone_token, ...fields } = request
  return {
    ...fields,
    action,
    ...(keystone_token === undefined ? {} : { keystone_token: keystone_token === null ? null : Redacted.value(keystone_token) })
  }
}

/**
 * The DMS server's reply: `{status, error_msg, success_msg}`; extra fields are kept.
 *
 * @since 0.1.0
 * @category schemas
 */
export const Reply = Schema.Struct({
  status: Schema.Literal("success", "error"),
  error_msg: optionalNullable(Schema.String),
  success_msg: optionalNullable(Schema.String)
}).annotations({ identifier: "Reply" })

/**
 * A decoded reply.
 *
 * @since 0.1.0
 * @category models
 */
export type Reply = typeof Reply.Type

/**
 * Decodes a reply body (already parsed JSON).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeReply = (input: unknown): Either.Either<Reply, ParseResult.ParseError> =>
  Schema.decodeUnknownEither(Reply, parseOptions)(input)

/**
 * A success reply.
 *
 * @since 0.1.0
 * @category constructors
 */
export const success = (successMsg: string): Reply => ({ status: "success", error_msg: null, success_msg: successMsg })

/**
 * An error reply.
 *
 * @since 0.1.0
 * @category constructors
 */
export const failure = (errorMsg: string): Reply => ({ status: "error", error_msg: errorMsg, success_msg: null })
