/**
 * `dms_operations_total` and `dms_operation_duration_seconds`, and the wrapper that records them
 * around an operation.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as MetricLabel from "effect/MetricLabel"
import * as Option from "effect/Option"

/**
 * Mount and unmount calls by operation and outcome (`success`, or the error's tag).
 *
 */
const operationsTotalKey = MetricKey.counter("dms_operations_total", {
  description: "mount and unmount calls by operation and outcome",
  incremental: true
})
export const operationsTotal = Metric.fromMetricKey(operationsTotalKey)

/**
 * Duration of mount and unmount calls, in seconds.
 *
 */
const operationDurationKey = MetricKey.histogram(
  "dms_operation_duration_seconds",
  MetricBoundaries.exponential({ start: 0.0005, factor: 2, count: 20 }),
  "duration of mount and unmount calls"
)
export const operationDuration = Metric.fromMetricKey(operationDurationKey)

/** Records an operation's outcome and duration when it ends. */
export const measured = (operation: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.flatMap(Clock.currentTimeMillis, (start) =>
    Effect.onExit(effect, (exit) =>
      Effect.flatMap(Clock.currentTimeMillis, (end) =>
        Effect.zipRight(
          Metric.update(counterFor(operation, Exit.isSuccess(exit) ? "success" : outcomeOf(exit.cause)), 1),
          Metric.update(durationFor(operation), (end - start) / 1000)
        ))))

/** A failed call's outcome label: its error's tag, `interrupted`, or `defect`. */
const outcomeOf = (cause: Cause.Cause<unknown>): string =>
  Option.match(Cause.failureOption(cause), {
    onSome: (error) => {
      const tag = (error as { readonly _tag?: unknown } | null)?._tag
      return typeof tag === "string" ? tag : "error"
    },
    onNone: () => (Cause.isInterruptedOnly(cause) ? "interrupted" : "defect")
  })

// Built once per (operation, outcome) from keys that carry their tags: a metric tagged with
// `Metric.tagged` builds its key again, and looks it up by hash, on every update.
const taggedCounters = new Map<string, Metric.Metric.Counter<number>>()
const counterFor = (operation: string, outcome: string) => {
  const key = `${operation}\0${outcome}`
  let counter = taggedCounters.get(key)
  if (counter === undefined) {
    counter = Metric.fromMetricKey(
      MetricKey.taggedWithLabels(operationsTotalKey, [MetricLabel.make("operation", operation), MetricLabel.make("outcome", outcome)])
    )
    taggedCounters.set(key, counter)
  }
  return counter
}
const taggedDurations = new Map<string, Metric.Metric.Histogram<number>>()
const durationFor = (operation: string) => {
  let histogram = taggedDurations.get(operation)
  if (histogram === undefined) {
    histogram = Metric.fromMetricKey(MetricKey.taggedWithLabels(operationDurationKey, [MetricLabel.make("operation", operation)]))
    taggedDurations.set(operation, histogram)
  }
  return histogram
}
