/**
 * Secrets given as flags (`--token`, a `--db-url` or `--rabbitmq-url` with a password) are accepted, with
 * a warning that any local user can read them in the process list and what to use instead. The warning
 * never holds the secret.
 *
 * @since 0.2.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as DmsError from "../DmsError.js"
import * as SecretFiles from "../internal/secretFiles.js"

/**
 * Warns that `flag` put a secret on the command line (when it was given).
 *
 * @since 0.2.0
 * @category warnings
 */
export const warnToken = (
  flag: string,
  value: Option.Option<Redacted.Redacted<string>>,
  alternatives: ReadonlyArray<string>
): Effect.Effect<void> =>
  Option.isSome(value) ? Effect.logWarning(SecretFiles.commandLineWarning(flag, "puts a secret on the command line", alternatives)) : Effect.void

/**
 * Warns that `flag` put a password on the command line, when its URL (or any URL of its list) has one.
 *
 * @since 0.2.0
 * @category warnings
 */
export const warnUrl = (flag: string, url: Option.Option<string>, alternatives: ReadonlyArray<string>): Effect.Effect<void> =>
  Option.isSome(url) && SecretFiles.hasPassword(url.value)
    ? Effect.logWarning(SecretFiles.commandLineWarning(flag, "holds a password", alternatives))
    : Effect.void

/**
 * The secret of a value flag or of its file flag (read, with a warning when the file is open to other
 * users); both at once are refused, naming the flags.
 *
 * @since 0.2.0
 * @category flags
 */
export const fromFlags = (
  valueFlag: string,
  value: Option.Option<string | Redacted.Redacted<string>>,
  fileFlag: string,
  file: Option.Option<string>
): Effect.Effect<Option.Option<Redacted.Redacted<string>>, DmsError.ValidationError> =>
  Effect.gen(function*() {
    if (Option.isNone(file)) return Option.map(value, (v) => (Redacted.isRedacted(v) ? v : Redacted.make(v)))
    if (Option.isSome(value)) {
      return yield* Effect.fail(DmsError.invalid("command line", fileFlag, `is given together with ${valueFlag}: give only one`))
    }
    const read = yield* SecretFiles.read(file.value, fileFlag, "command line", "the command line")
    if (read.looseMode !== undefined) yield* Effect.logWarning(SecretFiles.secretFileWarning(file.value, fileFlag, read.looseMode))
    return Option.some(Redacted.make(read.value))
  })
