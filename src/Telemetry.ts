/**
 * Traces, metrics and logs for the client, the CLI and the server, with the ecosystem's tools:
 *
 * - {@link layerConfig}: OpenTelemetry tracing (`@effect/opentelemetry` + the OpenTelemetry SDK, OTLP
 *   over HTTP with JSON), switched on and configured by the standard variables
 *   (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, `OTEL_SERVICE_NAME`,
 *   `OTEL_RESOURCE_ATTRIBUTES`, …). When no endpoint is set it is an empty layer and nothing is loaded.
 * - {@link layerMetricsServer}: every Effect metric of the process (`dms_operations_total`, …) in
 *   Prometheus text at `/metrics`, through OpenTelemetry's Prometheus exporter, plus `/healthz` and
 *   `/readyz`.
 * - {@link jsonLogger}: one JSON object a line with the trace and span ids.
 *
 * Requests carry the current span to the DMS server as W3C `traceparent`/`tracestate` headers in any
 * case, so the server continues the caller's trace under whatever tracer the caller uses.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as List from "effect/List"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import * as Tracer from "effect/Tracer"
import * as http from "node:http"
import * as Tracing from "./internal/tracing.js"
import { VERSION } from "./internal/version.js"

/**
 * Telemetry could not be set up (a module failed to load, the metrics port is taken).
 *
 * @since 0.1.0
 * @category errors
 */
export class TelemetryError extends Schema.TaggedError<TelemetryError>()("TelemetryError", {
  reason: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return `telemetry: ${this.reason}`
  }
}

const load = <A>(what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => new TelemetryError({ reason: `cannot load ${what}: ${String(cause)}`, cause }) })

// ---------------------------------------------------------------------------------------------------
// Tracing

/**
 * Options of {@link layerTracing}.
 *
 * @since 0.1.0
 * @category models
 */
export interface TracingOptions {
  /** The OTLP/HTTP traces URL (e.g. `http://collector:4318/v1/traces`); default: the exporter's own (env or localhost). */
  readonly url?: string | undefined
  readonly serviceName: string
  readonly serviceVersion?: string | undefined
  /** How often finished spans are sent, in ms (the SDK's default is 5000; `OTEL_BSP_SCHEDULE_DELAY`). */
  readonly scheduledDelayMillis?: number | undefined
}

/**
 * OpenTelemetry tracing over OTLP/HTTP (JSON), loaded when the layer is built: Effect's spans
 * (`dms.mount`, `Broker.request`, the server's) become OpenTelemetry spans with this service's resource
 * (plus `OTEL_RESOURCE_ATTRIBUTES`). A span that is active in OpenTelemetry's context when an Effect
 * runs (a `backup` span of yours) becomes the parent of the DMS spans. Spans still pending are sent
 * when the layer is released.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerTracing = (options: TracingOptions): Layer.Layer<never, TelemetryError> =>
  Layer.unwrapEffect(
    load("OpenTelemetry", () =>
      Promise.all([
        import("@effect/opentelemetry/NodeSdk"),
        import("@effect/opentelemetry/Tracer"),
        import("@opentelemetry/sdk-trace-base"),
        import("@opentelemetry/exporter-trace-otlp-http")
      ])).pipe(
        Effect.map(([NodeSdk, OtelTracer, { BatchSpanProcessor }, { OTLPTraceExporter }]) => {
          // A remote parent keeps its tracestate under OpenTelemetry.
          Tracing.setExternalSpan((c) =>
            OtelTracer.makeExternalSpan({ traceId: c.traceId, spanId: c.spanId, traceFlags: c.sampled ? 1 : 0, traceState: c.traceState })
          )
          const exporter = new OTLPTraceExporter(options.url === undefined ? {} : { url: options.url })
          return NodeSdk.layer(() => ({
            resource: { serviceName: options.serviceName, serviceVersion: options.serviceVersion ?? VERSION },
            spanProcessor: new BatchSpanProcessor(
              exporter,
              options.scheduledDelayMillis === undefined ? {} : { scheduledDelayMillis: options.scheduledDelayMillis }
            )
          })).pipe(Layer.discard)
        })
      )
  )

/**
 * The traces URL the standard variables name, if tracing is on: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
 * as is, or `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`; off when neither is set, when
 * `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
 *
 * @since 0.1.0
 * @category config
 */
export const tracesUrlConfig: Config.Config<Option.Option<string>> = Config.all({
  traces: Config.option(Config.string("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")),
  base: Config.option(Config.string("OTEL_EXPORTER_OTLP_ENDPOINT")),
  disabled: Config.withDefault(Config.string("OTEL_SDK_DISABLED"), "false"),
  exporter: Config.withDefault(Config.string("OTEL_TRACES_EXPORTER"), "otlp")
}).pipe(Config.map(({ base, disabled, exporter, traces }) => {
  if (disabled.trim().toLowerCase() === "true" || exporter.trim().toLowerCase() === "none") return Option.none()
  const direct = Option.filter(traces, (t) => t.trim() !== "")
  if (Option.isSome(direct)) return Option.some(direct.value.trim())
  return Option.map(Option.filter(base, (b) => b.trim() !== ""), (b) => `${b.trim().replace(/\/+$/, "")}/v1/traces`)
}))

/**
 * The service name: `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`, else `fallback`.
 */
const serviceNameConfig = (fallback: string) =>
  Config.all({
    name: Config.option(Config.string("OTEL_SERVICE_NAME")),
    attributes: Config.withDefault(Config.string("OTEL_RESOURCE_ATTRIBUTES"), "")
  }).pipe(Config.map(({ attributes, name }) => {
    const fromAttributes = attributes.split(",").map((kv) => kv.split("=")).find(([k]) => k?.trim() === "service.name")?.[1]?.trim()
    return Option.getOrElse(Option.filter(name, (n) => n.trim() !== ""), () => fromAttributes || fallback)
  }))

/**
 * Tracing as the standard OpenTelemetry variables say (see {@link tracesUrlConfig}); an empty layer,
 * with nothing loaded, when they do not switch it on. The one layer a library user adds:
 * `Effect.provide(Telemetry.layerConfig({ serviceName: "my-backup" }))`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (options: { readonly serviceName: string }): Layer.Layer<never, TelemetryError> =>
  Layer.unwrapEffect(
    Effect.all({
      url: tracesUrlConfig,
      serviceName: serviceNameConfig(options.serviceName),
      delay: Config.option(Config.integer("OTEL_BSP_SCHEDULE_DELAY"))
    }).pipe(
      Effect.orElseSucceed(() => ({ url: Option.none<string>(), serviceName: options.serviceName, delay: Option.none<number>() })),
      Effect.map(({ delay, serviceName, url }) =>
        Option.match(url, {
          onNone: () => Layer.empty,
          onSome: (url) => layerTracing({ url, serviceName, scheduledDelayMillis: Option.getOrUndefined(delay) })
        })
      )
    )
  )

// ---------------------------------------------------------------------------------------------------
// Metrics

/**
 * Options of {@link layerMetricsServer}.
 *
 * @since 0.1.0
 * @category models
 */
export interface MetricsServerOptions {
  /** 0 picks a free port (see {@link MetricsServer}). */
  readonly port: number
  /** Default `127.0.0.1`. */
  readonly host?: string | undefined
  /** `/readyz` answers 200 while this is true, 503 otherwise. Default: always ready. */
  readonly ready?: Effect.Effect<boolean> | undefined
  /** Runs before each scrape: where gauges read at scrape time are set. */
  readonly beforeScrape?: Effect.Effect<void> | undefined
}

/**
 * The running metrics endpoint.
 *
 * @since 0.1.0
 * @category tags
 */
export class MetricsServer extends Context.Tag("trilio-dms/Telemetry/MetricsServer")<
  MetricsServer,
  { readonly host: string; readonly port: number }
>() {}

/**
 * Serves every Effect metric of the process in Prometheus text at `/metrics` (OpenTelemetry's
 * Prometheus exporter reading Effect's metric registry through `@effect/opentelemetry`), `/healthz`
 * (the process answers) and `/readyz`. Loaded when built; closed with its scope.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMetricsServer = (options: MetricsServerOptions): Layer.Layer<MetricsServer, TelemetryError> =>
  Layer.scoped(
    MetricsServer,
    Effect.gen(function*() {
      const [{ PrometheusExporter }, Metrics, Resource] = yield* load("the Prometheus exporter", () =>
        Promise.all([
          import("@opentelemetry/exporter-prometheus"),
          import("@effect/opentelemetry/Metrics"),
          import("@effect/opentelemetry/Resource")
        ]))
      const exporter = new PrometheusExporter({ preventServerStart: true, withoutScopeInfo: true })
      const scope = yield* Effect.scope
      yield* Layer.buildWithScope(Metrics.layer(() => exporter).pipe(Layer.provide(Resource.layerFromEnv())), scope)
      const runPromise = Runtime.runPromise(yield* Effect.runtime<never>())
      const ready = options.ready ?? Effect.succeed(true)
      const beforeScrape = options.beforeScrape ?? Effect.void
      const host = options.host ?? "127.0.0.1"
      const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
        const url = (req.url ?? "/").split("?")[0]
        const plain = (status: number, body: string) => {
          res.writeHead(status, { "content-type": "text/plain; charset=utf-8" })
          res.end(body)
        }
        if (req.method !== "GET" && req.method !== "HEAD") return plain(405, "method not allowed\n")
        switch (url) {
          case "/metrics":
            return void runPromise(Effect.ignore(beforeScrape)).then(() => exporter.getMetricsRequestHandler(req, res))
          case "/healthz":
            return plain(200, "ok\n")
          case "/readyz":
            return void runPromise(ready).then((r) => (r ? plain(200, "ready\n") : plain(503, "not consuming\n")))
          default:
            return plain(404, "not found: try /metrics, /healthz, /readyz\n")
        }
      }
      const server = yield* Effect.acquireRelease(
        Effect.async<http.Server, TelemetryError>((resume) => {
          const server = http.createServer(handler)
          server.once("error", (cause) =>
            resume(Effect.fail(new TelemetryError({ reason: `cannot serve metrics on ${host}:${options.port}: ${cause.message}`, cause }))))
          server.listen(options.port, host, () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
          server.closeAllConnections()
        })
      )
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : options.port
      yield* Effect.logInfo(`serving metrics on http://${host}:${port}/metrics`)
      return { host, port }
    })
  )

// ---------------------------------------------------------------------------------------------------
// Logs

/** The JSON logger's level names, as the Python server and `DMS_LOG_LEVEL` spell them. */
const levelName = (label: string) => (label === "WARN" ? "WARNING" : label === "FATAL" ? "CRITICAL" : label)

/**
 * One JSON object a line: `timestamp`, `level`, `message`, `trace_id`/`span_id` of the current span,
 * the log's annotations and spans, `cause` for a failure. Values go through `toJSON`, so a `Redacted`
 * shows as `<redacted>`.
 *
 * @since 0.1.0
 * @category logging
 */
export const jsonLogger: Logger.Logger<unknown, string> = Logger.make(({ annotations, cause, context, date, logLevel, message, spans }) => {
  const span = Context.getOption(FiberRefs.getOrDefault(context, FiberRef.currentContext), Tracer.ParentSpan)
  const messages = Array.isArray(message) ? message : [message]
  const record: Record<string, unknown> = {
    timestamp: date.toISOString(),
    level: levelName(logLevel.label),
    message: messages.length === 1 ? Inspectable.toJSON(messages[0]) : messages.map(Inspectable.toJSON)
  }
  if (Option.isSome(span)) {
    record.trace_id = span.value.traceId
    record.span_id = span.value.spanId
  }
  for (const [key, value] of HashMap.toEntries(annotations)) record[key] = Inspectable.toJSON(value)
  if (List.isCons(spans)) {
    const now = date.getTime()
    record.spans = Object.fromEntries([...spans].map((s) => [s.label, now - s.startTime]))
  }
  if (!Cause.isEmpty(cause)) record.cause = Cause.pretty(cause, { renderErrorCause: true })
  return Inspectable.stringifyCircular(record)
})

/**
 * Makes {@link jsonLogger}, writing to `stream` (stderr by default), the only logger; for
 * `format: "text"`, an empty layer (the caller's loggers stay).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerLogFormat = (format: "text" | "json", stream: NodeJS.WritableStream = process.stderr): Layer.Layer<never> =>
  format === "json"
    ? Layer.scopedDiscard(
      Effect.locallyScoped(
        FiberRef.currentLoggers,
        HashSet.make(Logger.map(jsonLogger, (line) => void stream.write(`${line}\n`)))
      )
    )
    : Layer.empty

/**
 * `DMS_LOG_FORMAT`: `text` (default) or `json`.
 *
 * @since 0.1.0
 * @category config
 */
export const logFormatConfig: Config.Config<"text" | "json"> = Config.literal("text", "json")("DMS_LOG_FORMAT").pipe(
  Config.withDefault("text" as const)
)
