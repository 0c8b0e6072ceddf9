/**
 * Reads an S3 target's credentials from Barbican: `GET <secret_ref>` (the secret's metadata) and
 * `GET <secret_ref>/payload`, both with `X-Auth-Token: <keystone_token>`.
 *
 * The payload existing deployments store is JSON: `aws_access_key_id`, `aws_secret_access_key`,
 * `bucket` or `vault_s3_bucket`, `region` or `vault_s3_region_name` (default `us-west-2`), `endpoint_url`
 * or `vault_s3_endpoint_url`, and optional `ssl`, `ssl_verify`, `signature_version`, `auth_version`,
 * `ssl_cert`, `object_lock`, `max_pool_connections`. The keys are `Redacted`; neither the token nor the
 * payload ever reaches a message or a log.
 *
 * **The token goes only to Barbican.** A `secret_ref` must be under the configured Barbican endpoint:
 * same scheme, host and port, and a path that starts with the endpoint's path, compared after URL
 * normalisation; no user info, query or fragment, no `.` or `..` segment and no percent-encoded `/`,
 * `\` or `.` in it. Without an endpoint every `secret_ref` is refused. A refused `secret_ref` fetches
 * nothing. Redirects are never followed: a 3xx answer is a refusal.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"

/**
 * S3 credentials and settings of a target.
 *
 * @since 0.1.0
 * @category models
 */
export interface S3Credentials {
  readonly accessKeyId: Redacted.Redacted<string>
  readonly secretAccessKey: Redacted.Redacted<string>
  readonly bucket: string
  readonly region: string
  readonly endpointUrl: Option.Option<string>
  readonly ssl: Option.Option<boolean>
  readonly sslVerify: Option.Option<boolean>
  readonly signatureVersion: Option.Option<string>
  readonly authVersion: Option.Option<string>
  readonly sslCert: Option.Option<string>
  readonly objectLock: Option.Option<boolean>
  readonly maxPoolConnections: Option.Option<number>
}

/**
 * The default region when the payload names none.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_REGION = "us-west-2"

/**
 * Barbican could not be reached, refused the token, has no such secret, or the secret is not usable
 * S3 credentials.
 *
 * @since 0.1.0
 * @category errors
 */
export class BarbicanError extends Schema.TaggedError<BarbicanError>()("BarbicanError", {
  secretRef: Schema.String,
  /** The HTTP status Barbican answered, if it answered. */
  status: Schema.optional(Schema.Number),
  reason: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return `cannot read the S3 credentials from Barbican secret ${this.secretRef}: ${this.reason}`
  }
}

/**
 * The Barbican service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * The normalised URL of a secret_ref under the configured endpoint, or why it is refused; nothing is
   * fetched.
   */
  readonly check: (secretRef: string) => Either.Either<string, string>
  readonly s3Credentials: (
    secretRef: string,
    token: Redacted.Redacted<string>,
    options?: { readonly timeout?: Duration.DurationInput | undefined }
  ) => Effect.Effect<S3Credentials, BarbicanError>
}

/**
 * The Barbican tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Barbican extends Context.Tag("trilio-dms/server/Barbican")<Barbican, Service>() {}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The Barbican endpoint (`https://barbican.example:9311`): a secret_ref must be under it, and the
   * token is only ever sent there. Without it, every secret_ref is refused.
   */
  readonly endpoint?: string | undefined
  /** The longest one request may take. Default 30 s. */
  readonly timeout?: Duration.DurationInput | undefined
}

const flag = Schema.Union(
  Schema.Boolean,
  Schema.transform(Schema.Literal("true", "True", "TRUE", "1", "yes", "false", "False", "FALSE", "0", "no"), Schema.Boolean, {
    strict: true,
    decode: (s) => ["true", "True", "TRUE", "1", "yes"].includes(s),
    encode: (b) => (b ? "true" : "false")
  })
)
const optText = Schema.optional(Schema.NullOr(Schema.String))
const optFlag = Schema.optional(Schema.NullOr(flag))

const Payload = Schema.Struct({
  aws_access_key_id: Schema.String.pipe(Schema.minLength(1)),
  aws_secret_access_key: Schema.String.pipe(Schema.minLength(1)),
  bucket: optText,
  vault_s3_bucket: optText,
  region: optText,
  vault_s3_region_name: optText,
  endpoint_url: optText,
  vault_s3_endpoint_url: optText,
  ssl: optFlag,
  ssl_verify: optFlag,
  signature_version: optText,
  auth_version: optText,
  ssl_cert: optText,
  object_lock: optFlag,
  max_pool_connections: Schema.optional(Schema.NullOr(Schema.Union(Schema.Int, Schema.NumberFromString)))
})

const nonEmpty = (...values: ReadonlyArray<string | null | undefined>): Option.Option<string> =>
  Option.fromNullable(values.find((v): v is string => typeof v === "string" && v.trim() !== "")?.trim())

/**
 * Decodes a payload (the text of `<secret_ref>/payload`). The error names the missing or bad keys,
 * never their values.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodePayload = (text: string): Either.Either<S3Credentials, string> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left("the secret's payload is not JSON")
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return Either.left("the secret's payload is not a JSON object")
  }
  const decoded = Schema.decodeUnknownEither(Payload)(json)
  if (decoded._tag === "Left") {
    const record = json as Record<string, unknown>
    const missing = ["aws_access_key_id", "aws_secret_access_key"].filter((k) => typeof record[k] !== "string" || record[k] === "")
    return Either.left(
      missing.length > 0
        ? `the secret's payload lacks ${missing.join(" and ")}`
        : "the secret's payload has a key of the wrong type (expected strings, booleans and a number for max_pool_connections)"
    )
  }
  const p = decoded.right
  const bucket = nonEmpty(p.bucket, p.vault_s3_bucket)
  if (Option.isNone(bucket)) return Either.left("the secret's payload names no bucket (bucket or vault_s3_bucket)")
  return Either.right({
      accessKeyId: Redacted.make(p.aws_access_key_id),
      secretAccessKey: Redacted.make(p.aws_secret_access_key),
      bucket: bucket.value,
      region: Option.getOrElse(nonEmpty(p.region, p.vault_s3_region_name), () => DEFAULT_REGION),
      endpointUrl: nonEmpty(p.endpoint_url, p.vault_s3_endpoint_url),
      ssl: Option.fromNullable(p.ssl),
      sslVerify: Option.fromNullable(p.ssl_verify),
      signatureVersion: nonEmpty(p.signature_version),
      authVersion: nonEmpty(p.auth_version),
      sslCert: nonEmpty(p.ssl_cert),
      objectLock: Option.fromNullable(p.object_lock),
      maxPoolConnections: Option.fromNullable(p.max_pool_connections)
  })
}

const statusReason = (status: number, what: string): string => {
  switch (status) {
    case 401:
      return `Barbican answered 401 Unauthorized reading ${what}: the Keystone token is invalid or expired`
    case 403:
      return `Barbican answered 403 Forbidden reading ${what}: the token's user may not read this secret`
    case 404:
      return `Barbican answered 404 Not Found reading ${what}: no such secret`
    default:
      return status >= 300 && status < 400
        ? `Barbican answered HTTP ${status} (a redirect) reading ${what}; redirects are not followed (they would carry the token elsewhere)`
        : `Barbican answered HTTP ${status} reading ${what}`
  }
}

/**
 * Checks a configured Barbican endpoint: the normalised URL, or why it is unusable.
 *
 * @since 0.1.0
 * @category checks
 */
export const checkEndpoint = (endpoint: string): Either.Either<URL, string> => {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return Either.left(`the Barbican endpoint ${JSON.stringify(endpoint)} is not a URL`)
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return Either.left("the Barbican endpoint must be an http(s) URL")
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
    return Either.left("the Barbican endpoint must be a plain URL (no user info, query or fragment)")
  }
  return Either.right(url)
}

const DOT_SEGMENT = /(^|\/)\.{1,2}(\/|$)/
const ENCODED_SEPARATOR = /%(2f|5c|2e)/i

/**
 * Checks that `secretRef` is under `endpoint` (see the module's description): the URL to read, or why
 * it is refused. `endpoint` is unset when no Barbican endpoint is configured: then it is refused.
 *
 * @since 0.1.0
 * @category checks
 */
export const checkSecretRef = (secretRef: string, endpoint: string | undefined): Either.Either<URL, string> => {
  if (endpoint === undefined) {
    return Either.left(
      "no Barbican endpoint is configured, so no secret_ref is accepted (the Keystone token is sent only there): set barbican_url in the [server] section of server.conf, DMS_BARBICAN_URL or --barbican-url"
    )
  }
  const base = checkEndpoint(endpoint)
  if (Either.isLeft(base)) return base
  let url: URL
  try {
    url = new URL(secretRef)
  } catch {
    return Either.left("secret_ref is not a URL")
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return Either.left("secret_ref must be an http(s) URL")
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "") {
    return Either.left("secret_ref must be a plain secret URL (no user info, query or fragment)")
  }
  const rawPath = secretRef.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, "")
  if (DOT_SEGMENT.test(rawPath.split(/[?#]/)[0]!) || rawPath.includes("\\") || ENCODED_SEPARATOR.test(rawPath)) {
    return Either.left("secret_ref must not contain '.' or '..' segments, backslashes or percent-encoded '/', '\\' or '.'")
  }
  const prefix = base.right.pathname.endsWith("/") ? base.right.pathname : `${base.right.pathname}/`
  if (url.protocol !== base.right.protocol || url.host !== base.right.host || !url.pathname.startsWith(prefix)) {
    return Either.left(`secret_ref is not under the configured Barbican endpoint ${base.right.href}`)
  }
  return Either.right(url)
}

/**
 * Makes the service over `fetch`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Service => {
  const defaultTimeout = Duration.decode(options.timeout ?? Duration.seconds(30))
  const get = (secretRef: string, url: string, what: string, accept: string, token: Redacted.Redacted<string>, timeout: Duration.Duration) =>
    Effect.tryPromise({
      try: async (signal) => {
        const response = await fetch(url, {
          method: "GET",
          headers: { "X-Auth-Token": Redacted.value(token), Accept: accept },
          // A redirect would carry the token to wherever it points.
          redirect: "manual",
          signal
        })
        const body = await response.text()
        return { status: response.status, body }
      },
      catch: (cause) =>
        new BarbicanError({
          secretRef,
          reason: `Barbican is not reachable (${cause instanceof Error ? (cause.cause instanceof Error ? cause.cause.message : cause.message) : String(cause)})`,
          cause
        })
    }).pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => new BarbicanError({ secretRef, reason: `Barbican did not answer within ${Duration.toMillis(timeout)} ms` })
      }),
      Effect.flatMap((r) =>
        r.status >= 200 && r.status < 300
          ? Effect.succeed(r.body)
          : Effect.fail(new BarbicanError({ secretRef, status: r.status, reason: statusReason(r.status, what) }))
      )
    )
  return {
    check: (secretRef) => Either.map(checkSecretRef(secretRef, options.endpoint), (url) => url.href),
    s3Credentials: (secretRef, token, callOptions) =>
      Effect.gen(function*() {
        const checked = checkSecretRef(secretRef, options.endpoint)
        if (Either.isLeft(checked)) return yield* Effect.fail(new BarbicanError({ secretRef, reason: checked.left }))
        const url = checked.right
        const timeout = callOptions?.timeout === undefined
          ? defaultTimeout
          : Duration.min(defaultTimeout, Duration.decode(callOptions.timeout))
        const href = url.href.replace(/\/+$/, "")
        yield* get(secretRef, href, "the secret", "application/json", token, timeout)
        const payload = yield* get(secretRef, `${href}/payload`, "the secret's payload", "text/plain", token, timeout)
        const decoded = decodePayload(payload)
        if (Either.isLeft(decoded)) return yield* Effect.fail(new BarbicanError({ secretRef, reason: decoded.left }))
        return decoded.right
      })
  }
}

/**
 * The Barbican client over `fetch`. Logs at start what the endpoint setting means: a warning when there
 * is none (S3 mounts are refused) or when it is plain `http` (the token travels in clear).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Barbican> =>
  Layer.effect(
    Barbican,
    Effect.as(
      options.endpoint === undefined
        ? Effect.logWarning("no Barbican endpoint is configured (barbican_url): S3 mount requests will be refused")
        : Either.match(checkEndpoint(options.endpoint), {
          onLeft: (reason) => Effect.logWarning(`${reason}: S3 mount requests will be refused`),
          onRight: (url) =>
            url.protocol === "http:"
              ? Effect.logWarning(`the Barbican endpoint ${url.href} is plain http: the Keystone token travels unencrypted`)
              : Effect.logInfo(`S3 credentials are read only from the Barbican endpoint ${url.href}`)
        }),
      make(options)
    )
  )
