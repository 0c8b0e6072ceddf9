/**
 * The `trilio-dms` command: its subcommands, and how a run ends (an exit code for every outcome).
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Telemetry from "../Telemetry.js"
import { VERSION } from "../internal/version.js"
import * as Demo from "./Demo.js"
import * as Doctor from "./Doctor.js"
import * as Failure from "./Failure.js"
import * as LedgerCommands from "./LedgerCommands.js"
import * as MountCommands from "./MountCommands.js"
import * as Output from "./Output.js"
import * as PurgeCommand from "./PurgeCommand.js"
import * as ReconcileCommand from "./ReconcileCommand.js"
import * as ServerCommand from "./ServerCommand.js"

/**
 * The root command and its subcommands.
 *
 * @since 0.1.0
 * @category commands
 */
export const root = Command.make("trilio-dms", {}, () =>
  Effect.zipRight(
    Output.errorLine("trilio-dms: a command is required (mount, unmount, status, mounts, history, soft-delete, migrate, purge, reconcile, server, doctor, demo); see trilio-dms --help"),
    Effect.fail(new Failure.CliExit({ code: Failure.ExitCode.badInput }))
  )).pipe(
    Command.withDescription(
      "The Dynamic Mount Service client: mount and unmount backup targets through the ledger and the DMS server of a " +
        "host, inspect the ledger, run the server, check the setup. Try `trilio-dms demo` (needs no services)."
    ),
    Command.withSubcommands([
      MountCommands.mount,
      MountCommands.unmount,
      LedgerCommands.status,
      LedgerCommands.mounts,
      LedgerCommands.history,
      LedgerCommands.softDelete,
      LedgerCommands.migrate,
      PurgeCommand.command,
      ReconcileCommand.command,
      ServerCommand.command,
      Doctor.command,
      Demo.command
    ])
  )

const cli = Command.run(root, {
  name: "trilio-dms",
  version: VERSION,
  footer: HelpDoc.p(
    "Exit codes: 0 success, 1 the operation failed (the server answered an error; for reconcile: drift remains), " +
      "2 bad input, 3 timeout, " +
      "4 database, 5 broker (or no DMS server for the host). Configuration: DMS_DB_URL, DMS_RABBITMQ_URL, " +
      "DMS_REQUEST_TIMEOUT, DMS_LOCK_TIMEOUT, DMS_LOG_LEVEL, KEYSTONE_TOKEN, or ~/.trilio-dms/client.conf; secrets " +
      "preferably from files: DMS_DB_URL_FILE, DMS_RABBITMQ_URL_FILE, KEYSTONE_TOKEN_FILE."
  )
})

const ansi = /\x1b\[[0-9;]*m/g

const plain = (stream: NodeJS.WriteStream) => (args: ReadonlyArray<unknown>): ReadonlyArray<unknown> =>
  stream.isTTY === true && process.env.NO_COLOR === undefined
    ? args
    : args.map((a) => (typeof a === "string" ? a.replace(ansi, "") : a))

/** @effect/cli colours its help and errors; not when the output is a file or a pipe (or NO_COLOR is set). */
const withPlainConsole = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Console.consoleWith((current) =>
    Effect.withConsole(self, {
      ...current,
      log: (...args: ReadonlyArray<unknown>) => current.log(...plain(process.stdout)(args)),
      error: (...args: ReadonlyArray<unknown>) => current.error(...plain(process.stderr)(args))
    })
  )

/**
 * Runs the command line `argv` (as `process.argv`: node, script, arguments…) and returns its exit code.
 * Never fails: every outcome has been printed when it returns.
 *
 * @since 0.1.0
 * @category run
 */
export const run = (argv: ReadonlyArray<string>): Effect.Effect<number> =>
  cli(argv).pipe(
    withPlainConsole,
    Effect.as(Failure.ExitCode.ok as number),
    Effect.catchAll((error): Effect.Effect<number> => {
      if (error instanceof Failure.CliExit) return Effect.succeed(error.code)
      // @effect/cli has printed what is wrong with the command line (and the help for --help).
      if (ValidationError.isValidationError(error)) {
        return Effect.succeed(ValidationError.isHelpRequested(error) ? Failure.ExitCode.ok : Failure.ExitCode.badInput)
      }
      return Effect.as(Output.errorLine(`trilio-dms: ${String(error)}`), Failure.ExitCode.failed)
    }),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.sync(() => Failure.onInterrupt.code)
        : Effect.as(Output.errorLine(`trilio-dms: unexpected error: ${Cause.pretty(cause)}`), Failure.ExitCode.failed)
    ),
    Effect.provide(NodeContext.layer),
    Effect.provide(Telemetry.layerConfig({ serviceName: argv[2] === "server" ? "trilio-dms-server" : "trilio-dms" }).pipe(
      // Telemetry that cannot start must not stop a mount: say so and go on without it.
      Layer.catchAll((e) => Layer.effectDiscard(Output.errorLine(`trilio-dms: ${e.message}; tracing is off`)))
    )),
    Effect.provide(Layer.unwrapEffect(Effect.map(
      Effect.orElseSucceed(Telemetry.logFormatConfig, () => "text" as const),
      (format) => (format === "json" ? Telemetry.layerLogFormat("json") : Output.loggerLayer)
    )))
  )

/**
 * The process's exit code for the run's exit: its value, 130 when interrupted (Ctrl-C, SIGTERM).
 *
 * @since 0.1.0
 * @category run
 */
export const exitCode = (exit: Exit.Exit<number, unknown>): number =>
  Exit.isSuccess(exit) ? exit.value : Cause.isInterruptedOnly(exit.cause) ? Failure.onInterrupt.code : Failure.ExitCode.failed
