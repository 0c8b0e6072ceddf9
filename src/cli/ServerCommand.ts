/**
 * `trilio-dms server --node-id <host>`: runs the DMS server of this host (`src/server`) until SIGTERM or
 * SIGINT. Each flag can also be set in the environment or in
 * `/etc/trilio-dms/server.conf` (see `ServerConfig`).
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as ServerConfig from "../server/ServerConfig.js"
import * as Failure from "./Failure.js"
import * as Lazy from "./Lazy.js"
import * as RequestArgs from "./RequestArgs.js"
import * as SecretFlags from "./SecretFlags.js"

const text = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.optional)

/**
 * `trilio-dms server`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "server",
  {
    nodeId: text("node-id", "this host's node id (its host name); the server consumes dms.<node-id> (DMS_NODE_ID)"),
    rabbitmqUrl: text(
      "rabbitmq-url",
      "RabbitMQ URL, or a comma-separated list of a cluster's nodes tried in order (DMS_RABBITMQ_URL); a password here is visible in the process list: prefer --rabbitmq-url-file"
    ),
    rabbitmqUrlFile: text("rabbitmq-url-file", "a file (mode 600) holding the RabbitMQ URL(s) (DMS_RABBITMQ_URL_FILE)"),
    queueType: text("queue-type", "type of dms.<node-id>: classic (default, shareable with the Python client) or quorum (DMS_QUEUE_TYPE)"),
    rabbitmqCaFile: text("rabbitmq-ca-file", "CA of the broker's certificate, for amqps:// (DMS_RABBITMQ_CA_FILE)"),
    rabbitmqCertFile: text("rabbitmq-cert-file", "client certificate for the broker, for amqps:// (DMS_RABBITMQ_CERT_FILE)"),
    rabbitmqKeyFile: text("rabbitmq-key-file", "the client certificate's key (DMS_RABBITMQ_KEY_FILE)"),
    mountBase: text("mount-base", "where targets are mounted (DMS_MOUNT_BASE; default /var/lib/trilio/triliovault-mounts)"),
    runDir: text("run-dir", "PID, state and log files (DMS_RUN_DIR; default /run/dms)"),
    s3Driver: text("s3-driver", "s3fs (default) or s3vaultfuse (DMS_S3_DRIVER)"),
    s3Command: text("s3-command", "the S3 FUSE driver's command (DMS_S3_COMMAND)"),
    commandTimeout: text("command-timeout", "longest time in seconds for one command, default 120 (DMS_COMMAND_TIMEOUT)"),
    barbicanUrl: text("barbican-url", "only accept secret_refs under this URL (DMS_BARBICAN_URL)"),
    logLevel: text("log-level", "DEBUG, INFO, WARNING, ERROR, CRITICAL (DMS_LOG_LEVEL)"),
    logFormat: text("log-format", "text (default) or json: one JSON object a line with trace and span ids (DMS_LOG_FORMAT)"),
    metricsPort: text("metrics-port", "serve Prometheus /metrics, /healthz and /readyz on this port (DMS_METRICS_PORT; default off)"),
    metricsHost: text("metrics-host", "address of the metrics endpoint (DMS_METRICS_HOST; default 127.0.0.1)"),
    config: text("config", "configuration file (default /etc/trilio-dms/server.conf; DMS_SERVER_CONF)"),
    verbose: RequestArgs.verbose
  },
  (args) => {
    const options: ServerConfig.Options = {
      nodeId: Option.getOrUndefined(args.nodeId),
      rabbitmqUrl: Option.getOrUndefined(args.rabbitmqUrl),
      rabbitmqUrlFile: Option.getOrUndefined(args.rabbitmqUrlFile),
      queueType: Option.getOrUndefined(args.queueType),
      rabbitmqCaFile: Option.getOrUndefined(args.rabbitmqCaFile),
      rabbitmqCertFile: Option.getOrUndefined(args.rabbitmqCertFile),
      rabbitmqKeyFile: Option.getOrUndefined(args.rabbitmqKeyFile),
      mountBase: Option.getOrUndefined(args.mountBase),
      runDir: Option.getOrUndefined(args.runDir),
      s3Driver: Option.getOrUndefined(args.s3Driver),
      s3Command: Option.getOrUndefined(args.s3Command),
      commandTimeout: Option.getOrUndefined(args.commandTimeout),
      barbicanUrl: Option.getOrUndefined(args.barbicanUrl),
      logLevel: Option.getOrUndefined(args.logLevel),
      logFormat: Option.getOrUndefined(args.logFormat),
      metricsPort: Option.getOrUndefined(args.metricsPort),
      metricsHost: Option.getOrUndefined(args.metricsHost),
      configFile: Option.getOrUndefined(args.config)
    }
    // SIGTERM/SIGINT is how a server is stopped: a clean stop exits 0 (systemd counts it a success).
    Failure.onInterrupt.code = Failure.ExitCode.ok
    const warn = SecretFlags.warnUrl("--rabbitmq-url", args.rabbitmqUrl, [
      "--rabbitmq-url-file <file>",
      "DMS_RABBITMQ_URL_FILE",
      "DMS_RABBITMQ_URL in the environment (an EnvironmentFile under systemd)",
      "rabbitmq_url_file in server.conf"
    ])
    return warn.pipe(
      Effect.zipRight(Lazy.lib),
      Effect.flatMap(({ Server }) => Server.launch(Server.layerConfig(options))),
      // The mount base or run directory is unusable: the server could not start.
      Effect.catchTag("MounterError", (e) =>
        Failure.fail({ json: false, verbose: args.verbose }, Failure.ExitCode.failed, `the DMS server could not start: ${e.message}`)),
      Effect.catchTag("TelemetryError", (e) =>
        Failure.fail({ json: false, verbose: args.verbose }, Failure.ExitCode.failed, `the DMS server could not start: ${e.message}`)),
      Failure.reported({ json: false, verbose: args.verbose })
    )
  }
).pipe(
  Command.withDescription(
    "Run the DMS server of this host: consume dms.<node-id>, mount and unmount NFS and S3 targets, reply. Stops on " +
      "SIGTERM/SIGINT, leaving mounts in place. Flags override the environment and /etc/trilio-dms/server.conf."
  )
)
