import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Tracing from "../src/internal/tracing.js"
import * as Telemetry from "../src/Telemetry.js"

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

describe("Telemetry", () => {
  it.effect("tracing is on only when an OTLP endpoint is set, and off when disabled", () =>
    Effect.gen(function*() {
      const url = (env: Record<string, string>) => Telemetry.tracesUrlConfig.pipe(withEnv(env))
      assert.isTrue(Option.isNone(yield* url({})))
      assert.deepStrictEqual(yield* url({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318/" }), Option.some("http://c:4318/v1/traces"))
      assert.deepStrictEqual(
        yield* url({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://t:1/x" }),
        Option.some("http://t:1/x")
      )
      assert.isTrue(Option.isNone(yield* url({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_SDK_DISABLED: "true" })))
      assert.isTrue(Option.isNone(yield* url({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318", OTEL_TRACES_EXPORTER: "none" })))
    }))

  it.effect("traceparent: written from the current span, read back; malformed ones start a fresh trace", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* Tracing.headers, {})
      const [span, headers] = yield* Effect.all([Effect.currentSpan, Tracing.headers]).pipe(Effect.withSpan("outer"))
      assert.strictEqual(headers.traceparent, `00-${span.traceId}-${span.spanId}-01`)
      const parsed = Tracing.parse({ ...headers, tracestate: "vendor=x" })
      assert.deepStrictEqual(parsed, Option.some({ traceId: span.traceId, spanId: span.spanId, sampled: true, traceState: "vendor=x" }))
      const bad = [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01"
      ]
      for (const traceparent of bad) assert.isTrue(Option.isNone(Tracing.parse({ traceparent })), traceparent)
      assert.isTrue(Option.isSome(Tracing.parse({ traceparent: Buffer.from("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00") })))
    }))

  it.effect("JSON log lines carry the trace and span ids; a Redacted value stays hidden", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const logger = Logger.map(Telemetry.jsonLogger, (line) => void lines.push(line))
      const span = yield* Effect.logInfo("hello").pipe(
        Effect.annotateLogs({ token: Redacted.make("s3cr3t-value") }),
        Effect.zipRight(Effect.currentSpan),
        Effect.withSpan("work"),
        Effect.provide(Logger.replace(Logger.defaultLogger, logger))
      )
      assert.strictEqual(lines.length, 1)
      const record = JSON.parse(lines[0]!) as Record<string, unknown>
      assert.strictEqual(record.message, "hello")
      assert.strictEqual(record.level, "INFO")
      assert.strictEqual(record.trace_id, span.traceId)
      assert.strictEqual(record.span_id, span.spanId)
      assert.notInclude(lines[0]!, "s3cr3t-value")
    }))
})
