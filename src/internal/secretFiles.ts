/**
 * Secrets read from files (`db_url_file`, `DMS_RABBITMQ_URL_FILE`, `--token-file`, …), and the warnings
 * about secrets where other local users can read them: on a command line, or in a file whose mode lets
 * its group or other users in. No function here ever puts a secret in a message.
 */
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as DmsError from "../DmsError.js"
import * as Urls from "./urls.js"

/** A secret read from a file, and the file's mode when it is open to its group or other users. */
export interface SecretFile {
  readonly value: string
  readonly looseMode: number | undefined
}

const reasons: Readonly<Record<string, string>> = {
  ENOENT: "no such file",
  EACCES: "permission denied",
  EPERM: "permission denied",
  EISDIR: "it is a directory",
  ENOTDIR: "a component of the path is not a directory",
  ELOOP: "too many symbolic links"
}

/** Why a file could not be read, from the error's code only: a Node message could quote the path oddly. */
const reason = (e: unknown): string => {
  const code = (e as NodeJS.ErrnoException).code
  return code === undefined ? "unreadable" : `${reasons[code] ?? "unreadable"} (${code})`
}

/**
 * The bits of `mode` that let the group or other users in, or undefined when there are none (or the
 * file cannot be looked at).
 */
export const looseMode = (file: string): number | undefined => {
  try {
    const mode = fs.statSync(file).mode & 0o777
    return (mode & 0o077) === 0 ? undefined : mode
  } catch {
    return undefined
  }
}

/** `0640` */
export const octal = (mode: number): string => `0${(mode & 0o777).toString(8).padStart(3, "0")}`

/**
 * Reads a secret file: its content less one trailing newline (`echo secret > file` writes one). An
 * unreadable or empty file fails with a `ValidationError` whose issue is `name` (the key, variable or
 * flag that named the file), naming the file and why, never its content.
 */
export const read = (
  file: string,
  name: string,
  subject: string,
  origin: string
): Effect.Effect<SecretFile, DmsError.ValidationError> =>
  Effect.suspend(() => {
    const fail = (why: string) =>
      Effect.fail(DmsError.invalid(subject, name, `cannot read the secret file ${file}: ${why} (from ${origin})`))
    let text: string
    try {
      text = fs.readFileSync(file, "utf8")
    } catch (e) {
      return fail(reason(e))
    }
    const value = text.replace(/\r?\n$/, "")
    if (value.trim() === "") return fail("it is empty")
    return Effect.succeed({ value, looseMode: looseMode(file) })
  })

/** Whether a URL (or a comma-separated list of them) carries a password. */
export const hasPassword = (url: string): boolean => Urls.redactUrl(url) !== url

/**
 * The warning for a secret given on the command line: `--rabbitmq-url holds a password: …`.
 */
export const commandLineWarning = (flag: string, what: string, alternatives: ReadonlyArray<string>): string =>
  `${flag} ${what}: a command line is visible to every local user in the process list (ps, /proc/<pid>/cmdline); ` +
  `use ${alternatives.slice(0, -1).join(", ")}${alternatives.length > 1 ? " or " : ""}${alternatives.at(-1) ?? ""} instead`

const access = (mode: number): string =>
  `${(mode & 0o044) !== 0 ? "readable" : "writable"} by users other than its owner (mode ${octal(mode)})`

/** The warning for a configuration file that holds secrets and is open to other users. */
export const configFileWarning = (file: string, secrets: ReadonlyArray<string>, mode: number): string =>
  `${file} holds a secret (${secrets.join(", ")}) and is ${access(mode)}: run chmod 600 ${file}`

/** The warning for a secret file that is open to other users. */
export const secretFileWarning = (file: string, name: string, mode: number): string =>
  `the secret file ${file} (${name}) is ${access(mode)}: run chmod 600 ${file}`
