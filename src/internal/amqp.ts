/**
 * The AMQP client under `Broker.layerAmqp`, made of three parts:
 *
 * - {@link AmqpConnection}: a supervisor fiber owns the connection: it opens it, waits for it to be lost,
 *   and opens a new one with backoff (a `Schedule`).
 * - {@link AmqpRequests}: on each connection, one confirm channel with direct reply-to publishes the
 *   requests and matches their replies; when the connection drops, every pending request fails at once
 *   with a `BrokerError`.
 * - {@link AmqpQueueCheck}: before the first request to a queue (and again when the cached answer is
 *   older than its TTL), a passive check makes sure the queue exists and has a consumer. The answer is
 *   cached, and every reply from the queue's server renews it, so the hot path is one publish and one
 *   reply; `mandatory` and publisher confirms catch what the check missed.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as DmsError from "../DmsError.js"
import { brokerError, makeTools } from "./amqpCommon.js"
import type { TlsOptions } from "./amqpCommon.js"
import * as AmqpConnection from "./amqpConnection.js"
import * as AmqpQueueCheck from "./amqpQueueCheck.js"
import * as AmqpRequests from "./amqpRequests.js"
import { DeadlineReached } from "./transport.js"
import type { Outgoing } from "./transport.js"

export { DIRECT_REPLY_TO } from "./amqpRequests.js"
export { DeadlineReached } from "./transport.js"
export type { Outgoing } from "./transport.js"

/**
 * Settings of the AMQP client (resolved by `Broker.layerAmqp`).
 */
export interface Settings {
  /** The broker's URLs, one per node of a cluster, tried in order; with passwords: never logged. */
  readonly urls: ReadonlyArray<string>
  /** `connection_name` client property, shown by the management tools. */
  readonly connectionName: string
  /** How long a connection attempt, or a request waiting for one, may take. */
  readonly connectTimeout: Duration.Duration
  /** How long a missing queue or a queue without consumer is re-checked before failing. */
  readonly fastFailWindow: Duration.Duration
  /** How long a successful queue check is trusted. */
  readonly queueCheckCacheTtl: Duration.Duration
  /** Delays between reconnection attempts; when it ends, the client gives up. */
  readonly reconnectSchedule: Schedule.Schedule<unknown, DmsError.BrokerError>
  /** CA, client certificate and key for `amqps://` URLs. */
  readonly tls?: TlsOptions | undefined
}

/**
 * The AMQP client.
 */
export interface Client {
  /**
   * Publishes a request and waits for the raw reply body, until `out.deadline` at most (then
   * `DeadlineReached`, saying whether the request had been published). Interrupting it forgets the
   * request.
   */
  readonly send: (out: Outgoing) => Effect.Effect<Buffer, DmsError.BrokerError | DeadlineReached>
  /** Succeeds once connected (at once when connected now); fails after `connectTimeout` without. */
  readonly connected: Effect.Effect<void, DmsError.BrokerError>
}

/**
 * Starts the client in the current scope. Never fails: a broker that cannot be reached makes requests
 * fail with a `BrokerError` while the supervisor keeps trying, so the layer is usable once it is back.
 */
export const make = (settings: Settings): Effect.Effect<Client, never, Scope.Scope> =>
  Effect.gen(function*() {
    const tools = yield* makeTools(settings.urls)
    const queues = yield* AmqpQueueCheck.make(settings, tools)
    const requests = AmqpRequests.make(tools, queues)
    const connection = yield* AmqpConnection.make({
      ...settings,
      tools,
      setup: requests.open,
      onLost: (wire, loss) => {
        queues.forgetAll()
        return { failedRequests: wire === undefined ? 0 : requests.failPending(wire, loss) }
      }
    })
    const modelNow = () => connection.current()?.connection.model

    const getLive = (out: Outgoing): Effect.Effect<AmqpConnection.Live<AmqpRequests.Wire>, DmsError.BrokerError> =>
      Effect.suspend(() => {
        if (connection.isClosing()) return Effect.fail(tools.closedError())
        const live = connection.current()
        if (live !== undefined) return Effect.succeed(live)
        return connection.next.pipe(
          Effect.mapError((e) => brokerError(e.reason, { host: out.host, queue: out.queue, cause: e.cause, notDelivered: true }))
        )
      })

    // Nothing is published yet: a deadline reached here means no server can have the request.
    const beforeDeadline = (out: Outgoing) => <A, E>(self: Effect.Effect<A, E>) =>
      Number.isFinite(out.deadline)
        ? Effect.timeoutFail(self, {
          duration: Duration.millis(Math.max(0, out.deadline - Date.now())),
          onTimeout: () => new DeadlineReached({ published: false })
        })
        : self

    // Not connected yet, or the queue not checked recently: wait for both within the deadline, then
    // publish (which keeps the same deadline for the reply).
    const slowPath = (out: Outgoing) =>
      Effect.gen(function*() {
        yield* getLive(out)
        yield* queues.ensure(out.host, out.queue, modelNow)
        // The check may have waited: take the connection that is current now.
        return yield* getLive(out)
      }).pipe(
        beforeDeadline(out),
        Effect.flatMap((live) => requests.publish(live.connection, live.state, out))
      )

    return {
      connected: Effect.suspend(() => {
        if (connection.isClosing()) return Effect.fail(tools.closedError())
        return connection.current() !== undefined ? Effect.void : Effect.asVoid(connection.next)
      }),
      send: (out) =>
        Effect.suspend(() => {
          const live = connection.current()
          const freshness = queues.freshness(out.queue)
          if (live === undefined || freshness === "stale") return slowPath(out)
          // The hot path: connected and the queue checked recently. One publish, one reply.
          const publish = requests.publish(live.connection, live.state, out)
          return freshness === "aging" ? Effect.zipRight(queues.refresh(out.host, out.queue, modelNow), publish) : publish
        })
    }
  })
