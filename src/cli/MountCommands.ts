/**
 * `trilio-dms mount` and `trilio-dms unmount`: one request, from flags or a guide-format file, with a
 * spinner while the command waits for the lock and the server.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Protocol from "../Protocol.js"
import * as Failure from "./Failure.js"
import * as Lazy from "./Lazy.js"
import * as Output from "./Output.js"
import * as RequestArgs from "./RequestArgs.js"
import * as Spinner from "./Spinner.js"

type Args = RequestArgs.RequestFlags & {
  readonly timeout: Option.Option<number>
  readonly json: boolean
  readonly verbose: boolean
}

const configOptions = (args: { readonly timeout: Option.Option<number> }) =>
  Option.match(args.timeout, { onNone: () => ({}), onSome: (timeout) => ({ timeout }) })

const run = (args: Args, action: Protocol.Action) =>
  Effect.gen(function*() {
    const { body, request } = yield* RequestArgs.build(args, action)
    const { Mount, Setup } = yield* Lazy.lib
    const target = request.backup_target.id
    const host = request.host
    const job = request.job.jobid
    const layer = Setup.clientLayer(configOptions(args))
    const start = yield* Clock.currentTimeMillis
    const label = `${action === "mount" ? "mounting" : "unmounting"} ${target} on ${host} for job ${job}`
    const took = Effect.map(Clock.currentTimeMillis, (now) => now - start)
    const common = { job_id: job, backup_target_id: target, host }
    if (action === "mount") {
      const result = yield* Mount.mount(body).pipe(Effect.provide(layer), Spinner.withSpinner(label))
      const ms = yield* took
      if (args.json) {
        return yield* Output.json({
          status: "success",
          error_msg: null,
          success_msg: result.message,
          mount_path: result.mountPath,
          reused_existing: result.reusedExisting,
          physically_mounted: result.physicallyMounted,
          ...common,
          elapsed_ms: ms
        })
      }
      const how = result.physicallyMounted ? "physical mount" : "reused the existing mount"
      return yield* Output.lines([
        `mounted ${target} on ${host} at ${result.mountPath} for job ${job} (${how}; ${Output.elapsed(ms)})`,
        `server: ${result.message}`
      ])
    }
    const result = yield* Mount.unmount(body).pipe(Effect.provide(layer), Spinner.withSpinner(label))
    const ms = yield* took
    if (args.json) {
      return yield* Output.json({
        status: "success",
        error_msg: null,
        success_msg: result.message,
        unmounted: result.unmounted,
        active_mounts_remaining: result.activeMountsRemaining,
        ...common,
        elapsed_ms: ms
      })
    }
    const what = result.unmounted
      ? "physically unmounted (it was the last holder)"
      : `still mounted for ${result.activeMountsRemaining} other hold(s)`
    return yield* Output.lines([
      `released job ${job}'s hold on ${target} on ${host}: ${what} (${Output.elapsed(ms)})`,
      `${result.unmounted ? "server" : "ledger"}: ${result.message}`
    ])
  }).pipe(Failure.reported(args))

/**
 * `trilio-dms mount`.
 *
 * @since 0.1.0
 * @category commands
 */
export const mount = Command.make("mount", RequestArgs.requestOptions, (args) => run(args, "mount")).pipe(
  Command.withDescription(
    "Mount a backup target on a host for a job: records the job in the ledger and asks the host's DMS server to mount " +
      "(the first job mounts physically, later ones share the mount). Exit codes: 0 ok, 1 the server refused, " +
      "2 bad input, 3 timeout, 4 database, 5 broker or no server for the host."
  )
)

/**
 * `trilio-dms unmount`.
 *
 * @since 0.1.0
 * @category commands
 */
export const unmount = Command.make("unmount", RequestArgs.requestOptions, (args) => run(args, "unmount")).pipe(
  Command.withDescription(
    "Release a job's hold on a backup target; the last holder's release unmounts it on the host. Takes the same " +
      "flags (or --request file) as mount. Exit codes as for mount; 1 also when the job holds no mount."
  )
)
