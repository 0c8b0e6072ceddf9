/**
 * The amqplib plumbing under `Broker.layerAmqp`.
 *
 * - One connection, one confirm channel. The channel consumes direct reply-to (`noAck`) before anything
 *   is published on it, publishes every request (`mandatory`, transient, with an expiration) and matches
 *   replies to pending requests by correlation id.
 * - A supervisor fiber owns the connection: it opens it, waits for it to be lost, and opens a new one
 *   with backoff (a `Schedule`). When the connection or the channel drops, every pending request fails
 *   at once with a `BrokerError`.
 * - Before the first request to a queue (and again when the cached answer is older than its TTL), a
 *   passive check on a throwaway channel makes sure the queue exists and has a consumer, re-checking for
 *   a short window to ride out a server restart. The answer is cached, so the hot path is one publish
 *   and one reply; `mandatory` and publisher confirms catch what the check missed.
 *
 * Every amqplib emitter gets `error` and `close` listeners: an unhandled `error` event would crash the
 * process.
 */
import * as amqp from "amqplib"
import type { ChannelModel, ConfirmChannel, ConsumeMessage, Message } from "amqplib"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as DmsError from "../DmsError.js"

/**
 * RabbitMQ's direct reply-to pseudo queue.
 */
export const DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"

/**
 * Settings of the AMQP client (resolved by `Broker.layerAmqp`).
 */
export interface Settings {
  /** The broker URL, with its password: never logged. */
  readonly url: string
  /** The URL with the password masked, for messages. */
  readonly displayUrl: string
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
}

/**
 * One request, encoded, as the Broker hands it to a transport.
 */
export interface Outgoing {
  readonly host: string
  readonly queue: string
  readonly correlationId: string
  readonly content: Buffer
  /** Epoch ms after which the request must not run; `Infinity` for none. */
  readonly deadline: number
  readonly headers: Readonly<Record<string, unknown>>
}

/**
 * A transport's signal that a request's deadline passed before its reply came.
 */
export class DeadlineReached {
  readonly _tag = "DeadlineReached"
}

/**
 * The AMQP client.
 */
export interface Client {
  /**
   * Publishes a request and waits for the raw reply body, until `out.deadline` at most (then
   * `DeadlineReached`). Interrupting it forgets the request.
   */
  readonly send: (out: Outgoing) => Effect.Effect<Buffer, DmsError.BrokerError | DeadlineReached>
}

interface Pending {
  readonly host: string
  readonly queue: string
  confirmed: boolean
  readonly resume: (effect: Effect.Effect<Buffer, DmsError.BrokerError>) => void
}

interface Session {
  model: ChannelModel | undefined
  channel: ConfirmChannel | undefined
  readonly pending: Map<string, Pending>
  alive: boolean
  blocked: string | undefined
  lastError: unknown
  /** Completed once, with the reason, when the connection or the channel is lost. */
  readonly lost: Deferred.Deferred<DmsError.BrokerError>
}

interface Ready {
  readonly deferred: Deferred.Deferred<Session, DmsError.BrokerError>
  done: boolean
}

type QueueState = "ok" | "missing" | "idle"

class NoServer {
  readonly _tag = "NoServer"
  constructor(readonly state: Exclude<QueueState, "ok">) {}
}

const describe = (e: unknown): string => {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code
    return typeof code === "string" && !e.message.includes(code) ? `${e.message} (${code})` : e.message
  }
  return String(e)
}

const isNotFound = (e: unknown): boolean => (e as { code?: unknown } | null)?.code === 404

const millis = (d: Duration.Duration): number => Math.max(0, Math.round(Duration.toMillis(d)))

/**
 * Starts the client in the current scope. Never fails: a broker that cannot be reached makes requests
 * fail with a `BrokerError` while the supervisor keeps trying, so the layer is usable once it is back.
 */
export const make = (settings: Settings): Effect.Effect<Client, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    const layerScope = yield* Effect.scope

    // Secrets must never reach a message. Our own texts use the redacted URL; amqplib's error messages
    // do not carry the URL either, but are scrubbed of the password anyway.
    const password = (() => {
      try {
        const p = new URL(settings.url).password
        return [p, decodeURIComponent(p)].filter((x) => x.length >= 3)
      } catch {
        return []
      }
    })()
    const safe = (e: unknown): string => password.reduce((t, p) => t.split(p).join("***"), describe(e))
    const brokerError = (
      reason: string,
      extra: {
        readonly host?: string
        readonly queue?: string
        readonly cause?: unknown
        /** The request certainly reached no server (so the caller records no unknown outcome). */
        readonly notDelivered?: boolean
      } = {}
    ) =>
      new DmsError.BrokerError({
        reason,
        ...(extra.host === undefined ? {} : { host: extra.host }),
        ...(extra.queue === undefined ? {} : { queue: extra.queue }),
        ...(extra.cause === undefined ? {} : { cause: extra.cause }),
        ...(extra.notDelivered === true ? { notDelivered: true } : {})
      })

    const log = (level: "Debug" | "Info" | "Warning", message: string, annotations: Record<string, unknown> = {}) => {
      const effect = level === "Debug"
        ? Effect.logDebug(message)
        : level === "Info"
        ? Effect.logInfo(message)
        : Effect.logWarning(message)
      runFork(effect.pipe(Effect.annotateLogs({ broker: settings.displayUrl, ...annotations })))
    }

    const connectTimeoutMs = millis(settings.connectTimeout)
    const ttlMs = millis(settings.queueCheckCacheTtl)
    const windowMs = millis(settings.fastFailWindow)

    let closing = false
    let current: Session | undefined
    const newReady = (): Ready => ({ deferred: Deferred.unsafeMake(FiberId.none), done: false })
    let ready = newReady()
    const settle = (r: Ready, effect: Effect.Effect<Session, DmsError.BrokerError>) => {
      if (!r.done) {
        r.done = true
        Deferred.unsafeDone(r.deferred, effect)
      }
    }
    const closedError = () => brokerError(`the broker client for ${settings.displayUrl} is closed`, { notDelivered: true })

    // queue -> epoch ms of the last successful check; queue -> check in flight
    const checkedAt = new Map<string, number>()
    const checks = new Map<string, Deferred.Deferred<void, DmsError.BrokerError>>()

    const lose = (session: Session, reason: string, cause?: unknown) => {
      if (!session.alive) return
      session.alive = false
      const why = cause ?? session.lastError
      const detail = why === undefined ? reason : `${reason}: ${safe(why)}`
      if (current === session) {
        current = undefined
        if (ready.done) ready = newReady()
      }
      checkedAt.clear()
      const pending = [...session.pending.values()]
      session.pending.clear()
      for (const p of pending) {
        p.resume(Effect.fail(brokerError(
          closing
            ? "the broker client was closed before the reply came; the outcome is unknown"
            : `${
              p.confirmed ? "the broker accepted the request, but " : ""
            }the connection to the broker was lost before the reply came (${detail}); the outcome is unknown`,
          { host: p.host, queue: p.queue, ...(why === undefined ? {} : { cause: why }) }
        )))
      }
      Deferred.unsafeDone(
        session.lost,
        Effect.succeed(brokerError(`lost the connection to ${settings.displayUrl}: ${detail}`, why === undefined ? {} : { cause: why }))
      )
      if (!closing) log("Warning", "lost the connection to the broker", { reason: detail, failedRequests: pending.length })
    }

    const guard = (f: () => void) => {
      try {
        f()
      } catch (e) {
        log("Warning", "unexpected error in a broker event handler", { error: safe(e) })
      }
    }

    const onReply = (session: Session, msg: ConsumeMessage) => {
      const id = msg.properties.correlationId
      const p = typeof id === "string" ? session.pending.get(id) : undefined
      if (p === undefined) {
        log("Debug", "dropped a reply whose correlation id is not pending (late or foreign)", {
          correlationId: typeof id === "string" ? id : null
        })
        return
      }
      session.pending.delete(id as string)
      p.resume(Effect.succeed(msg.content))
    }

    const onReturn = (session: Session, msg: Message) => {
      const id = msg.properties.correlationId
      const p = typeof id === "string" ? session.pending.get(id) : undefined
      if (p === undefined) {
        log("Debug", "the broker returned a request that is no longer pending", { correlationId: typeof id === "string" ? id : null })
        return
      }
      session.pending.delete(id as string)
      checkedAt.delete(p.queue)
      const fields = msg.fields as unknown as { replyCode?: number; replyText?: string }
      p.resume(Effect.fail(brokerError(
        `no DMS server for host ${p.host}: the broker could not route the request to ${p.queue} (${
          fields.replyCode ?? "?"
        } ${fields.replyText ?? "returned"}); it was not delivered`,
        { host: p.host, queue: p.queue, notDelivered: true }
      )))
    }

    const closeQuietly = (close: () => Promise<void>, onFailure: () => void = () => {}) =>
      Effect.tryPromise(close).pipe(
        Effect.timeout(Duration.seconds(5)),
        Effect.catchAll(() => Effect.sync(onFailure))
      )

    const destroy = (model: ChannelModel) => () => {
      const stream = (model.connection as unknown as { stream?: { destroy?: () => void } }).stream
      stream?.destroy?.()
    }

    const connect = (session: Session) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const model = await amqp.connect(settings.url, {
              noDelay: true,
              timeout: connectTimeoutMs,
              clientProperties: { connection_name: settings.connectionName }
            })
            // No await between connect and here: no event can be missed.
            model.on("error", (e: Error) => guard(() => void (session.lastError = e)))
            model.on("close", (e?: Error) => guard(() => lose(session, "the connection was closed", e)))
            model.on("blocked", (reason: unknown) => guard(() => void (session.blocked = String(reason))))
            model.on("unblocked", () => guard(() => void (session.blocked = undefined)))
            session.model = model
            return model
          },
          catch: (cause) => brokerError(`cannot connect to ${settings.displayUrl}: ${safe(cause)}`, { cause })
        }),
        (model) => closeQuietly(() => model.close(), destroy(model))
      )

    const openChannel = (session: Session, model: ChannelModel) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const channel = await model.createConfirmChannel()
            channel.on("error", (e: Error) => guard(() => void (session.lastError = e)))
            // When the connection goes, amqplib closes its channels before it reports the connection's
            // close with the reason: let that report go first.
            channel.on("close", () => queueMicrotask(() => guard(() => lose(session, "the channel was closed"))))
            channel.on("return", (msg: Message) => guard(() => onReturn(session, msg)))
            session.channel = channel
            // Direct reply-to must be consumed, noAck, on the publishing channel before the first publish.
            await channel.consume(
              DIRECT_REPLY_TO,
              (msg) => guard(() => (msg === null ? lose(session, "the broker cancelled the reply consumer") : onReply(session, msg))),
              { noAck: true }
            )
            return channel
          },
          catch: (cause) => brokerError(`cannot open a channel on ${settings.displayUrl}: ${safe(cause)}`, { cause })
        }),
        (channel) => (session.alive ? closeQuietly(() => channel.close()) : Effect.void)
      )

    let failures = 0 // connection attempts failed in a row

    // One connection's life: open it, publish it, wait until it is lost. Failing hands over to the
    // reconnect schedule; the scope closes whatever was opened.
    const cycle = Effect.gen(function*() {
      if (ready.done) ready = newReady()
      const attempt = ready
      const session: Session = {
        model: undefined,
        channel: undefined,
        pending: new Map(),
        alive: true,
        blocked: undefined,
        lastError: undefined,
        lost: Deferred.unsafeMake(FiberId.none)
      }
      const opened = yield* Effect.exit(Effect.flatMap(connect(session), (model) => openChannel(session, model)))
      if (Exit.isFailure(opened)) {
        failures++
        const failure = Cause.failureOption(opened.cause)
        if (!closing && Option.isSome(failure)) {
          log(failures === 1 ? "Warning" : "Debug", "cannot connect to the broker; retrying", {
            reason: failure.value.reason,
            attempt: failures
          })
        }
        settle(attempt, Effect.failCause(opened.cause))
        return yield* Effect.failCause(opened.cause)
      }
      if (!session.alive) {
        const reason = yield* Deferred.await(session.lost)
        settle(attempt, Effect.fail(reason))
        return yield* Effect.fail(reason)
      }
      current = session
      failures = 0
      settle(attempt, Effect.succeed(session))
      log("Debug", "connected to the broker", { connectionName: settings.connectionName })
      return yield* Effect.flatMap(Deferred.await(session.lost), Effect.fail)
    }).pipe(Effect.scoped)

    const supervisor = cycle.pipe(
      Effect.retry(settings.reconnectSchedule),
      Effect.catchAll((e) =>
        Effect.sync(() => {
          log("Warning", "gave up reconnecting to the broker", { reason: e.reason })
          if (ready.done) ready = newReady()
          settle(ready, Effect.fail(brokerError(`gave up reconnecting to ${settings.displayUrl}: ${e.reason}`)))
        })
      )
    )
    yield* Effect.forkScoped(supervisor)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closing = true
        settle(ready, Effect.fail(closedError()))
      })
    )

    const getSession = (out: Outgoing): Effect.Effect<Session, DmsError.BrokerError> =>
      Effect.suspend(() => {
        if (closing) return Effect.fail(closedError())
        const session = current
        if (session !== undefined && session.alive) return Effect.succeed(session)
        return Deferred.await(ready.deferred).pipe(
          Effect.timeoutFail({
            duration: settings.connectTimeout,
            onTimeout: () => brokerError(`not connected to ${settings.displayUrl} after ${connectTimeoutMs} ms`)
          }),
          Effect.flatMap((s) =>
            s.alive ? Effect.succeed(s) : Effect.fail(brokerError(`the connection to ${settings.displayUrl} was lost`))
          ),
          Effect.mapError((e) => brokerError(e.reason, { host: out.host, queue: out.queue, cause: e.cause, notDelivered: true }))
        )
      })

    // A passive declare on a throwaway channel: a missing queue closes the channel it is checked on, and
    // that must never be the channel requests are pending on.
    const checkOnce = (host: string, queue: string): Effect.Effect<QueueState, DmsError.BrokerError> =>
      Effect.suspend(() => {
        const session = current
        const model = session?.alive === true ? session.model : undefined
        if (model === undefined) {
          return Effect.fail(brokerError(`not connected to ${settings.displayUrl}`, { host, queue, notDelivered: true }))
        }
        return Effect.acquireUseRelease(
          Effect.tryPromise({
            try: async () => {
              const channel = await model.createChannel()
              const state = { closed: false }
              channel.on("error", () => {})
              channel.on("close", () => void (state.closed = true))
              return { channel, state }
            },
            catch: (cause) =>
              brokerError(`cannot open a channel to check ${queue}: ${safe(cause)}`, { host, queue, cause, notDelivered: true })
          }),
          ({ channel }) =>
            Effect.tryPromise({ try: () => channel.checkQueue(queue), catch: (e) => e }).pipe(
              Effect.map((ok): QueueState => (ok.consumerCount > 0 ? "ok" : "idle")),
              Effect.catchAll((e) =>
                isNotFound(e)
                  ? Effect.succeed<QueueState>("missing")
                  : Effect.fail(brokerError(`cannot check ${queue}: ${safe(e)}`, { host, queue, cause: e, notDelivered: true }))
              )
            ),
          ({ channel, state }) => (state.closed ? Effect.void : closeQuietly(() => channel.close()))
        ).pipe(
          Effect.timeoutFail({
            duration: settings.connectTimeout,
            onTimeout: () =>
              brokerError(`checking ${queue} took more than ${connectTimeoutMs} ms`, { host, queue, notDelivered: true })
          })
        )
      })

    const recheck = Schedule.exponential(Duration.millis(25), 2).pipe(
      Schedule.union(Schedule.spaced(Duration.millis(250))),
      Schedule.upTo(settings.fastFailWindow)
    )

    const checkWithWindow = (host: string, queue: string): Effect.Effect<void, DmsError.BrokerError> =>
      checkOnce(host, queue).pipe(
        Effect.flatMap((state) => (state === "ok" ? Effect.void : Effect.fail(new NoServer(state)))),
        Effect.retry({ schedule: recheck, while: (e) => e instanceof NoServer }),
        Effect.catchIf(
          (e): e is NoServer => e instanceof NoServer,
          (e) =>
            Effect.fail(brokerError(
              e.state === "missing"
                ? `no DMS server for host ${host}: queue ${queue} does not exist (checked for ${windowMs} ms)`
                : `no DMS server for host ${host}: queue ${queue} has no consumer (checked for ${windowMs} ms)`,
              { host, queue, notDelivered: true }
            ))
        )
      )

    // Starts a check of `queue`, or joins the one in flight. It runs in the layer's scope, so a caller
    // that gives up does not cancel it for the others.
    const startCheck = (host: string, queue: string) =>
      Effect.suspend(() => {
        const inFlight = checks.get(queue)
        if (inFlight !== undefined) return Effect.succeed(inFlight)
        const done = Deferred.unsafeMake<void, DmsError.BrokerError>(FiberId.none)
        checks.set(queue, done)
        return checkWithWindow(host, queue).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (checks.get(queue) === done) checks.delete(queue)
              if (Exit.isSuccess(exit)) checkedAt.set(queue, Date.now())
              else checkedAt.delete(queue)
              Deferred.unsafeDone(
                done,
                Exit.isSuccess(exit) ? Effect.void : Exit.isInterrupted(exit) ? Effect.fail(closedError()) : exit
              )
            })
          ),
          Effect.forkIn(layerScope),
          Effect.as(done)
        )
      })

    const ensureServer = (out: Outgoing): Effect.Effect<void, DmsError.BrokerError> =>
      Effect.suspend(() => {
        const at = checkedAt.get(out.queue)
        const age = at === undefined ? Infinity : Date.now() - at
        if (age < ttlMs) {
          // Fresh enough; past half its life, refresh it in the background so the hot path never waits.
          return age >= ttlMs / 2 ? Effect.asVoid(startCheck(out.host, out.queue)) : Effect.void
        }
        return Effect.flatMap(startCheck(out.host, out.queue), Deferred.await)
      })

    // The request's deadline is a plain timer inside the async registration: on the hot path this costs
    // far less than racing the wait against a sleeping fiber (Effect.timeout).
    const publish = (session: Session, out: Outgoing): Effect.Effect<Buffer, DmsError.BrokerError | DeadlineReached> =>
      Effect.async<Buffer, DmsError.BrokerError | DeadlineReached>((resumeOnce) => {
        const { host, queue, correlationId } = out
        const channel = session.channel
        if (!session.alive || channel === undefined) {
          resumeOnce(Effect.fail(brokerError(`the connection to ${settings.displayUrl} was lost`, { host, queue, notDelivered: true })))
          return
        }
        if (session.blocked !== undefined) {
          resumeOnce(Effect.fail(brokerError(`the broker is blocking publishers (${session.blocked})`, { host, queue, notDelivered: true })))
          return
        }
        const remaining = Number.isFinite(out.deadline) ? Math.floor(out.deadline - Date.now()) : undefined
        if (remaining !== undefined && remaining <= 0) {
          resumeOnce(Effect.fail(new DeadlineReached()))
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
        session.pending.set(correlationId, entry)
        if (remaining !== undefined) {
          timer = setTimeout(() => {
            if (session.pending.get(correlationId) !== entry) return
            session.pending.delete(correlationId)
            // No answer in time: the server may be gone; check again before the next request.
            checkedAt.delete(queue)
            resumeOnce(Effect.fail(new DeadlineReached()))
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
              if (session.pending.get(correlationId) !== entry) return
              // amqplib reports a nack as "message nacked"; anything else is the channel closing, which
              // `lose` reports with its reason.
              if (describe(err) !== "message nacked") return
              session.pending.delete(correlationId)
              checkedAt.delete(queue)
              entry.resume(Effect.fail(brokerError(`the broker refused the request to ${queue} (nack); it was not delivered`, {
                host,
                queue,
                notDelivered: true
              })))
            }
          )
        } catch (cause) {
          session.pending.delete(correlationId)
          entry.resume(Effect.fail(brokerError(`cannot publish to ${queue}: ${safe(cause)}`, { host, queue, cause, notDelivered: true })))
          return
        }
        return Effect.sync(() => {
          if (timer !== undefined) clearTimeout(timer)
          if (session.pending.get(correlationId) === entry) session.pending.delete(correlationId)
        })
      })

    const untilDeadline = (out: Outgoing) => <A, E>(self: Effect.Effect<A, E>) =>
      Number.isFinite(out.deadline)
        ? Effect.timeoutFail(self, {
          duration: Duration.millis(Math.max(0, out.deadline - Date.now())),
          onTimeout: () => new DeadlineReached()
        })
        : self

    // Not connected yet, or the queue not checked recently: wait for both, within the deadline.
    const slowPath = (out: Outgoing) =>
      Effect.gen(function*() {
        yield* getSession(out)
        yield* ensureServer(out)
        // The check may have waited: take the session that is current now.
        const session = yield* getSession(out)
        return yield* publish(session, out)
      }).pipe(untilDeadline(out))

    return {
      send: (out) =>
        Effect.suspend(() => {
          const session = current
          const at = checkedAt.get(out.queue)
          const age = at === undefined ? Infinity : Date.now() - at
          if (session === undefined || !session.alive || !(age < ttlMs)) return slowPath(out)
          // The hot path: connected and the queue checked recently. One publish, one reply.
          if (age >= ttlMs / 2) return Effect.zipRight(startCheck(out.host, out.queue), publish(session, out))
          return publish(session, out)
        })
    }
  })
