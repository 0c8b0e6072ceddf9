/**
 * TCP stand-ins for a broker that does not answer: a listener that accepts and never speaks (a client
 * stays in the AMQP handshake), and a proxy to RabbitMQ whose client-to-broker direction a test can
 * hold (what the client sends, e.g. a channel open for a queue check, waits until released), built on
 * {@link relay}, the plain TCP relay other proxies (test/support/mysqlProxy.ts) build on too.
 * All bind 127.0.0.1 on a random port and are closed with the scope.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import * as net from "node:net"

/** The URL `url` (credentials, vhost) pointed at 127.0.0.1:`port`. */
export const urlOnPort = (url: string, port: number): string => {
  const u = new URL(url)
  u.hostname = "127.0.0.1"
  u.port = String(port)
  return u.toString()
}

const listen = (server: net.Server): Effect.Effect<number, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<number, Error>((resume) => {
      server.once("error", (e) => resume(Effect.fail(e)))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
    }),
    () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
  )

export interface Silent {
  readonly port: number
  /** Completes when a client has connected. */
  readonly accepted: Deferred.Deferred<void>
  /** Closes every accepted socket (a client waiting in its handshake then fails at once). */
  readonly dropAll: Effect.Effect<void>
}

/** A listener that accepts connections and never sends a byte. */
export const silentListener: Effect.Effect<Silent, Error, Scope.Scope> = Effect.gen(function*() {
  const accepted = yield* Deferred.make<void>()
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("error", () => {})
    socket.on("close", () => sockets.delete(socket))
    Deferred.unsafeDone(accepted, Effect.void)
  })
  const dropAll = Effect.sync(() => {
    for (const s of sockets) s.destroy()
  })
  const port = yield* listen(server)
  // Before the server's close, which waits for its connections to end.
  yield* Effect.addFinalizer(() => dropAll)
  return { port, accepted, dropAll }
})

export interface HoldingProxy {
  readonly port: number
  /** From now on, what clients send is kept back, not forwarded. */
  readonly hold: Effect.Effect<void>
  /** Forwards what was kept back, and everything after. */
  readonly release: Effect.Effect<void>
}

/**
 * Listens on 127.0.0.1 (a random port) and connects each client to `host:port`; `wire` sets how bytes
 * flow between the two, and may return what to do once the link has ended. Either side closing ends
 * the link; every link is ended with the scope.
 */
export const relay = (
  host: string,
  port: number,
  wire: (client: net.Socket, upstream: net.Socket) => (() => void) | void
): Effect.Effect<number, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const ends = new Set<() => void>()
    const server = net.createServer((client) => {
      const upstream = net.connect(port, host)
      const ended = wire(client, upstream)
      const end = () => {
        if (!ends.delete(end)) return
        client.destroy()
        upstream.destroy()
        ended?.()
      }
      ends.add(end)
      client.on("error", end).on("close", end)
      upstream.on("error", end).on("close", end)
    })
    const bound = yield* listen(server)
    // Before the server's close, which waits for its connections to end.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const end of [...ends]) end()
      })
    )
    return bound
  })

/** A proxy to `target` (host:port of an AMQP URL) whose client-to-broker direction can be held. */
export const holdingProxy = (target: string): Effect.Effect<HoldingProxy, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const { hostname, port: targetPort } = new URL(target)
    const state = { held: false }
    const links = new Set<{ readonly upstream: net.Socket; readonly kept: Array<Buffer> }>()
    const port = yield* relay(hostname, Number(targetPort || 5672), (client, upstream) => {
      const link = { upstream, kept: [] as Array<Buffer> }
      links.add(link)
      upstream.on("data", (chunk: Buffer) => client.write(chunk))
      client.on("data", (chunk: Buffer) => (state.held ? link.kept.push(chunk) : upstream.write(chunk)))
      return () => void links.delete(link)
    })
    const release = Effect.sync(() => {
      state.held = false
      for (const link of links) {
        for (const chunk of link.kept.splice(0)) link.upstream.write(chunk)
      }
    })
    return { port, hold: Effect.sync(() => void (state.held = true)), release }
  })
