/**
 * The services a command needs, built only when the command runs (so `--help` needs no environment):
 * the configuration (flags > environment > client.conf > defaults), the ledger alone for queries, or
 * the whole client for mount and unmount.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as Broker from "../Broker.js"
import * as Dms from "../Dms.js"
import * as DmsConfig from "../DmsConfig.js"
import type * as DmsError from "../DmsError.js"
import * as Ledger from "../Ledger.js"

/**
 * Defaults for the two URLs the guide makes required, used only when neither the environment nor
 * client.conf sets them (the demo's embedded ledger and in-process broker; `memory:` for commands that
 * never talk to a server).
 *
 * @since 0.1.0
 * @category models
 */
export interface UrlDefaults {
  readonly dbUrl?: string | undefined
  readonly rabbitmqUrl?: string | undefined
}

/**
 * The resolved configuration, the options that produce it, and which URLs fell back to a default.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolved {
  readonly settings: DmsConfig.Settings
  readonly options: DmsConfig.Options
  readonly defaulted: ReadonlyArray<"dbUrl" | "rabbitmqUrl">
}

const isRequiredIssue = (issue: DmsError.Issue, fileKey: string) =>
  issue.path === fileKey && issue.message.startsWith("is required")

/**
 * Resolves the configuration as the library does (`DmsConfig.fromEnv`); a required URL that nothing
 * sets takes its default from `defaults`, if there is one.
 *
 * @since 0.1.0
 * @category config
 */
export const resolve = (
  options: DmsConfig.Options,
  defaults: UrlDefaults = {}
): Effect.Effect<Resolved, DmsError.ValidationError> =>
  DmsConfig.fromEnv(options).pipe(
    Effect.map((settings): Resolved => ({ settings, options, defaulted: [] })),
    Effect.catchTag("ValidationError", (error) => {
      const defaulted: Array<"dbUrl" | "rabbitmqUrl"> = []
      const filled: { -readonly [K in keyof DmsConfig.Options]: DmsConfig.Options[K] } = { ...options }
      for (const key of ["dbUrl", "rabbitmqUrl"] as const) {
        const value = defaults[key]
        if (value !== undefined && error.issues.some((i) => isRequiredIssue(i, DmsConfig.keys[key].file))) {
          filled[key] = value
          defaulted.push(key)
        }
      }
      if (defaulted.length === 0) return Effect.fail(error)
      return Effect.map(DmsConfig.fromEnv(filled), (settings): Resolved => ({ settings, options: filled, defaulted }))
    })
  )

/**
 * The ledger and the configuration, for commands that only read or write the ledger (status, mounts,
 * history, migrate): `DMS_RABBITMQ_URL` is not needed for them.
 *
 * @since 0.1.0
 * @category layers
 */
export const ledgerLayer = (
  options: DmsConfig.Options
): Layer.Layer<Ledger.Ledger | DmsConfig.DmsConfig, Dms.LayerError> =>
  Layer.unwrapEffect(
    Effect.map(resolve(options, { rabbitmqUrl: "memory:" }), ({ settings }) =>
      Layer.mergeAll(Ledger.layerConfig(), Logger.minimumLogLevel(settings.logLevel)).pipe(
        Layer.provideMerge(Layer.succeed(DmsConfig.DmsConfig, settings))
      ))
  )

/**
 * Everything a mount or an unmount needs, from the configuration; `server` answers a `memory:` broker
 * URL (the demo).
 *
 * @since 0.1.0
 * @category layers
 */
export const clientLayer = (
  options: DmsConfig.Options,
  extra: { readonly server?: Broker.MemoryHandler | undefined; readonly defaults?: UrlDefaults | undefined } = {}
): Layer.Layer<Dms.Services, Dms.LayerError> =>
  Layer.unwrapEffect(
    Effect.map(
      resolve(options, extra.defaults),
      (resolved) => Dms.layerSettings(resolved.settings, { server: extra.server })
    )
  )
