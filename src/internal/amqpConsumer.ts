/**
 * The DMS server's side of the broker: a supervised connection that declares the host's queue,
 * consumes it exclusively and hands every delivery to the server, reconnecting with backoff when the
 * connection drops. What a delivery means is the server's business (`server/Server.ts`).
 */
import amqp from "amqplib"
import type { Channel, ChannelModel, ConsumeMessage } from "amqplib"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"

/**
 * One connection's channel, on which deliveries arrive and their replies and acks must go.
 */
export interface Session {
  readonly model: ChannelModel
  readonly channel: Channel
  alive: boolean
  consumerTag: string | undefined
  readonly lost: Deferred.Deferred<string>
}

/**
 * What the consumer needs.
 */
export interface Options {
  /** The broker URL, with its password: never logged. */
  readonly url: string
  /** The URL with the password masked, for messages. */
  readonly displayUrl: string
  readonly queue: string
  readonly prefetch: number
  readonly connectionName: string
  readonly reconnectSchedule?: Schedule.Schedule<unknown, unknown> | undefined
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
}

const describeError = (e: unknown): string => (e instanceof Error ? e.message : String(e))

/**
 * Starts consuming in the current scope, in the background; closing the scope closes the connection.
 */
export const make = (options: Options): Effect.Effect<Consumer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    const { displayUrl, prefetch, queue, url, connectionName } = options
    const ready = Deferred.unsafeMake<void>(FiberId.none)
    let current: Session | undefined

    const log = (effect: Effect.Effect<void>) => runFork(effect.pipe(Effect.annotateLogs({ queue })))
    const guard = (f: () => void) => {
      try {
        f()
      } catch (e) {
        log(Effect.logWarning(`unexpected error in a broker event handler: ${describeError(e)}`))
      }
    }

    const lose = (session: Session, reason: string) => {
      if (!session.alive) return
      session.alive = false
      if (current === session) current = undefined
      Deferred.unsafeDone(session.lost, Effect.succeed(reason))
    }

    const connect = Effect.tryPromise({
      try: async () => {
        const model = await amqp.connect(url, { noDelay: true, clientProperties: { connection_name: connectionName } })
        const lost = Deferred.unsafeMake<string>(FiberId.none)
        let channel: Channel
        const pending: { session?: Session; reason?: string } = {}
        model.on("error", (e: Error) => guard(() => void (pending.reason = describeError(e))))
        model.on("close", (e?: Error) =>
          guard(() => {
            if (pending.session) lose(pending.session, `connection closed${e ? `: ${describeError(e)}` : ""}`)
            else Deferred.unsafeDone(lost, Effect.succeed("connection closed"))
          })
        )
        try {
          channel = await model.createChannel()
        } catch (e) {
          await model.close().catch(() => undefined)
          throw e
        }
        const session: Session = { model, channel, alive: true, consumerTag: undefined, lost }
        pending.session = session
        channel.on("error", (e: Error) => guard(() => void (pending.reason = describeError(e))))
        channel.on("close", () => guard(() => lose(session, `channel closed${pending.reason ? `: ${pending.reason}` : ""}`)))
        try {
          await channel.assertQueue(queue, { durable: true })
          await channel.prefetch(prefetch)
          const { consumerTag } = await channel.consume(
            queue,
            (msg) =>
              guard(() => {
                if (msg === null) lose(session, "the broker cancelled the consumer")
                else options.onMessage(session, msg)
              }),
            { exclusive: true, noAck: false }
          )
          session.consumerTag = consumerTag
        } catch (e) {
          await model.close().catch(() => undefined)
          throw new Error(
            /ACCESS[-_]REFUSED|exclusive/i.test(describeError(e)) || (e as { code?: unknown }).code === 403
              ? `another DMS server already consumes ${queue} (exclusive consumer)`
              : describeError(e)
          )
        }
        return session
      },
      catch: (e) => new Error(`cannot consume ${queue} on ${displayUrl}: ${describeError(e)}`)
    })

    let failures = 0
    const cycle = Effect.gen(function*() {
      const session = yield* Effect.acquireRelease(
        connect.pipe(
          Effect.tapError((e) =>
            Effect.suspend(() => {
              failures++
              return failures === 1 || failures % 20 === 0 ? Effect.logWarning(`${e.message}; retrying`) : Effect.logDebug(e.message)
            })
          )
        ),
        (s) =>
          Effect.promise(async () => {
            // Closing the channel first flushes the replies still buffered on it: amqplib writes the
            // connection's close frame ahead of channel buffers, which would drop them.
            const wasAlive = s.alive
            lose(s, "closed")
            if (wasAlive) await s.channel.close().catch(() => undefined)
            await s.model.close().catch(() => undefined)
          }).pipe(Effect.timeout(Duration.seconds(10)), Effect.ignore)
      )
      failures = 0
      current = session
      yield* Effect.logInfo(`consuming ${queue}`).pipe(Effect.annotateLogs({ broker: displayUrl, prefetch }))
      Deferred.unsafeDone(ready, Effect.void)
      const reason = yield* Deferred.await(session.lost)
      yield* Effect.logWarning(`lost the broker: ${reason}; reconnecting`)
      return yield* Effect.fail(new Error(reason))
    }).pipe(Effect.scoped)

    const schedule = options.reconnectSchedule ??
      Schedule.exponential(Duration.millis(100), 2).pipe(Schedule.union(Schedule.spaced(Duration.seconds(5))))

    yield* cycle.pipe(Effect.retry(schedule), Effect.ignore, Effect.forkScoped)

    return { current: () => current, ready: Deferred.await(ready) } satisfies Consumer
  })
