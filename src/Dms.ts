/**
 * One layer for everything `Mount` needs: `DmsConfig`, `Ledger` (MySQL or SQLite by URL) and `Broker`
 * (RabbitMQ), with the configured log level, so an Effect program writes a single `Effect.provide`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Redacted from "effect/Redacted"
import * as Broker from "./Broker.js"
import * as DmsConfig from "./DmsConfig.js"
import * as DmsError from "./DmsError.js"
import * as Ledger from "./Ledger.js"
import * as Urls from "./internal/urls.js"

/**
 * Options of {@link layer}: the configuration, plus tuning of the ledger and the broker.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends DmsConfig.Options {
  readonly ledger?: (Omit<Ledger.LeaseOptions, "lockTimeout"> & { readonly maxConnections?: number | undefined }) | undefined
  readonly broker?: Omit<Broker.AmqpOptions, "url"> | undefined
  /** The in-process DMS server behind a `memory:` broker URL (the demo, tests). */
  readonly server?: Broker.MemoryHandler | undefined
}

/**
 * The services a DMS client needs.
 *
 * @since 0.1.0
 * @category models
 */
export type Services = DmsConfig.DmsConfig | Ledger.Ledger | Broker.Broker

/**
 * Errors building the layer can fail with.
 *
 * @since 0.1.0
 * @category models
 */
export type LayerError = DmsError.ValidationError | DmsError.DatabaseError | DmsError.BrokerError

const brokerLayer = (options: Options): Layer.Layer<Broker.Broker, DmsError.BrokerError | DmsError.ValidationError, DmsConfig.DmsConfig> =>
  Layer.unwrapEffect(
    Effect.map(DmsConfig.DmsConfig, (config): Layer.Layer<Broker.Broker, DmsError.BrokerError | DmsError.ValidationError> => {
      const location = Urls.parseBrokerUrl(Redacted.value(config.rabbitmqUrl))
      if (typeof location !== "string" && location.kind === "memory") {
        return options.server === undefined
          ? Layer.fail<DmsError.BrokerError | DmsError.ValidationError>(
            DmsError.invalid("config", "rabbitmq_url", "memory: needs an in-process DMS server (pass `server`)")
          )
          : Broker.layerMemory(options.server)
      }
      return Broker.layerAmqp({ tls: config.rabbitmqTls, ...options.broker, url: config.rabbitmqUrl })
    })
  )

const fromConfig = (
  config: Layer.Layer<DmsConfig.DmsConfig, DmsError.ValidationError>,
  options: Options
): Layer.Layer<Services, LayerError> =>
  Layer.mergeAll(
    Ledger.layerConfig(options.ledger),
    brokerLayer(options),
    Layer.unwrapEffect(Effect.map(DmsConfig.DmsConfig, (c) => Logger.minimumLogLevel(c.logLevel)))
  ).pipe(Layer.provideMerge(config))

/**
 * Everything from explicit options and defaults (no environment, no client.conf).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Services, LayerError> => fromConfig(DmsConfig.layer(options), options)

/**
 * Everything from explicit options, the environment, `~/.trilio-dms/client.conf` and defaults, as the
 * guide's `DMSClient()` reads them.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (options: Options = {}): Layer.Layer<Services, LayerError> =>
  fromConfig(DmsConfig.layerConfig(options), options)

/**
 * Everything from a configuration already resolved (by `DmsConfig.fromEnv`, say), so that it is not
 * resolved, and its warnings logged, a second time.
 *
 * @since 0.2.0
 * @category layers
 */
export const layerSettings = (
  settings: DmsConfig.Settings,
  options: Omit<Options, keyof DmsConfig.Options> = {}
): Layer.Layer<Services, LayerError> => fromConfig(Layer.succeed(DmsConfig.DmsConfig, settings), options)

/**
 * Checks both services now, instead of on first use: the ledger answers a statement, and the broker is
 * connected (within its connect timeout). Fails with the `DatabaseError` or `BrokerError` that says why.
 *
 * @since 0.1.0
 * @category operations
 */
export const connect: Effect.Effect<void, DmsError.DatabaseError | DmsError.BrokerError, Ledger.Ledger | Broker.Broker> = Effect
  .all([Effect.flatMap(Ledger.Ledger, (l) => l.ping), Effect.flatMap(Broker.Broker, (b) => b.connected)], {
    concurrency: 2,
    discard: true
  })
