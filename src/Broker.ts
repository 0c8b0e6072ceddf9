/**
 * Request/reply with the DMS server of a host: `request(host, body, { timeout })` publishes the request
 * to the queue `dms.<host>` and waits for the server's {@link Protocol.Reply}.
 *
 * - It never hangs: past the deadline it fails with `TimeoutError`: `phase: "publish"` when the request
 *   was never published (nothing happened), `phase: "reply"` when it was (the outcome is unknown).
 * - It never runs stale requests: every request carries `expiration` (the time left to the deadline) and
 *   the header `x-dms-deadline` (epoch ms), so the broker drops a request nobody took in time and a
 *   server refuses one that reaches it late ({@link isExpired}).
 * - It fails fast when no server listens for the host (`BrokerError`), and survives a broker restart:
 *   pending requests fail at once with `BrokerError`, and the layer reconnects by itself.
 *
 * Layers: {@link layerAmqp} over RabbitMQ (amqplib), and {@link layerMemory}, an in-process broker whose
 * handler plays the DMS server, for unit tests and the embedded default.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { identity } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { randomUUID } from "node:crypto"
import * as os from "node:os"
import * as DmsConfig from "./DmsConfig.js"
import * as DmsError from "./DmsError.js"
import * as Protocol from "./Protocol.js"
import * as Amqp from "./internal/amqp.js"
import { readTls } from "./internal/amqpCommon.js"
import * as Tracing from "./internal/tracing.js"
import * as Urls from "./internal/urls.js"

/**
 * The header carrying a request's deadline, in epoch milliseconds. A server must not start a request
 * past it: the client has given up and records the outcome as unknown.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEADLINE_HEADER = "x-dms-deadline"

/**
 * The queue of a host's DMS server, `dms.<host>`, on the default exchange. The server declares it; a
 * client never does.
 *
 * @since 0.1.0
 * @category utils
 */
export const queueName = (host: string): string => `dms.${host}`

/**
 * A RabbitMQ permission set, as `rabbitmqctl set_permissions -p <vhost> <user> <configure> <write> <read>`
 * takes it: three regular expressions over resource names.
 *
 * @since 0.1.0
 * @category models
 */
export interface Permissions {
  readonly configure: string
  readonly write: string
  readonly read: string
}

const escapeRegex = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/**
 * The least a host's DMS server needs (RabbitMQ 3.10): declare and consume its own `dms.<host>`
 * (configure, read) and publish replies through the default exchange (write on `amq.default`, which
 * RabbitMQ cannot narrow to reply queues: see the README).
 *
 * @since 0.1.0
 * @category utils
 */
export const serverPermissions = (host: string): Permissions => {
  const own = `^${escapeRegex(queueName(host))}$`
  return { configure: own, write: "^amq\\.default$", read: own }
}

/**
 * The least a client needs (RabbitMQ 3.10): publish requests through the default exchange (write on
 * `amq.default`). Consuming direct reply-to and the passive check of a host's queue need no permission.
 *
 * @since 0.1.0
 * @category constants
 */
export const clientPermissions: Permissions = { configure: "^$", write: "^amq\\.default$", read: "^$" }

/**
 * The deadline a request carries in its {@link DEADLINE_HEADER} header, if any (requests from the Python
 * client carry none). Accepts a number, a bigint or a decimal string.
 *
 * @since 0.1.0
 * @category utils
 */
export const deadlineOf = (headers: Readonly<Record<string, unknown>> | null | undefined): Option.Option<number> => {
  const value = headers?.[DEADLINE_HEADER]
  const n = typeof value === "number"
    ? value
    : typeof value === "bigint"
    ? Number(value)
    : typeof value === "string" && /^\s*\d+(\.\d+)?\s*$/.test(value)
    ? Number(value)
    : Number.NaN
  return Number.isFinite(n) ? Option.some(n) : Option.none()
}

/**
 * Whether a request with these headers is past its deadline at `nowMs` (epoch ms). A request without a
 * deadline never expires.
 *
 * @since 0.1.0
 * @category utils
 */
export const isExpired = (headers: Readonly<Record<string, unknown>> | null | undefined, nowMs: number): boolean =>
  Option.match(deadlineOf(headers), { onNone: () => false, onSome: (deadline) => nowMs >= deadline })

/**
 * Options of one request.
 *
 * @since 0.1.0
 * @category models
 */
export interface RequestOptions {
  /** How long to wait for the reply. It is also what a `TimeoutError` reports. */
  readonly timeout: Duration.DurationInput
  /**
   * The deadline, in epoch ms, when the caller has already fixed it (e.g. recorded it as the pending
   * operation's deadline): the request then waits until it, instead of `timeout` from now.
   */
  readonly deadline?: number | undefined
}

/**
 * The Broker service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Sends `body` (JSON) to the DMS server of `host` and waits for its reply.
   * - `TimeoutError { phase: "publish" }`: the deadline passed before the request was published (still
   *   connecting or checking the host's queue, or already past when called); nothing was sent.
   * - `TimeoutError { phase: "reply" }`: the request was published, no reply came by the deadline; the
   *   outcome is unknown.
   * - `BrokerError`: the broker is unreachable, the connection was lost while waiting (outcome unknown),
   *   no server listens for the host (nothing was delivered), or the reply is not a DMS reply.
   */
  readonly request: (
    host: string,
    body: Protocol.MountRequestEncoded | Readonly<Record<string, unknown>>,
    options: RequestOptions
  ) => Effect.Effect<Protocol.Reply, DmsError.TimeoutError | DmsError.BrokerError>
  /**
   * Waits until the broker is connected (at most its connect timeout): a `BrokerError` says why not.
   * Requests connect by themselves; this is for checking the broker up front.
   */
  readonly connected: Effect.Effect<void, DmsError.BrokerError>
}

/**
 * The Broker tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Broker extends Context.Tag("trilio-dms/Broker")<Broker, Service>() {}

/**
 * What a layer plugs under the Broker: send one encoded request and return the raw reply body, giving
 * up at `out.deadline` with `DeadlineReached` (saying whether the request was published).
 */
interface Transport {
  readonly send: (out: Amqp.Outgoing) => Effect.Effect<Buffer, DmsError.BrokerError | Amqp.DeadlineReached>
  readonly connected: Effect.Effect<void, DmsError.BrokerError>
}

const stringField = (record: unknown, key: string): string | undefined => {
  if (typeof record !== "object" || record === null) return undefined
  const value = (record as Record<string, unknown>)[key]
  return typeof value === "string" ? value : undefined
}

const isHost = Schema.is(Protocol.Host)

const decodeReplyBody = (raw: Buffer, host: string, queue: string): Effect.Effect<Protocol.Reply, DmsError.BrokerError> => {
  let json: unknown
  try {
    json = JSON.parse(raw.toString("utf8"))
  } catch {
    return Effect.fail(new DmsError.BrokerError({ host, queue, reason: "the DMS server's reply is not valid JSON" }))
  }
  return Either.match(Protocol.decodeReply(json), {
    onLeft: (e) =>
      Effect.fail(
        new DmsError.BrokerError({
          host,
          queue,
          reason: `the DMS server's reply is not a DMS reply (${DmsError.fromParseError("reply", e).message})`
        })
      ),
    onRight: Effect.succeed
  })
}

const makeService = (transport: Transport): Service => ({
  connected: transport.connected,
  request: (host, body, options) => {
    const queue = queueName(host)
    const action = stringField(body, "action")
    const backupTargetId = stringField((body as Record<string, unknown>).backup_target, "id")
    const requestId = stringField((body as Record<string, unknown>).context, "request_id")
    // Never the token: only these go on the span.
    const attributes: Record<string, string> = { host, queue, action: action ?? "request" }
    if (backupTargetId !== undefined) attributes.backupTargetId = backupTargetId
    if (requestId !== undefined) attributes.requestId = requestId
    return Effect.gen(function*() {
      if (!isHost(host)) {
        return yield* Effect.fail(
          new DmsError.BrokerError({ host, reason: `invalid host name ${JSON.stringify(host)}`, notDelivered: true })
        )
      }
      const timeoutMs = Duration.toMillis(Duration.decode(options.timeout))
      const timeoutError = (phase: "publish" | "reply") =>
        new DmsError.TimeoutError({
          phase,
          operation: action ?? "request",
          host,
          timeoutMs,
          ...(backupTargetId === undefined ? {} : { backupTargetId })
        })
      const now = yield* Clock.currentTimeMillis
      const deadline = options.deadline ?? now + timeoutMs
      const wait = deadline - now
      if (!(wait > 0)) return yield* Effect.fail(timeoutError("publish"))
      let content: Buffer
      try {
        content = Buffer.from(JSON.stringify(body), "utf8")
      } catch (cause) {
        return yield* Effect.fail(
          new DmsError.BrokerError({ host, queue, reason: "the request cannot be encoded as JSON", cause, notDelivered: true })
        )
      }
      const correlationId = randomUUID()
      yield* Effect.annotateCurrentSpan("correlationId", correlationId)
      const finite = Number.isFinite(deadline)
      const trace = yield* Tracing.headers
      const raw = yield* transport.send({
        host,
        queue,
        correlationId,
        content,
        deadline: finite ? Math.floor(deadline) : Infinity,
        headers: finite ? { ...trace, [DEADLINE_HEADER]: Math.floor(deadline) } : trace
      }).pipe(Effect.catchTag("DeadlineReached", (e) => Effect.fail(timeoutError(e.published ? "reply" : "publish"))))
      return yield* decodeReplyBody(raw, host, queue)
    }).pipe(Effect.withSpan("Broker.request", { kind: "client", attributes, captureStackTrace: false }))
  }
})

/**
 * Options of {@link layerAmqp}.
 *
 * @since 0.1.0
 * @category models
 */
export interface AmqpOptions {
  /**
   * `amqp://user:password@host:5672/vhost` or `amqps://…`, or a comma-separated list of the nodes of a
   * cluster: they are tried in order, and after a connection is lost the client reconnects to the next
   * node that answers. Passwords are never logged.
   */
  readonly url: string | Redacted.Redacted<string>
  /** The connection's name in RabbitMQ's tools. Default `trilio-dms <hostname> pid <pid>`. */
  readonly connectionName?: string | undefined
  /**
   * How long a host whose queue is missing or has no consumer is re-checked before the request fails
   * (rides out a server restart). Default 1 s.
   */
  readonly fastFailWindow?: Duration.DurationInput | undefined
  /** How long a queue found with a consumer is trusted without a new check. Default 2 s. */
  readonly queueCheckCacheTtl?: Duration.DurationInput | undefined
  /** How long connecting, or a request waiting for a connection, may take. Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /**
   * Delays between reconnection attempts. Default: exponential from 100 ms, at most 5 s apart, jittered,
   * forever (reset after a connection that lived a while). When it ends, requests fail for good.
   */
  readonly reconnectSchedule?: Schedule.Schedule<unknown, DmsError.BrokerError> | undefined
  /** TLS files for the `amqps://` URLs: the CA that signed the broker's certificate, and a client certificate. */
  readonly tls?: TlsFiles | undefined
}

/**
 * TLS files for `amqps://` (PEM paths, read once when the layer is built). Without `caFile`, the system's
 * CAs verify the broker; `certFile` and `keyFile` (both or neither) present a client certificate.
 *
 * @since 0.1.0
 * @category models
 */
export interface TlsFiles {
  readonly caFile?: string | undefined
  readonly certFile?: string | undefined
  readonly keyFile?: string | undefined
}

/**
 * The default reconnection schedule of {@link layerAmqp}.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultReconnectSchedule: Schedule.Schedule<unknown, DmsError.BrokerError> = Schedule.exponential(
  Duration.millis(100),
  2
).pipe(
  Schedule.union(Schedule.spaced(Duration.seconds(5))),
  Schedule.jittered,
  Schedule.resetAfter(Duration.seconds(30))
)

/**
 * The Broker over RabbitMQ (amqplib, `noDelay`): one connection with a confirm channel, direct reply-to,
 * many requests in flight matched by correlation id. Requests are transient, `mandatory`, and expire at
 * their deadline. The connection is a scoped resource, opened in the background: the layer builds even
 * when the broker is down (requests then fail with `BrokerError`) and reconnects with backoff.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerAmqp = (options: AmqpOptions): Layer.Layer<Broker, DmsError.BrokerError> => {
  const url = Redacted.isRedacted(options.url) ? Redacted.value(options.url as Redacted.Redacted<string>) : String(options.url)
  const location = Urls.parseBrokerUrl(url)
  if (typeof location === "string" || location.kind !== "amqp") {
    return Layer.fail(
      new DmsError.BrokerError({
        reason: `invalid broker URL ${Urls.redactUrl(url)}: ${
          typeof location === "string" ? location : "layerAmqp needs an amqp:// or amqps:// URL (use layerMemory for an in-process broker)"
        }`
      })
    )
  }
  const settings: Amqp.Settings = {
    urls: location.urls.map(Redacted.value),
    connectionName: options.connectionName ?? `trilio-dms ${os.hostname()} pid ${process.pid}`,
    connectTimeout: Duration.decode(options.connectTimeout ?? Duration.seconds(10)),
    fastFailWindow: Duration.decode(options.fastFailWindow ?? Duration.seconds(1)),
    queueCheckCacheTtl: Duration.decode(options.queueCheckCacheTtl ?? Duration.seconds(2)),
    reconnectSchedule: options.reconnectSchedule ?? defaultReconnectSchedule
  }
  return Layer.scoped(
    Broker,
    readTls(options.tls).pipe(
      Effect.flatMap((tls) => Amqp.make({ ...settings, tls })),
      Effect.map((client) => makeService(client))
    )
  )
}

/**
 * {@link layerAmqp} with the URL of the `DmsConfig` service (`DMS_RABBITMQ_URL` / `rabbitmq_url`).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerAmqpConfig = (
  options: Omit<AmqpOptions, "url"> = {}
): Layer.Layer<Broker, DmsError.BrokerError, DmsConfig.DmsConfig> =>
  Layer.unwrapEffect(
    Effect.map(DmsConfig.DmsConfig, (config) => layerAmqp({ tls: config.rabbitmqTls, ...options, url: config.rabbitmqUrl }))
  )

/**
 * A request as the handler of {@link layerMemory} receives it: what a DMS server would read off the wire.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryRequest {
  readonly host: string
  readonly queue: string
  readonly correlationId: string
  /** The body, parsed from its JSON encoding (the token in clear, as on the wire). */
  readonly body: Readonly<Record<string, unknown>>
  /** The message headers, with {@link DEADLINE_HEADER}. */
  readonly headers: Readonly<Record<string, unknown>>
  /** The request's deadline, epoch ms (`Infinity` for none). */
  readonly deadline: number
}

/**
 * The DMS server of {@link layerMemory}. Failing with a `BrokerError` simulates a broker failure (e.g.
 * no server for the host); never completing simulates a server that does not answer.
 *
 * @since 0.1.0
 * @category models
 */
export type MemoryHandler<R = never> = (request: MemoryRequest) => Effect.Effect<Protocol.Reply, DmsError.BrokerError, R>

/**
 * An in-process Broker whose handler plays the DMS server: for users' unit tests and the embedded
 * default. Requests and replies go through JSON as on the wire, timeouts are honoured the same way (on
 * Effect's `Clock`, so `TestClock` drives them), and a handler keeps running after its caller gave up,
 * like a real server; its late reply is dropped. Closing the layer interrupts running handlers.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = <R = never>(handler: MemoryHandler<R>): Layer.Layer<Broker, never, R> =>
  Layer.scoped(
    Broker,
    Effect.gen(function*() {
      const scope = yield* Effect.scope
      const context = yield* Effect.context<R>()
      const send = (out: Amqp.Outgoing): Effect.Effect<Buffer, DmsError.BrokerError | Amqp.DeadlineReached> =>
        Effect.gen(function*() {
          const body = JSON.parse(out.content.toString("utf8")) as Record<string, unknown>
          const result = yield* Deferred.make<Buffer, DmsError.BrokerError>()
          const waiting = { value: true }
          yield* handler({
            host: out.host,
            queue: out.queue,
            correlationId: out.correlationId,
            body,
            headers: out.headers,
            deadline: out.deadline
          }).pipe(
            Effect.provide(context),
            Effect.map((reply) => Buffer.from(JSON.stringify(reply) ?? "", "utf8")),
            Effect.catchAllDefect((cause) =>
              Effect.fail(
                new DmsError.BrokerError({ host: out.host, queue: out.queue, reason: "the in-memory DMS server failed", cause })
              )
            ),
            Effect.exit,
            Effect.flatMap((exit) =>
              waiting.value
                ? Deferred.done(result, exit)
                : Effect.logDebug("dropped a reply whose correlation id is not pending (late or foreign)").pipe(
                  Effect.annotateLogs({ correlationId: out.correlationId })
                )
            ),
            Effect.forkIn(scope)
          )
          const now = yield* Clock.currentTimeMillis
          return yield* Deferred.await(result).pipe(
            Number.isFinite(out.deadline)
              ? Effect.timeoutFail({
                duration: Duration.millis(Math.max(0, out.deadline - now)),
                // The handler already has the request: as on the wire, the outcome is unknown.
                onTimeout: () => new Amqp.DeadlineReached({ published: true })
              })
              : identity,
            Effect.ensuring(Effect.sync(() => void (waiting.value = false)))
          )
        })
      return makeService({ send, connected: Effect.void })
    })
  )
