/**
 * Is a DMS server listening on a queue? A passive check on a throwaway channel makes sure the queue
 * exists and has a consumer, re-checking for a short window (the fast-fail window) to ride out a server
 * restart. A successful answer is cached for a TTL, and refreshed in the background past half of it, so
 * the hot path never waits for a check; concurrent callers share the check in flight.
 */
import type { ChannelModel } from "amqplib"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as DmsError from "../DmsError.js"
import { brokerError, closeQuietly, millis } from "./amqpCommon.js"
import type { Tools } from "./amqpCommon.js"

/**
 * How queues are checked.
 */
export interface Settings {
  /** How long one check may take. */
  readonly connectTimeout: Duration.Duration
  /** How long a missing queue or a queue without consumer is re-checked before failing. */
  readonly fastFailWindow: Duration.Duration
  /** How long a successful check is trusted. */
  readonly queueCheckCacheTtl: Duration.Duration
}

/**
 * The connection to check on, if there is one now (read again before every re-check).
 */
export type ModelNow = () => ChannelModel | undefined

/**
 * How much the last successful check of a queue is still worth: `fresh` (trust it), `aging` (trust it,
 * but refresh it in the background), `stale` (check before publishing).
 */
export type Freshness = "fresh" | "aging" | "stale"

/**
 * The queue checks and their cache.
 */
export interface QueueCheck {
  /** How fresh the cached answer for `queue` is. */
  readonly freshness: (queue: string) => Freshness
  /** Starts a check in the background (or joins the one in flight); never waits for it. */
  readonly refresh: (host: string, queue: string, model: ModelNow) => Effect.Effect<void>
  /**
   * Succeeds when the cached answer is still trusted (refreshing it if aging), or else once a check
   * finds a consumer; fails with a `BrokerError` (`notDelivered`) naming the host otherwise.
   */
  readonly ensure: (host: string, queue: string, model: ModelNow) => Effect.Effect<void, DmsError.BrokerError>
  /** Forgets the answer for `queue`: the server may be gone, check again before the next request. */
  readonly forget: (queue: string) => void
  /** Forgets every answer (the connection was lost). */
  readonly forgetAll: () => void
}

type QueueState = "ok" | "missing" | "idle"

class NoServer {
  readonly _tag = "NoServer"
  constructor(readonly state: Exclude<QueueState, "ok">) {}
}

const isNotFound = (e: unknown): boolean => (e as { code?: unknown } | null)?.code === 404

/**
 * The queue checks of one client. Checks run in the current scope, so a caller that gives up does not
 * cancel a check others wait for; closing the scope ends them.
 */
export const make = (settings: Settings, tools: Tools): Effect.Effect<QueueCheck, never, Scope.Scope> =>
  Effect.gen(function*() {
    const layerScope = yield* Effect.scope
    const { closedError, displayUrl, safe } = tools
    const connectTimeoutMs = millis(settings.connectTimeout)
    const ttlMs = millis(settings.queueCheckCacheTtl)
    const windowMs = millis(settings.fastFailWindow)

    // queue -> epoch ms of the last successful check; queue -> check in flight
    const checkedAt = new Map<string, number>()
    const checks = new Map<string, Deferred.Deferred<void, DmsError.BrokerError>>()

    // A passive declare on a throwaway channel: a missing queue closes the channel it is checked on, and
    // that must never be the channel requests are pending on.
    const checkOnce = (host: string, queue: string, modelNow: ModelNow): Effect.Effect<QueueState, DmsError.BrokerError> =>
      Effect.suspend(() => {
        const model = modelNow()
        if (model === undefined) {
          return Effect.fail(brokerError(`not connected to ${displayUrl}`, { host, queue, notDelivered: true }))
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

    const checkWithWindow = (host: string, queue: string, model: ModelNow): Effect.Effect<void, DmsError.BrokerError> =>
      checkOnce(host, queue, model).pipe(
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

    // Starts a check of `queue`, or joins the one in flight.
    const startCheck = (host: string, queue: string, model: ModelNow) =>
      Effect.suspend(() => {
        const inFlight = checks.get(queue)
        if (inFlight !== undefined) return Effect.succeed(inFlight)
        const done = Deferred.unsafeMake<void, DmsError.BrokerError>(FiberId.none)
        checks.set(queue, done)
        return checkWithWindow(host, queue, model).pipe(
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

    const freshness = (queue: string): Freshness => {
      const at = checkedAt.get(queue)
      const age = at === undefined ? Infinity : Date.now() - at
      return !(age < ttlMs) ? "stale" : age >= ttlMs / 2 ? "aging" : "fresh"
    }

    return {
      freshness,
      refresh: (host, queue, model) => Effect.asVoid(startCheck(host, queue, model)),
      ensure: (host, queue, model) =>
        Effect.suspend(() => {
          switch (freshness(queue)) {
            case "fresh":
              return Effect.void
            case "aging":
              return Effect.asVoid(startCheck(host, queue, model))
            case "stale":
              return Effect.flatMap(startCheck(host, queue, model), Deferred.await)
          }
        }),
      forget: (queue) => void checkedAt.delete(queue),
      forgetAll: () => checkedAt.clear()
    }
  })
