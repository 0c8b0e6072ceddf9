/**
 * Target ids and hosts with quotes, backslashes, `%`, `_`, backticks, `;`, case and accent variants,
 * trailing spaces and unicode round-trip unchanged through mount, unmount, getMountStatus,
 * getActiveMounts, getLedgerHistory and softDeleteEntry on memory, SQLite and MariaDB, and never match
 * another target's rows ("a_c" vs "abc", "50%" vs "50x", "ABC" vs "abc", "abc " vs "abc").
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import fc from "fast-check"
import { randomBytes } from "node:crypto"
import * as Broker from "../src/Broker.js"
import * as DmsConfig from "../src/DmsConfig.js"
import * as Ledger from "../src/Ledger.js"
import * as Mount from "../src/Mount.js"
import { Backend, backends } from "./support/backends.js"
import * as FakeServer from "./support/fakeServer.js"

/** Characters that break naive SQL (quoting, escapes, LIKE wildcards, statement ends), collations
 * (case, accents, trailing space) or encodings (4-byte UTF-8). */
const NASTY = ["'", "\"", "\\", "%", "_", "`", ";", "a", "A", "á", "b", "c", "ß", "🚀", "-", "x", "0", "\u2028"]

interface Pair {
  readonly id: string
  readonly host: string
}

/** Ids that a LIKE, a case- or accent-insensitive or a PAD SPACE comparison would confuse with one
 * another (each appears once). */
const confusable = (p: string): ReadonlyArray<string> =>
  ["a_c", "abc", "ABC", "abc ", "ábc", "50%", "50x", "ß", "ss", "a\\_c", "a\\xc", "%", ""].map((s) => `${p}${s}`)

const nastyIds = (p: string): ReadonlyArray<string> => [
  `${p}it's`,
  `${p}say "hi"`,
  `${p}back\\slash\\`,
  `${p}\\'; DROP TABLE backup_target_mount_ledger; --`,
  `${p}\`tick\``,
  `${p}semi;colon`,
  `${p}ünïcødé-目标-🚀`,
  `${p}%_%_`,
  `${p}${"x".repeat(255 - p.length)}`
]

const nastyHosts = (p: string): ReadonlyArray<string> => [
  `h-${p}'"\\%_\`;`,
  `h-${p}ÜBER-主机-🚀`,
  `h-${p}${"h".repeat(200)}`
]

const mountPathOf = (i: number) => `/var/lib/trilio/triliovault-mounts/rt-${i}`

/** `i`: the mount path's number (each target its own path). */
const request = (jobid: number, pair: Pair, i: number) => ({
  job: { jobid },
  host: pair.host,
  backup_target: {
    id: pair.id,
    type: "nfs",
    filesystem_export: "192.0.2.10:/backups",
    filesystem_export_mount_path: mountPathOf(i)
  }
})

/** Mount's services over the backend's ledger and an in-process model server. */
const services = Effect.gen(function*() {
  const ledger = yield* (yield* Backend).build()
  const server = FakeServer.make()
  const context = yield* Layer.build(
    Layer.mergeAll(
      DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", timeout: 10, lockTimeout: 60 }),
      Layer.succeed(Ledger.Ledger, ledger),
      Broker.layerMemory(server.handler)
    )
  )
  return { context, server }
})

/** Every row of the ledger and lock tables (raw, as stored) whose target id starts with `prefix`. */
const rawRows = (prefix: string) =>
  Effect.gen(function*() {
    const backend = yield* Backend
    if (backend.query === undefined) return undefined
    const ledger = yield* backend.query<ReadonlyArray<{ backup_target_id: string; host: string }>>(
      "SELECT backup_target_id, host FROM backup_target_mount_ledger"
    )
    const locks = yield* backend.query<ReadonlyArray<{ backup_target_id: string; host: string }>>(
      "SELECT backup_target_id, host FROM backup_target_mount_lock"
    )
    const mine = (rows: ReadonlyArray<{ backup_target_id: string; host: string }>) =>
      rows.filter((r) => String(r.backup_target_id).startsWith(prefix)).map((r) => `${r.backup_target_id}\u0001${r.host}`).sort()
    return { ledger: mine(ledger), locks: mine(locks) }
  })

const key = (p: Pair) => `${p.id}\u0001${p.host}`

/**
 * Mounts each pair for its own job, then checks every query returns exactly that pair's row, with the
 * id and host unchanged; unmounts (each is its target's last holder) and soft-deletes.
 */
const roundTrip = (pairs: ReadonlyArray<Pair>, firstJob: number) =>
  Effect.gen(function*() {
    const server = yield* FakeServerTag
    const transitionsBefore = server.transitions.length
    const jobOf = (i: number) => firstJob + i
    for (const [i, pair] of pairs.entries()) {
      const mounted = yield* Mount.mount(request(jobOf(i), pair, jobOf(i)))
      // A separate target: its own physical mount, whatever the others' ids look like.
      assert.isTrue(mounted.physicallyMounted, `${JSON.stringify(pair)} must mount physically (no other target's holders)`)
    }
    for (const [i, pair] of pairs.entries()) {
      const status = yield* Mount.getMountStatus(jobOf(i), pair.id, pair.host)
      assert.isTrue(Option.isSome(status), JSON.stringify(pair))
      const row = Option.getOrThrow(status)
      assert.strictEqual(row.backupTargetId, pair.id)
      assert.strictEqual(row.host, pair.host)
      assert.isTrue(row.mounted)
      const anyHost = Option.getOrThrow(yield* Mount.getMountStatus(jobOf(i), pair.id))
      assert.strictEqual(anyHost.id, row.id)
      for (const [j, other] of pairs.entries()) {
        if (j === i || other.id === pair.id) continue
        assert.isTrue(
          Option.isNone(yield* Mount.getMountStatus(jobOf(j), pair.id)),
          `job ${jobOf(j)} holds ${JSON.stringify(other.id)}, not ${JSON.stringify(pair.id)}`
        )
      }
      const active = yield* Mount.getActiveMounts({ host: pair.host, backupTargetId: pair.id })
      assert.deepStrictEqual(active.map((r) => [r.jobId, r.backupTargetId, r.host]), [[jobOf(i), pair.id, pair.host]])
      const byTarget = yield* Mount.getActiveMounts({ backupTargetId: pair.id })
      assert.deepStrictEqual(
        byTarget.map((r) => r.jobId).sort(),
        pairs.flatMap((p, k) => (p.id === pair.id ? [jobOf(k)] : [])).sort()
      )
      const byHost = yield* Mount.getActiveMounts({ host: pair.host })
      assert.isTrue(byHost.every((r) => r.host === pair.host), `host filter ${JSON.stringify(pair.host)}`)
      const history = yield* Mount.getLedgerHistory(pair.id)
      assert.isTrue(history.length > 0 && history.every((r) => r.backupTargetId === pair.id), JSON.stringify(pair.id))
    }
    const raw = yield* rawRows(PrefixOf(pairs))
    if (raw !== undefined) {
      assert.deepStrictEqual(raw.ledger, pairs.map(key).sort(), "stored ledger rows, byte for byte")
      assert.deepStrictEqual(raw.locks, [...new Set(pairs.map(key))].sort(), "stored lock rows, byte for byte")
    }
    for (const [i, pair] of pairs.entries()) {
      // Another job shares the pair for a moment: its release is the one conditional statement, whose
      // comparisons must be as exact as the lease's.
      const sharer = 500_000 + jobOf(i)
      assert.isFalse((yield* Mount.mount(request(sharer, pair, jobOf(i)))).physicallyMounted)
      assert.deepInclude(yield* Mount.unmount(request(sharer, pair, jobOf(i))), { unmounted: false, activeMountsRemaining: 1 })
      assert.isTrue(yield* Mount.softDeleteEntry(sharer, pair.id, { host: pair.host }), JSON.stringify(pair))
      const result = yield* Mount.unmount(request(jobOf(i), pair, jobOf(i)))
      assert.isTrue(result.unmounted, `${JSON.stringify(pair)} was its target's last holder`)
      assert.strictEqual(result.activeMountsRemaining, 0)
      assert.isTrue(yield* Mount.softDeleteEntry(jobOf(i), pair.id, { host: pair.host }), JSON.stringify(pair))
    }
    for (const pair of pairs) {
      const history = yield* Mount.getLedgerHistory(pair.id)
      const own = history.filter((r) => r.host === pair.host)
      assert.isTrue(own.length > 0 && history.every((r) => r.backupTargetId === pair.id && r.deleted && !r.mounted), JSON.stringify(pair))
    }
    assert.strictEqual(server.transitions.length - transitionsBefore, pairs.length * 2, "one mount and one unmount per target")
  })

class FakeServerTag extends Context.Tag("test/FakeServer")<FakeServerTag, FakeServer.FakeServer>() {}

/** The prefix every id of a batch starts with (the batch's first id up to its first '.'). */
const PrefixOf = (pairs: ReadonlyArray<Pair>) => pairs[0]!.id.slice(0, pairs[0]!.id.indexOf(".") + 1)

const prefix = () => `rt${randomBytes(4).toString("hex")}.`

for (const [name, backendLayer] of backends) {
  describe(`SQL round trip (${name})`, () => {
    layer(backendLayer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
      it.scoped("nasty ids and hosts round-trip unchanged through every operation", () =>
        Effect.gen(function*() {
          const { context, server } = yield* services
          const p = prefix()
          const hosts = nastyHosts(p.slice(0, -1))
          const pairs = nastyIds(p).map((id, i) => ({ id, host: hosts[i % hosts.length]! }))
          yield* roundTrip(pairs, 1000).pipe(Effect.provide(context), Effect.provideService(FakeServerTag, server))
        }))

      it.scoped("ids that LIKE, case, accent or trailing-space comparisons confuse never match each other's rows", () =>
        Effect.gen(function*() {
          const { context, server } = yield* services
          const p = prefix()
          const host = `h-${p}'%_\\`
          const pairs = confusable(p).map((id) => ({ id, host }))
          yield* roundTrip(pairs, 2000).pipe(Effect.provide(context), Effect.provideService(FakeServerTag, server))
          // One id on two hosts whose names differ only in case.
          const q = prefix()
          const hostPairs = [{ id: `${q}same`, host: `H-${q}` }, { id: `${q}same`, host: `h-${q}` }]
          yield* roundTrip(hostPairs, 3000).pipe(Effect.provide(context), Effect.provideService(FakeServerTag, server))
        }))

      it.scoped("generated ids and hosts from quote, escape, wildcard and unicode characters (property)", () =>
        Effect.gen(function*() {
          const { context, server } = yield* services
          const backend = yield* Backend
          const run = (effect: Effect.Effect<void, unknown, any>) =>
            Effect.runPromise(
              effect.pipe(
                Effect.provide(context),
                Effect.provideService(FakeServerTag, server),
                Effect.provideService(Backend, backend)
              ) as Effect.Effect<void, unknown>
            )
          const text = (alphabet: ReadonlyArray<string>) => fc.string({ unit: fc.constantFrom(...alphabet), minLength: 1, maxLength: 12 })
          let batch = 0
          // The second id is the first one bent the way a loose comparison would still match.
          const bend = fc.constantFrom<(s: string) => string>(
            (s) => s.toUpperCase(),
            (s) => s.toLowerCase(),
            (s) => `${s} `,
            (s) => s.replace(/[aA]/g, "á"),
            (s) => s.replace(/ß/g, "ss"),
            (s) => s.replace(/./u, "_"),
            (s) => s.replace(/.$/u, "%"),
            (s) => s.replace(/\\/g, "")
          )
          const property = fc.asyncProperty(
            text(NASTY),
            bend,
            text(NASTY.filter((c) => !/\s/.test(c))),
            async (a, f, h) => {
              const p = prefix()
              batch++
              const b = f(a)
              const pairs = a === b ? [{ id: `${p}${a}`, host: `h${h}` }] : [{ id: `${p}${a}`, host: `h${h}` }, { id: `${p}${b}`, host: `h${h}` }]
              await run(roundTrip(pairs, 10_000 + batch * 4))
            }
          )
          yield* Effect.promise(() => fc.assert(property, { numRuns: name === "memory" ? 200 : 60 }))
        }))
    })
  })
}
