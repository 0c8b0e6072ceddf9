/**
 * A supervised AMQP connection: a fiber opens one connection at a time, sets up what lives on it,
 * waits for it to be lost and opens a new one on a `Schedule`.
 *
 * It knows nothing of what runs on the connection: the user's `setup` opens channels and consumers in
 * the connection's own scope (so they close before it), and `onLost` hears once of every connection
 * lost. The client (requests, direct reply-to) and a server (a consumer) can both sit on it.
 *
 * Every amqplib emitter gets `error` and `close` listeners: an unhandled `error` event would crash the
 * process.
 */
import * as amqp from "amqplib"
import type { ChannelModel } from "amqplib"
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as DmsError from "../DmsError.js"
import { brokerError, closeQuietly, millis } from "./amqpCommon.js"
import type { Tools } from "./amqpCommon.js"

/**
 * How to reach the broker and how to keep trying.
 */
export interface Settings {
  /** The broker URL, with its password: never logged. */
  readonly url: string
  /** `connection_name` client property, shown by the management tools. */
  readonly connectionName: string
  /** How long a connection attempt, or a caller waiting for one, may take. */
  readonly connectTimeout: Duration.Duration
  /** Delays between reconnection attempts; when it ends, the supervisor gives up. */
  readonly reconnectSchedule: Schedule.Schedule<unknown, DmsError.BrokerError>
}

/**
 * One connection's life, as `setup` and the users of the supervisor see it. Its fields change as
 * amqplib reports events.
 */
export interface Connection {
  readonly model: ChannelModel
  /** False once the connection is lost (closed from either side, or reported lost by {@link lose}). */
  readonly alive: boolean
  /** Why the broker blocks publishers (a resource alarm), while it does. */
  readonly blocked: string | undefined
  /** Records an error an emitter reported: it becomes the reason of the loss that follows. */
  readonly noteError: (e: unknown) => void
  /** Reports the connection lost (e.g. a channel it cannot live without closed). Idempotent. */
  readonly lose: (reason: string, cause?: unknown) => void
}

/**
 * A connection that was set up, with what `setup` made of it.
 */
export interface Live<S> {
  readonly connection: Connection
  readonly state: S
}

/**
 * How a connection was lost.
 */
export interface Loss {
  /** The reason, with the cause's message when there is one (scrubbed of the password). */
  readonly detail: string
  readonly cause: unknown
  /** The supervisor itself is closing (its scope closes). */
  readonly closing: boolean
}

/**
 * What to run on each connection.
 */
export interface Options<S> extends Settings {
  readonly tools: Tools
  /**
   * Opens what lives on one connection (channels, consumers), in that connection's scope: its
   * finalizers run before the connection closes. Failing closes the connection and retries later.
   */
  readonly setup: (connection: Connection) => Effect.Effect<S, DmsError.BrokerError, Scope.Scope>
  /**
   * Runs once for every connection lost, with its state (`undefined` when `setup` had not finished),
   * before anyone waiting on it hears of it. What it returns annotates the warning that is logged.
   */
  readonly onLost: (state: S | undefined, loss: Loss) => Readonly<Record<string, unknown>>
}

/**
 * The supervisor of a connection.
 */
export interface Supervisor<S> {
  /** The live connection, if there is one now. */
  readonly current: () => Live<S> | undefined
  /**
   * The next live connection, waiting up to `connectTimeout` for one: it fails with the reason the
   * attempt failed, or when the supervisor gave up or closed.
   */
  readonly next: Effect.Effect<Live<S>, DmsError.BrokerError>
  /** True once the supervisor's scope is closing. */
  readonly isClosing: () => boolean
}

interface Link<S> extends Connection {
  alive: boolean
  blocked: string | undefined
  lastError: unknown
  state: S | undefined
  /** Set with `state`, once set up. */
  live: Live<S> | undefined
  /** Completed once, with the reason, when the connection is lost. */
  readonly lost: Deferred.Deferred<DmsError.BrokerError>
}

interface Ready<S> {
  readonly deferred: Deferred.Deferred<Link<S>, DmsError.BrokerError>
  done: boolean
}

const destroy = (model: ChannelModel) => () => {
  const stream = (model.connection as unknown as { stream?: { destroy?: () => void } }).stream
  stream?.destroy?.()
}

/**
 * Starts the supervisor in the current scope. Never fails: while the broker cannot be reached,
 * {@link Supervisor.next} fails and the supervisor keeps trying; closing the scope closes the connection.
 */
export const make = <S>(options: Options<S>): Effect.Effect<Supervisor<S>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { tools } = options
    const { closedError, displayUrl, guard, log, safe } = tools
    const connectTimeoutMs = millis(options.connectTimeout)

    let closing = false
    let current: Link<S> | undefined
    const newReady = (): Ready<S> => ({ deferred: Deferred.unsafeMake(FiberId.none), done: false })
    let ready = newReady()
    const settle = (r: Ready<S>, effect: Effect.Effect<Link<S>, DmsError.BrokerError>) => {
      if (!r.done) {
        r.done = true
        Deferred.unsafeDone(r.deferred, effect)
      }
    }

    const lose = (link: Link<S>, reason: string, cause?: unknown) => {
      if (!link.alive) return
      link.alive = false
      const why = cause ?? link.lastError
      const detail = why === undefined ? reason : `${reason}: ${safe(why)}`
      if (current === link) {
        current = undefined
        if (ready.done) ready = newReady()
      }
      const annotations = options.onLost(link.state, { detail, cause: why, closing })
      Deferred.unsafeDone(
        link.lost,
        Effect.succeed(brokerError(`lost the connection to ${displayUrl}: ${detail}`, why === undefined ? {} : { cause: why }))
      )
      if (!closing) log("Warning", "lost the connection to the broker", { reason: detail, ...annotations })
    }

    const connect = Effect.acquireRelease(
      Effect.tryPromise({
        try: async () => {
          const model = await amqp.connect(options.url, {
            noDelay: true,
            timeout: connectTimeoutMs,
            clientProperties: { connection_name: options.connectionName }
          })
          // No await between connect and here: no event can be missed.
          const link: Link<S> = {
            model,
            alive: true,
            blocked: undefined,
            lastError: undefined,
            state: undefined,
            live: undefined,
            lost: Deferred.unsafeMake(FiberId.none),
            noteError: (e) => void (link.lastError = e),
            lose: (reason, cause) => lose(link, reason, cause)
          }
          model.on("error", (e: Error) => guard(() => link.noteError(e)))
          model.on("close", (e?: Error) => guard(() => lose(link, "the connection was closed", e)))
          model.on("blocked", (reason: unknown) => guard(() => void (link.blocked = String(reason))))
          model.on("unblocked", () => guard(() => void (link.blocked = undefined)))
          return link
        },
        catch: (cause) => brokerError(`cannot connect to ${displayUrl}: ${safe(cause)}`, { cause })
      }),
      (link) => closeQuietly(() => link.model.close(), destroy(link.model))
    )

    let failures = 0 // connection attempts failed in a row

    // One connection's life: open it, set it up, publish it, wait until it is lost. Failing hands over
    // to the reconnect schedule; the scope closes whatever was opened.
    const cycle = Effect.gen(function*() {
      if (ready.done) ready = newReady()
      const attempt = ready
      const opened = yield* Effect.exit(
        Effect.flatMap(connect, (link) =>
          Effect.map(options.setup(link), (state) => {
            link.state = state
            link.live = { connection: link, state }
            return link
          }))
      )
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
      const link = opened.value
      if (!link.alive) {
        const reason = yield* Deferred.await(link.lost)
        settle(attempt, Effect.fail(reason))
        return yield* Effect.fail(reason)
      }
      current = link
      failures = 0
      settle(attempt, Effect.succeed(link))
      log("Debug", "connected to the broker", { connectionName: options.connectionName })
      return yield* Effect.flatMap(Deferred.await(link.lost), Effect.fail)
    }).pipe(Effect.scoped)

    const supervisor = cycle.pipe(
      Effect.retry(options.reconnectSchedule),
      Effect.catchAll((e) =>
        Effect.sync(() => {
          log("Warning", "gave up reconnecting to the broker", { reason: e.reason })
          if (ready.done) ready = newReady()
          settle(ready, Effect.fail(brokerError(`gave up reconnecting to ${displayUrl}: ${e.reason}`)))
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

    return {
      current: () => (current !== undefined && current.alive ? current.live : undefined),
      next: Effect.suspend(() =>
        Deferred.await(ready.deferred).pipe(
          Effect.timeoutFail({
            duration: options.connectTimeout,
            onTimeout: () => brokerError(`not connected to ${displayUrl} after ${connectTimeoutMs} ms`)
          }),
          Effect.flatMap((link) =>
            link.alive && link.live !== undefined ? Effect.succeed(link.live) : Effect.fail(brokerError(`the connection to ${displayUrl} was lost`))
          )
        )
      ),
      isClosing: () => closing
    }
  })
