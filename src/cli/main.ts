#!/usr/bin/env node
/**
 * The `trilio-dms` executable (package `bin`). `trilio-dms --help` lists the commands.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cli from "./Cli.js"

NodeRuntime.runMain(Cli.run(process.argv), {
  disableErrorReporting: true,
  disablePrettyLogger: true,
  // Exit at once with the command's code, also on success: nothing is left to do (every resource was
  // released when the command ended), and a stray handle must not keep a finished command alive.
  teardown: (exit) => process.exit(Cli.exitCode(exit as Parameters<typeof Cli.exitCode>[0]))
})
