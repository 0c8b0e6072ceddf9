/**
 * W3C trace context over AMQP headers: the client writes `traceparent` (and `tracestate`) from its
 * current span, the server reads them back into the parent of its own spans. Works with Effect's own
 * tracer as with `@effect/opentelemetry`'s, which this module never loads.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/**
 * The W3C trace context header names, as AMQP message headers.
 */
export const TRACEPARENT = "traceparent"
export const TRACESTATE = "tracestate"

/**
 * A parsed `traceparent` (plus `tracestate` when there was one).
 */
export interface TraceContext {
  readonly traceId: string
  readonly spanId: string
  readonly sampled: boolean
  readonly traceState?: string | undefined
}

const pattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/

/**
 * Reads the trace context of a message's headers; none when absent or malformed (a fresh trace then).
 */
export const parse = (headers: Readonly<Record<string, unknown>> | null | undefined): Option.Option<TraceContext> => {
  const raw = headers?.[TRACEPARENT]
  const value = Buffer.isBuffer(raw) ? raw.toString("latin1") : raw
  if (typeof value !== "string") return Option.none()
  const m = pattern.exec(value.trim())
  if (m === null) return Option.none()
  const [, version, traceId, spanId, flags, rest] = m
  // Version ff is invalid; version 00 has exactly four fields; all-zero ids are invalid.
  if (version === "ff" || (version === "00" && rest !== undefined)) return Option.none()
  if (/^0+$/.test(traceId!) || /^0+$/.test(spanId!)) return Option.none()
  const stateRaw = headers?.[TRACESTATE]
  const state = Buffer.isBuffer(stateRaw) ? stateRaw.toString("latin1") : stateRaw
  return Option.some({
    traceId: traceId!,
    spanId: spanId!,
    sampled: (parseInt(flags!, 16) & 1) === 1,
    ...(typeof state === "string" && state !== "" ? { traceState: state } : {})
  })
}

/** How a remote parent becomes an Effect span; `Telemetry` swaps in OpenTelemetry's (keeps tracestate). */
const bridge: { externalSpan: (context: TraceContext) => Tracer.ExternalSpan } = {
  externalSpan: (context) => Tracer.externalSpan({ traceId: context.traceId, spanId: context.spanId, sampled: context.sampled })
}

/**
 * Lets the OpenTelemetry integration build remote parents that carry `tracestate`.
 */
export const setExternalSpan = (make: (context: TraceContext) => Tracer.ExternalSpan): void => {
  bridge.externalSpan = make
}

/**
 * The parent span a message's headers name, if any.
 */
export const parentOf = (headers: Readonly<Record<string, unknown>> | null | undefined): Option.Option<Tracer.ExternalSpan> =>
  Option.map(parse(headers), (context) => bridge.externalSpan(context))

const traceStateOf = (span: Tracer.Span): string | undefined => {
  // An OpenTelemetry-backed span keeps its own span here (@effect/opentelemetry's OtelSpan).
  const otel = (span as { readonly span?: { spanContext?: () => { traceState?: { serialize(): string } } } }).span
  const state = otel?.spanContext?.().traceState?.serialize()
  return state === undefined || state === "" ? undefined : state
}

/**
 * The headers that carry the current span to the other side: none outside a span.
 */
export const headers: Effect.Effect<Record<string, string>> = Effect.map(Effect.option(Effect.currentSpan), (span) => {
  if (Option.isNone(span)) return {}
  const { sampled, spanId, traceId } = span.value
  const out: Record<string, string> = { [TRACEPARENT]: `00-${traceId}-${spanId}-${sampled ? "01" : "00"}` }
  const state = traceStateOf(span.value)
  if (state !== undefined) out[TRACESTATE] = state
  return out
})
