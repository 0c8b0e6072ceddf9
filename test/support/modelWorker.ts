/**
 * A client process of the randomized model test:
 *   node --import tsx test/support/modelWorker.ts '{"client":{…ClientSettings},"slots":[…SlotSpec]}'
 * Runs its slots as concurrent fibers over one Effect client (Dms.layer: MariaDB ledger, RabbitMQ broker
 * with the given connection name), each slot with a DMSClient of its own besides, and prints one line
 * per event: `ready` once connected, then `start <OpStart json>` before and `end <OpEnd json>` after
 * every operation, `metrics <json>` (the process's retry counters, {@link ModelClient.retryCounts}) and
 * `done` at the end. A `stop` line on stdin ends the slots' scripts early (after their `minOps`).
 */
import * as Effect from "effect/Effect"
import * as readline from "node:readline"
import * as Ledger from "../../src/Ledger.js"
import * as ModelClient from "./modelClient.js"

interface Args {
  readonly client: ModelClient.ClientSettings
  readonly slots: ReadonlyArray<ModelClient.SlotSpec>
}

const args = JSON.parse(process.argv[2] ?? "{}") as Args
const say = (line: string) => Effect.sync(() => void process.stdout.write(`${line}\n`))
const report: ModelClient.Reporter = {
  start: (op) => say(`start ${JSON.stringify(op)}`),
  end: (op) => say(`end ${JSON.stringify(op)}`)
}

let stopped = false
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.trim() === "stop") stopped = true
})

const program = Effect.gen(function*() {
  // Connected to the ledger before the first operation.
  yield* Effect.flatMap(Ledger.Ledger, (l) => l.getActiveMounts())
  yield* say("ready")
  yield* Effect.forEach(args.slots, (slot) => ModelClient.runSlot(slot, report, args.client, () => stopped), {
    concurrency: "unbounded",
    discard: true
  })
  yield* say(`metrics ${JSON.stringify(yield* ModelClient.retryCounts)}`)
  yield* say("done")
})

Effect.runPromise(program.pipe(Effect.provide(ModelClient.clientLayer(args.client)))).then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${String(e)}\n`)
    process.exit(1)
  }
)
