/**
 * The typed errors of trilio-dms. Every failure a caller can see is one of these five; foreign errors
 * (`SqlError`, amqplib errors, file-system errors) are mapped at the service edge and kept as `cause`.
 *
 * @since 0.1.0
 */
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

/**
 * One bad field: where it is (`backup_target.filesystem_export_mount_path`, `DMS_REQUEST_TIMEOUT`) and why.
 *
 * @since 0.1.0
 * @category models
 */
export class Issue extends Schema.Class<Issue>("Issue")({
  path: Schema.String,
  message: Schema.String
}) {}

/**
 * A request, argument or configuration value that does not match. Raised before any database or broker
 * I/O, so nothing has changed.
 *
 * @since 0.1.0
 * @category errors
 */
export class ValidationError extends Schema.TaggedError<ValidationError>()("ValidationError", {
  /** What was validated: `"request"`, `"config"`, or an argument name such as `"getLedgerHistory"`. */
  subject: Schema.String,
  issues: Schema.Array(Issue)
}) {
  override get message(): string {
    const list = this.issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`)).join("; ")
    return `invalid ${this.subject}: ${list}`
  }
}

/**
 * Something did not happen in time.
 * - `phase: "lock"`: the (target, host) lock was not acquired; nothing was done, safe to retry.
 * - `phase: "publish"`: the deadline passed before the request was published (the broker was still
 *   being connected to, or the host's queue checked): nothing was sent, nothing happened; safe to retry.
 * - `phase: "reply"`: the DMS server did not answer; the outcome is unknown and recorded as pending.
 *
 * @since 0.1.0
 * @category errors
 */
export class TimeoutError extends Schema.TaggedError<TimeoutError>()("TimeoutError", {
  phase: Schema.Literal("lock", "publish", "reply"),
  /** The operation that timed out, e.g. `"mount"`. */
  operation: Schema.String,
  backupTargetId: Schema.optional(Schema.String),
  host: Schema.optional(Schema.String),
  timeoutMs: Schema.Number
}) {
  override get message(): string {
    const what = [this.operation, this.backupTargetId && `of ${this.backupTargetId}`, this.host && `on ${this.host}`]
      .filter(Boolean)
      .join(" ")
    switch (this.phase) {
      case "lock":
        return `${what} could not take the target lock within ${this.timeoutMs} ms (nothing was done; safe to retry)`
      case "publish":
        return `${what} could not be sent within ${this.timeoutMs} ms (nothing was sent, nothing was done; safe to retry)`
      case "reply":
        return `${what} got no reply within ${this.timeoutMs} ms (outcome unknown; recorded as pending)`
    }
  }
}

/**
 * The ledger database could not be reached, a statement failed, or the ledger has a shape this client
 * cannot use.
 *
 * @since 0.1.0
 * @category errors
 */
export class DatabaseError extends Schema.TaggedError<DatabaseError>()("DatabaseError", {
  /** The ledger operation, e.g. `"acquire lock"`, `"getActiveMounts"`. */
  operation: Schema.String,
  /** Readable reason; when absent, the cause's message is used. */
  reason: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return `database error in ${this.operation}: ${this.reason ?? describeCause(this.cause)}`
  }
}

/**
 * RabbitMQ is unreachable, a channel closed, or no DMS server listens for the host.
 *
 * @since 0.1.0
 * @category errors
 */
export class BrokerError extends Schema.TaggedError<BrokerError>()("BrokerError", {
  host: Schema.optional(Schema.String),
  queue: Schema.optional(Schema.String),
  reason: Schema.String,
  /**
   * True when the request certainly reached no server (no server for the host, publish refused, not
   * connected): nothing happened. Absent when it may have been delivered.
   */
  notDelivered: Schema.optional(Schema.Boolean),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    const where = this.queue ? ` (queue ${this.queue})` : this.host ? ` (host ${this.host})` : ""
    return `broker error${where}: ${this.reason}`
  }
}

/**
 * The mount or unmount was refused.
 * - `reason: "server"`: the DMS server answered `status: "error"`; `errorMsg` is its `error_msg`.
 * - `reason: "no-active-mount"`: the job holds no mount of the target on the host.
 * - `reason: "unknown-mount"`: an unmount was needed, but the ledger records no mount path or type for
 *   the target on the host (rows written by a client that records none); nothing was sent.
 *
 * @since 0.1.0
 * @category errors
 */
export class MountError extends Schema.TaggedError<MountError>()("MountError", {
  reason: Schema.Literal("server", "no-active-mount", "unknown-mount"),
  errorMsg: Schema.String,
  backupTargetId: Schema.optional(Schema.String),
  host: Schema.optional(Schema.String),
  jobId: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    return this.errorMsg
  }
}

/**
 * Any error of trilio-dms.
 *
 * @since 0.1.0
 * @category errors
 */
export type DmsError = ValidationError | TimeoutError | DatabaseError | BrokerError | MountError

/**
 * Formats a schema path the way a user writes it: `job.job_details[0].id`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (acc, key) =>
      typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`,
    ""
  )

/**
 * Builds a {@link ValidationError} listing every issue of a schema parse failure.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromParseError = (subject: string, error: ParseResult.ParseError): ValidationError => {
  const all = ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => ({
    path: formatPath(i.path),
    message: i.message
  }))
  // An optional nullable field that fails reports the null and undefined alternatives too; they only
  // repeat that the field is optional, so keep the issue that says what is wrong with the value.
  const isAlternative = (i: { path: string; message: string }) =>
    /^Expected (null|undefined), actual /.test(i.message) &&
    all.some((o) => o !== i && !/^Expected (null|undefined), actual /.test(o.message) && o.path.startsWith(i.path))
  // Alternatives of one union fail one by one ('Expected "mount", actual "x"', 'Expected "unmount", …'):
  // merge them into one issue per field.
  const merged: Array<{ path: string; message: string }> = []
  for (const issue of all.filter((i) => !isAlternative(i))) {
    const m = /^Expected (.*), actual (.*)$/s.exec(issue.message)
    const prev = merged.find((o) => o.path === issue.path && m !== null && o.message.endsWith(`, actual ${m[2]}`))
    if (prev !== undefined && m !== null) {
      prev.message = prev.message.replace(/, actual .*$/s, ` | ${m[1]}, actual ${m[2]}`)
    } else if (!merged.some((o) => o.path === issue.path && o.message === issue.message)) {
      merged.push({ ...issue })
    }
  }
  return new ValidationError({ subject, issues: merged.map((i) => new Issue(i)) })
}

/**
 * A {@link ValidationError} with a single issue.
 *
 * @since 0.1.0
 * @category constructors
 */
export const invalid = (subject: string, path: string, message: string): ValidationError =>
  new ValidationError({ subject, issues: [new Issue({ path, message })] })

const describeCause = (cause: unknown): string => {
  if (cause instanceof Error) {
    const code = (cause as { code?: unknown }).code
    return typeof code === "string" && !cause.message.includes(code) ? `${cause.message} (${code})` : cause.message
  }
  return cause === undefined ? "unknown cause" : String(cause)
}
