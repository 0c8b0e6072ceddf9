/**
 * A client process that takes one lease on the ledger at `url`, holds it past a renewal, releases it
 * and prints "released", then does nothing more, so it must exit by itself:
 *   node --import tsx test/support/leaseOnce.ts '<url>'
 * The Ledger's renewer must not keep a process alive.
 */
import * as Effect from "effect/Effect"
import * as Ledger from "../../src/Ledger.js"

const url = process.argv[2] ?? "memory:"
await Effect.runPromise(
  Effect.gen(function*() {
    const ledger = yield* Ledger.Ledger
    yield* ledger.withTargetLock("lease-once", "h", () => Effect.sleep("300 millis"))
  }).pipe(Effect.provide(Ledger.layerFromUrl(url, { leaseDuration: "3 hours", renewInterval: "100 millis" })))
)
process.stdout.write("released\n")
