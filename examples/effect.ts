/**
 * The same with Effect: one layer for configuration, ledger and broker; the mount is a scoped resource
 * that is always released; errors are typed.
 */
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { Dms, Mount } from "trilio-dms"

declare const request: unknown

const backup = (mountPath: string) => Console.log(`backing up to ${mountPath}`)

export const program = Mount.withMount(request, (mount) => backup(mount.mountPath)).pipe(
  Effect.catchTags({
    ValidationError: (e) => Console.error(`invalid request: ${e.message}`),
    TimeoutError: (e) => Console.error(e.phase === "reply" ? `outcome unknown: ${e.message}` : `nothing happened, retry later: ${e.message}`),
    MountError: (e) => Console.error(`the server refused: ${e.errorMsg}`)
  })
)

// Configuration from the environment / ~/.trilio-dms/client.conf, as DMSClient() reads it.
export const main = () => Effect.runPromise(program.pipe(Effect.provide(Dms.layerConfig())))
