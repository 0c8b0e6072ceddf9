/**
 * How the command line ends: exit codes by error, one readable line per error (the cause chain with
 * `--verbose`), never a stack trace for an expected error, never a secret.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as DmsError from "../DmsError.js"
import * as Output from "./Output.js"

/**
 * The exit codes of `trilio-dms`.
 *
 * @since 0.1.0
 * @category constants
 */
export const ExitCode = {
  /** Success. */
  ok: 0,
  /** The operation failed: the server answered an error, the job holds no mount, nothing was deleted. */
  failed: 1,
  /** Bad input: a flag, the request, or the configuration. */
  badInput: 2,
  /** Timeout: the lock, the publish or the server's reply did not come in time (`TimeoutError.phase`). */
  timeout: 3,
  /** The ledger database failed or cannot be reached. */
  database: 4,
  /** RabbitMQ failed or cannot be reached, or no DMS server listens for the host. */
  broker: 5,
  /** Interrupted (Ctrl-C, SIGTERM). */
  interrupted: 130
} as const

/**
 * The exit code when the command is interrupted: 130 (as a shell reports Ctrl-C), except for a command
 * whose normal end is a signal (`server` sets 0).
 *
 * @since 0.1.0
 * @category constants
 */
export const onInterrupt: { code: number } = { code: ExitCode.interrupted }

/**
 * The exit code of a typed error.
 *
 * @since 0.1.0
 * @category utils
 */
export const exitCodeOf = (error: DmsError.DmsError): number => {
  switch (error._tag) {
    case "ValidationError":
      return ExitCode.badInput
    case "TimeoutError":
      return ExitCode.timeout
    case "DatabaseError":
      return ExitCode.database
    case "BrokerError":
      return ExitCode.broker
    case "MountError":
      return ExitCode.failed
  }
}

/**
 * The command has already said what went wrong; the process ends with `code`.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliExit extends Data.TaggedError("CliExit")<{ readonly code: number }> {}

/**
 * Input the command line itself refuses (a flag value, a request file), named like a field of a
 * `ValidationError`: exit code 2.
 *
 * @since 0.1.0
 * @category errors
 */
export class BadInput extends Data.TaggedError("BadInput")<{ readonly field: string; readonly reason: string }> {
  override get message(): string {
    return `invalid input: ${this.field}: ${this.reason}`
  }
}

/**
 * What the command line prints on failure.
 *
 * @since 0.1.0
 * @category models
 */
export interface Report {
  readonly json: boolean
  readonly verbose: boolean
}

const isDmsError = (u: unknown): u is DmsError.DmsError => {
  const tag = (u as { _tag?: unknown } | null)?._tag
  return tag === "ValidationError" || tag === "TimeoutError" || tag === "DatabaseError" || tag === "BrokerError" ||
    tag === "MountError"
}

/**
 * The chain of causes below an error, one line each (messages only, never a stack).
 *
 * @since 0.1.0
 * @category utils
 */
export const causeChain = (error: unknown): ReadonlyArray<string> => {
  const lines: Array<string> = []
  const seen = new Set<unknown>()
  let current = (error as { cause?: unknown } | null)?.cause
  while (current !== undefined && current !== null && !seen.has(current) && lines.length < 10) {
    seen.add(current)
    if (current instanceof Error || typeof current === "object") {
      const e = current as { message?: unknown; code?: unknown; name?: unknown; cause?: unknown }
      const code = typeof e.code === "string" || typeof e.code === "number" ? ` (${String(e.code)})` : ""
      const name = typeof e.name === "string" && e.name !== "Error" ? `${e.name}: ` : ""
      lines.push(`${name}${typeof e.message === "string" ? e.message : String(current)}${code}`)
      current = e.cause
    } else {
      lines.push(String(current))
      current = undefined
    }
  }
  return lines
}

/**
 * An error as the one line the command prints: its message, with what to do next where that is clear.
 *
 * @since 0.1.0
 * @category utils
 */
export const describe = (error: DmsError.DmsError | BadInput): string => {
  if (error._tag === "BadInput") return error.message
  if (error._tag === "TimeoutError") return `timeout: ${error.message}`
  if (error._tag === "MountError" && error.reason === "server") return `the DMS server refused: ${error.message}`
  if (error._tag === "BrokerError" && error.host !== undefined && /no DMS server/i.test(error.reason)) {
    return `${error.message}; is trilio-dms server --node-id ${error.host} running there? (trilio-dms doctor --host ${error.host} checks)`
  }
  return error.message
}

const print = (report: Report, code: number, tag: string, message: string, chain: ReadonlyArray<string>) =>
  report.json
    ? Output.json({ status: "error", error: tag, error_msg: message, exit_code: code })
    : Effect.zipRight(
      Output.errorLine(`trilio-dms: ${message}`),
      report.verbose && chain.length > 0
        ? Output.errorLines(chain.map((line) => `  caused by: ${line}`))
        : Effect.void
    )

/**
 * Ends a command that could not do what was asked (not an error of the library: e.g. no ledger row to
 * delete): prints `message` (or JSON with `extra`) and fails with {@link CliExit}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fail = (
  report: Report,
  code: number,
  message: string,
  extra: Record<string, unknown> = {}
): Effect.Effect<never, CliExit> =>
  Effect.zipRight(
    report.json
      ? Output.json({ status: "error", error_msg: message, exit_code: code, ...extra })
      : Output.errorLine(`trilio-dms: ${message}`),
    Effect.fail(new CliExit({ code }))
  )

/**
 * Ends a command: prints a typed error, a bad input or a defect as one line and fails with the
 * matching {@link CliExit}. Interruption passes through.
 *
 * @since 0.1.0
 * @category combinators
 */
export const reported = (report: Report) => <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, CliExit, R> =>
  Effect.catchAllCause(self, (cause) => {
    if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause as Cause.Cause<never>)
    const failure = Cause.failureOption(cause)
    if (Option.isSome(failure)) {
      const error = failure.value as unknown
      if (error instanceof CliExit) return Effect.fail(error)
      if (error instanceof BadInput) {
        return Effect.zipRight(
          print(report, ExitCode.badInput, "BadInput", describe(error), []),
          Effect.fail(new CliExit({ code: ExitCode.badInput }))
        )
      }
      if (isDmsError(error)) {
        const code = exitCodeOf(error)
        return Effect.zipRight(
          print(report, code, error._tag, describe(error), causeChain(error)),
          Effect.fail(new CliExit({ code }))
        )
      }
    }
    // A defect is a bug: one line, and the full cause with --verbose.
    const squashed = Cause.squash(cause)
    const message = squashed instanceof Error ? squashed.message : String(squashed)
    return Effect.zipRight(
      report.json
        ? Output.json({ status: "error", error: "Defect", error_msg: message, exit_code: ExitCode.failed })
        : Effect.zipRight(
          Output.errorLine(`trilio-dms: unexpected error: ${message}${report.verbose ? "" : " (run with --verbose for details)"}`),
          report.verbose ? Output.errorLine(Cause.pretty(cause)) : Effect.void
        ),
      Effect.fail(new CliExit({ code: ExitCode.failed }))
    )
  })
