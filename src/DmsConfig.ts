/**
 * The client's configuration, as the user's guide describes it.
 *
 * Precedence: explicit options > environment > `~/.trilio-dms/client.conf` (`[client]` section; the
 * path can be changed with `DMS_CLIENT_CONF`) > defaults. `layer(options)` uses the options and the
 * defaults only; `layerConfig(options)` and `fromEnv(options)` read the environment and the file too.
 *
 * The secrets (the two URLs, which carry passwords, and the Keystone token) can also come from files
 * named at any level (`dbUrlFile`, `DMS_DB_URL_FILE`, `db_url_file`, …; see `secretFileKeys`). At one
 * level a value and its file are an error, not a choice: the intent is unclear, and picking either would
 * connect with credentials the administrator may have meant to retire.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as IniSection from "./internal/iniSection.js"
import * as os from "node:os"
import * as path from "node:path"
import * as DmsError from "./DmsError.js"
import * as SecretFiles from "./internal/secretFiles.js"
import * as Urls from "./internal/urls.js"

/**
 * The configuration keys, with their environment variable and `client.conf` key.
 *
 * @since 0.1.0
 * @category models
 */
export const keys = {
  dbUrl: { env: "DMS_DB_URL", file: "db_url" },
  rabbitmqUrl: { env: "DMS_RABBITMQ_URL", file: "rabbitmq_url" },
  requestTimeout: { env: "DMS_REQUEST_TIMEOUT", file: "timeout" },
  lockTimeout: { env: "DMS_LOCK_TIMEOUT", file: "lock_timeout" },
  logLevel: { env: "DMS_LOG_LEVEL", file: "log_level" },
  keystoneToken: { env: "KEYSTONE_TOKEN", file: undefined },
  rabbitmqCaFile: { env: "DMS_RABBITMQ_CA_FILE", file: "rabbitmq_ca_file" },
  rabbitmqCertFile: { env: "DMS_RABBITMQ_CERT_FILE", file: "rabbitmq_cert_file" },
  rabbitmqKeyFile: { env: "DMS_RABBITMQ_KEY_FILE", file: "rabbitmq_key_file" }
} as const

/**
 * The secrets that can be read from a file instead: the option, environment variable and `client.conf`
 * key that name the file. The file's content, less one trailing newline, is the value.
 *
 * @since 0.2.0
 * @category models
 */
export const secretFileKeys = {
  dbUrl: { option: "dbUrlFile", env: "DMS_DB_URL_FILE", file: "db_url_file" },
  rabbitmqUrl: { option: "rabbitmqUrlFile", env: "DMS_RABBITMQ_URL_FILE", file: "rabbitmq_url_file" },
  keystoneToken: { option: "keystoneTokenFile", env: "KEYSTONE_TOKEN_FILE", file: "keystone_token_file" }
} as const

/**
 * A secret that can be read from a file.
 *
 * @since 0.2.0
 * @category models
 */
export type SecretKey = keyof typeof secretFileKeys

/**
 * A configuration key.
 *
 * @since 0.1.0
 * @category models
 */
export type Key = keyof typeof keys

/**
 * Where a value came from. `secretFile` is the file the value was read from, when the argument,
 * variable or key named a secret file (`DMS_DB_URL_FILE`) rather than held the value.
 *
 * @since 0.1.0
 * @category models
 */
export type Source =
  | { readonly _tag: "Argument"; readonly name: string; readonly secretFile?: string }
  | { readonly _tag: "Environment"; readonly variable: string; readonly secretFile?: string }
  | { readonly _tag: "File"; readonly file: string; readonly key: string; readonly secretFile?: string }
  | { readonly _tag: "Default" }
  | { readonly _tag: "Unset" }

/**
 * Describes a source for a message: `DMS_REQUEST_TIMEOUT (environment)`.
 *
 * @since 0.1.0
 * @category utils
 */
export const describeSource = (source: Source): string => {
  const read = "secretFile" in source && source.secretFile ? `, read from ${source.secretFile}` : ""
  switch (source._tag) {
    case "Argument":
      return `${source.name} (argument${read})`
    case "Environment":
      return `${source.variable} (environment${read})`
    case "File":
      return `${source.key} in [client] of ${source.file}${read}`
    case "Default":
      return "default"
    case "Unset":
      return "unset"
  }
}

/**
 * The resolved configuration.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  /** The ledger database URL (`mysql://…`, `mysql+pymysql://…`, `sqlite:…`, `memory:`). */
  readonly dbUrl: Redacted.Redacted<string>
  /** The RabbitMQ URL (`amqp://…`, `amqps://…`, `memory:`). */
  readonly rabbitmqUrl: Redacted.Redacted<string>
  /** How long a mount or unmount waits for the DMS server. Default 300 s. */
  readonly requestTimeout: Duration.Duration
  /** How long an operation waits for the (target, host) lock. Default: request timeout + 30 s. */
  readonly lockTimeout: Duration.Duration
  /** The minimum level logged. Default Info. */
  readonly logLevel: LogLevel.LogLevel
  /** The Keystone token used when a request carries none. */
  readonly keystoneToken: Option.Option<Redacted.Redacted<string>>
  /**
   * TLS to the broker (`amqps://` URLs): the CA file that verifies the broker's certificate (else the
   * system's CAs), and a client certificate and key (both or neither).
   */
  readonly rabbitmqTls: {
    readonly caFile?: string | undefined
    readonly certFile?: string | undefined
    readonly keyFile?: string | undefined
  }
  /** Where each value came from. */
  readonly sources: { readonly [K in Key]: Source }
}

/**
 * The `DmsConfig` service.
 *
 * @since 0.1.0
 * @category tags
 */
export class DmsConfig extends Context.Tag("trilio-dms/DmsConfig")<DmsConfig, Settings>() {}

/**
 * Explicit configuration, as the guide's `DMSClient(db_url=…, rabbitmq_url=…, timeout=…)`. Timeouts are
 * numbers of seconds (as in the guide) or Durations.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly dbUrl?: string | Redacted.Redacted<string> | undefined
  readonly rabbitmqUrl?: string | Redacted.Redacted<string> | undefined
  readonly timeout?: number | Duration.Duration | undefined
  readonly lockTimeout?: number | Duration.Duration | undefined
  readonly logLevel?: string | LogLevel.LogLevel | undefined
  readonly keystoneToken?: string | Redacted.Redacted<string> | undefined
  /** A file holding the ledger URL (instead of `dbUrl`; not both). */
  readonly dbUrlFile?: string | undefined
  /** A file holding the RabbitMQ URL (instead of `rabbitmqUrl`; not both). */
  readonly rabbitmqUrlFile?: string | undefined
  /** A file holding the Keystone token (instead of `keystoneToken`; not both). */
  readonly keystoneTokenFile?: string | undefined
  /** The CA file that verifies the broker's certificate on `amqps://` (else the system's CAs). */
  readonly rabbitmqCaFile?: string | undefined
  /** A client certificate for `amqps://` (with `rabbitmqKeyFile`). */
  readonly rabbitmqCertFile?: string | undefined
  /** The client certificate's key (with `rabbitmqCertFile`). */
  readonly rabbitmqKeyFile?: string | undefined
  /** The client.conf file to read (instead of `DMS_CLIENT_CONF` or `~/.trilio-dms/client.conf`). */
  readonly configFile?: string | undefined
}

/**
 * The default request timeout (the guide's 300 s).
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_REQUEST_TIMEOUT = Duration.seconds(300)

/**
 * How much longer than the request timeout an operation waits for the lock by default.
 *
 * @since 0.1.0
 * @category constants
 */
export const LOCK_TIMEOUT_MARGIN = Duration.seconds(30)

/**
 * The default client.conf path.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultConfigFile = (): string => path.join(os.homedir(), ".trilio-dms", "client.conf")

const optionNames: { readonly [K in Key]: string } = {
  dbUrl: "dbUrl",
  rabbitmqUrl: "rabbitmqUrl",
  requestTimeout: "timeout",
  lockTimeout: "lockTimeout",
  logLevel: "logLevel",
  keystoneToken: "keystoneToken",
  rabbitmqCaFile: "rabbitmqCaFile",
  rabbitmqCertFile: "rabbitmqCertFile",
  rabbitmqKeyFile: "rabbitmqKeyFile"
}

type Raw = string | number | Duration.Duration | LogLevel.LogLevel | Redacted.Redacted<string>

interface Candidate {
  readonly value: Raw
  readonly source: Source
}

const pythonLevels: Record<string, LogLevel.LogLevel> = {
  TRACE: LogLevel.Trace,
  DEBUG: LogLevel.Debug,
  INFO: LogLevel.Info,
  WARN: LogLevel.Warning,
  WARNING: LogLevel.Warning,
  ERROR: LogLevel.Error,
  CRITICAL: LogLevel.Fatal,
  FATAL: LogLevel.Fatal,
  NONE: LogLevel.None,
  ALL: LogLevel.All
}

/**
 * Maps a log level name (Python's `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`, or Effect's names,
 * any case) to an Effect `LogLevel`.
 *
 * @since 0.1.0
 * @category utils
 */
export const parseLogLevel = (name: string): Option.Option<LogLevel.LogLevel> =>
  Option.fromNullable(pythonLevels[name.trim().toUpperCase()])

const isDuration = (u: unknown): u is Duration.Duration => Duration.isDuration(u)

const secondsValue = (raw: Raw): Duration.Duration | string => {
  if (isDuration(raw)) {
    return Duration.toMillis(raw) > 0 && Duration.isFinite(raw) ? raw : "must be a positive, finite duration"
  }
  const text = typeof raw === "number" ? String(raw) : String(raw).trim()
  const n = typeof raw === "number" ? raw : /^[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isFinite(n)) return `must be a number of seconds, got ${JSON.stringify(text)}`
  if (n <= 0) return `must be more than 0 seconds, got ${text}`
  return Duration.millis(Math.round(n * 1000))
}

const textValue = (raw: Raw): string =>
  Redacted.isRedacted(raw) ? Redacted.value(raw as Redacted.Redacted<string>) : String(raw)

const requiredHint = (key: "dbUrl" | "rabbitmqUrl", file: string): string => {
  const k = keys[key]
  const f = secretFileKeys[key]
  return `is required: set ${k.env} or ${f.env} in the environment, ${k.file} or ${f.file} in the [client] section of ${file}, or pass ${
    optionNames[key]
  } or ${f.option}`
}

/**
 * Resolves configuration from candidate values, highest precedence first for each key. Reports every
 * bad or missing value at once, naming the key and where it came from (or where it can be set).
 */
const resolve = (
  candidates: { readonly [K in Key]: ReadonlyArray<Candidate> },
  configFile: string
): Effect.Effect<Settings, DmsError.ValidationError> =>
  Effect.suspend(() => {
    const issues: Array<DmsError.Issue> = []
    const sources = {} as { [K in Key]: Source }
    const first = <K extends Key>(key: K): Candidate | undefined => {
      const c = candidates[key][0]
      sources[key] = c?.source ?? { _tag: "Unset" }
      return c
    }
    const bad = (key: Key, source: Source, message: string) =>
      issues.push(
        new DmsError.Issue({
          path: source._tag === "Environment" ? source.variable : source._tag === "File" ? source.key : optionNames[key],
          message: `${message} (from ${describeSource(source)})`
        })
      )
    const url = (key: "dbUrl" | "rabbitmqUrl"): Redacted.Redacted<string> => {
      const c = first(key)
      if (c === undefined) {
        issues.push(new DmsError.Issue({ path: keys[key].file, message: requiredHint(key, configFile) }))
        return Redacted.make("")
      }
      const text = textValue(c.value)
      const parsed = key === "dbUrl" ? Urls.parseLedgerUrl(text) : Urls.parseBrokerUrl(text)
      if (typeof parsed === "string") bad(key, c.source, parsed)
      return Redacted.make(text)
    }
    const dbUrl = url("dbUrl")
    const rabbitmqUrl = url("rabbitmqUrl")

    let requestTimeout = DEFAULT_REQUEST_TIMEOUT
    const rt = first("requestTimeout")
    if (rt === undefined) sources.requestTimeout = { _tag: "Default" }
    else {
      const d = secondsValue(rt.value)
      if (typeof d === "string") bad("requestTimeout", rt.source, d)
      else requestTimeout = d
    }

    let lockTimeout = Duration.sum(requestTimeout, LOCK_TIMEOUT_MARGIN)
    const lt = first("lockTimeout")
    if (lt === undefined) sources.lockTimeout = { _tag: "Default" }
    else {
      const d = secondsValue(lt.value)
      if (typeof d === "string") bad("lockTimeout", lt.source, d)
      else lockTimeout = d
    }

    let logLevel: LogLevel.LogLevel = LogLevel.Info
    const ll = first("logLevel")
    if (ll === undefined) sources.logLevel = { _tag: "Default" }
    else if (LogLevel.allLevels.includes(ll.value as LogLevel.LogLevel)) logLevel = ll.value as LogLevel.LogLevel
    else {
      const parsed = parseLogLevel(textValue(ll.value))
      if (Option.isNone(parsed)) {
        bad("logLevel", ll.source, `must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got ${JSON.stringify(textValue(ll.value))}`)
      } else logLevel = parsed.value
    }

    const kt = first("keystoneToken")
    const keystoneToken = kt === undefined || textValue(kt.value) === ""
      ? Option.none()
      : Option.some(Redacted.make(textValue(kt.value)))

    const tlsFile = (key: "rabbitmqCaFile" | "rabbitmqCertFile" | "rabbitmqKeyFile") => {
      const c = first(key)
      if (c === undefined) return undefined
      const text = textValue(c.value).trim()
      if (text === "") bad(key, c.source, "is empty: give the path of a PEM file")
      return text
    }
    const rabbitmqTls = { caFile: tlsFile("rabbitmqCaFile"), certFile: tlsFile("rabbitmqCertFile"), keyFile: tlsFile("rabbitmqKeyFile") }
    if ((rabbitmqTls.certFile === undefined) !== (rabbitmqTls.keyFile === undefined)) {
      const given = rabbitmqTls.certFile === undefined ? "rabbitmqKeyFile" : "rabbitmqCertFile"
      bad(given, sources[given], "a client certificate and its key go together: set both rabbitmq_cert_file and rabbitmq_key_file, or neither")
    }

    if (issues.length > 0) return Effect.fail(new DmsError.ValidationError({ subject: "config", issues }))
    return Effect.succeed<Settings>({ dbUrl, rabbitmqUrl, requestTimeout, lockTimeout, logLevel, keystoneToken, rabbitmqTls, sources })
  })

/** One level (options, environment, client.conf) of a secret: its value, or the file that holds it. */
interface SecretLevel {
  readonly value: Raw | undefined
  readonly valueSource: Source
  readonly file: string | undefined
  readonly fileSource: (path: string) => Source
}

const sourceName = (source: Source): string =>
  source._tag === "Environment" ? source.variable : source._tag === "File" ? source.key : source._tag === "Argument" ? source.name : ""

/**
 * The candidate of the highest level that sets a secret, reading its file if it names one. A level
 * that sets both the value and its file fails, as does a file that cannot be read. A secret file open to
 * other users adds a warning.
 */
const secretCandidate = (
  levels: ReadonlyArray<SecretLevel>,
  warnings: Array<string>
): Effect.Effect<Candidate | undefined, DmsError.ValidationError> => {
  const level = levels.find((l) => l.value !== undefined || l.file !== undefined)
  if (level === undefined) return Effect.succeed(undefined)
  const { file, value } = level
  if (file === undefined) return Effect.succeed(value === undefined ? undefined : { value, source: level.valueSource })
  const fileSource = level.fileSource(file)
  const name = sourceName(fileSource)
  if (value !== undefined) {
    return Effect.fail(
      DmsError.invalid(
        "config",
        name,
        `is set together with ${sourceName(level.valueSource)} (from ${describeSource(level.valueSource)}): set only one of them`
      )
    )
  }
  return SecretFiles.read(file, name, "config", describeSource(level.fileSource(""))).pipe(
    Effect.map(({ looseMode, value }) => {
      if (looseMode !== undefined) warnings.push(SecretFiles.secretFileWarning(file, name, looseMode))
      return { value: Redacted.make(value), source: fileSource }
    })
  )
}

const secretKeys = Object.keys(secretFileKeys) as ReadonlyArray<SecretKey>

const optionLevel = (options: Options, key: SecretKey): SecretLevel => {
  const option = secretFileKeys[key].option
  const file = options[option]
  return {
    value: options[key],
    valueSource: { _tag: "Argument", name: optionNames[key] },
    file: file === undefined || file === "" ? undefined : file,
    fileSource: (secretFile) => ({ _tag: "Argument", name: option, secretFile })
  }
}

/**
 * Resolves each secret from its levels (highest first), collecting every failure into one error.
 */
const secretCandidates = (
  levels: (key: SecretKey) => ReadonlyArray<SecretLevel>,
  warnings: Array<string>
): Effect.Effect<{ readonly [K in SecretKey]: Candidate | undefined }, DmsError.ValidationError> =>
  Effect.forEach(secretKeys, (key) => Effect.either(secretCandidate(levels(key), warnings))).pipe(
    Effect.flatMap((results) => {
      const issues = results.flatMap((r) => (r._tag === "Left" ? r.left.issues : []))
      if (issues.length > 0) return Effect.fail(new DmsError.ValidationError({ subject: "config", issues }))
      const found = Object.fromEntries(secretKeys.map((key, i) => {
        const r = results[i]!
        return [key, r._tag === "Right" ? r.right : undefined]
      }))
      return Effect.succeed(found as { readonly [K in SecretKey]: Candidate | undefined })
    })
  )

const fromOptions = (options: Options): { [K in Key]: Array<Candidate> } => {
  const arg = (key: Key, value: Raw | undefined): Array<Candidate> =>
    value === undefined ? [] : [{ value, source: { _tag: "Argument", name: optionNames[key] } }]
  return {
    dbUrl: arg("dbUrl", options.dbUrl),
    rabbitmqUrl: arg("rabbitmqUrl", options.rabbitmqUrl),
    requestTimeout: arg("requestTimeout", options.timeout),
    lockTimeout: arg("lockTimeout", options.lockTimeout),
    logLevel: arg("logLevel", options.logLevel),
    keystoneToken: arg("keystoneToken", options.keystoneToken),
    rabbitmqCaFile: arg("rabbitmqCaFile", options.rabbitmqCaFile),
    rabbitmqCertFile: arg("rabbitmqCertFile", options.rabbitmqCertFile),
    rabbitmqKeyFile: arg("rabbitmqKeyFile", options.rabbitmqKeyFile)
  }
}

/**
 * Builds the configuration from explicit options and defaults only (no environment, no client.conf;
 * a secret file named by an option is read).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Settings, DmsError.ValidationError> =>
  Effect.gen(function*() {
    const warnings: Array<string> = []
    const secrets = yield* secretCandidates((key) => [optionLevel(options, key)], warnings)
    const candidates = fromOptions(options)
    for (const key of secretKeys) candidates[key] = secrets[key] === undefined ? [] : [secrets[key]]
    const settings = yield* resolve(candidates, options.configFile ?? defaultConfigFile())
    yield* Effect.forEach(warnings, (w) => Effect.logWarning(w), { discard: true })
    return settings
  })

/**
 * Reads the `[client]` section of a client.conf file; a missing file is an empty section.
 *
 * @since 0.1.0
 * @category constructors
 */
export const readConfigFile = (file: string): Effect.Effect<Readonly<Record<string, string>>, DmsError.ValidationError> =>
  IniSection.read(file, "client", "config")

const expandHome = (p: string): string => (p === "~" || p.startsWith("~/") ? path.join(os.homedir(), p.slice(1)) : p)

/** The secrets client.conf holds in clear (the URLs with a password), by key. */
const secretsIn = (section: Readonly<Record<string, string>>): ReadonlyArray<string> =>
  (["db_url", "rabbitmq_url"] as const).filter((k) => SecretFiles.hasPassword(section[k] ?? "")).map((k) => `${k} with a password`)

/**
 * Resolves the configuration: explicit options > environment > client.conf > defaults. The environment
 * is read through Effect's `ConfigProvider`, so tests can supply their own.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromEnv = (options: Options = {}): Effect.Effect<Settings, DmsError.ValidationError> =>
  Effect.gen(function*() {
    const env = (name: string) =>
      Config.option(Config.string(name)).pipe(
        Effect.map(Option.filter((s) => s !== "")),
        Effect.mapError((e) => DmsError.invalid("config", name, String(e)))
      )
    const confEnv = yield* env("DMS_CLIENT_CONF")
    const file = expandHome(options.configFile ?? Option.getOrElse(confEnv, defaultConfigFile))
    const section = yield* readConfigFile(file)
    const warnings: Array<string> = []
    const inClear = secretsIn(section)
    const mode = inClear.length > 0 ? SecretFiles.looseMode(file) : undefined
    if (mode !== undefined) warnings.push(SecretFiles.configFileWarning(file, inClear, mode))
    const candidates = fromOptions(options)
    for (const key of Object.keys(keys) as Array<Key>) {
      if ((secretKeys as ReadonlyArray<Key>).includes(key)) continue
      const k = keys[key]
      const fromEnvVar = yield* env(k.env)
      if (Option.isSome(fromEnvVar)) {
        candidates[key].push({ value: fromEnvVar.value, source: { _tag: "Environment", variable: k.env } })
      }
      const fromFile = k.file === undefined ? undefined : section[k.file]
      if (k.file !== undefined && fromFile !== undefined && fromFile !== "") {
        candidates[key].push({ value: fromFile, source: { _tag: "File", file, key: k.file } })
      }
    }
    const levels: { [K in SecretKey]?: ReadonlyArray<SecretLevel> } = {}
    for (const key of secretKeys) {
      const f = secretFileKeys[key]
      const envValue = yield* env(keys[key].env)
      const envFile = yield* env(f.env)
      const valueKey: string | undefined = keys[key].file
      const confValue = valueKey === undefined ? undefined : section[valueKey]
      const confFile = section[f.file]
      levels[key] = [
        optionLevel(options, key),
        {
          value: Option.getOrUndefined(envValue),
          valueSource: { _tag: "Environment", variable: keys[key].env },
          file: Option.getOrUndefined(envFile),
          fileSource: (secretFile) => ({ _tag: "Environment", variable: f.env, secretFile })
        },
        {
          value: confValue === "" ? undefined : confValue,
          valueSource: { _tag: "File", file, key: valueKey ?? "" },
          // A relative path in client.conf is relative to client.conf's directory.
          file: confFile === undefined || confFile === "" ? undefined : path.resolve(path.dirname(file), expandHome(confFile)),
          fileSource: (secretFile) => ({ _tag: "File", file, key: f.file, secretFile })
        }
      ]
    }
    const secrets = yield* secretCandidates((key) => levels[key] ?? [], warnings)
    for (const key of secretKeys) candidates[key] = secrets[key] === undefined ? [] : [secrets[key]]
    const settings = yield* resolve(candidates, file)
    yield* Effect.forEach(warnings, (w) => Effect.logWarning(w), { discard: true })
    return settings
  })

/**
 * A layer from explicit options and defaults only.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<DmsConfig, DmsError.ValidationError> =>
  Layer.effect(DmsConfig, make(options))

/**
 * A layer from explicit options, the environment, client.conf and defaults, in that order.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (options: Options = {}): Layer.Layer<DmsConfig, DmsError.ValidationError> =>
  Layer.effect(DmsConfig, fromEnv(options))

/**
 * The configuration as a printable record: URLs with their password masked, the token never shown.
 *
 * @since 0.1.0
 * @category utils
 */
export const describe = (settings: Settings): Record<string, string> => ({
  db_url: Urls.redactUrl(Redacted.value(settings.dbUrl)),
  rabbitmq_url: Urls.redactUrl(Redacted.value(settings.rabbitmqUrl)),
  timeout: `${Duration.toSeconds(settings.requestTimeout)} s`,
  lock_timeout: `${Duration.toSeconds(settings.lockTimeout)} s`,
  log_level: settings.logLevel.label,
  keystone_token: Option.isSome(settings.keystoneToken) ? "<redacted>" : "unset",
  ...(settings.rabbitmqTls.caFile === undefined ? {} : { rabbitmq_ca_file: settings.rabbitmqTls.caFile }),
  ...(settings.rabbitmqTls.certFile === undefined ? {} : { rabbitmq_cert_file: settings.rabbitmqTls.certFile })
})
