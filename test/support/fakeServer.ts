/**
 * A model DMS server for Broker.layerMemory: keeps each host's mounts, answers as the Python server
 * does (already mounted → success, not mounted → success), refuses requests past their deadline, and
 * records every state transition. Tests can hold a request at a gate or make the next one fail. It
 * answers `status` as the real server does (`mounts` with target ids), unless `supportsStatus` is off
 * (then, as the Python server, `Unknown action: status`).
 */
import * as Effect from "effect/Effect"
import * as Broker from "../../src/Broker.js"
import * as Protocol from "../../src/Protocol.js"

export interface Transition {
  readonly host: string
  readonly path: string
  readonly to: "mounted" | "unmounted"
}

export interface Received {
  readonly host: string
  readonly action: string
  readonly path: string
  readonly targetId: string
  readonly body: Readonly<Record<string, unknown>>
}

export interface FakeServer {
  readonly handler: Broker.MemoryHandler
  /** Executes one request body for a host, as the server would (used by the memory and AMQP fronts). */
  readonly respond: (host: string, body: Readonly<Record<string, unknown>>, deadline: number) => Effect.Effect<Protocol.Reply>
  /** host → path → target id */
  readonly mounts: Map<string, Map<string, string>>
  readonly transitions: Array<Transition>
  readonly received: Array<Received>
  /** Runs before a request executes; may block it (e.g. on a Deferred) or fail it. */
  gate: (request: Received) => Effect.Effect<void>
  /** When set, the next request of that action answers this error instead of executing. */
  failNext: { action: string; message: string } | undefined
  readonly isMounted: (host: string, path: string) => boolean
  /** A host reboot: every mount of the host is gone, behind the ledger's back. */
  readonly reboot: (host: string) => void
  /** Answers `status` (default true); off, it answers as the Python server: `Unknown action: status`. */
  supportsStatus: boolean
  /** Mounts under the base that the server did not make: listed by `status` with a null target id. */
  readonly foreign: Array<{ readonly host: string; readonly path: string }>
}

export const make = (): FakeServer => {
  const mounts = new Map<string, Map<string, string>>()
  const hostMounts = (host: string) => {
    let m = mounts.get(host)
    if (m === undefined) {
      m = new Map()
      mounts.set(host, m)
    }
    return m
  }
  const server: FakeServer = {
    mounts,
    transitions: [],
    received: [],
    gate: () => Effect.void,
    failNext: undefined,
    supportsStatus: true,
    foreign: [],
    isMounted: (host, path) => hostMounts(host).has(path),
    reboot: (host) => mounts.delete(host),
    handler: (request) => server.respond(request.host, request.body, request.deadline),
    respond: (host, body, deadline) =>
      Effect.gen(function*() {
        const request = { host, deadline }
        const target = (body.backup_target ?? {}) as Record<string, unknown>
        const received: Received = {
          host: request.host,
          action: String(body.action),
          path: String(target.filesystem_export_mount_path),
          targetId: String(target.id),
          body
        }
        server.received.push(received)
        // Like the real server: refuse a request that arrives past its deadline; one that arrived in
        // time runs to the end, even if that is after the client gave up.
        if (Date.now() > request.deadline) return Protocol.failure("Request expired before it was executed")
        yield* server.gate(received)
        const fail = server.failNext
        if (fail !== undefined && fail.action === received.action) {
          server.failNext = undefined
          return Protocol.failure(fail.message)
        }
        const m = hostMounts(request.host)
        switch (received.action) {
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
            const mounts = [
              ...[...m.entries()].map(([path, id]) => entry(id, path)),
              ...server.foreign.filter((f) => f.host === request.host).map((f) => entry(null, f.path))
            ]
            const reply: Protocol.Reply = { ...Protocol.success(`${mounts.length} mount(s)`), ...{ mounts } }
            return reply
          }
          case "mount":
            if (m.has(received.path)) return Protocol.success(`Already mounted at ${received.path}`)
            m.set(received.path, received.targetId)
            server.transitions.push({ host: request.host, path: received.path, to: "mounted" })
            return Protocol.success(`${String(target.type).toUpperCase()} target mounted successfully at ${received.path}`)
          case "unmount":
            if (!m.has(received.path)) return Protocol.success(`Target not mounted at ${received.path}`)
            m.delete(received.path)
            server.transitions.push({ host: request.host, path: received.path, to: "unmounted" })
            return Protocol.success(`Target unmounted successfully from ${received.path}`)
          default:
            return Protocol.failure(`Unknown action: ${received.action}`)
        }
      })
  }
  return server
}
