/**
 * A separate client process for the lock tests:
 *   node --import tsx test/support/lockWorker.ts '<json>'
 * with {url, target, host, mode: "contend" | "hold", rounds?, log?, leaseMs?}.
 * - contend: prints "ready", waits for "go" on stdin, then takes the lock `rounds` times, appending
 *   "enter <pid>" / "exit <pid>" to `log` while holding it; prints "done".
 * - hold: takes the lock, prints "held", and holds it until killed.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as fs from "node:fs"
import * as readline from "node:readline"
import * as Ledger from "../../src/Ledger.js"

interface Args {
  readonly url: string
  readonly target: string
  readonly host: string
  readonly mode: "contend" | "hold"
  readonly rounds?: number
  readonly log?: string
  readonly leaseMs?: number
}

const args = JSON.parse(process.argv[2] ?? "{}") as Args
const say = (line: string) => Effect.sync(() => process.stdout.write(`${line}\n`))
const waitForGo = Effect.async<void>((resume) => {
  const rl = readline.createInterface({ input: process.stdin })
  rl.on("line", (line) => {
    if (line.trim() === "go") {
      rl.close()
      resume(Effect.void)
    }
  })
})

const program = Effect.gen(function*() {
  const ledger = yield* Ledger.Ledger
  if (args.mode === "hold") {
    return yield* ledger.withTargetLock(args.target, args.host, () => Effect.zipRight(say("held"), Effect.never))
  }
  yield* say("ready")
  yield* waitForGo
  for (let i = 0; i < (args.rounds ?? 20); i++) {
    yield* ledger.withTargetLock(args.target, args.host, (lease) =>
      Effect.gen(function*() {
        fs.appendFileSync(args.log!, `enter ${process.pid}\n`)
        const state = yield* lease.read(process.pid)
        yield* lease.write({ job: { jobId: process.pid, mounted: Option.isNone(state.job) } })
        fs.appendFileSync(args.log!, `exit ${process.pid}\n`)
      }), { timeout: "60 seconds" })
  }
  yield* say("done")
})

Effect.runPromise(
  program.pipe(Effect.provide(Ledger.layerFromUrl(args.url, args.leaseMs ? { leaseDuration: args.leaseMs } : {})))
).then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`${String(e)}\n`)
    process.exit(1)
  }
)
