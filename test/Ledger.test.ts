/**
 * One behavioural suite for the Ledger, run against memory, SQLite and MySQL (the real MariaDB).
 */
import { assertNone, assertSome } from "@effect/vitest/utils"
import { assert, describe, it, layer } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import { randomBytes } from "node:crypto"
import { DatabaseError, TimeoutError, ValidationError } from "../src/DmsError.js"
import * as DmsConfig from "../src/DmsConfig.js"
import type * as Ledger from "../src/Ledger.js"
import * as LedgerModule from "../src/Ledger.js"
import * as Layer from "effect/Layer"
import mysql from "mysql2/promise"
import { VERSION } from "../src/internal/version.js"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Backend, backends } from "./support/backends.js"
import { spawnTs } from "./support/process.js"

const target = () => `target-${randomBytes(5).toString("hex")}`
const HOST = "compute-01"

/** Runs `n` fibers × `rounds` critical sections on one (target, host) and reports the most fibers
 * that were ever inside at once. Each body does a ledger round trip while "inside", so a broken lock
 * shows as overlap. */
const overlap = (ledgers: ReadonlyArray<Ledger.Service>, targetId: string, n: number, rounds: number) =>
  Effect.gen(function*() {
    let inside = 0
    let maxInside = 0
    let sections = 0
    const worker = (ledger: Ledger.Service) =>
      Effect.repeatN(
        ledger.withTargetLock(targetId, HOST, (lease) =>
          Effect.gen(function*() {
            inside++
            maxInside = Math.max(maxInside, inside)
            yield* lease.read(1)
            yield* Effect.yieldNow()
            sections++
            inside--
          }), { timeout: "60 seconds" }),
        rounds - 1
      )
    yield* Effect.forEach(Array.from({ length: n }, (_, i) => ledgers[i % ledgers.length]!), worker, {
      concurrency: "unbounded",
      discard: true
    })
    return { maxInside, sections }
  })

/** Writes `jobIds` as holders of the target at /m/shared. */
const holdShared = (ledger: Ledger.Service, targetId: string, jobIds: ReadonlyArray<number>) =>
  ledger.withTargetLock(targetId, HOST, (lease) =>
    Effect.forEach(jobIds, (jobId) => lease.write({ job: { jobId, mounted: true }, mountPath: "/m/shared" }), { discard: true }))

for (const [name, backendLayer] of backends) {
  describe(`Ledger (${name})`, () => {
    layer(backendLayer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
      it.scoped("getHostState lists one host's lock rows (path, type, pending mark) and holders", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const host = `host-${randomBytes(4).toString("hex")}`
          const [a, b] = [`a-'"\\%_${target()}`, `b-${target()}`]
          yield* ledger.withTargetLock(a, host, (lease) =>
            lease.write({ job: { jobId: 7, mounted: true }, mountPath: "/m/a'%_", targetType: "s3" }))
          const mark = { op: "unmount" as const, timeoutMs: 3_600_000, mountPath: "/m/b", targetType: "nfs" as const }
          yield* ledger.withTargetLock(b, host, (lease) => lease.write({ pending: mark }))
          yield* ledger.withTargetLock(a, "elsewhere", (lease) => lease.write({ job: { jobId: 8, mounted: true } }))
          const state = yield* ledger.getHostState(host)
          assert.strictEqual(state.host, host)
          assert.deepStrictEqual(
            // Options unwrapped: chai's deep equality takes None for equal to any Some.
            state.locks.map((l): ReadonlyArray<unknown> => [
              l.backupTargetId,
              l.host,
              Option.getOrNull(l.mountPath),
              Option.getOrNull(l.targetType),
              Option.getOrNull(Option.map(l.pending, (p) => [p.op, p.mountPath, p.targetType]))
            ]),
            [
              [a, host, "/m/a'%_", "s3", null],
              [b, host, null, null, ["unmount", "/m/b", "nfs"]]
            ]
          )
          const due = Option.getOrThrow(state.locks[1]!.pending).remainingMs
          assert.isTrue(due > 3_500_000 && due <= 3_600_000, `due in ${due} ms`)
          assert.deepStrictEqual(state.holders.map((h) => [h.backupTargetId, h.host, h.jobId, h.mounted]), [[a, host, 7, true]])
          assert.deepStrictEqual(yield* ledger.getHostState(`none-${host}`), { host: `none-${host}`, locks: [], holders: [] })
          const invalid = yield* Effect.flip(ledger.getHostState(""))
          assert.instanceOf(invalid, ValidationError)
          assert.include(invalid.message, "host")
        }))

      it.scoped("records a holder, reads it back, and answers the guide's queries", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          const before = Date.now()
          yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              const empty = yield* lease.read(12345)
              assert.deepStrictEqual(empty.holders, [])
              assert.isTrue(Option.isNone(empty.job))
              assert.isTrue(Option.isNone(empty.pending))
              yield* lease.write({ job: { jobId: 12345, mounted: true }, mountPath: "/mnt/x" })
              yield* lease.write({ job: { jobId: 12346, mounted: true } })
              const state = yield* lease.read(12345)
              assert.deepStrictEqual(state.holders.map((h) => h.jobId), [12345, 12346])
              assert.strictEqual(Option.getOrThrow(state.job).jobId, 12345)
              assertSome(state.mountPath, "/mnt/x")
            }))

          const status = Option.getOrThrow(yield* ledger.getMountStatus(12345, t))
          assert.strictEqual(status.jobId, 12345)
          assert.strictEqual(status.backupTargetId, t)
          assert.strictEqual(status.host, HOST)
          assert.isTrue(status.mounted)
          assert.isFalse(status.deleted)
          assert.strictEqual(status.version, VERSION)
          assert.isNull(status.deletedAt)
          // Stored in UTC and read back as UTC: within a minute of the test's clock, not hours off.
          assert.isTrue(Math.abs(status.createdAt.getTime() - before) < 60_000, String(status.createdAt))
          assert.isTrue(Option.isSome(yield* ledger.getMountStatus(12345, t, HOST)))
          assert.isTrue(Option.isNone(yield* ledger.getMountStatus(12345, t, "compute-02")))
          assert.isTrue(Option.isNone(yield* ledger.getMountStatus(99, t)))

          const active = yield* ledger.getActiveMounts({ backupTargetId: t })
          assert.deepStrictEqual(active.map((e) => e.jobId), [12345, 12346])
          assert.deepStrictEqual(yield* ledger.getActiveMounts({ backupTargetId: t, host: "compute-02" }), [])
          const onHost = yield* ledger.getActiveMounts({ host: HOST })
          assert.isTrue(onHost.some((e) => e.backupTargetId === t))
        }))

      it.scoped("a state read together with the lease is the same as a read after it, and never stale", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 1, mounted: true }, mountPath: "/p" }))
          const [withLease, after] = yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              const first = yield* lease.read(1)
              const second = yield* lease.read(1)
              return [first, second] as const
            }), { readJobId: 1 })
          assert.deepStrictEqual(withLease, after)
          assert.deepStrictEqual(withLease.holders.map((h) => h.jobId), [1])
          const fresh = yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              yield* lease.write({ job: { jobId: 2, mounted: true } })
              return yield* lease.read(2)
            }), { readJobId: 2 })
          assert.deepStrictEqual(fresh.holders.map((h) => h.jobId), [1, 2], "read after a write sees the write")
          assert.strictEqual(Option.getOrThrow(fresh.job).jobId, 2)
        }))

      it.scoped("a repeated mount by the same job keeps one row; unmounting a missing row creates none", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              for (let i = 0; i < 3; i++) yield* lease.write({ job: { jobId: 7, mounted: true } })
              yield* lease.write({ job: { jobId: 8, mounted: false } })
            }))
          const history = yield* ledger.getLedgerHistory(t)
          assert.deepStrictEqual(history.map((e) => [e.jobId, e.mounted]), [[7, true]])
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 7, mounted: false } }))
          const after = yield* ledger.getLedgerHistory(t)
          assert.deepStrictEqual(after.map((e) => [e.jobId, e.mounted]), [[7, false]])
          assert.deepStrictEqual(yield* ledger.getActiveMounts({ backupTargetId: t }), [])
        }))

      it.scoped("keeps a written pending operation and mount path on the lock row until cleared", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          const mark = { op: "mount" as const, timeoutMs: 12_345, mountPath: "/m/p", targetType: "nfs" as const }
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ pending: mark, mountPath: "/m/p", targetType: "nfs" }))
          const seen = yield* ledger.withTargetLock(t, HOST, (lease) => lease.read())
          const pending = Option.getOrThrow(seen.pending)
          assert.deepStrictEqual([pending.op, pending.mountPath, pending.targetType], ["mount", "/m/p", "nfs"])
          assert.isTrue(pending.remainingMs > 0 && pending.remainingMs <= 12_345, `due in ${pending.remainingMs} ms`)
          assertSome(seen.mountPath, "/m/p")
          assertSome(seen.targetType, "nfs")
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ pending: null }))
          const cleared = yield* ledger.withTargetLock(t, HOST, (lease) => lease.read())
          assertNone(cleared.pending)
          assertSome(cleared.mountPath, "/m/p")
        }))

      it.scoped("the mark taken with the lease is the operation's own, and never overwrites an earlier one", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          const withMark = (mountPath: string) => ({
            readJobId: 7,
            mark: { op: "mount" as const, timeout: Duration.seconds(20), mountPath, targetType: "s3" as const }
          })
          // Taken with a mark and published: the operation sees no pending operation, only its own mark.
          const before = Date.now()
          const own = yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              const state = yield* lease.read(7)
              assertNone(state.pending)
              lease.markSent()
              return lease.ownMark()
            }), withMark("/m/first"))
          assert.isTrue(Option.isSome(own))
          const ownMark = Option.getOrThrow(own)
          assert.strictEqual(ownMark.mountPath, "/m/first")
          assert.isAtLeast(ownMark.deadline.getTime(), before + 20_000)
          // The next operation finds it pending (outcome unknown) with its path and type; its own mark
          // does not replace it.
          const next = yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.map(lease.read(7), (state) => ({ state, own: lease.ownMark() })), withMark("/m/second"))
          const earlier = Option.getOrThrow(next.state.pending)
          assert.deepStrictEqual([earlier.op, earlier.mountPath, earlier.targetType], ["mount", "/m/first", "s3"])
          assert.isTrue(earlier.remainingMs > 0 && earlier.remainingMs <= 20_000, `due in ${earlier.remainingMs} ms`)
          assertNone(next.own)
          // Its release left the earlier mark alone; clearing it lets the next operation mark its own.
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ pending: null }))
          const third = yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.map(lease.read(7), (state) => ({ state, own: lease.ownMark() })), withMark("/m/third"))
          assertNone(third.state.pending)
          assert.strictEqual(Option.getOrThrow(third.own).mountPath, "/m/third")
          // Never published: dropped with the lease.
          assertNone((yield* ledger.withTargetLock(t, HOST, (lease) => lease.read())).pending)
        }))

      it.scoped("a mark taken with the lease is dropped when the body fails before it read anything or published", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          const mark = { op: "unmount" as const, timeout: Duration.seconds(60), mountPath: "/m/t", targetType: "nfs" as const }
          // A failing first read (a dropped connection, say) ends the body before it learnt of its mark.
          const failed = yield* Effect.either(ledger.withTargetLock(t, HOST, () => Effect.fail("read failed"), { readJobId: 7, mark }))
          assert.isTrue(failed._tag === "Left")
          assertNone((yield* ledger.withTargetLock(t, HOST, (lease) => lease.read(7))).pending)
        }))

      it.scoped("a lease held longer than its duration is renewed: nobody takes it over, and its writes land", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const holder = yield* backend.build({ leaseDuration: "600 millis", renewInterval: "150 millis" })
          const other = yield* backend.build()
          const t = target()
          const inside = yield* Deferred.make<void>()
          const done = yield* Deferred.make<void>()
          const holding = yield* holder.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              yield* Deferred.succeed(inside, undefined)
              // Held for several lease durations (the subject here is time itself).
              yield* Deferred.await(done)
              yield* lease.write({ job: { jobId: 5, mounted: true } })
            })).pipe(Effect.fork)
          yield* Deferred.await(inside)
          const error = yield* Effect.flip(other.withTargetLock(t, HOST, () => Effect.void, { timeout: "2 seconds" }))
          assert.instanceOf(error, TimeoutError)
          yield* Deferred.succeed(done, undefined)
          yield* Fiber.join(holding)
          assert.deepStrictEqual((yield* other.getActiveMounts({ backupTargetId: t })).map((e) => e.jobId), [5])
        }))

      it.scoped("history is newest first, includes deleted rows, and honours the limit", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.forEach([1, 2, 3, 4], (jobId) => lease.write({ job: { jobId, mounted: true } }), { discard: true }))
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 2, mounted: false } }))
          assert.isTrue(yield* ledger.softDeleteEntry(2, t))
          const all = yield* ledger.getLedgerHistory(t)
          assert.deepStrictEqual(all.map((e) => e.jobId), [4, 3, 2, 1])
          assert.isTrue(all.find((e) => e.jobId === 2)!.deleted)
          assert.deepStrictEqual((yield* ledger.getLedgerHistory(t, 2)).map((e) => e.jobId), [4, 3])
        }))

      it.scoped("a shared release frees one job's row only while another job holds the target, the lease is free, nothing is pending, at the recorded path", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const ledger = yield* backend.build()
          const other = yield* backend.build()
          const t = target()
          const release = (l: Ledger.Service, jobId: number, mountPath = "/m/shared") => l.releaseShared!(t, HOST, (r) => r(jobId, mountPath))
          const holders = Effect.map(ledger.getActiveMounts({ backupTargetId: t }), (rows) => rows.map((e) => e.jobId))
          yield* holdShared(ledger, t, [1, 2, 3, 4])
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 4, mounted: false } }))

          assertNone(yield* release(ledger, 1, "/m/elsewhere"))
          assert.isTrue(Option.isNone(yield* release(ledger, 4)), "its row holds nothing")
          assert.isTrue(Option.isNone(yield* release(ledger, 5)), "it has no row")
          // Another client holds the lease.
          const held = yield* Deferred.make<void>()
          const letGo = yield* Deferred.make<void>()
          const holder = yield* other.withTargetLock(t, HOST, () => Effect.zipRight(Deferred.succeed(held, undefined), Deferred.await(letGo))).pipe(
            Effect.fork
          )
          yield* Deferred.await(held)
          assertNone(yield* release(ledger, 1))
          yield* Deferred.succeed(letGo, undefined)
          yield* Fiber.join(holder)
          // An operation's outcome is pending.
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ pending: { op: "mount", timeoutMs: 60_000 } }))
          assertNone(yield* release(ledger, 1))
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ pending: null }))
          assert.deepStrictEqual(yield* holders, [1, 2, 3], "nothing was written")

          assertSome(yield* release(ledger, 1), 2)
          assertSome(yield* release(other, 2), 1)
          assert.isTrue(Option.isNone(yield* release(ledger, 3)), "the last holder")
          assert.isTrue(Option.isNone(yield* release(ledger, 1)), "released already")
          assert.deepStrictEqual(yield* holders, [3])
          assert.isFalse(Option.getOrThrow(yield* ledger.getMountStatus(1, t, HOST)).mounted)
          // The lease is free: taken at once.
          yield* other.withTargetLock(t, HOST, () => Effect.void, { timeout: "2 seconds" })
        }))

      it.scoped("a shared release over a lease that expired fences its stalled holder out", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const stalled = yield* backend.build({ leaseDuration: "400 millis", renewInterval: Duration.hours(1) })
          const ledger = yield* backend.build()
          const t = target()
          yield* holdShared(ledger, t, [1, 2])
          const held = yield* Deferred.make<void>()
          const released = yield* Deferred.make<void>()
          const stalledFiber = yield* stalled.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              yield* Deferred.succeed(held, undefined)
              yield* Deferred.await(released)
              // It read job 2 as a holder beside job 1 before stalling; its write must not land.
              return yield* Effect.flip(lease.write({ job: { jobId: 2, mounted: false } }))
            })).pipe(Effect.fork)
          yield* Deferred.await(held)
          // Refused while the lease lasts; once it expired, the release goes through.
          const others = yield* ledger.releaseShared!(t, HOST, (r) => r(1, "/m/shared")).pipe(
            Effect.flatMap(Option.match({ onNone: () => Effect.fail("refused" as const), onSome: Effect.succeed })),
            Effect.retry(Schedule.spaced("50 millis").pipe(Schedule.upTo("20 seconds")))
          )
          assert.strictEqual(others, 1)
          yield* Deferred.succeed(released, undefined)
          const error = yield* Fiber.join(stalledFiber)
          assert.instanceOf(error, DatabaseError)
          assert.match(error.message, /lease/)
          assert.deepStrictEqual((yield* ledger.getActiveMounts({ backupTargetId: t })).map((e) => e.jobId), [2])
        }))

      it.scoped("two holders released at once through two clients: exactly one is released, the other is the last holder", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const a = yield* backend.build()
          const b = yield* backend.build()
          for (let round = 0; round < 10; round++) {
            const t = target()
            yield* holdShared(a, t, [1, 2])
            const [one, two] = yield* Effect.all([
              a.releaseShared!(t, HOST, (r) => r(1, "/m/shared")),
              b.releaseShared!(t, HOST, (r) => r(2, "/m/shared"))
            ], { concurrency: 2 })
            assert.strictEqual([one, two].filter(Option.isSome).length, 1, `round ${round}`)
            assert.strictEqual(Option.getOrThrow(Option.orElse(one, () => two)), 1, "the other job still holds it")
            assert.lengthOf(yield* a.getActiveMounts({ backupTargetId: t }), 1)
          }
        }))

      it.scoped("soft delete marks only a row that is not mounted", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const t = target()
          assert.isFalse(yield* ledger.softDeleteEntry(5, t), "no row")
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 5, mounted: true } }))
          assert.isFalse(yield* ledger.softDeleteEntry(5, t), "mounted row")
          assert.isTrue(Option.isSome(yield* ledger.getMountStatus(5, t)))
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 5, mounted: false } }))
          assert.isFalse(yield* ledger.softDeleteEntry(5, t, { host: "compute-02" }), "other host")
          assert.isTrue(yield* ledger.softDeleteEntry(5, t, { host: HOST }))
          assert.isTrue(Option.isNone(yield* ledger.getMountStatus(5, t)))
          const [row] = yield* ledger.getLedgerHistory(t)
          assert.isTrue(row!.deleted)
          assert.instanceOf(row!.deletedAt, Date)
          // A new mount after the soft delete starts a new row; the deleted one stays as history.
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 5, mounted: true } }))
          assert.deepStrictEqual((yield* ledger.getLedgerHistory(t)).map((e) => [e.deleted, e.mounted]), [[false, true], [true, false]])
        }))

      it.scoped("refuses bad arguments before any I/O", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const bad = [
            ledger.getMountStatus("12345" as unknown as number, "t"),
            ledger.getMountStatus(0, "t"),
            ledger.getMountStatus(2_147_483_648, "t"),
            ledger.getMountStatus(1, ""),
            ledger.getActiveMounts({ host: "" }),
            ledger.getLedgerHistory("t", 0),
            ledger.getLedgerHistory("t", 1.5),
            ledger.softDeleteEntry(1, "x".repeat(256)),
            ledger.withTargetLock("t", "bad host", () => Effect.void)
          ]
          for (const effect of bad) {
            const error = yield* Effect.flip(effect as Effect.Effect<unknown, unknown>)
            assert.instanceOf(error, ValidationError)
          }
        }))

      it.scoped("fibers of one process never hold one (target, host) at once", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const { maxInside, sections } = yield* overlap([ledger], target(), 6, 5)
          assert.strictEqual(sections, 30)
          assert.strictEqual(maxInside, 1)
        }))

      it.scoped("two client instances over the same tables never hold one (target, host) at once", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const a = yield* backend.build()
          const b = yield* backend.build()
          const { maxInside, sections } = yield* overlap([a, b], target(), 4, 5)
          assert.strictEqual(sections, 20)
          assert.strictEqual(maxInside, 1)
        }))

      it.scoped("eight different targets are held at the same time; nothing waits", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const all = yield* Deferred.make<void>()
          let inside = 0
          let maxInside = 0
          yield* Effect.forEach(
            Array.from({ length: 8 }, target),
            (t) =>
              ledger.withTargetLock(t, HOST, () =>
                Effect.gen(function*() {
                  inside++
                  maxInside = Math.max(maxInside, inside)
                  if (inside === 8) yield* Deferred.succeed(all, undefined)
                  // Each holder waits until all eight hold their lock: only possible if none waited.
                  yield* Deferred.await(all)
                }), { timeout: "20 seconds" }),
            { concurrency: "unbounded", discard: true }
          ).pipe(Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error(`only ${maxInside} held at once`) }))
          assert.strictEqual(maxInside, 8)
        }))

      it.scoped("waiting past the lock timeout fails with TimeoutError { phase: 'lock' }, in and across processes", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const a = yield* backend.build()
          const other = yield* backend.build()
          const t = target()
          const held = yield* Deferred.make<void>()
          const gate = yield* Deferred.make<void>()
          const holder = yield* a.withTargetLock(t, HOST, () => Deferred.succeed(held, undefined).pipe(Effect.zipRight(Deferred.await(gate)))).pipe(Effect.fork)
          yield* Deferred.await(held)
          for (const ledger of [a, other]) {
            let ran = false
            const error = yield* Effect.flip(ledger.withTargetLock(t, HOST, () => Effect.sync(() => (ran = true)), { timeout: "300 millis" }))
            assert.instanceOf(error, TimeoutError)
            assert.strictEqual((error as TimeoutError).phase, "lock")
            assert.isFalse(ran)
          }
          yield* Deferred.succeed(gate, undefined)
          yield* Fiber.join(holder)
          // Released: the lock is free again at once.
          yield* other.withTargetLock(t, HOST, () => Effect.void, { timeout: "5 seconds" })
        }))

      it.scoped("a holder whose lease expired and was taken over cannot write (the fence refuses it)", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          // A stalled holder: short lease, never renewed.
          const stalled = yield* backend.build({ leaseDuration: "400 millis", renewInterval: Duration.hours(1) })
          const other = yield* backend.build()
          const t = target()
          // Job 9 already holds the target: the stalled holder will try to update its row too.
          yield* other.withTargetLock(t, HOST, (lease) => lease.write({ job: { jobId: 9, mounted: true } }))
          const held = yield* Deferred.make<void>()
          const takenOver = yield* Deferred.make<void>()
          const stalledFiber = yield* stalled.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              yield* Deferred.succeed(held, undefined)
              yield* Deferred.await(takenOver)
              const update = yield* Effect.flip(lease.write({ job: { jobId: 9, mounted: false }, pending: null }))
              assert.instanceOf(update, DatabaseError)
              return yield* Effect.flip(lease.write({ job: { jobId: 1, mounted: true }, pending: null }))
            })).pipe(Effect.fork)
          yield* Deferred.await(held)
          yield* other.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              yield* lease.write({ job: { jobId: 2, mounted: true } })
              yield* Deferred.succeed(takenOver, undefined)
              // Wait for the stalled holder's attempt while still holding the lease.
              const error = yield* Fiber.join(stalledFiber)
              assert.instanceOf(error, DatabaseError)
              assert.match(error.message, /lease/)
              yield* lease.write({ job: { jobId: 2, mounted: false } })
            }), { timeout: "20 seconds" })
          const rows = yield* other.getLedgerHistory(t)
          assert.deepStrictEqual(rows.map((e) => [e.jobId, e.mounted]), [[2, false], [9, true]])
        }))

      it.scoped("releasing in the final write frees the lock and refuses later writes", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const ledger = yield* backend.build()
          const other = yield* backend.build()
          const t = target()
          const after = yield* Deferred.make<void>()
          const first = yield* ledger.withTargetLock(t, HOST, (lease) =>
            Effect.gen(function*() {
              yield* lease.write({ job: { jobId: 3, mounted: true }, release: true })
              yield* Deferred.await(after)
              return yield* Effect.flip(lease.write({ job: { jobId: 3, mounted: false } }))
            })).pipe(Effect.fork)
          // Another process gets the lock while the first body still runs.
          yield* other.withTargetLock(t, HOST, () => Effect.void, { timeout: "10 seconds" })
          yield* Deferred.succeed(after, undefined)
          assert.instanceOf(yield* Fiber.join(first), DatabaseError)
          assert.isTrue(Option.getOrThrow(yield* ledger.getMountStatus(3, t)).mounted)
        }))

      it.scoped("a body that fails or is interrupted releases the lock", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const ledger = yield* backend.build()
          const other = yield* backend.build()
          const t = target()
          const exit = yield* Effect.exit(ledger.withTargetLock(t, HOST, () => Effect.fail("boom" as const)))
          assert.deepStrictEqual(exit, Exit.fail("boom" as const))
          yield* other.withTargetLock(t, HOST, () => Effect.void, { timeout: "5 seconds" })
          const inside = yield* Deferred.make<void>()
          const fiber = yield* ledger.withTargetLock(t, HOST, () => Deferred.succeed(inside, undefined).pipe(Effect.zipRight(Effect.never))).pipe(Effect.fork)
          yield* Deferred.await(inside)
          yield* Fiber.interrupt(fiber)
          yield* other.withTargetLock(t, HOST, () => Effect.void, { timeout: "5 seconds" })
          yield* ledger.withTargetLock(t, HOST, () => Effect.void, { timeout: "5 seconds" })
        }))

      it.scoped("a pending mark's deadline is the database's: a client whose clock is an hour off writes and reads the same time left", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          // The memory ledger is one process on one clock: there is no other clock to disagree with.
          if (backend.name === "memory") return
          const ledger = yield* backend.build()
          const t = target()
          const skewed = (offsetMs: number) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
            Effect.flatMap(Effect.clock, (clock) =>
              Effect.withClock(
                effect,
                Object.assign(Object.create(clock) as typeof clock, {
                  unsafeCurrentTimeMillis: () => clock.unsafeCurrentTimeMillis() + offsetMs,
                  currentTimeMillis: Effect.map(clock.currentTimeMillis, (ms) => ms + offsetMs)
                })
              ))
          // Marked with the lease by a client an hour ahead, and by a write of a client an hour behind.
          const mark = { op: "mount" as const, timeout: Duration.seconds(30), mountPath: "/m/skew", targetType: "nfs" as const }
          yield* ledger.withTargetLock(t, HOST, (lease) => Effect.sync(() => lease.markSent()), { readJobId: 1, mark }).pipe(
            skewed(3_600_000)
          )
          const seen = yield* ledger.withTargetLock(t, HOST, (lease) => lease.read()).pipe(skewed(-3_600_000))
          const first = Option.getOrThrow(seen.pending)
          assert.isTrue(first.remainingMs > 0 && first.remainingMs <= 30_000, `due in ${first.remainingMs} ms`)
          yield* ledger.withTargetLock(t, HOST, (lease) => lease.write({ pending: { op: "unmount", timeoutMs: 20_000 } })).pipe(
            skewed(-3_600_000)
          )
          const second = Option.getOrThrow((yield* ledger.withTargetLock(t, HOST, (lease) => lease.read()).pipe(skewed(3_600_000))).pending)
          assert.isTrue(second.remainingMs > 0 && second.remainingMs <= 20_000, `due in ${second.remainingMs} ms`)
          assert.isBelow(Math.abs(second.deadline.getTime() - Date.now() - 20_000), 600_000, "the deadline is on the database's clock")
        }))

      it.scoped("purge: old rows that hold nothing go, in batches; never a holder's, a leased or pending pair's, or a recent row", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const ledger = yield* backend.build()
          const [t1, t2, t3, t4] = [target(), target(), target(), target()]
          const host = `host-${randomBytes(4).toString("hex")}`
          // "Old" rows: on SQL aged by the database's clock below; in memory written on a clock 100 days back.
          const old = backend.query === undefined
            ? <A, E, R>(effect: Effect.Effect<A, E, R>) =>
              Effect.flatMap(Effect.clock, (clock) =>
                Effect.withClock(
                  effect,
                  Object.assign(Object.create(clock) as typeof clock, {
                    unsafeCurrentTimeMillis: () => clock.unsafeCurrentTimeMillis() - 100 * 86_400_000,
                    currentTimeMillis: Effect.map(clock.currentTimeMillis, (ms) => ms - 100 * 86_400_000)
                  })
                ))
            : <A, E, R>(effect: Effect.Effect<A, E, R>) => effect
          const set = (t: string, jobId: number, mounted: boolean) =>
            ledger.withTargetLock(t, host, (lease) => lease.write({ job: { jobId, mounted } }))
          yield* old(Effect.all([
            set(t1, 1, true), // a holder
            set(t1, 2, true), set(t1, 2, false), // released
            set(t1, 3, true), set(t1, 3, false), ledger.softDeleteEntry(3, t1, { host }), // soft-deleted
            set(t2, 5, true), set(t2, 5, false),
            ledger.withTargetLock(t2, host, (lease) => lease.write({ pending: { op: "unmount", timeoutMs: 1000 } })),
            set(t3, 6, true), set(t3, 6, false),
            ...[10, 11, 12, 13, 14].flatMap((j) => [set(t4, j, true), set(t4, j, false)])
          ], { discard: true }))
          if (backend.query !== undefined) {
            yield* backend.query(
              backend.name === "mysql"
                ? "UPDATE backup_target_mount_ledger SET updated_at = updated_at - INTERVAL 100 DAY WHERE host = ?"
                : "UPDATE backup_target_mount_ledger SET updated_at = datetime(updated_at, '-100 days') WHERE host = ?",
              [host]
            )
          }
          yield* set(t1, 4, true)
          yield* set(t1, 4, false) // recent
          const jobsOf = (t: string) => Effect.map(ledger.getLedgerHistory(t), (rows) => rows.map((r) => r.jobId).sort((a, b) => a - b))

          const dry = yield* ledger.purge({ olderThan: "30 days", batchSize: 2, dryRun: true })
          assert.deepInclude(dry, { deleted: 8, dryRun: true }, "t1's jobs 2 and 3, t3's job 6 (not leased yet) and t4's five")
          assert.deepStrictEqual(yield* jobsOf(t4), [10, 11, 12, 13, 14], "a dry run deletes nothing")

          // t3's lease is held while the purge runs: an operation may be about to write its rows.
          const inside = yield* Deferred.make<void>()
          const done = yield* Deferred.make<void>()
          const holder = yield* Effect.fork(ledger.withTargetLock(t3, host, () =>
            Effect.zipRight(Deferred.succeed(inside, undefined), Deferred.await(done))))
          yield* Deferred.await(inside)
          const purged = yield* ledger.purge({ olderThan: "30 days", batchSize: 2 })
          yield* Deferred.succeed(done, undefined)
          yield* Fiber.join(holder)
          assert.deepInclude(purged, { deleted: 7, dryRun: false })
          assert.isAtLeast(purged.batches, 6, "batches of 2 rows")
          assert.deepStrictEqual(yield* jobsOf(t1), [1, 4], "the holder's row and the recent one stay")
          assert.deepStrictEqual(yield* jobsOf(t2), [5], "a pending pair's rows stay")
          assert.deepStrictEqual(yield* jobsOf(t3), [6], "a leased pair's rows stay")
          assert.deepStrictEqual(yield* jobsOf(t4), [])
          assert.deepInclude(yield* ledger.purge({ olderThan: "30 days" }), { deleted: 1, dryRun: false, olderThanMs: 30 * 86_400_000 }, "t3's row, once its lease is free")
          assert.deepStrictEqual(yield* jobsOf(t3), [])

          const bad = yield* Effect.flip(ledger.purge({ olderThan: 0 }))
          assert.instanceOf(bad, ValidationError)
          assert.include(bad.message, "olderThan")
          assert.instanceOf(yield* Effect.flip(ledger.purge({ olderThan: "1 day", batchSize: 0 })), ValidationError)
        }))

      it.scoped("purge locks only the ledger rows it deletes: another transaction holding the pair's lock row does not stall it", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          if (backend.name !== "mysql") return
          const ledger = yield* backend.build()
          const t = target()
          const host = `host-${randomBytes(4).toString("hex")}`
          yield* ledger.withTargetLock(t, host, (lease) => lease.write({ job: { jobId: 1, mounted: true } }))
          yield* ledger.withTargetLock(t, host, (lease) => lease.write({ job: { jobId: 1, mounted: false } }))
          yield* backend.query!("UPDATE backup_target_mount_ledger SET updated_at = updated_at - INTERVAL 100 DAY WHERE host = ?", [host])
          // As a lease take's UPDATE holds it while it runs: a DELETE that read the lock table under a
          // shared lock would wait for it (and every take of a batch's pairs waited for the DELETE).
          const other = yield* Effect.acquireRelease(
            Effect.promise(() => mysql.createConnection(backend.url!)),
            (c) => Effect.promise(() => c.end().catch(() => undefined))
          )
          yield* Effect.promise(() =>
            other.query("BEGIN").then(() => other.query("SELECT lock_key FROM backup_target_mount_lock WHERE host = ? FOR UPDATE", [host]))
          )
          const purged = yield* ledger.purge({ olderThan: "30 days" }).pipe(Effect.timeout("10 seconds"))
          yield* Effect.promise(() => other.query("ROLLBACK"))
          assert.isAtLeast(purged.deleted, 1)
          assert.deepStrictEqual(yield* ledger.getLedgerHistory(t), [])
        }))

      it.scoped("getActiveMounts pages through a host's active rows by id", () =>
        Effect.gen(function*() {
          const ledger = yield* (yield* Backend).build()
          const host = `host-${randomBytes(4).toString("hex")}`
          for (const j of [1, 2, 3, 4, 5]) yield* ledger.withTargetLock(`page-${j}`, host, (lease) => lease.write({ job: { jobId: j, mounted: true } }))
          const pages: Array<Array<number>> = []
          let afterId = 0
          for (;;) {
            const page = yield* ledger.getActiveMounts({ host, limit: 2, afterId })
            if (page.length === 0) break
            pages.push(page.map((e) => e.jobId))
            afterId = page[page.length - 1]!.id
          }
          assert.deepStrictEqual(pages, [[1, 2], [3, 4], [5]])
          assert.lengthOf(yield* ledger.getActiveMounts({ host }), 5, "without a limit: every row")
          const bad = yield* Effect.flip(ledger.getActiveMounts({ host, limit: 0 }))
          assert.instanceOf(bad, ValidationError)
          assert.include(bad.message, "limit")
        }))

      it.scoped("getActiveMounts on a host with thousands of active rows: a page holds at most its limit, the cursor reaches each row once", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const ledger = yield* backend.build()
          const host = `host-${randomBytes(4).toString("hex")}`
          const rows = 3000
          // Rows 1…3000 of the host over 50 targets, one in three released: 2,000 active; and one active row elsewhere.
          if (backend.query === undefined) {
            for (let seq = 1; seq <= rows; seq++) {
              yield* ledger.withTargetLock(`page-t${seq % 50}`, host, (lease) => lease.write({ job: { jobId: seq, mounted: seq % 3 !== 0 } }))
            }
          } else {
            const select = `SELECT 'x', ${backend.name === "mysql" ? "CONCAT('page-t', seq % 50)" : "'page-t' || (seq % 50)"}, seq, ?, seq % 3 <> 0`
            const columns = `INSERT INTO backup_target_mount_ledger (version, backup_target_id, jobid, host, mounted)`
            yield* backend.query(
              backend.name === "mysql"
                ? `${columns} ${select} FROM seq_1_to_${rows}`
                : `WITH RECURSIVE s(seq) AS (SELECT 1 UNION ALL SELECT seq + 1 FROM s WHERE seq < ${rows}) ${columns} ${select} FROM s`,
              [host]
            )
          }
          yield* ledger.withTargetLock("page-elsewhere", `${host}-other`, (lease) => lease.write({ job: { jobId: 1, mounted: true } }))

          const first = yield* ledger.getActiveMounts({ host, limit: 100 })
          assert.lengthOf(first, 100)
          assert.deepStrictEqual(first.map((e) => e.jobId), Array.from({ length: 150 }, (_, i) => i + 1).filter((j) => j % 3 !== 0).slice(0, 100))
          const seen: Array<number> = []
          let pages = 0
          for (let afterId = 0;;) {
            const page = yield* ledger.getActiveMounts({ host, limit: 500, afterId })
            if (page.length === 0) break
            assert.isAtMost(page.length, 500)
            assert.isTrue(page.every((e) => e.host === host && e.mounted && e.id > afterId), "the host's active rows after the cursor")
            seen.push(...page.map((e) => e.id))
            afterId = page[page.length - 1]!.id
            pages++
          }
          assert.strictEqual(pages, 4)
          assert.strictEqual(new Set(seen).size, 2000, "each active row once")
          assert.deepStrictEqual(seen, [...seen].sort((a, b) => a - b), "in id order")
          assert.deepStrictEqual(seen, (yield* ledger.getActiveMounts({ host })).map((e) => e.id), "the rows an unpaged call returns")
          assert.lengthOf(yield* ledger.getActiveMounts({ host, afterId: 0 }), 2000, "a cursor alone: pages of 10,000")
          assert.lengthOf(yield* ledger.getActiveMounts({ limit: 100 }), 100, "every host's, a page too")
        }))

      it.scoped("history is newest first by creation time, whatever the ids (Galera hands them out per node)", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          if (backend.query === undefined) return
          const ledger = yield* backend.build()
          const t = target()
          // As two nodes would: the row created later got the smaller id.
          yield* backend.query(
            `INSERT INTO backup_target_mount_ledger (id, created_at, updated_at, deleted, version, backup_target_id, jobid, host, mounted)
              VALUES (1000005, '2026-01-01 10:00:00', '2026-01-01 10:00:00', 0, 'x', ?, 1, ?, 0),
                     (1000003, '2026-01-01 10:00:07', '2026-01-01 10:00:07', 0, 'x', ?, 2, ?, 0)`,
            [t, HOST, t, HOST]
          )
          const history = yield* ledger.getLedgerHistory(t)
          assert.deepStrictEqual(history.map((e) => e.jobId), [2, 1])
        }))
    })
  })
}

describe("Ledger renewer", () => {
  it.scoped("never keeps a client process alive once its leases are released", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dms-renewer-"))),
        (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
      )
      const child = yield* spawnTs("test/support/leaseOnce.ts", [`sqlite:${path.join(dir, "ledger.db")}`])
      yield* child.waitFor("released")
      // A renewer sleeping on a ref'd timer would keep it alive for its 100 ms interval forever.
      const code = yield* child.exited.pipe(Effect.timeout("20 seconds"))
      assert.strictEqual(code, 0)
    }))
})

describe("Ledger.layerConfig", () => {
  it.live("takes the ledger URL and the lock timeout from DmsConfig", () =>
    Effect.gen(function*() {
      const config = DmsConfig.layer({ dbUrl: "memory:", rabbitmqUrl: "memory:", lockTimeout: 0.25 })
      const ledger = yield* Effect.provide(LedgerModule.Ledger, LedgerModule.layerConfig().pipe(Layer.provide(config)))
      const t = target()
      const held = yield* Deferred.make<void>()
      const holder = yield* ledger.withTargetLock(t, HOST, () => Effect.zipRight(Deferred.succeed(held, undefined), Effect.never)).pipe(Effect.fork)
      yield* Deferred.await(held)
      const error = yield* Effect.flip(ledger.withTargetLock(t, HOST, () => Effect.void))
      assert.instanceOf(error, TimeoutError)
      assert.strictEqual((error as TimeoutError).timeoutMs, 250)
      yield* Fiber.interrupt(holder)
    }))
})

for (const [name, backendLayer] of backends) {
  describe(`Ledger fairness across processes (${name})`, () => {
    layer(backendLayer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
      it.scoped("two busy client processes take turns: neither holds the lock many times in a row", () =>
        Effect.gen(function*() {
          const backend = yield* Backend
          const a = yield* backend.build()
          const b = yield* backend.build()
          const t = target()
          const order: Array<string> = []
          const worker = (ledger: Ledger.Service, label: string) =>
            Effect.repeatN(
              ledger.withTargetLock(t, HOST, (lease) =>
                Effect.gen(function*() {
                  yield* lease.read(1)
                  order.push(label)
                  // The work done under the lock (a mount's round trip to the server takes about this).
                  yield* Effect.sleep("2 millis")
                }), { timeout: "60 seconds" }),
              9
            )
          // Four fibers per process: each process always has a fiber queued behind its holder.
          yield* Effect.all(
            [...Array.from({ length: 4 }, () => worker(a, "a")), ...Array.from({ length: 4 }, () => worker(b, "b"))],
            { concurrency: "unbounded", discard: true }
          )
          assert.strictEqual(order.length, 80)
          // Only while both processes still want the lock: once one has finished its 40 turns, the
          // other's run at the end is no starvation.
          const contended = order.slice(0, Math.min(order.lastIndexOf("a"), order.lastIndexOf("b")) + 1)
          let longest = 0
          let run = 0
          for (let i = 0; i < contended.length; i++) {
            run = i > 0 && contended[i] === contended[i - 1] ? run + 1 : 1
            longest = Math.max(longest, run)
          }
          // Without fairness one process re-takes the lock for its own queued fibers and the other starves
          // (then it finishes all 40 turns first: the contended stretch shrinks to one long run).
          // A waiting process reserves the next turn when it polls (every ≤ 60 ms), so runs stay short and
          // both processes appear in every stretch of the sequence.
          assert.isAtLeast(contended.length, 50, order.join(""))
          assert.isAtMost(longest, 12, order.join(""))
          for (let i = 0; i + 20 <= contended.length; i += 10) {
            const window = contended.slice(i, i + 20)
            assert.isTrue(window.includes("a") && window.includes("b"), order.join(""))
          }
        }))
    })
  })
}
