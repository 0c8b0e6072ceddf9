/**
 * A stateful fake DMS server for `Broker.layerMemory`, for unit tests of code that mounts backup
 * targets. It keeps each host's mounts and answers as the real server does (mount when already mounted
 * → success, unmount when not mounted → success, `status` with the mounts and their target ids), refuses
 * a request that arrives past its deadline, and records every request it received and every state
 * transition it made. A test can script it: fail requests, hold one at a gate until the test releases
 * it, delay requests, "reboot" a host behind the ledger's back, or turn `status` off as the Python
 * server has it.
 *
 * Time is Effect's `Clock` (the same clock `Broker.layerMemory` measures deadlines on), so `TestClock`
 * drives its deadlines and delays.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import type * as Broker from "../Broker.js"
import * as Protocol from "../Protocol.js"

/**
 * A change of a host's mount table made by the fake server.
 *
 * @since 0.1.0
 * @category models
 */
export interface Transition {
  readonly host: string
  readonly path: string
  readonly to: "mounted" | "unmounted"
}

/**
 * A request as the fake server received it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Received {
  readonly host: string
  /** `"mount"`, `"unmount"`, `"status"`, or whatever the body said. */
  readonly action: string
  /** `backup_target.filesystem_export_mount_path` (`"undefined"` for a `status` request). */
  readonly path: string
  /** `backup_target.id` (`"undefined"` for a `status` request). */
  readonly targetId: string
  /** `job.jobid` (or a top-level `jobid`, as the Python client sends it); none for `status`. */
  readonly jobId: number | undefined
  /** The body as it came off the wire (the token in clear). */
  readonly body: Readonly<Record<string, unknown>>
}

/**
 * Which requests a script applies to: an action (`"mount"`, `"unmount"`, `"status"`) or a predicate.
 *
 * @since 0.1.0
 * @category models
 */
export type Match = string | ((request: Received) => boolean)

/**
 * A request held at the server by {@link Service.hold}. The held request has reached the server and
 * is executing; it completes when released, even if its client gave up meanwhile, as a real server's
 * slow mount does.
 *
 * @since 0.1.0
 * @category models
 */
export interface Hold {
  /** Waits until a matching request is held, and returns it. */
  readonly arrived: Effect.Effect<Received>
  /** Lets the held request go on; released before it arrived, it does not wait at all. */
  readonly release: Effect.Effect<void>
  /** Waits until the held request, released, has executed, and returns the server's answer. */
  readonly completed: Effect.Effect<Protocol.Reply>
}

/**
 * How often a script applies.
 *
 * @since 0.1.0
 * @category models
 */
export interface ScriptOptions {
  /** The number of matching requests it applies to (default 1; `Infinity` for every one). */
  readonly times?: number | undefined
}

/**
 * The fake server: its state, what it saw, and its scripts. Reads are plain values; scripting is
 * synchronous, so it serves Effect tests and Promise tests alike. A script is taken by the first
 * matching request that arrives after it was set, in arrival order.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** The `Broker.layerMemory` handler that serves requests from this server. */
  readonly handler: Broker.MemoryHandler
  /** Executes one request body for a host, as the server would (also for a front on a real queue). */
  readonly respond: (host: string, body: Readonly<Record<string, unknown>>, deadline: number) => Effect.Effect<Protocol.Reply>
  /** host → mount path → target id. Edit it to put a mount on a host behind the ledger's back. */
  readonly mounts: Map<string, Map<string, string>>
  /** Every mount and unmount the server made, in order. */
  readonly transitions: ReadonlyArray<Transition>
  /** Every request received, in arrival order (also those refused or failed by a script). */
  readonly received: ReadonlyArray<Received>
  /** Whether `path` is mounted on `host` (by mount path, as the host's mount table says). */
  readonly isMounted: (host: string, path: string) => boolean
  /** The target ids mounted on `host`, in the order they were mounted. */
  readonly mountedTargets: (host: string) => ReadonlyArray<string>
  /**
   * The next matching request (or `times` of them) answers `status: "error"` with `message` instead of
   * executing; the client sees `MountError { reason: "server", errorMsg: message }`.
   */
  readonly fail: (match: Match, message: string, options?: ScriptOptions) => void
  /** Holds the next matching request at the server until the returned {@link Hold} is released. */
  readonly hold: (match: Match) => Hold
  /** The next matching request (or `times` of them) executes after `duration` on Effect's `Clock`. */
  readonly delay: (match: Match, duration: Duration.DurationInput, options?: ScriptOptions) => void
  /** A host reboot: every mount of the host is gone, behind the ledger's back. */
  readonly reboot: (host: string) => void
  /** Answers `status` (default true); off, it answers as the Python server: `Unknown action: status`. */
  supportsStatus: boolean
  /** Mounts under the base that the server did not make: listed by `status` with a null target id. */
  readonly foreign: Array<{ readonly host: string; readonly path: string }>
  /**
   * Runs before a request executes (after its scripts were taken); may block it (e.g. on a Deferred).
   * The low-level form of {@link Service.hold}; by default it lets everything through.
   */
  gate: (request: Received) => Effect.Effect<void>
  /** When set, the next request of that action answers this error; the low-level form of {@link Service.fail}. */
  failNext: { readonly action: string; readonly message: string } | undefined
}

/**
 * The fake server as a service, for a test to reach the one behind its layers.
 *
 * @since 0.1.0
 * @category tags
 */
export class FakeDmsServer extends Context.Tag("trilio-dms/testing/FakeDmsServer")<FakeDmsServer, Service>() {}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Whether it answers `status` (default true). */
  readonly supportsStatus?: boolean | undefined
}

interface HoldState {
  readonly arrived: Deferred.Deferred<Received>
  readonly released: Deferred.Deferred<void>
  readonly completed: Deferred.Deferred<Protocol.Reply>
}

interface Script<A> {
  readonly matches: (request: Received) => boolean
  left: number
  readonly value: A
}

const matcher = (match: Match): (request: Received) => boolean =>
  typeof match === "string" ? (request) => request.action === match : match

/** Takes one use of the first script that matches, if any. */
const take = <A>(scripts: Array<Script<A>>, request: Received): A | undefined => {
  const i = scripts.findIndex((s) => s.matches(request))
  const script = scripts[i]
  if (script === undefined) return undefined
  script.left -= 1
  if (script.left <= 0) scripts.splice(i, 1)
  return script.value
}

const timesOf = (options: ScriptOptions | undefined): number => {
  const times = options?.times ?? 1
  if (!(times >= 1)) throw new RangeError(`times must be at least 1, got ${times}`)
  return times
}

const received = (host: string, body: Readonly<Record<string, unknown>>): Received => {
  const target = (body.backup_target ?? {}) as Record<string, unknown>
  const job = (body.job ?? {}) as Record<string, unknown>
  const jobId = job.jobid ?? body.jobid
  return {
    host,
    action: String(body.action),
    path: String(target.filesystem_export_mount_path),
    targetId: String(target.id),
    jobId: typeof jobId === "number" ? jobId : undefined,
    body
  }
}

/**
 * A fresh fake server, with nothing mounted anywhere.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Service => {
  const mounts = new Map<string, Map<string, string>>()
  const transitions: Array<Transition> = []
  const requests: Array<Received> = []
  const failures: Array<Script<string>> = []
  const holds: Array<Script<HoldState>> = []
  const delays: Array<Script<Duration.DurationInput>> = []
  const hostMounts = (host: string) => {
    let m = mounts.get(host)
    if (m === undefined) {
      m = new Map()
      mounts.set(host, m)
    }
    return m
  }
  const execute = (request: Received): Protocol.Reply => {
    const m = hostMounts(request.host)
    const { host, path } = request
    switch (request.action) {
      case "status": {
        if (!server.supportsStatus) return Protocol.failure("Unknown action: status")
        const entry = (id: string | null, path: string) => ({
          backup_target_id: id,
          type: null,
          mount_path: path,
          source: null,
          fs_type: null,
          mounted: true,
          pid: null,
          daemon_alive: null
        })
        const listed = [
          ...[...m.entries()].map(([path, id]) => entry(id, path)),
          ...server.foreign.filter((f) => f.host === host).map((f) => entry(null, f.path))
        ]
        return { ...Protocol.success(`${listed.length} mount(s)`), ...{ mounts: listed } }
      }
      case "mount": {
        if (m.has(path)) return Protocol.success(`Already mounted at ${path}`)
        m.set(path, request.targetId)
        transitions.push({ host, path, to: "mounted" })
        const type = (request.body.backup_target as Record<string, unknown> | undefined)?.type
        return Protocol.success(`${String(type).toUpperCase()} target mounted successfully at ${path}`)
      }
      case "unmount":
        if (!m.has(path)) return Protocol.success(`Target not mounted at ${path}`)
        m.delete(path)
        transitions.push({ host, path, to: "unmounted" })
        return Protocol.success(`Target unmounted successfully from ${path}`)
      default:
        return Protocol.failure(`Unknown action: ${request.action}`)
    }
  }
  const server: Service = {
    mounts,
    transitions,
    received: requests,
    foreign: [],
    supportsStatus: options.supportsStatus ?? true,
    gate: () => Effect.void,
    failNext: undefined,
    // A read: it must not create the host's table (a rebooted host stays without one).
    isMounted: (host, path) => mounts.get(host)?.has(path) ?? false,
    mountedTargets: (host) => [...(mounts.get(host)?.values() ?? [])],
    reboot: (host) => void mounts.delete(host),
    fail: (match, message, scriptOptions) => void failures.push({ matches: matcher(match), left: timesOf(scriptOptions), value: message }),
    delay: (match, duration, scriptOptions) => void delays.push({ matches: matcher(match), left: timesOf(scriptOptions), value: duration }),
    hold: (match) => {
      const state: HoldState = {
        arrived: Deferred.unsafeMake(FiberId.none),
        released: Deferred.unsafeMake(FiberId.none),
        completed: Deferred.unsafeMake(FiberId.none)
      }
      holds.push({ matches: matcher(match), left: 1, value: state })
      return {
        arrived: Deferred.await(state.arrived),
        release: Effect.asVoid(Deferred.succeed(state.released, undefined)),
        completed: Deferred.await(state.completed)
      }
    },
    handler: (request) => server.respond(request.host, request.body, request.deadline),
    respond: (host, body, deadline) =>
      Effect.gen(function*() {
        const request = received(host, body)
        requests.push(request)
        // Like the real server: refuse a request that arrives past its deadline; one that arrived in
        // time runs to the end, even if that is after the client gave up.
        if ((yield* Clock.currentTimeMillis) > deadline) return Protocol.failure("Request expired before it was executed")
        // Scripts are taken on arrival, so the order of arrival decides which request takes which.
        const held = take(holds, request)
        const delayed = take(delays, request)
        const scripted = take(failures, request)
        yield* server.gate(request)
        if (held !== undefined) {
          yield* Deferred.succeed(held.arrived, request)
          yield* Deferred.await(held.released)
        }
        if (delayed !== undefined) yield* Effect.sleep(delayed)
        const legacy = server.failNext?.action === request.action ? server.failNext : undefined
        if (legacy !== undefined) server.failNext = undefined
        const failure = legacy?.message ?? scripted
        const reply = failure === undefined ? execute(request) : Protocol.failure(failure)
        if (held !== undefined) yield* Deferred.succeed(held.completed, reply)
        return reply
      })
  }
  return server
}

/**
 * A fresh fake server as the {@link FakeDmsServer} service.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<FakeDmsServer> => Layer.sync(FakeDmsServer, () => make(options))
