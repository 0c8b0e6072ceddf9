/**
 * A fake Barbican on 127.0.0.1 (a free port) for tests: `GET /v1/secrets/<id>` (metadata) and
 * `GET /v1/secrets/<id>/payload`, both requiring `X-Auth-Token` to equal the secret's token (else 401).
 * Every request is recorded; a test can hold payload answers with a gate to keep a mount in flight.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import type * as Scope from "effect/Scope"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

export interface BarbicanRequest {
  readonly method: string
  readonly path: string
  readonly token: string | undefined
  readonly status: number
}

export interface FakeBarbican {
  readonly url: string
  /** Adds a secret readable with `token`; returns its secret_ref. */
  readonly addSecret: (id: string, token: string, payload: unknown) => string
  readonly requests: () => ReadonlyArray<BarbicanRequest>
  /** From now on, payload requests wait until the returned effect is run (which also reopens the gate). */
  readonly hold: () => { readonly arrived: Effect.Effect<void>; readonly release: Effect.Effect<void> }
}

/** Listens on a free port of 127.0.0.1 until the scope closes (running `onClose` first). */
const listen = (server: http.Server, onClose: () => void = () => undefined) =>
  Effect.acquireRelease(
    Effect.async<number, Error>((resume) => {
      server.once("error", (e) => resume(Effect.fail(e)))
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as AddressInfo).port)))
    }),
    () =>
      Effect.async<void>((resume) => {
        onClose()
        server.closeAllConnections()
        server.close(() => resume(Effect.void))
      })
  )

export const startBarbican: Effect.Effect<FakeBarbican, Error, Scope.Scope> = Effect.gen(function*() {
  const secrets = new Map<string, { token: string; payload: string }>()
  const requests: Array<BarbicanRequest> = []
  let gate: { arrived: Deferred.Deferred<void>; release: Deferred.Deferred<void> } | undefined
  const server = http.createServer((req, res) => {
    const token = req.headers["x-auth-token"]
    const tokenText = typeof token === "string" ? token : undefined
    const m = /^\/v1\/secrets\/([^/]+)(\/payload)?$/.exec(req.url ?? "")
    const respond = (status: number, body: string, type = "application/json") => {
      requests.push({ method: req.method ?? "", path: req.url ?? "", token: tokenText, status })
      res.writeHead(status, { "content-type": type })
      res.end(body)
    }
    if (req.method !== "GET" || m === null) return respond(404, JSON.stringify({ title: "Not Found" }))
    const secret = secrets.get(decodeURIComponent(m[1]!))
    if (tokenText === undefined || (secret !== undefined && secret.token !== tokenText)) {
      return respond(401, JSON.stringify({ title: "Unauthorized", description: "The request you have made requires authentication." }))
    }
    if (secret === undefined) return respond(404, JSON.stringify({ title: "Not Found", description: "Secret not found." }))
    if (m[2] === undefined) {
      return respond(200, JSON.stringify({ status: "ACTIVE", secret_type: "opaque", content_types: { default: "text/plain" } }))
    }
    const current = gate
    if (current !== undefined) {
      Deferred.unsafeDone(current.arrived, Effect.void)
      Effect.runFork(Effect.andThen(Deferred.await(current.release), () => respond(200, secret.payload, "text/plain")))
      return
    }
    respond(200, secret.payload, "text/plain")
  })
  const port = yield* listen(server, () => {
    if (gate !== undefined) Deferred.unsafeDone(gate.release, Effect.void)
  })
  const url = `http://127.0.0.1:${port}`
  return {
    url,
    addSecret: (id, token, payload) => {
      secrets.set(id, { token, payload: typeof payload === "string" ? payload : JSON.stringify(payload) })
      return `${url}/v1/secrets/${encodeURIComponent(id)}`
    },
    requests: () => [...requests],
    hold: () => {
      const g = { arrived: Deferred.unsafeMake<void>(FiberId.none), release: Deferred.unsafeMake<void>(FiberId.none) }
      gate = g
      return {
        arrived: Deferred.await(g.arrived),
        release: Effect.sync(() => {
          if (gate === g) gate = undefined
          Deferred.unsafeDone(g.release, Effect.void)
        })
      }
    }
  }
})

export interface Recorder {
  readonly url: string
  /** `METHOD path` of every request received. */
  readonly requests: () => ReadonlyArray<string>
  /** How to answer from now on (default: 404). */
  readonly answer: (respond: (res: http.ServerResponse) => void) => void
}

/** An HTTP server on 127.0.0.1 that records every request: a place a token must never reach. */
export const startRecorder: Effect.Effect<Recorder, Error, Scope.Scope> = Effect.gen(function*() {
  const requests: Array<string> = []
  let respond = (res: http.ServerResponse) => {
    res.writeHead(404)
    res.end()
  }
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`)
    respond(res)
  })
  const port = yield* listen(server)
  return { url: `http://127.0.0.1:${port}`, requests: () => [...requests], answer: (f) => void (respond = f) }
})
