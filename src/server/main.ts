/**
 * The DMS server's entry point: `node --import tsx src/server/main.ts --node-id <host>` (until the CLI
 * wires `trilio-dms server`). Configuration: see {@link ServerConfig}; the command line wins over the
 * environment and `/etc/trilio-dms/server.conf`. SIGTERM/SIGINT stop consuming, let running requests
 * finish, and leave mounts in place.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import * as Effect from "effect/Effect"
import * as Server from "./Server.js"
import * as ServerConfig from "./ServerConfig.js"

const main = (argv: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    let parsed: ServerConfig.Options | "help"
    try {
      parsed = ServerConfig.parseCommandLine(argv)
    } catch (e) {
      process.stderr.write(`${(e as Error).message}\n\n${ServerConfig.usage}`)
      process.exitCode = 2
      return
    }
    if (parsed === "help") {
      process.stdout.write(ServerConfig.usage)
      return
    }
    const settings = yield* ServerConfig.fromEnv(parsed)
    yield* Effect.logInfo("starting the DMS server").pipe(Effect.annotateLogs(ServerConfig.describe(settings)))
    yield* Server.launch(Server.layerFromSettings(settings))
  })

main(process.argv.slice(2)).pipe(
  Effect.tapError((e) => Effect.sync(() => process.stderr.write(`trilio-dms server: ${e.message}\n`))),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
