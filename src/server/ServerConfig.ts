/**
 * The DMS server's configuration.
 *
 * Precedence: explicit options (the command line) > environment > `/etc/trilio-dms/server.conf`
 * (`[server]` section, INI; path overridable with `DMS_SERVER_CONF`) > defaults.
 *
 * | setting | environment | server.conf | default |
 * | --- | --- | --- | --- |
 * | node id | `DMS_NODE_ID` | `node_id` | required (`--node-id`) |
 * | broker (a URL, or a comma-separated list of a cluster's nodes) | `DMS_RABBITMQ_URL` | `rabbitmq_url` | required |
 * | queue type | `DMS_QUEUE_TYPE` | `queue_type` | `classic` (or `quorum`) |
 * | broker CA file (amqps) | `DMS_RABBITMQ_CA_FILE` | `rabbitmq_ca_file` | the system's CAs |
 * | broker client certificate / key (amqps) | `DMS_RABBITMQ_CERT_FILE` / `DMS_RABBITMQ_KEY_FILE` | `rabbitmq_cert_file` / `rabbitmq_key_file` | none |
 * | mount base | `DMS_MOUNT_BASE` | `mount_base` | `/var/lib/trilio/triliovault-mounts` |
 * | run directory | `DMS_RUN_DIR` | `run_dir` | `/run/dms` |
 * | S3 driver | `DMS_S3_DRIVER` | `s3_driver` | `s3fs` (or `s3vaultfuse`) |
 * | S3 driver command | `DMS_S3_COMMAND` | `s3_command` | the driver's name, looked up on `PATH` |
 * | extra s3fs options | `DMS_S3FS_OPTIONS` | `s3fs_options` | none |
 * | NFS without `noexec` | `DMS_NFS_ALLOW_EXEC` | `nfs_allow_exec` | `false` |
 * | command timeout (s) | `DMS_COMMAND_TIMEOUT` | `command_timeout` | 120 |
 * | Barbican endpoint | `DMS_BARBICAN_URL` | `barbican_url` | none (S3 mounts refused) |
 * | prefetch | `DMS_PREFETCH` | `prefetch` | 64 |
 * | log level | `DMS_LOG_LEVEL` | `log_level` | `INFO` |
 * | log format | `DMS_LOG_FORMAT` | `log_format` | `text` (or `json`: one object a line) |
 * | metrics port | `DMS_METRICS_PORT` | `metrics_port` | none (no metrics endpoint) |
 * | metrics address | `DMS_METRICS_HOST` | `metrics_host` | `127.0.0.1` |
 *
 * The broker URL carries a password, so it can come from a file instead, named at any level
 * (`--rabbitmq-url-file`, `DMS_RABBITMQ_URL_FILE`, `rabbitmq_url_file`); a level that sets both the URL
 * and its file is an error. A server.conf holding a password, or a secret file, that other users can
 * read is warned about at start.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as IniSection from "../internal/iniSection.js"
import * as path from "node:path"
import { parseArgs } from "node:util"
import * as DmsConfig from "../DmsConfig.js"
import * as DmsError from "../DmsError.js"
import * as Protocol from "../Protocol.js"
import * as SecretFiles from "../internal/secretFiles.js"
import * as Urls from "../internal/urls.js"

/**
 * The default mount base.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_MOUNT_BASE = "/var/lib/trilio/triliovault-mounts"

/**
 * The default run directory (PID, state and log files).
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_RUN_DIR = "/run/dms"

/**
 * The default configuration file.
 *
 * @since 0.1.0
 * @category constants
 */
export const DEFAULT_CONFIG_FILE = "/etc/trilio-dms/server.conf"

/**
 * The FUSE drivers for S3 targets.
 *
 * @since 0.1.0
 * @category models
 */
export type S3Driver = "s3fs" | "s3vaultfuse"

/**
 * The configuration keys, with their environment variable and server.conf key.
 *
 * @since 0.1.0
 * @category models
 */
export const keys = {
  nodeId: { env: "DMS_NODE_ID", file: "node_id" },
  rabbitmqUrl: { env: "DMS_RABBITMQ_URL", file: "rabbitmq_url" },
  queueType: { env: "DMS_QUEUE_TYPE", file: "queue_type" },
  rabbitmqCaFile: { env: "DMS_RABBITMQ_CA_FILE", file: "rabbitmq_ca_file" },
  rabbitmqCertFile: { env: "DMS_RABBITMQ_CERT_FILE", file: "rabbitmq_cert_file" },
  rabbitmqKeyFile: { env: "DMS_RABBITMQ_KEY_FILE", file: "rabbitmq_key_file" },
  mountBase: { env: "DMS_MOUNT_BASE", file: "mount_base" },
  runDir: { env: "DMS_RUN_DIR", file: "run_dir" },
  s3Driver: { env: "DMS_S3_DRIVER", file: "s3_driver" },
  s3Command: { env: "DMS_S3_COMMAND", file: "s3_command" },
  s3fsOptions: { env: "DMS_S3FS_OPTIONS", file: "s3fs_options" },
  nfsAllowExec: { env: "DMS_NFS_ALLOW_EXEC", file: "nfs_allow_exec" },
  commandTimeout: { env: "DMS_COMMAND_TIMEOUT", file: "command_timeout" },
  barbicanUrl: { env: "DMS_BARBICAN_URL", file: "barbican_url" },
  prefetch: { env: "DMS_PREFETCH", file: "prefetch" },
  logLevel: { env: "DMS_LOG_LEVEL", file: "log_level" },
  logFormat: { env: "DMS_LOG_FORMAT", file: "log_format" },
  metricsPort: { env: "DMS_METRICS_PORT", file: "metrics_port" },
  metricsHost: { env: "DMS_METRICS_HOST", file: "metrics_host" }
} as const

/**
 * The secrets that can be read from a file instead: the option (and flag), environment variable and
 * server.conf key that name the file. The file's content, less one trailing newline, is the value.
 *
 * @since 0.2.0
 * @category models
 */
export const secretFileKeys = {
  rabbitmqUrl: { option: "rabbitmqUrlFile", flag: "--rabbitmq-url-file", env: "DMS_RABBITMQ_URL_FILE", file: "rabbitmq_url_file" }
} as const

/**
 * A configuration key.
 *
 * @since 0.1.0
 * @category models
 */
export type Key = keyof typeof keys

/**
 * The resolved configuration.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  readonly nodeId: string
  /** One URL, or a comma-separated list of a cluster's nodes (each checked). */
  readonly rabbitmqUrl: Redacted.Redacted<string>
  /** The type of `dms.<node-id>`. */
  readonly queueType: "classic" | "quorum"
  /** TLS files (absolute paths) for `amqps://` URLs. */
  readonly rabbitmqTls: { readonly caFile?: string; readonly certFile?: string; readonly keyFile?: string }
  /** Absolute; every mount path must resolve strictly inside it. */
  readonly mountBase: string
  /** Absolute; holds `s3/<target>.pid` and friends and `state/<target>.json`. */
  readonly runDir: string
  readonly s3Driver: S3Driver
  readonly s3Command: string
  /** Extra `-o` options for s3fs, set by the administrator (e.g. `allow_other`). */
  readonly s3fsOptions: ReadonlyArray<string>
  /** NFS mounts get no `noexec` (they always get `nosuid,nodev`). */
  readonly nfsAllowExec: boolean
  /** The longest any one command (mount, umount, a FUSE daemon's start) may take. */
  readonly commandTimeout: Duration.Duration
  /** A `secret_ref` must be under this URL; without it S3 mounts are refused. */
  readonly barbicanUrl: Option.Option<string>
  readonly prefetch: number
  readonly logLevel: LogLevel.LogLevel
  /** `text` (human-readable) or `json` (one object a line, with trace and span ids). */
  readonly logFormat: "text" | "json"
  /** Where `/metrics`, `/healthz` and `/readyz` are served; none by default. */
  readonly metricsPort: Option.Option<number>
  readonly metricsHost: string
}

/**
 * Explicit values (the command line), highest precedence.
 *
 * @since 0.1.0
 * @category models
 */
export type Options = {
  readonly [K in Key]?: string | undefined
} & {
  /** The configuration file to read instead of `DMS_SERVER_CONF` or the default. */
  readonly configFile?: string | undefined
  /** A file holding the broker URL (instead of `rabbitmqUrl`; not both). */
  readonly rabbitmqUrlFile?: string | undefined
}

type Source = string

const S3FS_OPTION = /^[a-z_][a-z0-9_]*(=[A-Za-z0-9._:/@+-]+)?$/

/**
 * Resolves configuration from raw text values (highest precedence first per key), reporting every bad
 * or missing value at once.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolve = (
  values: { readonly [K in Key]?: { readonly value: string; readonly source: Source } | undefined },
  configFile: string
): Effect.Effect<Settings, DmsError.ValidationError> =>
  Effect.suspend(() => {
    const issues: Array<DmsError.Issue> = []
    const bad = (key: Key, message: string) => {
      const v = values[key]
      issues.push(new DmsError.Issue({ path: keys[key].env, message: v ? `${message} (from ${v.source})` : message }))
    }
    const text = (key: Key): string | undefined => {
      const v = values[key]?.value.trim()
      return v === undefined || v === "" ? undefined : v
    }
    const required = (key: Key, flag?: string): string => {
      const v = text(key)
      if (v === undefined) {
        const f = key === "rabbitmqUrl" ? secretFileKeys.rabbitmqUrl : undefined
        bad(
          key,
          `is required: ${flag ? `pass ${flag}, ` : ""}set ${keys[key].env}${f ? ` or ${f.env}` : ""} in the environment or ${
            keys[key].file
          }${f ? ` or ${f.file}` : ""} in the [server] section of ${configFile}`
        )
        return ""
      }
      return v
    }
    const nodeId = required("nodeId", "--node-id")
    if (nodeId !== "" && !/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(nodeId)) {
      bad("nodeId", `must be a host name (letters, digits, '.', '_', '-'), got ${JSON.stringify(nodeId)}`)
    } else if (Buffer.byteLength(nodeId) > Protocol.MAX_HOST_BYTES) {
      bad("nodeId", `must be at most ${Protocol.MAX_HOST_BYTES} bytes`)
    }
    const rabbit = required("rabbitmqUrl", "--rabbitmq-url-file")
    if (rabbit !== "") {
      const parsed = Urls.parseBrokerUrl(rabbit)
      if (typeof parsed === "string") bad("rabbitmqUrl", parsed)
      else if (parsed.kind !== "amqp") bad("rabbitmqUrl", "the server needs a RabbitMQ URL (amqp:// or amqps://)")
    }
    const tlsFile = (key: "rabbitmqCaFile" | "rabbitmqCertFile" | "rabbitmqKeyFile") => {
      const v = text(key)
      if (v !== undefined && !path.isAbsolute(v)) bad(key, `must be an absolute path, got ${JSON.stringify(v)}`)
      return v
    }
    const caFile = tlsFile("rabbitmqCaFile")
    const certFile = tlsFile("rabbitmqCertFile")
    const keyFile = tlsFile("rabbitmqKeyFile")
    if ((certFile === undefined) !== (keyFile === undefined)) {
      bad(certFile === undefined ? "rabbitmqCertFile" : "rabbitmqKeyFile", "a client certificate needs both the certificate file and the key file")
    }
    const queueTypeText = (text("queueType") ?? "classic").toLowerCase()
    if (queueTypeText !== "classic" && queueTypeText !== "quorum") {
      bad("queueType", `must be classic or quorum, got ${JSON.stringify(queueTypeText)}`)
    }
    const absolute = (key: Key, fallback: string): string => {
      const v = text(key) ?? fallback
      if (!path.isAbsolute(v)) bad(key, `must be an absolute path, got ${JSON.stringify(v)}`)
      const normalized = path.resolve(v)
      if (normalized === "/") bad(key, "must not be the root directory")
      return normalized
    }
    const mountBase = absolute("mountBase", DEFAULT_MOUNT_BASE)
    const runDir = absolute("runDir", DEFAULT_RUN_DIR)
    if (runDir === mountBase || runDir.startsWith(`${mountBase}/`)) bad("runDir", "must not be inside the mount base")
    const driver = text("s3Driver") ?? "s3fs"
    if (driver !== "s3fs" && driver !== "s3vaultfuse") bad("s3Driver", `must be s3fs or s3vaultfuse, got ${JSON.stringify(driver)}`)
    const s3Driver: S3Driver = driver === "s3vaultfuse" ? "s3vaultfuse" : "s3fs"
    const s3Command = text("s3Command") ?? s3Driver
    const s3fsOptions = (text("s3fsOptions") ?? "").split(",").map((o) => o.trim()).filter((o) => o !== "")
    for (const o of s3fsOptions) if (!S3FS_OPTION.test(o)) bad("s3fsOptions", `not an s3fs option: ${JSON.stringify(o)}`)
    const allowExec = (text("nfsAllowExec") ?? "false").toLowerCase()
    if (allowExec !== "true" && allowExec !== "false") bad("nfsAllowExec", `must be true or false, got ${JSON.stringify(allowExec)}`)
    const seconds = text("commandTimeout") ?? "120"
    const n = /^[0-9]+(\.[0-9]+)?$/.test(seconds) ? Number(seconds) : Number.NaN
    if (!(n > 0)) bad("commandTimeout", `must be a positive number of seconds, got ${JSON.stringify(seconds)}`)
    const barbican = text("barbicanUrl")
    if (barbican !== undefined && !/^https?:\/\/[^\s]+$/.test(barbican)) bad("barbicanUrl", "must be an http(s) URL")
    const prefetchText = text("prefetch") ?? "64"
    const prefetch = /^[0-9]+$/.test(prefetchText) ? Number(prefetchText) : Number.NaN
    if (!(prefetch >= 1 && prefetch <= 65535)) bad("prefetch", `must be an integer from 1 to 65535, got ${JSON.stringify(prefetchText)}`)
    const levelText = text("logLevel") ?? "INFO"
    const logLevel = DmsConfig.parseLogLevel(levelText)
    if (Option.isNone(logLevel)) bad("logLevel", `must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got ${JSON.stringify(levelText)}`)
    const logFormat = (text("logFormat") ?? "text").toLowerCase()
    if (logFormat !== "text" && logFormat !== "json") bad("logFormat", `must be text or json, got ${JSON.stringify(logFormat)}`)
    const metricsPortText = text("metricsPort")
    const metricsPort = metricsPortText === undefined ? Number.NaN : /^[0-9]+$/.test(metricsPortText) ? Number(metricsPortText) : -1
    if (metricsPortText !== undefined && !(metricsPort >= 0 && metricsPort <= 65535)) {
      bad("metricsPort", `must be a port number, got ${JSON.stringify(metricsPortText)}`)
    }
    if (issues.length > 0) return Effect.fail(new DmsError.ValidationError({ subject: "server config", issues }))
    return Effect.succeed<Settings>({
      nodeId,
      rabbitmqUrl: Redacted.make(rabbit),
      queueType: queueTypeText === "quorum" ? "quorum" : "classic",
      rabbitmqTls: {
        ...(caFile === undefined ? {} : { caFile }),
        ...(certFile === undefined ? {} : { certFile }),
        ...(keyFile === undefined ? {} : { keyFile })
      },
      mountBase,
      runDir,
      s3Driver,
      s3Command,
      s3fsOptions,
      nfsAllowExec: allowExec === "true",
      commandTimeout: Duration.millis(Math.round(n * 1000)),
      barbicanUrl: Option.fromNullable(barbican),
      prefetch,
      logLevel: Option.getOrElse(logLevel, () => LogLevel.Info),
      logFormat: logFormat === "json" ? "json" : "text",
      metricsPort: metricsPortText === undefined ? Option.none() : Option.some(metricsPort),
      metricsHost: text("metricsHost") ?? "127.0.0.1"
    })
  })

/**
 * Reads the `[server]` section of a server.conf file; a missing file is an empty section.
 *
 * @since 0.1.0
 * @category constructors
 */
export const readConfigFile = (file: string): Effect.Effect<Readonly<Record<string, string>>, DmsError.ValidationError> =>
  IniSection.read(file, "server", "server config")

/**
 * Resolves the configuration: options > environment (through Effect's `ConfigProvider`) > server.conf >
 * defaults.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromEnv = (options: Options = {}): Effect.Effect<Settings, DmsError.ValidationError> =>
  Effect.gen(function*() {
    const env = (name: string) =>
      Config.option(Config.string(name)).pipe(
        Effect.map(Option.filter((s) => s.trim() !== "")),
        Effect.mapError((e) => DmsError.invalid("server config", name, String(e)))
      )
    const file = options.configFile ?? Option.getOrElse(yield* env("DMS_SERVER_CONF"), () => DEFAULT_CONFIG_FILE)
    const section = yield* readConfigFile(file)
    const warnings: Array<string> = []
    const mode = SecretFiles.hasPassword(section[keys.rabbitmqUrl.file] ?? "") ? SecretFiles.looseMode(file) : undefined
    if (mode !== undefined) warnings.push(SecretFiles.configFileWarning(file, ["rabbitmq_url with a password"], mode))
    const f = secretFileKeys.rabbitmqUrl
    const confFile = nonEmpty(section[f.file])
    const rabbitmqUrl = yield* secretValue([
      {
        value: nonEmpty(options.rabbitmqUrl),
        valueSource: "the command line",
        file: nonEmpty(options.rabbitmqUrlFile),
        fileName: f.flag,
        fileSource: `${f.flag} (command line)`
      },
      {
        value: Option.getOrUndefined(yield* env(keys.rabbitmqUrl.env)),
        valueSource: `${keys.rabbitmqUrl.env} (environment)`,
        file: Option.getOrUndefined(yield* env(f.env)),
        fileName: f.env,
        fileSource: `${f.env} (environment)`
      },
      {
        value: nonEmpty(section[keys.rabbitmqUrl.file]),
        valueSource: `${keys.rabbitmqUrl.file} in [server] of ${file}`,
        // A relative path in server.conf is relative to server.conf's directory.
        file: confFile === undefined ? undefined : path.resolve(path.dirname(file), confFile),
        fileName: f.file,
        fileSource: `${f.file} in [server] of ${file}`
      }
    ], warnings)
    const values: { [K in Key]?: { value: string; source: Source } | undefined } = { rabbitmqUrl }
    for (const key of Object.keys(keys) as Array<Key>) {
      if (key === "rabbitmqUrl") continue
      const explicit = options[key]
      if (explicit !== undefined && explicit.trim() !== "") {
        values[key] = { value: explicit, source: "the command line" }
        continue
      }
      const fromEnvVar = yield* env(keys[key].env)
      if (Option.isSome(fromEnvVar)) {
        values[key] = { value: fromEnvVar.value, source: `${keys[key].env} (environment)` }
        continue
      }
      const fromFile = section[keys[key].file]
      if (fromFile !== undefined && fromFile.trim() !== "") {
        values[key] = { value: fromFile, source: `${keys[key].file} in [server] of ${file}` }
      }
    }
    const settings = yield* resolve(values, file)
    yield* Effect.forEach(warnings, (w) => Effect.logWarning(w), { discard: true })
    return settings
  })

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s.trim() === "" ? undefined : s)

/** One level (command line, environment, server.conf) of a secret: its value, or the file that holds it. */
interface SecretLevel {
  readonly value: string | undefined
  /** `DMS_RABBITMQ_URL (environment)` */
  readonly valueSource: string
  readonly file: string | undefined
  /** `DMS_RABBITMQ_URL_FILE`: the issue's path when the file cannot be read. */
  readonly fileName: string
  /** `DMS_RABBITMQ_URL_FILE (environment)` */
  readonly fileSource: string
}

/**
 * The value of the highest level that sets a secret, read from its file if it names one. A level that
 * sets both fails, as does a file that cannot be read; a secret file open to other users adds a warning.
 */
const secretValue = (
  levels: ReadonlyArray<SecretLevel>,
  warnings: Array<string>
): Effect.Effect<{ value: string; source: Source } | undefined, DmsError.ValidationError> => {
  const level = levels.find((l) => l.value !== undefined || l.file !== undefined)
  if (level === undefined) return Effect.succeed(undefined)
  const { file, value } = level
  if (file === undefined) return Effect.succeed(value === undefined ? undefined : { value, source: level.valueSource })
  if (value !== undefined) {
    return Effect.fail(
      DmsError.invalid(
        "server config",
        level.fileName,
        `is set together with the URL itself (from ${level.valueSource}): set only one of them`
      )
    )
  }
  return SecretFiles.read(file, level.fileName, "server config", level.fileSource).pipe(
    Effect.map((read) => {
      if (read.looseMode !== undefined) warnings.push(SecretFiles.secretFileWarning(file, level.fileName, read.looseMode))
      return { value: read.value, source: `${level.fileSource}, read from ${file}` }
    })
  )
}

/**
 * Explicit values and defaults only (no environment, no file).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Effect.Effect<Settings, DmsError.ValidationError> =>
  Effect.gen(function*() {
    const warnings: Array<string> = []
    const values: { [K in Key]?: { value: string; source: Source } | undefined } = {}
    for (const key of Object.keys(keys) as Array<Key>) {
      const v = options[key]
      if (v !== undefined) values[key] = { value: v, source: "options" }
    }
    values.rabbitmqUrl = yield* secretValue([{
      value: options.rabbitmqUrl,
      valueSource: "options",
      file: nonEmpty(options.rabbitmqUrlFile),
      fileName: secretFileKeys.rabbitmqUrl.option,
      fileSource: `${secretFileKeys.rabbitmqUrl.option} (options)`
    }], warnings)
    const settings = yield* resolve(values, options.configFile ?? DEFAULT_CONFIG_FILE)
    yield* Effect.forEach(warnings, (w) => Effect.logWarning(w), { discard: true })
    return settings
  })

/**
 * The configuration as a printable record (the broker password masked).
 *
 * @since 0.1.0
 * @category utils
 */
export const describe = (settings: Settings): Record<string, string> => ({
  node_id: settings.nodeId,
  rabbitmq_url: Urls.redactUrl(Redacted.value(settings.rabbitmqUrl)),
  queue_type: settings.queueType,
  rabbitmq_ca_file: settings.rabbitmqTls.caFile ?? "(system CAs)",
  mount_base: settings.mountBase,
  run_dir: settings.runDir,
  s3_driver: settings.s3Driver,
  s3_command: settings.s3Command,
  command_timeout: `${Duration.toSeconds(settings.commandTimeout)} s`,
  barbican_url: Option.getOrElse(settings.barbicanUrl, () => "(none: S3 mounts refused)"),
  prefetch: String(settings.prefetch),
  log_level: settings.logLevel.label,
  log_format: settings.logFormat,
  metrics: Option.match(settings.metricsPort, { onNone: () => "(off)", onSome: (port) => `${settings.metricsHost}:${port}` })
})

/**
 * The server's command-line help.
 *
 * @since 0.1.0
 * @category constants
 */
export const usage = `Usage: trilio-dms server --node-id <host> [options]

Options (each also settable in the environment or /etc/trilio-dms/server.conf [server]):
  --node-id <host>          this host's node id; consumes dms.<host>        (DMS_NODE_ID)
  --rabbitmq-url <urls>     RabbitMQ URL, or a comma-separated list of nodes  (DMS_RABBITMQ_URL)
  --rabbitmq-url-file <f>   a file holding it (keeps the password off the command line)
                                                                             (DMS_RABBITMQ_URL_FILE)
  --queue-type <type>       classic (default) or quorum                      (DMS_QUEUE_TYPE)
  --rabbitmq-ca-file <pem>  CA of the broker's certificate (amqps)            (DMS_RABBITMQ_CA_FILE)
  --rabbitmq-cert-file <pem> client certificate for the broker (amqps)       (DMS_RABBITMQ_CERT_FILE)
  --rabbitmq-key-file <pem> its key                                          (DMS_RABBITMQ_KEY_FILE)
  --mount-base <dir>        where targets are mounted                        (DMS_MOUNT_BASE)
  --run-dir <dir>           PID, state and log files                         (DMS_RUN_DIR)
  --s3-driver <name>        s3fs (default) or s3vaultfuse                    (DMS_S3_DRIVER)
  --s3-command <path>       the S3 FUSE driver's command                     (DMS_S3_COMMAND)
  --command-timeout <s>     longest time for one command (default 120)       (DMS_COMMAND_TIMEOUT)
  --barbican-url <url>      only accept secret_refs under this URL           (DMS_BARBICAN_URL)
  --log-level <level>       DEBUG, INFO, WARNING, ERROR, CRITICAL            (DMS_LOG_LEVEL)
  --config <file>           configuration file (default /etc/trilio-dms/server.conf; DMS_SERVER_CONF)
  -h, --help                this text
`

/**
 * Parses the command line into configuration options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const parseCommandLine = (argv: ReadonlyArray<string>): Options | "help" => {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      "node-id": { type: "string" },
      "rabbitmq-url": { type: "string" },
      "rabbitmq-url-file": { type: "string" },
      "queue-type": { type: "string" },
      "rabbitmq-ca-file": { type: "string" },
      "rabbitmq-cert-file": { type: "string" },
      "rabbitmq-key-file": { type: "string" },
      "mount-base": { type: "string" },
      "run-dir": { type: "string" },
      "s3-driver": { type: "string" },
      "s3-command": { type: "string" },
      "command-timeout": { type: "string" },
      "barbican-url": { type: "string" },
      "log-level": { type: "string" },
      config: { type: "string" },
      help: { type: "boolean", short: "h" }
    },
    strict: true,
    allowPositionals: false
  })
  if (values.help === true) return "help"
  return {
    nodeId: values["node-id"],
    rabbitmqUrl: values["rabbitmq-url"],
    rabbitmqUrlFile: values["rabbitmq-url-file"],
    queueType: values["queue-type"],
    rabbitmqCaFile: values["rabbitmq-ca-file"],
    rabbitmqCertFile: values["rabbitmq-cert-file"],
    rabbitmqKeyFile: values["rabbitmq-key-file"],
    mountBase: values["mount-base"],
    runDir: values["run-dir"],
    s3Driver: values["s3-driver"],
    s3Command: values["s3-command"],
    commandTimeout: values["command-timeout"],
    barbicanUrl: values["barbican-url"],
    logLevel: values["log-level"],
    configFile: values.config
  }
}
