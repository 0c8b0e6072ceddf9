/**
 * `trilio-dms doctor`: checks the configuration (and where each value comes from), the ledger database,
 * RabbitMQ, and the queue and consumer of a host's DMS server, and says what is wrong and how to fix
 * it. It only reads: it creates no table and declares no queue.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as os from "node:os"
import type { Check } from "./DoctorChecks.js"
import * as Failure from "./Failure.js"
import * as Lazy from "./Lazy.js"
import * as Output from "./Output.js"
import * as RequestArgs from "./RequestArgs.js"

const exitCodeFor = (check: Check["check"]): number =>
  check === "config" ? Failure.ExitCode.badInput : check === "database" ? Failure.ExitCode.database : Failure.ExitCode.broker

/**
 * `trilio-dms doctor [--host]`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "doctor",
  {
    host: Options.text("host").pipe(
      Options.withDescription("the host whose DMS server to look for (default: this host's name)"),
      Options.withDefault(os.hostname())
    ),
    json: RequestArgs.json,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.gen(function*() {
      const { DoctorChecks } = yield* Lazy.lib
      const result = yield* DoctorChecks.checks(args.host)
      const failed = result.checks.find((c) => c.status === "fail")
      const code = failed === undefined ? Failure.ExitCode.ok : exitCodeFor(failed.check)
      if (args.json) {
        yield* Output.json({ ok: failed === undefined, exit_code: code, host: args.host, config: result.config ?? null, checks: result.checks })
      } else {
        const out: Array<string> = []
        if (result.config !== undefined) {
          out.push("configuration:")
          out.push(
            ...Output.table(
              [{ header: "KEY" }, { header: "VALUE" }, { header: "FROM" }],
              Object.entries(result.config).map(([k, v]) => [k, v.value, v.source])
            ).map((l) => `  ${l}`),
            ""
          )
        }
        out.push(`checks (host ${args.host}):`)
        out.push(
          ...Output.table(
            [{ header: "CHECK" }, { header: "STATUS" }, { header: "DETAIL" }],
            result.checks.map((c) => [c.check, c.status.toUpperCase(), c.detail])
          ).map((l) => `  ${l}`)
        )
        const fixes = result.checks.filter((c) => c.fix !== undefined && c.status !== "ok")
        if (fixes.length > 0) out.push("", "to fix:", ...fixes.map((c) => `  ${c.check}: ${c.fix}`))
        out.push("", failed === undefined ? "all checks passed" : `${failed.check} check failed (exit ${code})`)
        yield* Output.lines(out)
      }
      if (code !== 0) return yield* Effect.fail(new Failure.CliExit({ code }))
    }).pipe(Failure.reported(args))
).pipe(
  Command.withDescription(
    "Check the configuration (and where each value comes from), the ledger database, RabbitMQ, and the queue and " +
      "consumer of a host's DMS server; say what is wrong and how to fix it. Exit 0 when all pass, else 2 (config), " +
      "4 (database) or 5 (broker, server)."
  )
)

