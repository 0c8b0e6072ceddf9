/**
 * Is a DMS server listening on a queue? A passive check makes sure the queue exists and has a consumer,
 * re-checking for a short window (the fast-fail window) to ride out a server restart. A successful
 * answer is cached for a TTL, and refreshed in the background past half of it, so the hot path never
 * waits for a check; concurrent callers share the check in flight.
 *
 * What a client keeps for the hosts it talks to is bounded, however many there are:
 * - the cache holds at most {@link MAX_CACHED_QUEUES} answers, and an answer past its TTL is dropped the
 *   next time one is cached (or read): oldest first, so a storm over many hosts cannot grow it for good;
 * - at most {@link MAX_CONCURRENT_CHECKS} checks run at once, the others wait for a turn, each on a
 *   check channel of its own that is kept for the next check: a check that finds the queue leaves its
 *   channel open, so a channel is opened only when none is idle or after a missing queue (404) made the
 *   broker close one. A storm over 1,000 hosts opens at most that many channels, not 1,000.
 */
import type { Channel, ChannelModel } from "amqplib"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as DmsError from "../DmsError.js"
import { brokerError, closeQuietly, millis } from "./amqpCommon.js"
import type { Tools } from "./amqpCommon.js"

/**
 * How many answers one client caches at most (about 100 bytes each).
 */
export const MAX_CACHED_QUEUES = 10_000

/**
 * How many checks one client runs at once at most, and so how many check channels it keeps open.
 */
export const MAX_CONCURRENT_CHECKS = 8

/**
 * The answers cached by every client of the process: queues whose last check found a DMS server and
 * is still trusted.
 */
export const cachedQueues = Metric.gauge("dms_broker_cached_queue_checks", {
  description: "host queues whose last check found a DMS server and is still trusted, over every client of the process"
})

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
  /** At most this many answers cached. Default {@link MAX_CACHED_QUEUES}. */
  readonly maxCachedQueues?: number | undefined
  /** At most this many checks at once. Default {@link MAX_CONCURRENT_CHECKS}. */
  readonly maxConcurrentChecks?: number | undefined
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
  /**
   * A server on `queue` answered a request: as good as a successful check now (it consumes), so a host
   * answering more often than the TTL is never checked again.
   */
  readonly heard: (queue: string) => void
  /** Forgets every answer and drops the idle check channels (the connection was lost). */
  readonly forgetAll: () => void
}

type QueueState = "ok" | "missing" | "idle"

class NoServer {
  readonly _tag = "NoServer"
  constructor(readonly state: Exclude<QueueState, "ok">) {}
}

const isNotFound = (e: unknown): boolean => (e as { code?: unknown } | null)?.code === 404

interface CheckChannel {
  readonly model: ChannelModel
  readonly channel: Channel
  closed: boolean
}

/**
 * The queue checks of one client. Checks run in the current scope, so a caller that gives up does not
 * cancel a check others wait for; closing the scope ends them and closes the idle check channels.
 */
export const make = (settings: Settings, tools: Tools): Effect.Effect<QueueCheck, never, Scope.Scope> =>
  Effect.gen(function*() {
    const layerScope = yield* Effect.scope
    const { closedError, displayUrl, safe } = tools
    const connectTimeoutMs = millis(settings.connectTimeout)
    const ttlMs = millis(settings.queueCheckCacheTtl)
    const windowMs = millis(settings.fastFailWindow)
    const maxCached = Math.max(1, settings.maxCachedQueues ?? MAX_CACHED_QUEUES)
    const turns = yield* Effect.makeSemaphore(Math.max(1, settings.maxConcurrentChecks ?? MAX_CONCURRENT_CHECKS))

    // queue -> epoch ms of the last successful check, in the order they were cached (oldest first, as an
    // answer cached again is moved to the end); queue -> check in flight
    const checkedAt = new Map<string, number>()
    const checks = new Map<string, Deferred.Deferred<void, DmsError.BrokerError>>()

    const resized = (before: number) => {
      if (checkedAt.size !== before) cachedQueues.unsafeModify(checkedAt.size - before, [])
    }
    const remember = (queue: string) => {
      const before = checkedAt.size
      const now = Date.now()
      checkedAt.delete(queue)
      checkedAt.set(queue, now)
      for (const [q, at] of checkedAt) {
        if (checkedAt.size > maxCached || !(now - at < ttlMs)) checkedAt.delete(q)
        else break
      }
      resized(before)
    }
    const drop = (queue: string) => {
      const before = checkedAt.size
      checkedAt.delete(queue)
      resized(before)
    }
    const dropAll = () => {
      const before = checkedAt.size
      checkedAt.clear()
      resized(before)
    }

    // Check channels kept between checks, of the connection they were opened on. A missing queue closes
    // the channel it is checked on, which must never be the channel requests are pending on.
    let idle: Array<CheckChannel> = []
    const closeIdle = () => {
      const channels = idle
      idle = []
      return Effect.forEach(channels, (c) => (c.closed ? Effect.void : closeQuietly(() => c.channel.close())), { discard: true })
    }
    yield* Effect.addFinalizer(() => Effect.zipRight(closeIdle(), Effect.sync(dropAll)))

    const takeChannel = (model: ChannelModel): Promise<CheckChannel> => {
      for (let c = idle.pop(); c !== undefined; c = idle.pop()) {
        if (!c.closed && c.model === model) return Promise.resolve(c)
      }
      return model.createChannel().then((channel) => {
        const c: CheckChannel = { model, channel, closed: false }
        channel.on("error", () => {})
        channel.on("close", () => void (c.closed = true))
        return c
      })
    }

    // Only a check that got its answer gives its channel back: after a 404 the broker closes it, and after
    // a failure or a timeout its state is unknown.
    const giveBack = (c: CheckChannel, exit: Exit.Exit<QueueState, DmsError.BrokerError>): Effect.Effect<void> => {
      if (c.closed) return Effect.void
      if (Exit.isFailure(exit)) return closeQuietly(() => c.channel.close())
      return exit.value === "missing" ? Effect.void : Effect.sync(() => void idle.push(c))
    }

    const checkOnce = (host: string, queue: string, modelNow: ModelNow): Effect.Effect<QueueState, DmsError.BrokerError> =>
      Effect.suspend(() => {
        const model = modelNow()
        if (model === undefined) {
          return Effect.fail(brokerError(`not connected to ${displayUrl}`, { host, queue, notDelivered: true }))
        }
        return Effect.acquireUseRelease(
          Effect.tryPromise({
            try: () => takeChannel(model),
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
          giveBack
        ).pipe(
          Effect.timeoutFail({
            duration: settings.connectTimeout,
            onTimeout: () =>
              brokerError(`checking ${queue} took more than ${connectTimeoutMs} ms`, { host, queue, notDelivered: true })
          }),
          // The timeout starts with the turn: waiting for one is bounded by the caller's own deadline.
          turns.withPermits(1)
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
              if (Exit.isSuccess(exit)) remember(queue)
              else drop(queue)
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
      if (at === undefined) return "stale"
      const age = Date.now() - at
      if (!(age < ttlMs)) {
        drop(queue)
        return "stale"
      }
      return age >= ttlMs / 2 ? "aging" : "fresh"
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
      forget: drop,
      heard: remember,
      forgetAll: () => {
        dropAll()
        idle = []
      }
    }
  })
