/**
 * The server's metrics and request spans: a `dms.server.request` span per delivery (continuing the
 * caller's trace from its `traceparent` header, or a fresh trace), `dms_server_requests_total` and
 * `dms_server_request_duration_seconds` when it is answered, and the gauges read at scrape time.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import * as Tracing from "../internal/tracing.js"
import type * as Mounter from "./Mounter.js"

/**
 * Requests answered, by action (`mount`, `unmount`, `status`, `invalid`) and outcome (`success`,
 * `error`, `expired`, `invalid`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const requestsTotal = Metric.counter("dms_server_requests_total", {
  description: "requests answered by the DMS server, by action and outcome",
  incremental: true
})

/**
 * Time from a request's arrival to its reply, by action.
 *
 * @since 0.1.0
 * @category metrics
 */
export const requestDuration = Metric.histogram(
  "dms_server_request_duration_seconds",
  MetricBoundaries.exponential({ start: 0.001, factor: 2, count: 18 }),
  "time from a request's arrival to its reply, by action"
)

/**
 * Mounts under the base that show in the mount table, by type.
 *
 * @since 0.1.0
 * @category metrics
 */
export const activeMounts = Metric.gauge("dms_server_active_mounts", { description: "mounts under the mount base, by type" })

/**
 * S3 FUSE daemons of recorded mounts that are alive.
 *
 * @since 0.1.0
 * @category metrics
 */
export const fuseDaemonsAlive = Metric.gauge("dms_server_fuse_daemons_alive", { description: "S3 FUSE daemons alive" })

/**
 * S3 FUSE daemons of recorded mounts that are dead (the mount is unusable until mounted again).
 *
 * @since 0.1.0
 * @category metrics
 */
export const fuseDaemonsDead = Metric.gauge("dms_server_fuse_daemons_dead", { description: "S3 FUSE daemons of recorded mounts that are dead" })

/**
 * 1 while the server has a connection and channel to the broker, else 0.
 *
 * @since 0.1.0
 * @category metrics
 */
export const brokerConnected = Metric.gauge("dms_server_broker_connected", { description: "1 while connected to the broker" })

/**
 * 1 while the server consumes its queue, else 0.
 *
 * @since 0.1.0
 * @category metrics
 */
export const consumerActive = Metric.gauge("dms_server_consumer_active", { description: "1 while consuming dms.<node-id>" })

/**
 * A request being handled: its span and when it arrived.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  readonly span: Tracer.Span
  readonly startNanos: bigint
  action: string
}

/**
 * Opens a request's span: the child of the `traceparent` in its headers, or the root of a new trace.
 *
 * @since 0.1.0
 * @category tracing
 */
export const begin = (headers: Readonly<Record<string, unknown>>, correlationId: unknown, queue: string): Effect.Effect<Request> =>
  Effect.gen(function*() {
    const parent = Tracing.parentOf(headers)
    const span = yield* Effect.makeSpan("dms.server.request", {
      kind: "server",
      ...(Option.isSome(parent) ? { parent: parent.value } : { root: true }),
      captureStackTrace: false,
      attributes: {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": queue,
        ...(typeof correlationId === "string" ? { "messaging.message.conversation_id": correlationId } : {})
      }
    })
    return { span, startNanos: yield* Clock.currentTimeNanos, action: "invalid" }
  })

/**
 * Runs `effect` (decoding, the mount, the logs) under the request's span.
 *
 * @since 0.1.0
 * @category tracing
 */
export const within = (request: Request) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.withParentSpan(effect, request.span)

/**
 * Sends the reply (`answer`) in a `dms.server.reply` span, then counts the request and ends its span.
 *
 * @since 0.1.0
 * @category tracing
 */
export const finish = <A>(request: Request, outcome: string, answer: Effect.Effect<A>): Effect.Effect<A> =>
  answer.pipe(
    Effect.withSpan("dms.server.reply", { kind: "producer", captureStackTrace: false }),
    within(request),
    Effect.ensuring(Effect.gen(function*() {
      const end = yield* Clock.currentTimeNanos
      const { action, span } = request
      span.attribute("dms.action", action)
      span.attribute("dms.outcome", outcome)
      yield* Metric.update(requestsTotal.pipe(Metric.tagged("action", action), Metric.tagged("outcome", outcome)), 1)
      yield* Metric.update(requestDuration.pipe(Metric.tagged("action", action)), Number(end - request.startNanos) / 1e9)
      span.end(end, outcome === "success" ? Exit.void : Exit.fail(`${action}: ${outcome}`))
    }))
  )

/**
 * Sets the gauges from the Mounter's view of the mount base and the consumer's state.
 *
 * @since 0.1.0
 * @category metrics
 */
export const refresh = (
  mounter: Mounter.Service,
  health: () => { readonly connected: boolean; readonly consuming: boolean }
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const { connected, consuming } = health()
    yield* Metric.set(brokerConnected, connected ? 1 : 0)
    yield* Metric.set(consumerActive, consuming ? 1 : 0)
    const mounts = yield* Effect.orElseSucceed(mounter.status, () => undefined)
    if (mounts === undefined) return
    const byType = { nfs: 0, s3: 0, unknown: 0 }
    let alive = 0
    let dead = 0
    for (const m of mounts) {
      if (m.mounted) byType[m.type ?? "unknown"]++
      if (m.daemon_alive === true) alive++
      if (m.daemon_alive === false) dead++
    }
    for (const [type, n] of Object.entries(byType)) yield* Metric.set(activeMounts.pipe(Metric.tagged("type", type)), n)
    yield* Metric.set(fuseDaemonsAlive, alive)
    yield* Metric.set(fuseDaemonsDead, dead)
  })
