/**
 * `trilio-dms demo` (and `npm start`): three backup jobs share one backup target at the same time; see
 * {@link DemoRun}.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as Failure from "./Failure.js"
import * as Lazy from "./Lazy.js"
import * as RequestArgs from "./RequestArgs.js"

/**
 * `trilio-dms demo`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "demo",
  {
    host: Options.text("host").pipe(
      Options.withDescription("the host whose DMS server mounts (default: this host's name)"),
      Options.optional
    ),
    nfsExport: Options.text("nfs-export").pipe(
      Options.withDescription("with a real server: the NFS export to mount (host:/path)"),
      Options.optional
    ),
    mountPath: Options.text("mount-path").pipe(
      Options.withDescription("with a real server: where to mount it (default under /var/lib/trilio/triliovault-mounts)"),
      Options.optional
    ),
    driver: RequestArgs.choice("driver", ["auto", "bind", "tmpfs", "directory"] as const).pipe(
      Options.withDescription(
        "without services: how the in-process server mounts the local target (default auto: bind, else tmpfs, else a plain directory)"
      ),
      Options.withDefault("auto" as const)
    ),
    timeout: RequestArgs.timeout,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.flatMap(Lazy.lib, ({ DemoRun }) => DemoRun.run(args)).pipe(
      Failure.reported({ json: false, verbose: args.verbose })
    )
).pipe(
  Command.withDescription(
    "Three backup jobs share one target: one physical mount, ledger rows, one physical unmount at the last release. " +
      "With no DMS_DB_URL/DMS_RABBITMQ_URL it needs no services (SQLite under ~/.trilio-dms, an in-process broker and " +
      "server mounting a local directory); with them set it uses the real database, RabbitMQ and the server of --host."
  )
)
