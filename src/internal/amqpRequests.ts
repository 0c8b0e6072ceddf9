/**
 * Requests over one AMQP connection: a confirm channel that consumes direct reply-to (`noAck`) before
 * anything is published on it, publishes every request (`mandatory`, transient, with an expiration) and
 * matches replies to pending requests by correlation id. A request waits until its deadline at most;
 * a return or a nack fails it at once, and a lost connection fails every pending request together.
 */
import type { ConfirmChannel, ConsumeMessage, Message } from "amqplib"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as DmsError from "../DmsError.js"
import { brokerError, closeQuietly, describe } from "./amqpCommon.js"
import type { Tools } from "./amqpCommon.js"
import type { Connection, Loss } from "./amqpConnection.js"
import { DeadlineReached } from "./transport.js"
import type { Outgoing } from "./transport.js"

/**
 * RabbitMQ's direct reply-to pseudo queue.
 */
export const DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

interface Pending {
  readonly host: string
  readonly queue: string
  confirmed: boolean
  readonly resume: (effect: Effect.Effect<Buffer, DmsError.BrokerError>) => void
}

/**
 * The request channel of one connection, with the requests waiting on it.
 */
export interface Wire {
  readonly channel: ConfirmChannel
  readonly pending: Map<string, Pending>
}

/**
 * Requests over the connections of one client.
 */
export interface Requests {
  /** Opens the request channel on a connection, in the connection's scope. */
  readonly open: (connection: Connection) => Effect.Effect<Wire, DmsError.BrokerError, Scope.Scope>
  /** Fails every request pending on a lost connection; returns how many there were. */
  readonly failPending: (wire: Wire, loss: Loss) => number
  /**
   * Publishes a request and waits for the raw reply body, until `out.deadline` at most (then
   * `DeadlineReached`, `published: false` when the deadline had passed before it could be published).
   * Interrupting it forgets the request.
   */
  readonly publish: (
    connection: Connection,
    wire: Wire,
    out: Outgoing
  ) => Effect.Effect<Buffer, DmsError.BrokerError | DeadlineReached>
}

/**
 * The requests of one client. `forget(queue)` is told when a queue's server may be gone (a return, a
 * nack, no answer in time), so that its next request checks the queue again; `heard(queue)` when its
 * server answered, which proves it consumes as a check would.
 */
export const make = (
  tools: Tools,
  queues: { readonly forget: (queue: string) => void; readonly heard: (queue: string) => void }
): Requests => {
  const { forget, heard } = queues
  const { displayUrl, guard, log, safe } = tools

  const onReply = (wire: Wire, msg: ConsumeMessage) => {
    const id = msg.properties.correlationId
    const p = typeof id === "string" ? wire.pending.get(id) : undefined
    if (p === undefined) {
      log("Debug", "dropped a reply whose correlation id is not pending (late or foreign)", {
        correlationId: typeof id === "string" ? id : null
      })
      return
    }
    wire.pending.delete(id as string)
    heard(p.queue)
    p.resume(Effect.succeed(msg.content))
  }

  const onReturn = (wire: Wire, msg: Message) => {
    const id = msg.properties.correlationId
    const p = typeof id === "string" ? wire.pending.get(id) : undefined
    if (p === undefined) {
      log("Debug", "the broker returned a request that is no longer pending", { correlationId: typeof id === "string" ? id : null })
      return
    }
    wire.pending.delete(id as string)
    forget(p.queue)
    const fields = msg.fields as unknown as { replyCode?: number; replyText?: string }
    p.resume(Effect.fail(brokerError(
      `no DMS server for host ${p.host}: the broker could not route the request to ${p.queue} (${
        fields.replyCode ?? "?"
      } ${fields.replyText ?? "returned"}); it was not delivered`,
      { host: p.host, queue: p.queue, notDelivered: true }
    )))
  }

  const open = (connection: Connection) =>
    Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const pending = new Map<string, Pending>()
          const channel = await connection.model.createConfirmChannel()
          const wire: Wire = { channel, pending }
          channel.on("error", (e: Error) => guard(() => connection.noteError(e)))
          // When the connection goes, amqplib closes its channels before it reports the connection's
          // close with the reason: let that report go first.
          channel.on("close", () => queueMicrotask(() => guard(() => connection.lose("the channel was closed"))))
          channel.on("return", (msg: Message) => guard(() => onReturn(wire, msg)))
          // Direct reply-to must be consumed, noAck, on the publishing channel before the first publish.
          await channel.consume(
            DIRECT_REPLY_TO,
            (msg) =>
              guard(() => (msg === null ? connection.lose("the broker cancelled the reply consumer") : onReply(wire, msg))),
            { noAck: true }
          )
          return wire
        },
        catch: (cause) => brokerError(`cannot open a channel on ${displayUrl}: ${safe(cause)}`, { cause })
      }),
      (wire) => (connection.alive ? closeQuietly(() => wire.channel.close()) : Effect.void)
    )

  const failPending = (wire: Wire, loss: Loss) => {
    const pending = [...wire.pending.values()]
    wire.pending.clear()
    for (const p of pending) {
      p.resume(Effect.fail(brokerError(
        loss.closing
          ? "the broker client was closed before the reply came; the outcome is unknown"
          : `${
            p.confirmed ? "the broker accepted the request, but " : ""
          }the connection to the broker was lost before the reply came (${loss.detail}); the outcome is unknown`,
        { host: p.host, queue: p.queue, ...(loss.cause === undefined ? {} : { cause: loss.cause }) }
      )))
    }
    return pending.length
  }

  // The request's deadline is a plain timer inside the async registration: on the hot path this costs
  // far less than racing the wait against a sleeping fiber (Effect.timeout).
  const publish = (
    connection: Connection,
    wire: Wire,
    out: Outgoing
  ): Effect.Effect<Buffer, DmsError.BrokerError | DeadlineReached> =>
    Effect.async<Buffer, DmsError.BrokerError | DeadlineReached>((resumeOnce) => {
      const { host, queue, correlationId } = out
      const { channel, pending } = wire
      if (!connection.alive) {
        resumeOnce(Effect.fail(brokerError(`the connection to ${displayUrl} was lost`, { host, queue, notDelivered: true })))
        return
      }
      if (connection.blocked !== undefined) {
        resumeOnce(Effect.fail(brokerError(`the broker is blocking publishers (${connection.blocked})`, { host, queue, notDelivered: true })))
        return
      }
      const remaining = Number.isFinite(out.deadline) ? Math.floor(out.deadline - Date.now()) : undefined
      if (remaining !== undefined && remaining <= 0) {
        resumeOnce(Effect.fail(new DeadlineReached({ published: false })))
        return
      }
      let timer: ReturnType<typeof setTimeout> | undefined
      const entry: Pending = {
        host,
        queue,
        confirmed: false,
        resume: (effect) => {
          if (timer !== undefined) clearTimeout(timer)
          resumeOnce(effect)
        }
      }
      pending.set(correlationId, entry)
      if (remaining !== undefined) {
        timer = setTimeout(() => {
          if (pending.get(correlationId) !== entry) return
          pending.delete(correlationId)
          // No answer in time: the server may be gone; check again before the next request.
          forget(queue)
          resumeOnce(Effect.fail(new DeadlineReached({ published: true })))
        }, remaining)
      }
      try {
        channel.sendToQueue(
          queue,
          out.content,
          {
            contentType: "application/json",
            correlationId,
            replyTo: DIRECT_REPLY_TO,
            persistent: false,
            mandatory: true,
            headers: out.headers,
            ...(remaining === undefined ? {} : { expiration: String(remaining) })
          },
          (err: unknown) => {
            if (err === null || err === undefined) {
              entry.confirmed = true
              return
            }
            if (pending.get(correlationId) !== entry) return
            // amqplib reports a nack as "message nacked"; anything else is the channel closing, which
            // the connection's loss reports with its reason.
            if (describe(err) !== "message nacked") return
            pending.delete(correlationId)
            forget(queue)
            entry.resume(Effect.fail(brokerError(`the broker refused the request to ${queue} (nack); it was not delivered`, {
              host,
              queue,
              notDelivered: true
            })))
          }
        )
      } catch (cause) {
        pending.delete(correlationId)
        entry.resume(Effect.fail(brokerError(`cannot publish to ${queue}: ${safe(cause)}`, { host, queue, cause, notDelivered: true })))
        return
      }
      return Effect.sync(() => {
        if (timer !== undefined) clearTimeout(timer)
        if (pending.get(correlationId) === entry) pending.delete(correlationId)
      })
    })

  return { open, failPending, publish }
}
