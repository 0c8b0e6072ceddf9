/**
 * The DMS server's consumer: takes requests from `dms.<node-id>`, runs them through the
 * {@link Mounter.Mounter}, replies to `reply_to` with the same `correlation_id`, and acks after replying.
 *
 * - The queue is declared as the protocol says (durable, no arguments) and consumed **exclusively**, so
 *   two instances never reorder work (a second instance waits, retrying, until the first is gone).
 * - Requests for one mount path run one at a time in arrival order; different paths run in parallel.
 * - A body that is not JSON, an unknown action or an invalid request gets an error reply and is acked
 *   (no poison loop). A request past its `x-dms-deadline` header is refused, not executed — on arrival
 *   and again when its turn comes; command timeouts are sized from the time left. Requests without the
 *   header (the Python client's) are served.
 * - Replies carry `content_type: application/json` and `correlation_id` only, with the body
 *   `{status, error_msg, success_msg}` (+ `already_mounted` on mount, `mounts` on status), as the
 *   Python server answers.
 * - Shutdown (scope close, SIGTERM/SIGINT under `main`): stop consuming, finish the requests that are
 *   running, leave mounts in place; requests not started yet go back to the queue unacked.
 * - The connection is supervised: when it drops, the server reconnects with backoff.
 *
 * @since 0.1.0
 */
import type { ConsumeMessage } from "amqplib"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as path from "node:path"
import * as Broker from "../Broker.js"
import * as DmsError from "../DmsError.js"
import * as Protocol from "../Protocol.js"
import { readTls } from "../internal/amqpCommon.js"
import * as AmqpConsumer from "../internal/amqpConsumer.js"
import * as Urls from "../internal/urls.js"
import * as Barbican from "./Barbican.js"
import * as CommandRunner from "./CommandRunner.js"
import * as Telemetry from "../Telemetry.js"
import * as ServerMetrics from "./Metrics.js"
import * as Mounter from "./Mounter.js"
import * as ServerConfig from "./ServerConfig.js"

// ---------------------------------------------------------------------------------------------------
// Requests

/**
 * A request the server will run.
 *
 * @since 0.1.0
 * @category models
 */
export type Decoded =
  | { readonly _tag: "mount"; readonly spec: Mounter.MountSpec }
  | { readonly _tag: "unmount"; readonly spec: Mounter.UnmountSpec }
  | { readonly _tag: "status" }

/**
 * The server's messages for requests it cannot run, as the Python server words them.
 *
 * @since 0.1.0
 * @category constants
 */
export const messages = {
  invalidJson: "Invalid JSON format in request",
  notAnObject: "Invalid request: expected a JSON object",
  unknownAction: (action: unknown) =>
    `Unknown action: ${action === undefined || action === null ? "None" : typeof action === "string" ? action : JSON.stringify(action)}`,
  missingExport: "Missing filesystem_export for NFS mount",
  missingSecretRef: "Missing secret_ref for S3 mount",
  missingToken: "Missing keystone_token for S3 mount",
  expired: (deadline: number) => `Request expired before it could start (deadline ${new Date(deadline).toISOString()}); not executed`,
  tooLarge: (bytes: number, limit: number) => `Request too large: ${bytes} bytes, the limit is ${limit} bytes; not parsed, not executed`
} as const

/**
 * The largest request body the server parses, in bytes (a mount request is well under 4 KiB).
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_MAX_BODY_BYTES = 64 * 1024

/**
 * The longest refusal message the server replies with or logs, in characters: a validation message
 * echoes the offending values, which a hostile body makes as long as it likes.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_MESSAGE_CHARS = 2048

/**
 * `text` cut to `max` characters, saying so.
 *
 * @since 0.1.0
 * @category utils
 */
export const truncate = (text: string, max: number = MAX_MESSAGE_CHARS): string =>
  text.length <= max ? text : `${text.slice(0, max)}… (truncated; ${text.length} characters in all)`

/**
 * Whether a `reply_to` names a reply queue the server may answer to: RabbitMQ's direct reply-to
 * (`amq.rabbitmq.reply-to…`, as the broker rewrites it) or a server-named queue (`amq.gen-…`, as the
 * Python client declares it). Clients cannot declare queues under `amq.`, so no other value is a reply
 * queue: answering to it would let a sender make this server publish into any queue, such as another
 * host's `dms.<host>`.
 *
 * @since 0.1.0
 * @category utils
 */
export const isReplyQueue = (replyTo: string): boolean =>
  /^amq\.rabbitmq\.reply-to(\.[^\s]+)?$/.test(replyTo) || /^amq\.gen-[A-Za-z0-9_-]+$/.test(replyTo)

const MountBody = Schema.Struct({
  keystone_token: Schema.optional(Schema.NullOr(Schema.Redacted(Schema.String))),
  backup_target: Protocol.BackupTarget
})

const UnmountBody = Schema.Struct({
  backup_target: Schema.Struct({
    id: Protocol.BackupTargetId,
    type: Schema.Literal("nfs", "s3"),
    filesystem_export_mount_path: Protocol.MountPath
  })
})

const decodeMountBody = Schema.decodeUnknownEither(MountBody, { errors: "all" })
const decodeUnmountBody = Schema.decodeUnknownEither(UnmountBody, { errors: "all" })

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null && !Array.isArray(u)

/**
 * Decodes a request body (the raw message content): what to run, or the error message to reply with
 * (at most {@link MAX_MESSAGE_CHARS} characters). A body over `maxBodyBytes` (default
 * {@link DEFAULT_MAX_BODY_BYTES}) is refused unparsed. Accepts both the guide's shape and the Python
 * client's (`jobid` at the top level, or no job at all: the server does not need one).
 *
 * @since 0.1.0
 * @category decoding
 */
export const decodeRequest = (
  content: Buffer | string,
  options: { readonly maxBodyBytes?: number | undefined } = {}
): Either.Either<Decoded, string> => Either.mapLeft(decodeBody(content, options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES), (m) => truncate(m))

const decodeBody = (content: Buffer | string, maxBodyBytes: number): Either.Either<Decoded, string> => {
  const size = typeof content === "string" ? Buffer.byteLength(content) : content.length
  if (size > maxBodyBytes) return Either.left(messages.tooLarge(size, maxBodyBytes))
  let body: unknown
  try {
    body = JSON.parse(typeof content === "string" ? content : content.toString("utf8"))
  } catch {
    return Either.left(messages.invalidJson)
  }
  if (!isRecord(body)) return Either.left(messages.notAnObject)
  const action = body.action
  if (action === "status") return Either.right({ _tag: "status" })
  if (action !== "mount" && action !== "unmount") return Either.left(messages.unknownAction(action))
  const target = isRecord(body.backup_target) ? body.backup_target : undefined
  if (action === "unmount") {
    const decoded = decodeUnmountBody(body)
    if (Either.isLeft(decoded)) return Either.left(DmsError.fromParseError("request", decoded.left).message)
    const t = decoded.right.backup_target
    return Either.right({ _tag: "unmount", spec: { targetId: t.id, type: t.type, path: t.filesystem_export_mount_path } })
  }
  if (target?.type === "nfs" && (target.filesystem_export === undefined || target.filesystem_export === null || target.filesystem_export === "")) {
    return Either.left(messages.missingExport)
  }
  if (target?.type === "s3" && (target.secret_ref === undefined || target.secret_ref === null || target.secret_ref === "")) {
    return Either.left(messages.missingSecretRef)
  }
  const decoded = decodeMountBody(body)
  if (Either.isLeft(decoded)) return Either.left(DmsError.fromParseError("request", decoded.left).message)
  const t = decoded.right.backup_target
  if (t.type === "nfs") {
    return Either.right({
      _tag: "mount",
      spec: { type: "nfs", targetId: t.id, path: t.filesystem_export_mount_path, export: t.filesystem_export, options: t.nfs_mount_opts }
    })
  }
  const token = decoded.right.keystone_token
  if (token === undefined || token === null || Redacted.value(token) === "") return Either.left(messages.missingToken)
  return Either.right({
    _tag: "mount",
    spec: { type: "s3", targetId: t.id, path: t.filesystem_export_mount_path, secretRef: t.secret_ref, token }
  })
}

// ---------------------------------------------------------------------------------------------------
// The service

/**
 * Options of {@link layer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly nodeId: string
  /**
   * `amqp://…` or `amqps://…`, or a comma-separated list of a cluster's nodes: tried in order; after a
   * connection is lost the server reconnects to the next node that answers.
   */
  readonly rabbitmqUrl: string | Redacted.Redacted<string>
  /**
   * The type of `dms.<node-id>`: `classic` (default; durable, no arguments, as the Python server and
   * client declare it) or `quorum` (replicated on the cluster's nodes, single active consumer).
   */
  readonly queueType?: QueueType | undefined
  /** Unacknowledged requests the broker may hand over at once (they queue per path here). Default 64. */
  readonly prefetch?: number | undefined
  /** The `connection_name` shown by the management tools. Default `trilio-dms-server@<node-id>`. */
  readonly connectionName?: string | undefined
  /** Delays between reconnection attempts. Default: `Broker.defaultReconnectSchedule` (forever). */
  readonly reconnectSchedule?: Schedule.Schedule<unknown, DmsError.BrokerError> | undefined
  /** How long one connection attempt may take. Default 10 s. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** TLS files for `amqps://` URLs (CA, client certificate and key). */
  readonly tls?: Broker.TlsFiles | undefined
  /** The largest body parsed, in bytes; a larger one gets an error reply. Default {@link DEFAULT_MAX_BODY_BYTES}. */
  readonly maxBodyBytes?: number | undefined
  /** Serve `/metrics`, `/healthz` and `/readyz` here (host default `127.0.0.1`); none by default. */
  readonly metrics?: { readonly port: number; readonly host?: string | undefined } | undefined
}

/**
 * The type of the host's queue.
 *
 * @since 0.1.0
 * @category models
 */
export type QueueType = AmqpConsumer.QueueType

/**
 * Counters, for tests and the status log line.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly received: number
  readonly replied: number
  readonly refusedExpired: number
  /** Requests dropped unexecuted because their `reply_to` is not a reply queue ({@link isReplyQueue}). */
  readonly refusedReplyTo: number
  readonly running: number
  readonly queued: number
}

/**
 * The Server service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly queue: string
  /** Completes once the server consumes its queue (the first time). */
  readonly ready: Effect.Effect<void>
  /**
   * Fails when the server stopped consuming for good (its queue exists with another type, or the
   * reconnect schedule ended); never completes otherwise. What `trilio-dms server` waits on.
   */
  readonly stopped: Effect.Effect<never, DmsError.BrokerError>
  readonly stats: () => Stats
  /** Whether the broker connection is up and the queue consumed (`/readyz`, the gauges). */
  readonly health: () => { readonly connected: boolean; readonly consuming: boolean }
}

/**
 * The Server tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class Server extends Context.Tag("trilio-dms/server/Server")<Server, Service>() {}

interface Job {
  readonly session: AmqpConsumer.Session
  readonly msg: ConsumeMessage
  readonly deadline: number
  readonly run: Effect.Effect<Protocol.Reply | Record<string, unknown>>
  readonly request: ServerMetrics.Request
}

const describeError = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * Starts the server in the current scope: it consumes until the scope closes, then drains.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options) =>
  Effect.gen(function*() {
    const mounter = yield* Mounter.Mounter
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    const runSync = Runtime.runSync(runtime)
    const queue = Broker.queueName(options.nodeId)
    const url = Redacted.isRedacted(options.rabbitmqUrl) ? Redacted.value(options.rabbitmqUrl) : options.rabbitmqUrl
    const location = Urls.parseBrokerUrl(url)
    if (typeof location === "string" || location.kind !== "amqp") {
      return yield* DmsError.invalid(
        "server options",
        "rabbitmqUrl",
        typeof location === "string" ? location : "the server needs a RabbitMQ URL (amqp:// or amqps://)"
      )
    }
    const prefetch = options.prefetch ?? 64
    const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES
    if (!(Number.isInteger(maxBodyBytes) && maxBodyBytes > 0)) {
      return yield* DmsError.invalid("server options", "maxBodyBytes", `must be a positive integer, got ${maxBodyBytes}`)
    }
    const connectionName = options.connectionName ?? `trilio-dms-server@${options.nodeId}`
    const idle = { waiters: [] as Array<() => void> }

    let stopping = false
    const counters = { received: 0, replied: 0, refusedExpired: 0, refusedReplyTo: 0, running: 0 }
    /** Per mount path: the jobs waiting, the first one running. */
    const lanes = new Map<string, Array<Job>>()

    const log = (effect: Effect.Effect<void>) => runFork(effect.pipe(Effect.annotateLogs({ queue })))
    /** Publishes the reply (if the request asked for one) and acks — on the channel that delivered it. */
    const answer = (session: AmqpConsumer.Session, msg: ConsumeMessage, body: Protocol.Reply | Record<string, unknown>) =>
      Effect.sync(() => {
        if (!session.alive()) return false
        const replyTo = msg.properties.replyTo as string | undefined
        const correlationId = msg.properties.correlationId as string | undefined
        try {
          if (typeof replyTo === "string" && replyTo !== "") {
            session.channel.sendToQueue(replyTo, Buffer.from(JSON.stringify(body)), {
              contentType: "application/json",
              ...(correlationId === undefined ? {} : { correlationId })
            })
          }
          session.channel.ack(msg)
          counters.replied++
          return true
        } catch (e) {
          log(Effect.logWarning(`cannot reply: ${describeError(e)}`))
          return false
        }
      })

    const checkIdle = () => {
      if (counters.running === 0) for (const w of idle.waiters.splice(0)) w()
    }

    const replyFor = (decoded: Decoded, deadline: number): Effect.Effect<Protocol.Reply | Record<string, unknown>> => {
      switch (decoded._tag) {
        case "status":
          return mounter.status.pipe(
            Effect.map((mounts) => ({
              ...Protocol.success(`${mounts.length} mount(s) under ${mounter.mountBase}`),
              node_id: options.nodeId,
              mount_base: mounter.mountBase,
              mounts
            })),
            Effect.catchAll((e) => Effect.succeed(Protocol.failure(e.message)))
          )
        case "mount":
          return mounter.mount(decoded.spec, deadline).pipe(
            Effect.map((r) => ({ ...Protocol.success(r.message), already_mounted: r.alreadyMounted })),
            Effect.catchAll((e) => Effect.succeed(Protocol.failure(e.message)))
          )
        case "unmount":
          return mounter.unmount(decoded.spec, deadline).pipe(
            Effect.map((r) => ({ ...Protocol.success(r.message), was_mounted: r.wasMounted })),
            Effect.catchAll((e) => Effect.succeed(Protocol.failure(e.message)))
          )
      }
    }

    const describeDecoded = (decoded: Decoded) =>
      decoded._tag === "status"
        ? { action: "status" }
        : { action: decoded._tag, backupTargetId: decoded.spec.targetId, mountPath: decoded.spec.path, type: decoded.spec.type }

    /** Runs one job when its turn comes: refused if its deadline passed while it waited. */
    const execute = (job: Job, decoded: Decoded) =>
      Effect.gen(function*() {
        const finish = (body: Protocol.Reply | Record<string, unknown>, outcome: string) =>
          ServerMetrics.finish(job.request, outcome, answer(job.session, job.msg, body))
        const now = Date.now()
        const annotations = { correlationId: String(job.msg.properties.correlationId ?? ""), ...describeDecoded(decoded) }
        if (now >= job.deadline) {
          counters.refusedExpired++
          yield* Effect.logWarning("refused a request whose deadline passed while it waited").pipe(Effect.annotateLogs(annotations))
          return yield* finish(Protocol.failure(messages.expired(job.deadline)), "expired")
        }
        const start = Date.now()
        const reply = yield* job.run.pipe(
          Effect.catchAllCause((cause) =>
            Effect.as(
              Effect.logError("request failed unexpectedly", cause),
              Protocol.failure("internal error in the DMS server; see its log")
            )
          )
        )
        const status = (reply as Protocol.Reply).status
        const level = status === "success" ? Effect.logInfo : Effect.logWarning
        yield* level(
          status === "success" ? (reply as Protocol.Reply).success_msg ?? "done" : (reply as Protocol.Reply).error_msg ?? "error"
        ).pipe(Effect.annotateLogs({ ...annotations, status, durationMs: Date.now() - start }))
        return yield* finish(reply, status === "success" ? "success" : "error")
      }).pipe(ServerMetrics.within(job.request))

    /** Drains one path's lane, one job at a time. */
    const drain = (key: string, decodedOf: WeakMap<Job, Decoded>): Effect.Effect<void> =>
      Effect.suspend(() => {
        const lane = lanes.get(key)
        const job = lane?.[0]
        if (lane === undefined || job === undefined || stopping) {
          // Stopping: requests not started stay unacked and return to the queue with the channel.
          lanes.delete(key)
          return Effect.void
        }
        if (!job.session.alive()) {
          // Its channel is gone: the broker redelivers it (it was not acked), so running it here would
          // run it twice.
          lane.shift()
          return drain(key, decodedOf)
        }
        counters.running++
        return execute(job, decodedOf.get(job)!).pipe(
          Effect.ensuring(Effect.sync(() => {
            counters.running--
            lane.shift()
            checkIdle()
          })),
          Effect.zipRight(drain(key, decodedOf))
        )
      })

    const decodedOf = new WeakMap<Job, Decoded>()

    const onMessage = (session: AmqpConsumer.Session, msg: ConsumeMessage) => {
      counters.received++
      const headers = (msg.properties.headers ?? {}) as Record<string, unknown>
      const deadline = Option.getOrElse(Broker.deadlineOf(headers), () => Infinity)
      const replyTo = msg.properties.replyTo as unknown
      if (typeof replyTo === "string" && replyTo !== "" && !isReplyQueue(replyTo)) {
        // Neither run nor answered: the sender would have this server publish into a queue of its choice.
        counters.refusedReplyTo++
        log(
          Effect.logWarning("dropped a request whose reply_to is not a reply queue; not executed").pipe(
            Effect.annotateLogs({ correlationId: String(msg.properties.correlationId ?? ""), replyTo: truncate(replyTo, 300) })
          )
        )
        try {
          if (session.alive()) session.channel.ack(msg)
        } catch (e) {
          log(Effect.logWarning(`cannot ack: ${describeError(e)}`))
        }
        return
      }
      const request = runSync(ServerMetrics.begin(headers, msg.properties.correlationId, queue))
      const decoded = runSync(
        Effect.sync(() => decodeRequest(msg.content, { maxBodyBytes })).pipe(
          Effect.withSpan("dms.server.decode", { captureStackTrace: false }),
          ServerMetrics.within(request)
        )
      )
      if (Either.isLeft(decoded)) {
        log(
          Effect.logWarning(`refused a request: ${decoded.left}`).pipe(
            Effect.annotateLogs({ correlationId: String(msg.properties.correlationId ?? "") }),
            ServerMetrics.within(request)
          )
        )
        runFork(ServerMetrics.finish(request, "invalid", answer(session, msg, Protocol.failure(decoded.left))))
        return
      }
      request.action = decoded.right._tag
      if (Date.now() >= deadline) {
        counters.refusedExpired++
        log(
          Effect.logWarning("refused a request that arrived past its deadline").pipe(
            Effect.annotateLogs({ correlationId: String(msg.properties.correlationId ?? ""), ...describeDecoded(decoded.right) }),
            ServerMetrics.within(request)
          )
        )
        runFork(ServerMetrics.finish(request, "expired", answer(session, msg, Protocol.failure(messages.expired(deadline)))))
        return
      }
      const job: Job = { session, msg, deadline, run: replyFor(decoded.right, deadline), request }
      decodedOf.set(job, decoded.right)
      if (decoded.right._tag === "status") {
        counters.running++
        runFork(execute(job, decoded.right).pipe(Effect.ensuring(Effect.sync(() => {
          counters.running--
          checkIdle()
        }))))
        return
      }
      // One lane per mount path (as written: the Mounter resolves it and refuses what escapes the base).
      const key = path.resolve("/", decoded.right.spec.path)
      const lane = lanes.get(key)
      if (lane !== undefined) {
        lane.push(job)
        return
      }
      lanes.set(key, [job])
      runFork(drain(key, decodedOf))
    }

    const tls = yield* readTls(options.tls)
    const connection = yield* AmqpConsumer.make({
      tls,
      urls: location.urls.map(Redacted.value),
      queue,
      queueType: options.queueType ?? "classic",
      prefetch,
      connectionName,
      connectTimeout: Duration.decode(options.connectTimeout ?? Duration.seconds(10)),
      reconnectSchedule: options.reconnectSchedule ?? Broker.defaultReconnectSchedule,
      onMessage
    })
    // A queue of the other type fails the start; a broker that cannot be reached is retried meanwhile.
    yield* connection.started

    const health = () => {
      const session = connection.current()
      const connected = session !== undefined && session.alive()
      return { connected, consuming: connected && !stopping }
    }
    if (options.metrics !== undefined) {
      yield* Layer.buildWithScope(
        Telemetry.layerMetricsServer({
          port: options.metrics.port,
          host: options.metrics.host,
          ready: Effect.sync(() => health().consuming),
          beforeScrape: ServerMetrics.refresh(mounter, health)
        }),
        yield* Effect.scope
      )
    }

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        stopping = true
        const session = connection.current()
        if (session !== undefined && session.alive()) {
          const tag = session.consumerTag
          yield* Effect.promise(() => session.channel.cancel(tag).then(() => undefined, () => undefined)).pipe(
            Effect.timeout(Duration.seconds(5)),
            Effect.ignore
          )
        }
        if (counters.running > 0) {
          yield* Effect.logInfo(`stopping: waiting for ${counters.running} running request(s)`)
          yield* Effect.async<void>((resume) => {
            idle.waiters.push(() => resume(Effect.void))
            checkIdle()
          })
        }
        yield* Effect.logInfo("stopped consuming; mounts are left in place")
      })
    )

    return {
      queue,
      health,
      ready: connection.ready,
      stopped: connection.stopped,
      stats: () => ({
        ...counters,
        queued: [...lanes.values()].reduce((n, lane) => n + Math.max(0, lane.length - 1), 0)
      })
    } satisfies Service
  })

/**
 * The server as a layer (needs a {@link Mounter.Mounter}). It consumes from when it is built until it
 * is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options
): Layer.Layer<Server, DmsError.ValidationError | DmsError.BrokerError | Telemetry.TelemetryError, Mounter.Mounter> =>
  Layer.scoped(Server, make(options))

/**
 * Everything from a resolved configuration: the server, the Mounter with the real command runner and
 * Barbican client, and the configured log level.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerFromSettings = (
  settings: ServerConfig.Settings
): Layer.Layer<Server, Mounter.MounterError | DmsError.ValidationError | DmsError.BrokerError | Telemetry.TelemetryError> =>
  layer({
    nodeId: settings.nodeId,
    rabbitmqUrl: settings.rabbitmqUrl,
    queueType: settings.queueType,
    prefetch: settings.prefetch,
    tls: settings.rabbitmqTls,
    metrics: Option.match(settings.metricsPort, { onNone: () => undefined, onSome: (port) => ({ port, host: settings.metricsHost }) })
  }).pipe(
    Layer.provide(
      Mounter.layer({
        mountBase: settings.mountBase,
        runDir: settings.runDir,
        s3Driver: settings.s3Driver,
        s3Command: settings.s3Command,
        s3fsOptions: settings.s3fsOptions,
        nfsAllowExec: settings.nfsAllowExec,
        commandTimeout: settings.commandTimeout
      })
    ),
    Layer.provide(Barbican.layer({ endpoint: Option.getOrUndefined(settings.barbicanUrl) })),
    Layer.provide(CommandRunner.layer),
    Layer.provide(Logger.minimumLogLevel(settings.logLevel)),
    Layer.provide(Telemetry.layerLogFormat(settings.logFormat))
  )

/**
 * Everything from options > environment > `/etc/trilio-dms/server.conf` > defaults.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  options: ServerConfig.Options = {}
): Layer.Layer<Server, DmsError.ValidationError | DmsError.BrokerError | Mounter.MounterError | Telemetry.TelemetryError> =>
  Layer.unwrapEffect(Effect.map(ServerConfig.fromEnv(options), layerFromSettings))

/**
 * Runs a server layer until it stops for good (then fails with why) or is interrupted (SIGTERM/SIGINT
 * under `runMain`): `Layer.launch`, but a server that can no longer consume does not idle on.
 *
 * @since 0.1.0
 * @category running
 */
export const launch = <E, R>(self: Layer.Layer<Server, E, R>): Effect.Effect<never, E | DmsError.BrokerError, R> =>
  Effect.scoped(Effect.flatMap(Layer.build(self), (context) => Context.get(context, Server).stopped))
