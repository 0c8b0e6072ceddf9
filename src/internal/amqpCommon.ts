/**
 * What the AMQP modules share: readable error texts without the broker's password, `BrokerError`
 * construction, quiet closing, and logging from inside amqplib's callbacks.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as fs from "node:fs/promises"
import * as DmsError from "../DmsError.js"
import { redactUrl } from "./urls.js"

/**
 * An error's message, with its code when the message does not already name it.
 */
export const describe = (e: unknown): string => {
  if (e instanceof Error) {
    const code = (e as { code?: unknown }).code
    return typeof code === "string" && !e.message.includes(code) ? `${e.message} (${code})` : e.message
  }
  return String(e)
}

/**
 * A duration in whole milliseconds, never negative.
 */
export const millis = (d: Duration.Duration): number => Math.max(0, Math.round(Duration.toMillis(d)))

/**
 * What a `BrokerError` may say besides its reason.
 */
export interface BrokerErrorExtra {
  readonly host?: string
  readonly queue?: string
  readonly cause?: unknown
  /** The request certainly reached no server (so the caller records no unknown outcome). */
  readonly notDelivered?: boolean
}

/**
 * A `BrokerError` with only the fields that are set.
 */
export const brokerError = (reason: string, extra: BrokerErrorExtra = {}): DmsError.BrokerError =>
  new DmsError.BrokerError({
    reason,
    ...(extra.host === undefined ? {} : { host: extra.host }),
    ...(extra.queue === undefined ? {} : { queue: extra.queue }),
    ...(extra.cause === undefined ? {} : { cause: extra.cause }),
    ...(extra.notDelivered === true ? { notDelivered: true } : {})
  })

/**
 * Closes an amqplib object within 5 s, never failing: on error or timeout, runs `onFailure`.
 */
export const closeQuietly = (close: () => Promise<void>, onFailure: () => void = () => {}): Effect.Effect<void> =>
  Effect.tryPromise(close).pipe(
    Effect.timeout(Duration.seconds(5)),
    Effect.catchAll(() => Effect.sync(onFailure))
  )

/**
 * The log levels the AMQP modules use.
 */
export type LogLevel = "Debug" | "Info" | "Warning"

/**
 * Tools bound to the broker's URLs (one per node), usable from amqplib's callbacks (outside any fiber).
 */
export interface Tools {
  /** The URLs with their passwords masked, comma-separated, for messages. */
  readonly displayUrl: string
  /** `describe(e)`, scrubbed of every password. */
  readonly safe: (e: unknown) => string
  /** Logs in the background, annotated with the broker. */
  readonly log: (level: LogLevel, message: string, annotations?: Record<string, unknown>) => void
  /** Runs an event handler; what it throws is logged, never left to crash the process. */
  readonly guard: (f: () => void) => void
  /** The error of a client whose scope is closed. */
  readonly closedError: () => DmsError.BrokerError
}

/**
 * The {@link Tools} of the broker's URLs, logging with the current runtime.
 */
export const makeTools = (urls: ReadonlyArray<string>): Effect.Effect<Tools> =>
  Effect.map(Effect.runtime<never>(), (runtime) => {
    const runFork = Runtime.runFork(runtime)
    const displayUrl = urls.map(redactUrl).join(",")
    // Secrets must never reach a message. Our own texts use the redacted URLs; amqplib's error messages
    // do not carry the URL either, but are scrubbed of the passwords anyway.
    const passwords = urls.flatMap((url) => {
      try {
        const p = new URL(url).password
        return [p, decodeURIComponent(p)].filter((x) => x.length >= 3)
      } catch {
        return []
      }
    })
    const safe = (e: unknown): string => passwords.reduce((t, p) => t.split(p).join("***"), describe(e))
    const log = (level: LogLevel, message: string, annotations: Record<string, unknown> = {}) => {
      const effect = level === "Debug"
        ? Effect.logDebug(message)
        : level === "Info"
        ? Effect.logInfo(message)
        : Effect.logWarning(message)
      runFork(effect.pipe(Effect.annotateLogs({ broker: displayUrl, ...annotations })))
    }
    const guard = (f: () => void) => {
      try {
        f()
      } catch (e) {
        log("Warning", "unexpected error in a broker event handler", { error: safe(e) })
      }
    }
    const closedError = () => brokerError(`the broker client for ${displayUrl} is closed`, { notDelivered: true })
    return { displayUrl, safe, log, guard, closedError }
  })

/**
 * Where the TLS files of an `amqps://` connection are (paths).
 */
export interface TlsFiles {
  readonly caFile?: string | undefined
  readonly certFile?: string | undefined
  readonly keyFile?: string | undefined
}

/**
 * The contents of the TLS files, as amqplib's socket options take them (for `amqps://` URLs only).
 */
export interface TlsOptions {
  readonly ca?: Buffer
  readonly cert?: Buffer
  readonly key?: Buffer
}

const tlsFileNames = { caFile: "CA file", certFile: "client certificate file", keyFile: "client key file" } as const

/**
 * Reads the TLS files once, before anything connects: a missing or unreadable file, or a certificate
 * without its key (or the reverse), is a `BrokerError` naming the file.
 */
export const readTls = (files: TlsFiles | undefined): Effect.Effect<TlsOptions | undefined, DmsError.BrokerError> =>
  Effect.gen(function*() {
    if (files === undefined) return undefined
    const { caFile, certFile, keyFile } = files
    if ((certFile === undefined) !== (keyFile === undefined)) {
      return yield* Effect.fail(brokerError("a client certificate for the broker needs both its certificate file and its key file"))
    }
    const read = (which: keyof typeof tlsFileNames, file: string | undefined) =>
      file === undefined
        ? Effect.succeed(undefined)
        : Effect.tryPromise({
          try: () => fs.readFile(file),
          catch: (cause) => brokerError(`cannot read the broker's ${tlsFileNames[which]} ${file}: ${describe(cause)}`, { cause })
        })
    const ca = yield* read("caFile", caFile)
    const cert = yield* read("certFile", certFile)
    const key = yield* read("keyFile", keyFile)
    return {
      ...(ca === undefined ? {} : { ca }),
      ...(cert === undefined ? {} : { cert }),
      ...(key === undefined ? {} : { key })
    }
  })
