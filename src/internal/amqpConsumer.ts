/**
 * The DMS server's side of the broker: on the supervised connection of `amqpConnection` (the one the
 * client uses too), declare the host's queue, consume it as its single consumer and hand every
 * delivery to the server. What a delivery means is the server's business (`server/Server.ts`).
 *
 * Queue types:
 * - `classic`: durable, no arguments (what the Python client and server declare, so they can share
 *   it); one consumer through `exclusive`.
 * - `quorum`: durable, `x-queue-type: quorum`, replicated on the cluster's nodes. RabbitMQ 3.10 accepts
 *   `exclusive` on a quorum queue's consumer but does not enforce it (two servers both consumed in a
 *   test), so the queue is declared with `x-single-active-consumer: true`: a second server is
 *   registered but gets nothing until the first is gone, which keeps requests in order all the same.
 */
import type { Channel, ChannelModel, ConsumeMessage } from "amqplib"
import type * as Duration from "effect/Duration"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as DmsError from "../DmsError.js"
import { brokerError, closeQuietly, makeTools } from "./amqpCommon.js"
import type { TlsOptions } from "./amqpCommon.js"
import * as AmqpConnection from "./amqpConnection.js"

/**
 * The type of the host's queue.
 */
export type QueueType = "classic" | "quorum"

/**
 * One connection's channel, on which deliveries arrive and their replies and acks must go.
 */
export interface Session {
  readonly channel: Channel
  /** False once the channel or its connection is gone: a reply or ack on it would be lost. */
  readonly alive: () => boolean
  readonly consumerTag: string
}

/**
 * What the consumer needs.
 */
export interface Options {
  /** The broker's URLs, one per node, tried in order; with passwords: never logged. */
  readonly urls: ReadonlyArray<string>
  readonly queue: string
  readonly queueType: QueueType
  readonly prefetch: number
  readonly connectionName: string
  readonly connectTimeout: Duration.Duration
  readonly reconnectSchedule: Schedule.Schedule<unknown, DmsError.BrokerError>
  /** CA, client certificate and key for `amqps://` URLs. */
  readonly tls?: TlsOptions | undefined
  /** Called for every delivery, from amqplib's callback. */
  readonly onMessage: (session: Session, msg: ConsumeMessage) => void
}

/**
 * The running consumer.
 */
export interface Consumer {
  /** The session consuming now, if any. */
  readonly current: () => Session | undefined
  /** Completes once the queue is consumed (the first time). */
  readonly ready: Effect.Effect<void>
  /**
   * The outcome of the first connection attempt: fails only if it stopped the consumer for good (the
   * queue exists with another type); a broker that cannot be reached is retried in the background.
   */
  readonly started: Effect.Effect<void, DmsError.BrokerError>
  /** Fails when the consumer stopped for good, with why; never completes otherwise. */
  readonly stopped: Effect.Effect<never, DmsError.BrokerError>
}

const queueArguments = (type: QueueType): Record<string, unknown> | undefined =>
  type === "quorum" ? { "x-queue-type": "quorum", "x-single-active-consumer": true } : undefined

/**
 * What RabbitMQ says differs when a declaration does not match the queue: `inequivalent arg 'X' …
 * but current is none` or `… current is the value 'V' of type 'T'`.
 */
const inequivalent = (message: string): { readonly arg: string; readonly current: unknown } | undefined => {
  const m = /inequivalent arg '([^']+)'.*current is (?:none|the value '([^']*)' of type '([^']*)')/.exec(message)
  if (m === null) return undefined
  const [, arg, value, type] = m
  const current = value === undefined ? undefined : type === "bool" ? value === "true" : /int|long/.test(type ?? "") && !/str/.test(type ?? "") ? Number(value) : value
  return { arg: arg!, current }
}

/**
 * The arguments the existing queue was declared with, learnt by declaring it again with what the last
 * refusal said it has, one argument at a time (RabbitMQ names only the first that differs, and checks
 * `x-single-active-consumer` before `x-queue-type`). Each refusal closes its throwaway channel.
 */
const existingArguments = (model: ChannelModel, queue: string, sent: QueueType, refused: string) =>
  Effect.tryPromise(async () => {
    const args: Record<string, unknown> = { ...queueArguments(sent) }
    let message = refused
    for (let i = 0; i < 8; i++) {
      const differs = inequivalent(message)
      if (differs === undefined || differs.arg === "durable") return undefined
      if (differs.current === undefined) delete args[differs.arg]
      else args[differs.arg] = differs.current
      const channel = await model.createChannel()
      channel.on("error", () => {})
      try {
        await channel.assertQueue(queue, { durable: true, arguments: args })
        await channel.close().catch(() => undefined)
        return args
      } catch (e) {
        message = e instanceof Error ? e.message : String(e)
      }
    }
    return undefined
  }).pipe(Effect.orElseSucceed(() => undefined))

/**
 * Starts consuming in the current scope, in the background; closing the scope closes the connection.
 */
export const make = (options: Options): Effect.Effect<Consumer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { connectionName, prefetch, queue, queueType } = options
    const tools = yield* makeTools(options.urls)
    const { guard, log, safe } = tools
    // Errors that no retry cures: the supervisor stops on them.
    const permanent = new WeakSet<DmsError.BrokerError>()
    const consuming = Deferred.unsafeMake<void>(FiberId.none)

    const refuse = (reason: string, e: unknown) => {
      const error = brokerError(reason, { queue, cause: e })
      permanent.add(error)
      return error
    }

    const declare = (connection: AmqpConnection.Connection, channel: Channel) =>
      Effect.tryPromise({
        try: () => channel.assertQueue(queue, { durable: true, arguments: queueArguments(queueType) }),
        catch: (e) => e
      }).pipe(
        Effect.catchAll((e) =>
          Effect.gen(function*() {
            const message = safe(e)
            if ((e as { code?: unknown }).code !== 406) {
              return yield* Effect.fail(brokerError(`cannot declare ${queue}: ${message}`, { queue, cause: e }))
            }
            const args = yield* existingArguments(connection.model, queue, queueType, e instanceof Error ? e.message : String(e))
            const existing = args === undefined ? undefined : String(args["x-queue-type"] ?? "classic")
            if (existing !== undefined && existing !== queueType) {
              return yield* Effect.fail(refuse(
                `queue ${queue} already exists as a ${existing} queue, but this server is configured with queue_type ${queueType}: ` +
                  `set queue_type ${existing} (--queue-type, DMS_QUEUE_TYPE, queue_type in server.conf), or stop every DMS ` +
                  `server of this host and delete the queue (rabbitmqctl delete_queue ${queue}; requests waiting in it are lost) ` +
                  `so that it is declared again as ${queueType}`,
                e
              ))
            }
            return yield* Effect.fail(refuse(
              `queue ${queue} exists with other arguments than a ${queueType} DMS queue (${message}): stop every DMS server of ` +
                `this host and delete it (rabbitmqctl delete_queue ${queue}) so that it is declared again`,
              e
            ))
          })
        )
      )

    const setup = (connection: AmqpConnection.Connection) =>
      Effect.gen(function*() {
        const channel = yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: () => connection.model.createChannel(),
            catch: (e) => brokerError(`cannot open a channel: ${safe(e)}`, { queue, cause: e })
          }),
          // Closing the channel before the connection flushes the replies still buffered on it:
          // amqplib writes the connection's close frame ahead of channel buffers, which would drop them.
          (channel) => closeQuietly(() => channel.close())
        )
        const state = { open: true, consuming: false }
        channel.on("error", (e: Error) => guard(() => connection.noteError(e)))
        channel.on("close", () =>
          guard(() => {
            state.open = false
            // The server cannot live without its channel: start over on a new connection. (Before it
            // consumes, the failing step fails `setup` by itself.)
            if (state.consuming) connection.lose("the channel was closed")
          })
        )
        yield* declare(connection, channel)
        yield* Effect.tryPromise({
          try: () => channel.prefetch(prefetch),
          catch: (e) => brokerError(`cannot set the prefetch: ${safe(e)}`, { queue, cause: e })
        })
        const session: { -readonly [K in keyof Session]: Session[K] } = {
          channel,
          alive: () => state.open && connection.alive,
          consumerTag: ""
        }
        const { consumerTag } = yield* Effect.tryPromise({
          try: () =>
            channel.consume(
              queue,
              (msg) =>
                guard(() => {
                  if (msg === null) connection.lose("the broker cancelled the consumer")
                  else options.onMessage(session, msg)
                }),
              // A quorum queue has its single active consumer by declaration (see the module's note).
              { exclusive: queueType === "classic", noAck: false }
            ),
          catch: (e) =>
            brokerError(
              /ACCESS[-_]REFUSED|exclusive/i.test(safe(e)) || (e as { code?: unknown }).code === 403
                ? `another DMS server already consumes ${queue} (exclusive consumer)`
                : `cannot consume ${queue}: ${safe(e)}`,
              { queue, cause: e }
            )
        })
        session.consumerTag = consumerTag
        state.consuming = true
        // Closed while `consume` was answered: nothing else will notice.
        if (!state.open) connection.lose("the channel was closed")
        Deferred.unsafeDone(consuming, Effect.void)
        log("Info", `consuming ${queue}`, { node: connection.node, queueType, prefetch })
        return session as Session
      })

    const supervisor = yield* AmqpConnection.make<Session>({
      urls: options.urls,
      connectionName,
      connectTimeout: options.connectTimeout,
      reconnectSchedule: options.reconnectSchedule,
      tls: options.tls,
      tools,
      setup,
      onLost: () => ({ queue }),
      isPermanent: (e) => permanent.has(e)
    })

    const failedForGood = (e: DmsError.BrokerError) => Effect.suspend(() => (permanent.has(e) ? Effect.fail(e) : Effect.void))
    return {
      current: () => supervisor.current()?.state,
      ready: Deferred.await(consuming),
      started: Effect.catchAll(Effect.asVoid(supervisor.next), failedForGood),
      stopped: supervisor.stopped
    } satisfies Consumer
  })
