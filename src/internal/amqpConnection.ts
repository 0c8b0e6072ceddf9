/**
 * A supervised AMQP connection: a fiber opens one connection at a time, sets up what lives on it,
 * waits for it to be lost and opens a new one on a `Schedule`. The client (`Broker.layerAmqp`) and the
 * DMS server (`amqpConsumer`) both run on it.
 *
 * The broker may be several nodes of a cluster: they are tried in order, and after a connection is
 * lost the next attempt starts with the node after the one that was lost, so a client moves on to a
 * node that answers instead of waiting for the lost one. A round in which no node answers hands over
 * to the reconnect schedule.
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
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type * as DmsError from "../DmsError.js"
import { brokerError, closeQuietly, millis } from "./amqpCommon.js"
import type { TlsOptions, Tools } from "./amqpCommon.js"
import { redactUrl } from "./urls.js"

/**
 * How to reach the broker and how to keep trying.
 */
export interface Settings {
  /** The broker's URLs, one per node, in the order they are tried; with passwords: never logged. */
  readonly urls: ReadonlyArray<string>
  /** `connection_name` client property, shown by the management tools. */
  readonly connectionName: string
  /** How long a connection attempt, or a caller waiting for one, may take. */
  readonly connectTimeout: Duration.Duration
  /** Delays between reconnection attempts; when it ends, the supervisor gives up. */
  readonly reconnectSchedule: Schedule.Schedule<unknown, DmsError.BrokerError>
  /** CA, client certificate and key for the `amqps://` URLs of the list (amqplib's socket options). */
  readonly tls?: TlsOptions | undefined
}

/**
 * One connection's life, as `setup` and the users of the supervisor see it. Its fields change as
 * amqplib reports events.
 */
export interface Connection {
  readonly model: ChannelModel
  /** The node this connection is to: its URL with the password masked. */
  readonly node: string
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
  /**
   * Errors of `setup` that retrying cannot cure (a queue that exists with other arguments): the
   * supervisor stops at once and {@link Supervisor.stopped} fails with the error. Default: none.
   */
  readonly isPermanent?: ((e: DmsError.BrokerError) => boolean) | undefined
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
  /**
   * Fails when the supervisor stopped for good (a permanent `setup` error, or the reconnect schedule
   * ended), with why; never completes otherwise.
   */
  readonly stopped: Effect.Effect<never, DmsError.BrokerError>
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

// Node's TLS failures carry OpenSSL's codes (UNABLE_TO_VERIFY_LEAF_SIGNATURE, ERR_SSL_…): say which side.
const tlsHint = (cause: unknown): string => {
  const code = String((cause as { code?: unknown } | null)?.code ?? "")
  const message = cause instanceof Error ? cause.message : ""
  // An alert from the broker names the client's side; the OpenSSL error may come without a code.
  if (/ALERT_(CERTIFICATE_REQUIRED|BAD_CERTIFICATE|UNKNOWN_CA)|alert (certificate required|bad certificate|unknown ca)/i.test(`${code} ${message}`)) {
    return " (TLS: the broker refused the client certificate, or requires one: set the certificate and key files)"
  }
  if (/CERT|SIGNATURE|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS_CERT/.test(code)) {
    return " (TLS: the broker's certificate is not trusted by the configured CA file, or does not name the host)"
  }
  return ""
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
    const nodes = options.urls.map(redactUrl)
    const isPermanent = options.isPermanent ?? (() => false)

    let closing = false
    let current: Link<S> | undefined
    const newReady = (): Ready<S> => ({ deferred: Deferred.unsafeMake(FiberId.none), done: false })
    let ready = newReady()
    const stopped = Deferred.unsafeMake<never, DmsError.BrokerError>(FiberId.none)
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
        Effect.succeed(brokerError(`lost the connection to ${link.node}: ${detail}`, why === undefined ? {} : { cause: why }))
      )
      // A connection whose setup failed was never in use: the failure is reported as such.
      if (!closing && link.live !== undefined) {
        log("Warning", "lost the connection to the broker", { node: link.node, reason: detail, ...annotations })
      }
    }

    const connect = (index: number) =>
      Effect.acquireRelease(
        Effect.tryPromise({
          try: async () => {
            const url = options.urls[index]!
            const model = await amqp.connect(url, {
              noDelay: true,
              timeout: connectTimeoutMs,
              clientProperties: { connection_name: options.connectionName },
              // amqplib sets `servername` from the URL's host name (not for an address).
              ...(options.tls !== undefined && url.startsWith("amqps:") ? options.tls : {})
            })
            // No await between connect and here: no event can be missed.
            const link: Link<S> = {
              model,
              node: nodes[index]!,
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
          catch: (cause) => brokerError(`cannot connect to ${nodes[index]}: ${safe(cause)}${tlsHint(cause)}`, { cause })
        }),
        (link) => closeQuietly(() => link.model.close(), destroy(link.model))
      )

    // Where the next round starts: the first node, then the node after the last one used.
    let start = 0
    let failures = 0 // rounds failed in a row
    let connections = 0 // connections made so far

    // One round: each node in turn until one connects; its `setup` runs in a scope that lives as long
    // as the connection (the caller's). A node that does not answer passes to the next; a failed
    // `setup` (the node answered) ends the round.
    const open = Effect.gen(function*() {
      const scope = yield* Effect.scope
      const reasons: Array<DmsError.BrokerError> = []
      for (let k = 0; k < options.urls.length; k++) {
        const index = (start + k) % options.urls.length
        const attempt = yield* Scope.fork(scope, ExecutionStrategy.sequential)
        const connected = yield* Effect.exit(Scope.extend(connect(index), attempt))
        if (Exit.isFailure(connected)) {
          yield* Scope.close(attempt, connected)
          const failure = Cause.failureOption(connected.cause)
          if (Option.isNone(failure)) return yield* Effect.failCause(connected.cause)
          reasons.push(failure.value)
          continue
        }
        start = (index + 1) % options.urls.length
        const link = connected.value
        const setUp = yield* Effect.exit(Scope.extend(options.setup(link), attempt))
        if (Exit.isFailure(setUp)) {
          yield* Scope.close(attempt, setUp)
          return yield* Effect.failCause(setUp.cause)
        }
        link.state = setUp.value
        link.live = { connection: link, state: setUp.value }
        return link
      }
      return yield* Effect.fail(
        reasons.length === 1
          ? reasons[0]!
          : brokerError(`cannot connect to any node of ${displayUrl}: ${reasons.map((r) => r.reason).join("; ")}`, {
            cause: reasons[reasons.length - 1]?.cause
          })
      )
    })

    const stop = (e: DmsError.BrokerError) => Deferred.unsafeDone(stopped, Effect.fail(e))

    // One connection's life: open it, set it up, publish it, wait until it is lost. Failing hands over
    // to the reconnect schedule; the scope closes whatever was opened.
    const cycle = Effect.gen(function*() {
      if (ready.done) ready = newReady()
      const attempt = ready
      const opened = yield* Effect.exit(open)
      if (Exit.isFailure(opened)) {
        failures++
        const failure = Cause.failureOption(opened.cause)
        if (!closing && Option.isSome(failure)) {
          // Before `next` hears of it, so that a caller of `next` can tell a permanent failure.
          if (isPermanent(failure.value)) stop(failure.value)
          else {
            log(failures === 1 ? "Warning" : "Debug", "cannot connect to the broker; retrying", {
              reason: failure.value.reason,
              attempt: failures
            })
          }
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
      // Which node is news when there was a choice, or after a loss; a one-off CLI call stays quiet.
      log(options.urls.length > 1 || connections > 0 ? "Info" : "Debug", "connected to the broker", {
        node: link.node,
        connectionName: options.connectionName
      })
      connections++
      return yield* Effect.flatMap(Deferred.await(link.lost), Effect.fail)
    }).pipe(Effect.scoped)

    const supervisor = cycle.pipe(
      Effect.retry({ schedule: options.reconnectSchedule, while: (e) => !isPermanent(e) }),
      Effect.catchAll((e) =>
        Effect.sync(() => {
          const final = isPermanent(e) ? e : brokerError(`gave up reconnecting to ${displayUrl}: ${e.reason}`)
          log("Warning", isPermanent(e) ? "stopped: the broker refuses the setup" : "gave up reconnecting to the broker", {
            reason: e.reason
          })
          stop(final)
          if (ready.done) ready = newReady()
          settle(ready, Effect.fail(final))
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
            link.alive && link.live !== undefined ? Effect.succeed(link.live) : Effect.fail(brokerError(`the connection to ${link.node} was lost`))
          )
        )
      ),
      isClosing: () => closing,
      stopped: Deferred.await(stopped)
    }
  })
