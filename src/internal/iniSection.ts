/**
 * Reading one section of an INI configuration file (client.conf, server.conf) with the `ini` package.
 */
import * as Effect from "effect/Effect"
import * as ini from "ini"
import * as fs from "node:fs"
import * as DmsError from "../DmsError.js"

/**
 * The string keys of `[section]` in `file`, lower-cased; a missing file or section is empty. An
 * unreadable file is a `ValidationError` naming it (`subject` says which configuration).
 */
export const read = (
  file: string,
  section: string,
  subject: string
): Effect.Effect<Readonly<Record<string, string>>, DmsError.ValidationError> =>
  Effect.try({
    try: () => {
      let text: string
      try {
        text = fs.readFileSync(file, "utf8")
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") return {}
        throw e
      }
      const found = ini.parse(text)[section] as unknown
      if (found === undefined) return {}
      if (typeof found !== "object" || found === null) throw new Error(`[${section}] is not a section`)
      const out: Record<string, string> = {}
      for (const [k, v] of Object.entries(found)) if (typeof v === "string") out[k.trim().toLowerCase()] = v
      return out
    },
    catch: (e) => DmsError.invalid(subject, file, `cannot read the configuration file: ${(e as Error).message}`)
  })
