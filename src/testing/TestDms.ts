/**
 * The whole client on memory, for a user's unit tests: `DmsConfig`, the memory `Ledger` and the memory
 * `Broker` served by a {@link FakeDmsServer.Service}, which the test reaches as the `FakeDmsServer`
 * service (Effect) or as `server` next to a `DMSClient` (Promise). No database, no RabbitMQ, no handler
 * of the test's own.
 *
 * ```ts
 * const server = yield* FakeDmsServer.FakeDmsServer
 * yield* Mount.withMount(request, (m) => backup(m.mountPath))
 * assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
 * // …provided with Effect.provide(TestDms.layer())
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Broker from "../Broker.js"
import type * as Dms from "../Dms.js"
import * as DmsConfig from "../DmsConfig.js"
import type * as DmsError from "../DmsError.js"
import * as Ledger from "../Ledger.js"
import { DMSClient } from "../promise.js"
import * as FakeDmsServer from "./FakeDmsServer.js"

/**
 * Options of {@link layer} and {@link client}: the configuration a test may want to set (timeouts in
 * seconds or as Durations, the log level, a default Keystone token), and state to share.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends Pick<DmsConfig.Options, "timeout" | "lockTimeout" | "logLevel" | "keystoneToken"> {
  /** The fake server to serve from (default: a fresh one per build of the layer). */
  readonly server?: FakeDmsServer.Service | undefined
  /**
   * The ledger's tables (default: fresh ones per build of the layer). Share one between two layers to
   * model two client processes on one database, with one `server` for both.
   */
  readonly ledger?: Ledger.MemoryState | undefined
}

/**
 * What {@link layer} provides: everything `Mount` and `Reconcile` need, and the fake server.
 *
 * @since 0.1.0
 * @category models
 */
export type Services = Dms.Services | FakeDmsServer.FakeDmsServer

/**
 * The client's services on memory with a fake DMS server behind the broker. Each build of the layer
 * starts empty (unless `server` / `ledger` are given): provide it per test for a fresh world. It fails
 * only on a bad option, with a `ValidationError`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Services, DmsError.ValidationError> =>
  Layer.unwrapEffect(
    Effect.sync(() => {
      const server = options.server ?? FakeDmsServer.make()
      const config = DmsConfig.layer({
        dbUrl: "memory:",
        rabbitmqUrl: "memory:",
        timeout: options.timeout,
        lockTimeout: options.lockTimeout,
        logLevel: options.logLevel,
        keystoneToken: options.keystoneToken
      })
      // As Dms.layer wires them, with the ledger and the broker on memory.
      const ledgerAndLogs = Layer.unwrapEffect(
        Effect.map(DmsConfig.DmsConfig, (c) =>
          Layer.merge(
            Ledger.layerMemory({ state: options.ledger, lockTimeout: c.lockTimeout }),
            Logger.minimumLogLevel(c.logLevel)
          ))
      )
      return Layer.mergeAll(
        ledgerAndLogs,
        Broker.layerMemory(server.handler),
        Layer.succeed(FakeDmsServer.FakeDmsServer, server)
      ).pipe(Layer.provideMerge(config))
    })
  )

/**
 * A Promise client on memory, its fake server, and its ledger's tables.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestClient {
  readonly client: DMSClient
  readonly server: FakeDmsServer.Service
  readonly ledger: Ledger.MemoryState
}

/**
 * A `DMSClient` on memory for a Promise test, and the fake server behind it. The ledger's tables and
 * the server outlive `client.close()`: a client used again after closing sees the same world, as one
 * on a real database and real hosts would.
 *
 * @since 0.1.0
 * @category constructors
 */
export const client = (options: Options = {}): TestClient => {
  const server = options.server ?? FakeDmsServer.make()
  const ledger = options.ledger ?? Ledger.makeMemoryState()
  return { client: new DMSClient({ layer: layer({ ...options, server, ledger }) }), server, ledger }
}
