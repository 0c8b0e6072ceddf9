/**
 * Spans around the server's steps (confinement, Barbican, each command), added where the Mounter wires
 * its parts together so the parts themselves stay untouched. Attributes name what a step works on and
 * never carry a token, a password, a Barbican payload or a command's arguments (a credential file's
 * contents could be named there).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as path from "node:path"
import type * as Barbican from "./Barbican.js"
import type * as CommandRunner from "./CommandRunner.js"
import type * as Confinement from "./Confinement.js"

const options = (attributes: Record<string, unknown>) => ({ attributes, captureStackTrace: false }) as const

/**
 * Confinement with a `dms.server.confine` / `dms.server.ensure_dir` span per call.
 *
 * @since 0.1.0
 * @category tracing
 */
export const confinement = (self: Confinement.Confinement): Confinement.Confinement => ({
  ...self,
  confine: (operation, requested, table) =>
    self.confine(operation, requested, table).pipe(
      Effect.withSpan("dms.server.confine", options({ "dms.operation": operation, "dms.mount_path": requested }))
    ),
  ensureDir: (operation, requested, mountPoint) =>
    self.ensureDir(operation, requested, mountPoint).pipe(
      Effect.withSpan("dms.server.ensure_dir", options({ "dms.operation": operation, "dms.mount_path": requested }))
    )
})

/**
 * Barbican with a `Barbican.s3Credentials` span (client kind) per read: the secret's URL only.
 *
 * @since 0.1.0
 * @category tracing
 */
export const barbican = (self: Barbican.Service): Barbican.Service => ({
  ...self,
  s3Credentials: (secretRef, token, readOptions) =>
    self.s3Credentials(secretRef, token, readOptions).pipe(
      Effect.withSpan("Barbican.s3Credentials", { kind: "client", ...options({ "dms.secret_ref": secretRef }) })
    )
})

/**
 * A command runner with a `command <program>` span per command and per daemon start: the program's
 * name, not its arguments or environment.
 *
 * @since 0.1.0
 * @category tracing
 */
export const runner = (self: CommandRunner.Service): CommandRunner.Service => ({
  run: (command) =>
    self.run(command).pipe(
      Effect.withSpan(`command ${path.basename(command.command)}`, options({ "process.command": path.basename(command.command) }))
    ),
  spawnDaemon: (command) =>
    self.spawnDaemon(command).pipe(
      Effect.withSpan(`daemon ${path.basename(command.command)}`, options({ "process.command": path.basename(command.command) }))
    )
})
