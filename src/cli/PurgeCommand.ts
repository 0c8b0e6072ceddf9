/**
 * `trilio-dms purge --older-than 90d [--batch 1000] [--dry-run] [--json]`: retention for the ledger.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Failure from "./Failure.js"
import * as Lazy from "./Lazy.js"
import { parseAge } from "./LedgerCommands.js"
import * as Output from "./Output.js"
import * as RequestArgs from "./RequestArgs.js"

/**
 * `trilio-dms purge`.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = Command.make(
  "purge",
  {
    olderThan: Options.text("older-than").pipe(
      Options.withDescription("delete rows last written longer ago than this (e.g. 90d, 12w, 720h)")
    ),
    batch: RequestArgs.integer("batch").pipe(
      Options.withDescription("rows examined per batch, 1 … 10000 (default 1000): each batch is a short statement or two"),
      Options.optional
    ),
    dryRun: Options.boolean("dry-run").pipe(Options.withDescription("count what would be deleted; delete nothing")),
    json: RequestArgs.json,
    verbose: RequestArgs.verbose
  },
  (args) =>
    Effect.gen(function*() {
      const olderThanMs = yield* Option.match(parseAge(args.olderThan), {
        onNone: () =>
          Effect.fail(
            new Failure.BadInput({ field: "--older-than", reason: `expected a duration such as 90d, 12w or 720h, got "${args.olderThan}"` })
          ),
        onSome: Effect.succeed
      })
      const batchSize = Option.getOrUndefined(args.batch)
      if (batchSize !== undefined && (batchSize < 1 || batchSize > 10_000)) {
        return yield* Effect.fail(new Failure.BadInput({ field: "--batch", reason: `expected 1 … 10000, got ${batchSize}` }))
      }
      const { Ledger, Setup } = yield* Lazy.lib
      const result = yield* Effect.flatMap(Ledger.Ledger, (ledger) =>
        ledger.purge({ olderThan: olderThanMs, batchSize, dryRun: args.dryRun })).pipe(Effect.provide(Setup.ledgerLayer({})))
      if (args.json) {
        return yield* Output.json({
          status: "success",
          dry_run: result.dryRun,
          deleted: result.deleted,
          batches: result.batches,
          older_than_seconds: Math.floor(result.olderThanMs / 1000)
        })
      }
      return yield* Output.line(
        result.dryRun
          ? `dry run: ${result.deleted} ledger row(s) older than ${args.olderThan} hold nothing and would be deleted (${result.batches} batch(es) examined)`
          : `deleted ${result.deleted} ledger row(s) older than ${args.olderThan} that held nothing (${result.batches} batch(es))`
      )
    }).pipe(Failure.reported(args))
).pipe(
  Command.withDescription(
    "Hard-delete ledger rows that hold nothing (unmounted or soft-deleted) and were last written before --older-than, " +
      "in small batches that never block mounts; never an active holder's row, and a batch skips the rows of a target whose " +
      "lock is held or marked pending. --dry-run counts them."
  )
)
