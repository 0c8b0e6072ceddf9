/**
 * The randomized model test's harness (issue #8, "Prove it"): random mount/unmount/retry operations
 * from fibers of the test process and from separate client processes, over a few targets and hosts,
 * against model DMS servers (test/support/modelServer.ts) whose mount table is a file and whose every
 * state transition is logged with the operation that caused it. Optionally with faults injected while
 * it runs; under faults the run then leaves drift that only reconcile repairs ({@link Drift}). After the
 * run, {@link recover} resolves what the faults left pending, and {@link check}
 * compares the servers' tables, their transition logs, the ledger and what every operation was told.
 *
 * Everything is real: MariaDB (the run's own database), RabbitMQ (the run's own queue names),
 * processes of our own.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FastCheck from "effect/FastCheck"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import type * as Dms from "../../src/Dms.js"
import * as Reconcile from "../../src/Reconcile.js"
import { rpc } from "./dmsServer.js"
import * as ModelClient from "./modelClient.js"
import * as ModelServer from "./modelServer.js"
import { TestDatabase } from "./mysql.js"
import { type Child, spawnTs } from "./process.js"
import { closeConnectionNamed, deleteOnClose, RABBIT_URL, type Rabbitmqctl, uniqueHost } from "./rabbit.js"

// ---------------------------------------------------------------------------------------------------
// Options and results

export type FaultKind = "rabbitClose" | "serverKill" | "dbKill" | "clientKill" | "delay"
export const FAULT_KINDS: ReadonlyArray<FaultKind> = ["rabbitClose", "serverKill", "dbKill", "clientKill", "delay"]

export interface RunOptions {
  readonly seed: number
  /** Operations in total over all slots (recovery not counted). */
  readonly ops: number
  readonly faults: boolean
  readonly targets?: number
  readonly hosts?: number
  /** Fibers in the test process. */
  readonly inProcessSlots?: number
  /** Client processes, and fibers in each. */
  readonly workers?: number
  readonly slotsPerWorker?: number
  readonly jobsPerSlot?: number
  readonly timeoutMs?: number
  readonly leaseMs?: number
  readonly lockTimeoutMs?: number
  /** A scope's release timeout (`releaseTimeout`). */
  readonly releaseTimeoutMs?: number
  /** Pause between two faults, drawn in this range (ms). */
  readonly faultGapMs?: readonly [number, number]
  /** A pause of every slot between two operations (ms; none by default). */
  readonly pauseMs?: number
  /** Where clients and model servers connect, and faults of a cluster (default: the test services). */
  readonly wiring?: Wiring
}

/** A client of the run: the test process's (its fibers, the drift, recovery) or a worker's (its index). */
export type ClientRole = "main" | number

/**
 * Where the run's clients and model servers connect (e.g. each to another node of a cluster), and which
 * faults it injects. Every field has the plain run's default: the test MariaDB and RabbitMQ, the
 * built-in fault kinds in turn while the scripts run.
 */
export interface Wiring {
  /** A client's ledger URL, for the run's database. */
  readonly dbUrl?: (client: ClientRole, database: string) => string
  /** A client's broker URL (or URLs, as the client takes them). */
  readonly rabbitmqUrl?: (client: ClientRole) => string
  /** A model server's broker URLs, comma-separated: it connects to the first that answers. */
  readonly serverUrl?: (host: number) => string
  readonly queueType?: "classic" | "quorum"
  /** The broker the test itself uses (the queues' deletion, `status` at the end). */
  readonly adminUrl?: string
  /** `rabbitmqctl` of the broker the clients use (the `rabbitClose` fault). */
  readonly rabbitmqctl?: Rabbitmqctl
  /**
   * Restart a model server whose process ended by itself (it lost its broker), as systemd would, once
   * it can connect again; each restart is counted in `Summary.serverRestarts`.
   */
  readonly superviseServers?: boolean
  /** The fault kinds injected in turn (default {@link FAULT_KINDS}): built-in ones and `extraFaults`' keys. */
  readonly faultKinds?: ReadonlyArray<string>
  readonly extraFaults?: Readonly<Record<string, ExtraFault>>
  /**
   * Inject this many faults, then stop: the scripts run (each at least its share of `ops`) until the
   * last fault is over, so the run lasts as long as its faults. Default: faults until the scripts end.
   */
  readonly faultCount?: number
}

/** What a fault of a cluster may use of the run. */
export interface FaultContext {
  readonly workers: number
  readonly servers: number
  /** The model servers' queues, by host index. */
  readonly queues: ReadonlyArray<string>
  /** Waits (bounded) until every model server runs again (see `superviseServers`). */
  readonly serversUp: Effect.Effect<void, Error>
}

/**
 * A fault of the test's own, drawn with `r`: it injects it, restores what it broke before it returns
 * (also when interrupted), and gives the label it is counted under, or undefined when it was skipped.
 */
export type ExtraFault = (r: number, context: FaultContext) => Effect.Effect<string | undefined, Error, Scope.Scope>

/** One operation as the run recorded it. */
export interface OpRecord {
  readonly start: ModelClient.OpStart
  end?: ModelClient.OpEnd
  /** Its process was killed while it ran: the outcome is unknown. */
  killed?: boolean
}

export interface Summary {
  readonly seed: number
  readonly ops: number
  readonly recoveryOps: number
  /** What reconcile (with repair) found after the run, summed over the hosts, and what it did about it. */
  readonly reconciled: Reconciled
  /** The drift left behind for reconcile after the run (under faults), as (target, host) keys. */
  readonly drift: Drift | undefined
  readonly byOutcome: Record<string, number>
  /** Repeated mounts, scopes and their ends, closes: what the scripts did beyond plain operations. */
  readonly script: ScriptFigures
  readonly faults: Record<string, number>
  /** Faults attempted but not injected (e.g. no request came to stall in time). */
  readonly faultsSkipped: number
  /** Failed operations by error, with the phase, reason or code that tells what failed (see {@link errorKind}). */
  readonly errors: Record<string, number>
  /** The clients' retry counters ({@link ModelClient.retryCounts}), summed over the processes that reported. */
  readonly retries: Record<string, number>
  /** Model servers restarted after they ended by themselves (`Wiring.superviseServers`). */
  readonly serverRestarts: number
  readonly transitions: { readonly mounted: number; readonly unmounted: number }
  readonly physicalMounts: number
  readonly physicalUnmounts: number
  readonly holdsAtEnd: number
  readonly violations: ReadonlyArray<string>
  readonly seconds: number
  /** Of which: leaving the drift, and recovery (the wait for deadlines, reconcile, verifying operations). */
  readonly driftSeconds: number
  readonly recoverySeconds: number
}

/** What reconcile with repair found and did, summed over the hosts. */
export interface Reconciled {
  readonly stale: number
  readonly orphans: number
  readonly pending: number
  readonly repaired: number
  /** Stale targets remounted, orphans unmounted, pending marks resolved. */
  readonly remounted: number
  readonly unmounted: number
  readonly resolved: number
}

/** One reconcile of a host during recovery: when it ran (the host's clock is ours) and what it reported. */
export interface ReconcileRun {
  readonly host: string
  readonly repair: boolean
  readonly start: number
  readonly end: number
  readonly report: Reconcile.Report
}

/**
 * Drift left for reconcile alone, after the operations stopped (keys `target@host`): targets held on a
 * host that then rebooted (stale), a last release whose reply came too late (stale and pending), a mount
 * next to other holders whose reply came too late (pending), mounts that completed on the host after
 * their client timed out, for pairs nobody holds (orphans and pending).
 */
export interface Drift {
  readonly rebootedHost: string
  /** Mounts the reboot took away (all, not only the drift's). */
  readonly rebootLost: number
  readonly ops: number
  readonly stale: ReadonlyArray<string>
  readonly orphans: ReadonlyArray<string>
  readonly pending: ReadonlyArray<string>
}

/** A line for the test's output. */
export const summaryLine = (s: Summary): string =>
  `model run seed=${s.seed}: ${s.ops} ops (${s.script.repeated} repeated mounts, ${s.script.scopeEnds} scope ends, ${s.script.closes} closes, ${s.violations.length} violations; script ${
    JSON.stringify(s.script)
  }) (${
    s.drift === undefined
      ? ""
      : `+${s.drift.ops} leaving drift: ${s.drift.rebootLost} mounts lost in a reboot of ${s.drift.rebootedHost}, ${s.drift.stale.length} stale, ${s.drift.orphans.length} orphans, ${s.drift.pending.length} pending; `
  }+${s.recoveryOps} recovery; reconcile found ${JSON.stringify(s.reconciled)}) in ${
    s.seconds.toFixed(1)
  } s (drift ${s.driftSeconds.toFixed(1)} s, recovery ${s.recoverySeconds.toFixed(1)} s); outcomes ${
    JSON.stringify(s.byOutcome)
  }; faults ${JSON.stringify(s.faults)} (${s.faultsSkipped} skipped${s.serverRestarts > 0 ? `, ${s.serverRestarts} model server restarts` : ""}); errors ${
    JSON.stringify(s.errors)
  }; retries ${JSON.stringify(s.retries)}; transitions ${s.transitions.mounted} mounted / ${s.transitions.unmounted} unmounted; holds at end ${s.holdsAtEnd}; violations ${s.violations.length}`

/** What a database or broker error's message says failed, in a word or a code (see {@link errorKind}). */
const ERROR_CAUSES: ReadonlyArray<readonly [RegExp, string]> = [
  [/Deadlock found|ER_LOCK_DEADLOCK/, "1213 deadlock"],
  [/Lock wait timeout|ER_LOCK_WAIT_TIMEOUT/, "1205 lock wait timeout"],
  [/WSREP has not yet prepared|ER_UNKNOWN_COM_ERROR/, "1047 WSREP not ready"],
  [/lease is no longer held/, "lease lost"],
  [/no DMS server for host/, "no server"],
  [/connection to the broker was lost/, "connection lost"],
  [/\b(ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|PROTOCOL_CONNECTION_LOST|ER_[A-Z_]+)\b/, "$1"],
  [/[Cc]onnection (?:lost|closed)|closed state/, "connection lost"]
]

/**
 * A failure's kind for the figures: its error, phase and reason (when it is a word), and for a database
 * or broker error what its message says failed (`DatabaseError[1213 deadlock]`, `BrokerError[ECONNREFUSED]`).
 */
export const errorKind = (o: Extract<ModelClient.Outcome, { _tag: "failure" }>): string => {
  let cause: string | undefined
  if (o.error === "DatabaseError" || o.error === "BrokerError") {
    for (const [pattern, label] of ERROR_CAUSES) {
      const m = pattern.exec(o.message)
      if (m !== null) {
        cause = label.replace("$1", m[1] ?? "")
        break
      }
    }
    cause ??= "other"
  }
  const reason = o.reason !== undefined && /^[\w-]+$/.test(o.reason) ? `(${o.reason})` : ""
  return `${o.error}${o.phase ? `(${o.phase})` : ""}${reason}${cause === undefined ? "" : `[${cause}]`}`
}

/** `DMS_MODEL_<NAME>` as a number, or the default. */
export const envNumber = (name: string, fallback: number): number => {
  const raw = process.env[`DMS_MODEL_${name}`]
  if (raw === undefined || raw.trim() === "") return fallback
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new Error(`DMS_MODEL_${name} must be a number, got ${JSON.stringify(raw)}`)
  return n
}

// ---------------------------------------------------------------------------------------------------
// Model servers

interface ServerHandle {
  readonly host: string
  child: Child
  readonly start: Effect.Effect<Child, Error, Scope.Scope>
  /** A fault restarts it: its supervisor must not. */
  restarting: boolean
}

let stallTags = 0

/**
 * Arms a stall of the next request (whose id starts with `prefix`, or any for `-`) on the server and
 * waits until a request is held there; false (the stall disarmed) if none came within 5 s.
 */
const stallNext = (server: ServerHandle, when: "before" | "after", prefix: string) =>
  Effect.gen(function*() {
    // Tagged: a stall given up on may still be hit after the cancel (and released at once); its line
    // must not pass for a later stall's.
    const tag = `s${++stallTags}`
    yield* server.child.send(`stall ${when} ${prefix} ${tag}`)
    const stalled = yield* server.child.take(`stalled ${tag} `).pipe(Effect.timeout("5 seconds"), Effect.either)
    if (stalled._tag === "Right") return true
    yield* server.child.send("cancel")
    yield* server.child.send("release")
    return false
  })

const startServer = (args: ModelServer.ModelServerArgs) =>
  Effect.gen(function*() {
    const child = yield* spawnTs("test/support/modelServer.ts", [JSON.stringify(args)])
    const first = yield* Effect.either(child.take(""))
    if (first._tag === "Left" || first.right !== "ready") {
      return yield* Effect.fail(new Error(`model server for ${args.host} did not start: ${child.stderr()}`))
    }
    return child
  })

/** Asks a model server to print `drained` once it has no request in progress or waiting, and waits. */
const drain = (server: ServerHandle) =>
  Effect.gen(function*() {
    yield* server.child.send("drain")
    yield* server.child.take("drained").pipe(
      Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error(`the model server of ${server.host} did not drain`) })
    )
  })

// ---------------------------------------------------------------------------------------------------
// Drift for reconcile

/** How many targets the drift uses (on every host; see {@link leaveDrift}). */
export const DRIFT_TARGETS = 4

/**
 * After the operations stopped, leaves drift behind that no later operation resolves, so that only
 * reconcile can repair it (on the run's own `drift` pairs, `DRIFT_TARGETS` targets on every host, which
 * the scripts never touch; at least two hosts):
 * - on the first host, fresh jobs hold d0 and d1; then the host reboots (its model server forgets every
 *   mount, the run's too): every target jobs hold there is stale;
 * - on the last host, fresh jobs hold d0 and d1; d0's holder releases it and the server unmounts it but
 *   its reply comes after the client's timeout (stale and pending: the ledger still has the holder); a
 *   second job mounts d1 next to its holder and that reply comes too late (pending only); d2 and d3 are
 *   mounted for fresh jobs by requests held at the server until their clients timed out (orphans, and
 *   pending: nobody holds them).
 * Each late request is held (`stall`) until its client has given up, then let go, and waited for until
 * answered: the interleaving is forced, not timed.
 */
const leaveDrift = (
  driftPairs: ReadonlyArray<ModelClient.Pair>,
  servers: ReadonlyArray<ServerHandle>,
  context: Context.Context<Dms.Services>,
  record: ModelClient.Reporter,
  firstJobId: number
): Effect.Effect<Drift, Error> =>
  Effect.gen(function*() {
    const first = servers[0]!
    const last = servers[servers.length - 1]!
    if (first === last) return yield* Effect.fail(new Error("the drift needs two hosts"))
    const pairOf = (server: ServerHandle, d: number) => {
      const pair = driftPairs.find((p) => p.host === server.host && p.targetId.endsWith(`-d${d}`))
      if (pair === undefined) throw new Error(`no drift pair d${d} on ${server.host}`)
      return pair
    }
    let ops = 0
    let nextJob = firstJobId
    const op = (id: string, action: "mount" | "unmount", pair: ModelClient.Pair, jobId: number) =>
      Effect.gen(function*() {
        yield* record.start({
          id,
          slot: "drift",
          jobId,
          pair: -1,
          targetId: pair.targetId,
          host: pair.host,
          action,
          via: "effect",
          retry: false,
          start: Date.now()
        })
        const outcome = yield* ModelClient.perform(action, ModelClient.request(pair, jobId, id)).pipe(Effect.provide(context))
        yield* record.end({ id, end: Date.now(), outcome })
        ops++
        return outcome
      })

    const holds = [pairOf(first, 0), pairOf(first, 1), pairOf(last, 0), pairOf(last, 1)].map((pair) => ({ pair, jobId: nextJob++ }))
    yield* Effect.forEach(holds, ({ jobId, pair }, i) =>
      Effect.gen(function*() {
        const outcome = yield* op(`drift-hold-${i}`, "mount", pair, jobId)
        if (outcome._tag !== "success") {
          return yield* Effect.fail(new Error(`drift: job ${jobId} could not mount ${pairKey(pair.targetId, pair.host)}: ${outcome.message}`))
        }
      }), { concurrency: "unbounded", discard: true })

    yield* first.child.send("reboot")
    const rebooted = yield* first.child.take("rebooted ").pipe(
      Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`the model server of ${first.host} did not reboot`) })
    )

    const late = [
      { id: "drift-late-release", action: "unmount", pair: pairOf(last, 0), jobId: holds[2]!.jobId, when: "after" },
      { id: "drift-late-mount", action: "mount", pair: pairOf(last, 1), jobId: nextJob++, when: "after" },
      { id: "drift-orphan-0", action: "mount", pair: pairOf(last, 2), jobId: nextJob++, when: "before" },
      { id: "drift-orphan-1", action: "mount", pair: pairOf(last, 3), jobId: nextJob++, when: "before" }
    ] as const
    for (const l of late) yield* last.child.send(`stall ${l.when} ${l.id} ${l.id}`)
    const fibers = yield* Effect.forEach(late, (l) => Effect.fork(op(l.id, l.action, l.pair, l.jobId)))
    for (const [i, l] of late.entries()) {
      const reached = yield* Effect.raceFirst(
        Effect.as(last.child.take(`stalled ${l.id} ${l.id} `), true),
        Effect.as(Fiber.await(fibers[i]!), false)
      ).pipe(
        Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`drift: ${l.id} never reached ${last.host}`) })
      )
      if (!reached) {
        const outcome = yield* Fiber.join(fibers[i]!)
        return yield* Effect.fail(new Error(`drift: ${l.id} ended before it reached ${last.host}: ${JSON.stringify(outcome)}`))
      }
    }
    // The clients give up (reply timeout, outcome unknown) while their requests are held.
    for (const [i, fiber] of fibers.entries()) {
      const outcome = yield* Fiber.join(fiber)
      if (outcome._tag !== "failure" || outcome.error !== "TimeoutError" || outcome.phase !== "reply") {
        return yield* Effect.fail(new Error(`drift: ${late[i]!.id} should have timed out waiting for its reply: ${JSON.stringify(outcome)}`))
      }
    }
    yield* last.child.send("release")
    for (const l of late) {
      yield* last.child.take(`answered ${l.id}`).pipe(
        Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error(`drift: ${l.id} was not answered after its release`) })
      )
    }
    const key = (p: ModelClient.Pair) => pairKey(p.targetId, p.host)
    return {
      rebootedHost: first.host,
      rebootLost: Number(rebooted.split(" ")[1]),
      ops,
      stale: [key(pairOf(first, 0)), key(pairOf(first, 1)), key(pairOf(last, 0))],
      orphans: [key(pairOf(last, 2)), key(pairOf(last, 3))],
      pending: late.map((l) => key(l.pair))
    }
  })

/**
 * What the reconciles with repair did about the drift, as violations: each stale target remounted,
 * each orphan unmounted, each pending mark resolved.
 */
export const checkDrift = (drift: Drift, reconciles: ReadonlyArray<ReconcileRun>): Array<string> => {
  const v: Array<string> = []
  const expect = (
    kind: "stale" | "orphans" | "pending",
    action: Reconcile.Action,
    keys: ReadonlyArray<string>
  ) => {
    for (const key of keys) {
      const found = reconciles.filter((r) => r.repair).flatMap((r) =>
        (r.report[kind] as ReadonlyArray<Reconcile.Outcome & { readonly backupTargetId: string | null }>)
          .filter((x) => x.backupTargetId !== null && pairKey(x.backupTargetId, r.host) === key)
      )
      if (found.length !== 1 || found[0]!.action !== action) {
        v.push(`drift ${key}: reconcile should have found it ${kind} and ${action} it; it reported ${JSON.stringify(found)}`)
      }
    }
  }
  expect("stale", "remounted", drift.stale)
  expect("orphans", "unmounted", drift.orphans)
  expect("pending", "resolved", drift.pending)
  return v
}

// ---------------------------------------------------------------------------------------------------
// Recovery

/**
 * Brings every (target, host) of the run to the state its ledger implies, after the faults stopped.
 *
 * Waits until every pending mark's deadline (plus the client's grace) has passed, so no stale request
 * can still run; reconciles every host with repair (and the targets' requests), then once more without
 * repair, which must find nothing; then runs one verifying operation per pair with a fresh job (its
 * mount proves the pair usable, its unmount releases it again: a physical unmount only if no other job
 * holds the pair).
 */
export const recover = (
  pairs: ReadonlyArray<ModelClient.Pair>,
  context: Context.Context<Dms.Services>,
  record: ModelClient.Reporter,
  firstJobId: number
): Effect.Effect<
  { readonly ops: number; readonly reconciled: Reconciled; readonly reconciles: ReadonlyArray<ReconcileRun> },
  Error,
  TestDatabase
> =>
  Effect.gen(function*() {
    const db = yield* TestDatabase
    const [row] = yield* db.query<Array<{ latest: unknown }>>(
      "SELECT MAX(pending_deadline) AS latest FROM backup_target_mount_lock WHERE pending_op IS NOT NULL"
    )
    const latest = row?.latest instanceof Date ? row.latest.getTime() : 0
    const wait = latest + 1_500 - Date.now()
    if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
    // Reconcile every host with repair (given the targets' requests, so a stale target is remounted at
    // once), then again without: nothing may be left that it can see.
    const requestsOf = (host: string) =>
      pairs.flatMap((pair, i) => pair.host === host ? [ModelClient.request(pair, firstJobId + i, `reconcile-${i}`)] : [])
    const reconciled = { stale: 0, orphans: 0, pending: 0, repaired: 0, remounted: 0, unmounted: 0, resolved: 0 }
    const reconciles: Array<ReconcileRun> = []
    for (const host of new Set(pairs.map((p) => p.host))) {
      const run = (repair: boolean) =>
        Effect.gen(function*() {
          const start = Date.now()
          const report = yield* Reconcile.reconcile(host, { repair, requests: requestsOf(host) }).pipe(
            Effect.provide(context),
            Effect.mapError((e) => new Error(`reconcile of ${host} failed: ${e.message}`))
          )
          reconciles.push({ host, repair, start, end: Date.now(), report })
          return report
        })
      const repaired = yield* run(true)
      reconciled.stale += repaired.counts.stale
      reconciled.orphans += repaired.counts.orphans
      reconciled.pending += repaired.counts.pending
      reconciled.repaired += repaired.counts.repaired
      reconciled.remounted += repaired.stale.filter((x) => x.action === "remounted").length
      reconciled.unmounted += repaired.orphans.filter((x) => x.action === "unmounted").length
      reconciled.resolved += repaired.pending.filter((x) => x.action === "resolved").length
      const after = yield* run(false)
      if (!after.clean) {
        return yield* Effect.fail(new Error(`reconcile of ${host} left drift behind: ${JSON.stringify(after)}`))
      }
    }
    let ops = 0
    for (const [i, pair] of pairs.entries()) {
      const jobId = firstJobId + i
      for (const action of ["mount", "unmount"] as const) {
        for (let attempt = 0;; attempt++) {
          const id = `recovery-${i}-${action}-${attempt}`
          yield* record.start({
            id,
            slot: "recovery",
            jobId,
            pair: i,
            targetId: pair.targetId,
            host: pair.host,
            action,
            via: "effect",
            retry: attempt > 0,
            start: Date.now()
          })
          const outcome = yield* ModelClient.perform(action, ModelClient.request(pair, jobId, id)).pipe(
            Effect.provide(context)
          )
          yield* record.end({ id, end: Date.now(), outcome })
          ops++
          if (outcome._tag === "success") break
          if (attempt >= 5) {
            return yield* Effect.fail(new Error(`recovery of ${pair.targetId} on ${pair.host} failed: ${outcome.message}`))
          }
        }
      }
    }
    return { ops, reconciled, reconciles }
  })

// ---------------------------------------------------------------------------------------------------
// The checks

export interface Observed {
  readonly pairs: ReadonlyArray<ModelClient.Pair>
  readonly records: ReadonlyArray<OpRecord>
  /** Every host's transition log. */
  readonly transitions: ReadonlyArray<ModelServer.Transition>
  /** Per host: the state file's table and the `status` reply's mounts (path → target id). */
  readonly stateFiles: ReadonlyMap<string, Readonly<Record<string, string>>>
  readonly statusReplies: ReadonlyMap<string, Readonly<Record<string, string>>>
  /** Active ledger rows (mounted = 1, deleted = 0). */
  readonly active: ReadonlyArray<{ readonly jobid: number; readonly backup_target_id: string; readonly host: string }>
  readonly lockRows: ReadonlyArray<{ readonly backup_target_id: string; readonly host: string; readonly owner: string | null; readonly pending_op: string | null }>
  /** Every reconcile of the recovery, in order. */
  readonly reconciles: ReadonlyArray<ReconcileRun>
  /** A run without faults: the counts must match exactly, and nothing may fail. */
  readonly exact: boolean
}

const pairKey = (targetId: string, host: string) => `${targetId}@${host}`

const KILLED: ModelClient.Outcome = { _tag: "failure", error: "killed", message: "process killed" }

const noActiveMount = (o: ModelClient.Outcome) => o._tag === "failure" && o.error === "MountError" && o.reason === "no-active-mount"

/** One operation of a job on a pair, with what the job believed before and after it. */
export interface Step {
  readonly record: OpRecord
  readonly outcome: ModelClient.Outcome
  readonly before: ModelClient.JobPairState
  readonly after: ModelClient.JobPairState
}

/**
 * Every job's operations on every pair (`jobId|target@host`), in order of their start, with what the
 * job believed before and after each, as its slot did: through {@link ModelClient.advance}, and
 * {@link ModelClient.restarted} where a killed worker's slot went on in a new process. Closes concern
 * no job and are left out.
 */
export const replay = (records: ReadonlyArray<OpRecord>, exact: boolean): Map<string, Array<Step>> => {
  const byJobPair = new Map<string, Array<OpRecord>>()
  for (const r of records) {
    if (r.start.action === "close") continue
    const key = `${r.start.jobId}|${pairKey(r.start.targetId, r.start.host)}`
    byJobPair.set(key, [...(byJobPair.get(key) ?? []), r])
  }
  const out = new Map<string, Array<Step>>()
  for (const [key, rs] of byJobPair) {
    rs.sort((a, b) => a.start.start - b.start.start)
    let state = ModelClient.FREE
    const steps: Array<Step> = []
    for (const record of rs) {
      const previous = steps[steps.length - 1]?.record.start.slot
      const before = previous !== undefined && previous !== record.start.slot ? ModelClient.restarted(state) : state
      const outcome = record.end?.outcome ?? KILLED
      state = ModelClient.advance(before, record.start.action, outcome, exact)
      steps.push({ record, outcome, before, after: state })
    }
    out.set(key, steps)
  }
  return out
}

/** What the scripts did beyond plain mounts and unmounts (the summary's figures). */
export interface ScriptFigures {
  /** Plain mounts by a job whose plain mount was outstanding. */
  readonly repeated: number
  /** Plain mounts by a job that held the pair only by scopes. */
  readonly onScopes: number
  readonly scopes: number
  /** Scopes entered while another of the job's scopes on the pair was open. */
  readonly overlapping: number
  readonly scopeEnds: number
  /** Plain unmounts while scopes of the job were open. */
  readonly unmountsUnderScopes: number
  readonly closes: number
  /** Operations through a slot's `DMSClient` (the rest went through the process's Effect layer). */
  readonly viaPromise: number
}

/** Counts {@link ScriptFigures} from the replayed operations. */
export const scriptFigures = (records: ReadonlyArray<OpRecord>, exact: boolean): ScriptFigures => {
  const f = { repeated: 0, onScopes: 0, scopes: 0, overlapping: 0, scopeEnds: 0, unmountsUnderScopes: 0, closes: 0, viaPromise: 0 }
  for (const r of records) {
    if (r.start.action === "close") f.closes++
    if (r.start.via === "promise") f.viaPromise++
  }
  for (const steps of replay(records, exact).values()) {
    for (const { before, record } of steps) {
      const action = record.start.action
      if (action === "mount" && before.plain === true) f.repeated++
      if (action === "mount" && before.plain === false && before.scopes > 0) f.onScopes++
      if (action === "enter") f.scopes++
      if (action === "enter" && before.scopes > 0) f.overlapping++
      if (action === "exit") f.scopeEnds++
      if (action === "unmount" && before.scopes > 0) f.unmountsUnderScopes++
    }
  }
  return f
}

/** Every invariant of the issue, as a list of violations (empty when they all hold). */
export const check = (o: Observed): Array<string> => {
  const v: Array<string> = []
  const pathOf = new Map(o.pairs.map((p) => [pairKey(p.targetId, p.host), p.mountPath]))
  const byPair = new Map<string, Array<ModelServer.Transition>>()
  for (const t of [...o.transitions].sort((a, b) => a.host.localeCompare(b.host) || a.seq - b.seq)) {
    const key = pairKey(t.targetId, t.host)
    byPair.set(key, [...(byPair.get(key) ?? []), t])
  }
  const ops = new Map(o.records.map((r) => [r.start.id, r]))

  // The transition logs: a path alternates mounted/unmounted, starting unmounted, and every transition
  // was caused by a request of an operation of this run, by a reconcile of its host while it ran (its
  // requests carry no operation id, or the id of the recovery request it was given for the pair), or
  // by a host reboot (the fault itself: it unmounts, and no operation caused it).
  const byReconcile = new Map<ReconcileRun, Map<string, { mounted: number; unmounted: number }>>()
  for (const [key, ts] of byPair) {
    let mounted = false
    for (const t of ts) {
      if ((t.to === "mounted") === mounted) v.push(`${key}: transition #${t.seq} to ${t.to} while already ${t.to}`)
      mounted = t.to === "mounted"
      if (t.cause === "reboot") {
        if (t.to !== "unmounted" || t.opId !== null) v.push(`${key}: reboot transition #${t.seq} to ${t.to} by ${t.opId}`)
        continue
      }
      if (t.opId !== null && ops.has(t.opId)) continue
      const by = o.reconciles.find((r) => r.host === t.host && r.start <= t.at && t.at <= r.end)
      const given = t.opId?.startsWith("reconcile-") === true ? o.pairs[Number(t.opId.slice("reconcile-".length))] : undefined
      const forPair = t.opId === null || (given !== undefined && pairKey(given.targetId, given.host) === key)
      if (by === undefined || !forPair) {
        v.push(`${key}: transition #${t.seq} to ${t.to} by an unknown operation ${t.opId}`)
        continue
      }
      const caused = byReconcile.get(by) ?? new Map<string, { mounted: number; unmounted: number }>()
      byReconcile.set(by, caused)
      const c = caused.get(t.targetId) ?? { mounted: 0, unmounted: 0 }
      if (t.to === "mounted") c.mounted++
      else c.unmounted++
      caused.set(t.targetId, c)
    }
  }

  // Every reconcile caused exactly the transitions it reported: one mount per stale target it
  // remounted, one unmount per orphan it unmounted, nothing else (the servers were idle and every
  // deadline past, so a pending mark without either finding was in the ledger's state already; a
  // reconcile without repair changes nothing).
  for (const r of o.reconciles) {
    const caused = byReconcile.get(r) ?? new Map<string, { mounted: number; unmounted: number }>()
    const ids = new Set([
      ...caused.keys(),
      ...r.report.stale.map((x) => x.backupTargetId),
      ...r.report.orphans.flatMap((x) => (x.backupTargetId === null ? [] : [x.backupTargetId])),
      ...r.report.pending.map((x) => x.backupTargetId)
    ])
    for (const id of ids) {
      const c = caused.get(id) ?? { mounted: 0, unmounted: 0 }
      const stale = r.report.stale.find((x) => x.backupTargetId === id)
      const orphan = r.report.orphans.find((x) => x.backupTargetId === id)
      const pending = r.report.pending.find((x) => x.backupTargetId === id)
      const mounts = r.repair && stale?.action === "remounted" ? 1 : 0
      const unmounts = r.repair && orphan?.action === "unmounted" ? 1 : 0
      if (c.mounted !== mounts || c.unmounted !== unmounts) {
        v.push(
          `reconcile of ${r.host} (repair ${r.repair}) on ${pairKey(id, r.host)}: reported stale ${stale?.action ?? "-"}, orphan ${
            orphan?.action ?? "-"
          }, pending ${pending?.action ?? "-"}; caused ${c.mounted} mount and ${c.unmounted} unmount transitions`
        )
      }
    }
  }

  // Final state: the host has the target mounted iff the ledger has an active row; the state file, the
  // status reply and the transition log agree; nothing is left pending or locked.
  const activeByPair = new Map<string, number>()
  for (const r of o.active) activeByPair.set(pairKey(r.backup_target_id, r.host), (activeByPair.get(pairKey(r.backup_target_id, r.host)) ?? 0) + 1)
  for (const p of o.pairs) {
    const key = pairKey(p.targetId, p.host)
    const ts = byPair.get(key) ?? []
    const logMounted = ts.length > 0 && ts[ts.length - 1]!.to === "mounted"
    const fileMounted = o.stateFiles.get(p.host)?.[p.mountPath] === p.targetId
    const statusMounted = o.statusReplies.get(p.host)?.[p.mountPath] === p.targetId
    const holders = activeByPair.get(key) ?? 0
    if (logMounted !== fileMounted || logMounted !== statusMounted) {
      v.push(`${key}: transition log says mounted=${logMounted}, state file ${fileMounted}, status reply ${statusMounted}`)
    }
    if (logMounted !== holders > 0) v.push(`${key}: host mounted=${logMounted} but the ledger has ${holders} active row(s)`)
  }
  for (const l of o.lockRows) {
    if (l.pending_op !== null) v.push(`${pairKey(l.backup_target_id, l.host)}: pending ${l.pending_op} left after recovery`)
    if (l.owner !== null) v.push(`${pairKey(l.backup_target_id, l.host)}: lock still owned after recovery`)
  }

  // What each job was told, in each job's order of operations, replayed through the model of the holds
  // (ModelClient.advance): what it predicts is certain in either run is checked against every outcome.
  const jobSteps = replay(o.records, o.exact)
  const activeSet = new Set(o.active.map((r) => `${r.jobid}|${pairKey(r.backup_target_id, r.host)}`))
  const unmountsBy = (id: string) => o.transitions.filter((t) => t.opId === id && t.to === "unmounted").length
  for (const [key, steps] of jobSteps) {
    const ts = byPair.get(key.slice(key.indexOf("|") + 1)) ?? []
    // While the job certainly holds the pair (from the end of the operation that told it so until the
    // start of one that may release it), the host must not unmount it, whatever else runs.
    const holds: Array<readonly [from: number, to: number]> = []
    let since: number | null = null
    const enters = new Set<string>()
    let generation = steps[0]?.record.start.slot
    for (const { after, before, outcome, record: r } of steps) {
      const id = `${r.start.id} (${r.start.action} via ${r.start.via}, job ${key})`
      if (r.start.slot !== generation) enters.clear()
      generation = r.start.slot
      if (since !== null && !ModelClient.keepsHold(before, r.start.action)) {
        holds.push([since, r.start.start])
        since = null
      }
      if (since === null && after.row === "held" && r.end !== undefined) since = r.end.end
      const told = `the job held ${before.row} (plain ${before.plain}, ${before.scopes} scope(s))`
      const went = r.end?.state
      if (went !== undefined && (["row", "plain", "scopes", "settle"] as const).some((k) => went[k] !== after[k])) {
        v.push(`${id}: the replay predicts ${JSON.stringify(after)}, its slot went on with ${JSON.stringify(went)}`)
      }
      if (r.start.action === "unmount") {
        if (before.row === "held" && noActiveMount(outcome)) v.push(`${id}: answered no active mount; ${told}`)
        if (before.row === "free" && outcome._tag === "success") v.push(`${id}: released a hold; ${told}`)
      }
      if (r.start.action === "enter" && outcome._tag === "success") enters.add(r.start.id)
      if (r.start.action === "exit" && (r.start.scope === undefined || !enters.delete(r.start.scope))) {
        v.push(`${id}: ends a scope ${r.start.scope} that is not open`)
      }
      // A scope's end must end (bounded: past the bound it is a violation); one killed with its process did not report.
      if (r.start.action === "exit" && r.end?.outcome._tag === "failure") v.push(`${id}: ${r.end.outcome.message}`)
      if ((r.start.action === "mount" || r.start.action === "enter") && outcome._tag === "success" && r.end !== undefined) {
        const before = ts.filter((t) => t.at <= r.end!.end)
        if (before.length === 0 || before[before.length - 1]!.to !== "mounted") {
          v.push(`${id}: told it holds the target at ${r.end.end} while the host did not have it mounted`)
        }
      }
      if (!o.exact) continue
      // Without faults the model is exact: a job that holds the pair already (a repeated mount, a scope
      // over its holds) never mounts it; open scopes keep it through a plain unmount, and the job's other
      // holds through a scope's end.
      if ((r.start.action === "mount" || r.start.action === "enter") && before.row === "held" && outcome._tag === "success" && outcome.physicallyMounted === true) {
        v.push(`${id}: reported a physical mount; ${told}`)
      }
      if (r.start.action === "unmount" && before.scopes > 0 && outcome._tag === "success" && outcome.unmounted === true) {
        v.push(`${id}: reported a physical unmount; ${told}`)
      }
      if (r.start.action === "exit" && ModelClient.keepsHold(before, "exit") && unmountsBy(r.start.id) > 0) {
        v.push(`${id}: the scope's end unmounted the target; ${told}`)
      }
    }
    if (since !== null) holds.push([since, Infinity])
    for (const [from, to] of holds) {
      for (const t of ts) {
        // A reboot takes the mount from its holders: the fault, not an operation's doing.
        if (t.to === "unmounted" && t.cause !== "reboot" && t.at > from && t.at < to) {
          v.push(`${key}: unmounted (#${t.seq} by ${t.opId}) at ${t.at} while the job held it (from ${from} to ${to})`)
        }
      }
    }
    const last = steps[steps.length - 1]!.after
    const isActive = activeSet.has(key)
    if (last.row === "held" && !isActive) v.push(`${key}: the job was told it holds the target; the ledger has no active row`)
    if (last.row === "free" && isActive) v.push(`${key}: the job was told it released (or never held) the target; the ledger has an active row`)
  }
  // A client's close must end (bounded: past the bound it is a violation, not a wait).
  for (const r of o.records) {
    const out = r.end?.outcome
    if (r.start.action === "close" && out?._tag === "failure") v.push(`${r.start.id}: close of ${r.start.slot}'s DMSClient: ${out.message}`)
  }

  // Every operation's effect on the host: a success reports exactly what its requests did.
  const attributed = new Map<string, { mounted: number; unmounted: number }>()
  for (const t of o.transitions) {
    if (t.opId === null) continue
    const a = attributed.get(t.opId) ?? { mounted: 0, unmounted: 0 }
    if (t.to === "mounted") a.mounted++
    else a.unmounted++
    attributed.set(t.opId, a)
  }
  for (const r of o.records) {
    if (r.start.action === "close") continue
    const a = attributed.get(r.start.id) ?? { mounted: 0, unmounted: 0 }
    const id = `${r.start.id} (${r.start.action} job ${r.start.jobId} ${pairKey(r.start.targetId, r.start.host)})`
    // However it ended, one operation moves the host at most once each way (a re-sent or redelivered
    // idempotent command changes nothing).
    if (a.mounted > 1 || a.unmounted > 1) v.push(`${id}: caused ${a.mounted} mount and ${a.unmounted} unmount transitions`)
    const out = r.end?.outcome
    if (out?._tag !== "success") continue
    if (r.start.action === "mount" || r.start.action === "enter") {
      if (out.physicallyMounted === true && a.mounted !== 1) v.push(`${id}: reported a physical mount, caused ${a.mounted}`)
      // Under faults the ledger may have holders while the host lost the mount (an earlier operation of
      // unknown outcome): this operation's resolution remounts it, and if the server died after that
      // and answered the redelivered request "already mounted", the job is told it reused the mount of
      // those holders (DESIGN: physically mounted = no holders before). Allowed only then.
      const ts = byPair.get(pairKey(r.start.targetId, r.start.host)) ?? []
      const atStart = ts.filter((t) => t.at < r.start.start)
      const lostBefore = atStart.length === 0 || atStart[atStart.length - 1]!.to === "unmounted"
      const remountForHolders = !o.exact && a.mounted === 1 && a.unmounted === 0 && lostBefore
      if (out.physicallyMounted === false && (a.mounted !== 0 || a.unmounted !== 0) && !remountForHolders) {
        v.push(`${id}: reported reusing a mount, caused ${a.mounted} mount and ${a.unmounted} unmount transitions`)
      }
    } else if (r.start.action === "unmount") {
      if (out.unmounted === true && a.unmounted !== 1) v.push(`${id}: reported a physical unmount, caused ${a.unmounted}`)
      if (out.unmounted === false && a.unmounted !== 0) v.push(`${id}: reported keeping the mount, caused an unmount`)
    } else if (o.exact && a.mounted !== 0) {
      // A scope's end resolves no earlier operation without faults: it never mounts.
      v.push(`${id}: a scope's end caused a mount`)
    }
  }

  if (o.exact) {
    // Without faults nothing is uncertain: every operation succeeds (or finds no hold to release), no
    // retries, and the host's transitions are exactly the first-holder mounts and last-holder releases
    // (a scope's end says nothing: the last one released is the one that unmounted, which the checks
    // above bound: never while the job or another held the target, and the host mounted iff held).
    for (const r of o.records) {
      const out = r.end?.outcome
      const fine = out?._tag === "success" || (out !== undefined && noActiveMount(out) && r.start.action === "unmount")
      if (!fine) v.push(`${r.start.id}: ${r.start.action} failed without faults: ${out?._tag === "failure" ? out.message : "no outcome"}`)
      if (r.start.retry) v.push(`${r.start.id}: a retry without faults`)
    }
    for (const p of o.pairs) {
      const key = pairKey(p.targetId, p.host)
      const ts = byPair.get(key) ?? []
      const mine = o.records.filter((r) => r.start.targetId === p.targetId && r.start.host === p.host && r.end?.outcome._tag === "success")
      const succeeded = (r: OpRecord) => r.end!.outcome as Extract<ModelClient.Outcome, { _tag: "success" }>
      const firstHolders = mine.filter((r) => (r.start.action === "mount" || r.start.action === "enter") && succeeded(r).physicallyMounted === true).length
      const lastReleases = mine.filter((r) =>
        (r.start.action === "unmount" && succeeded(r).unmounted === true) || (r.start.action === "exit" && unmountsBy(r.start.id) === 1)
      ).length
      const up = ts.filter((t) => t.to === "mounted").length
      const down = ts.filter((t) => t.to === "unmounted").length
      if (up !== firstHolders) v.push(`${key}: ${up} mount transitions for ${firstHolders} first holders`)
      if (down !== lastReleases) v.push(`${key}: ${down} unmount transitions for ${lastReleases} last releases`)
      if (pathOf.get(key) !== p.mountPath) v.push(`${key}: unknown path`)
    }
  }
  return v
}

// ---------------------------------------------------------------------------------------------------
// The run

const parseWorkerLines = (lines: ReadonlyArray<string>, into: Map<string, OpRecord>) => {
  for (const line of lines) {
    if (line.startsWith("start ")) {
      const start = JSON.parse(line.slice(6)) as ModelClient.OpStart
      if (!into.has(start.id)) into.set(start.id, { start })
    } else if (line.startsWith("end ")) {
      const end = JSON.parse(line.slice(4)) as ModelClient.OpEnd
      const r = into.get(end.id)
      if (r !== undefined) r.end = end
    }
  }
}

/** Runs one randomized model run (optionally under faults), recovers, checks, and summarises. */
export const run = (options: RunOptions): Effect.Effect<Summary, Error, TestDatabase | Scope.Scope> =>
  Effect.gen(function*() {
    const began = Date.now()
    const db = yield* TestDatabase
    const scope = yield* Effect.scope
    const o = {
      targets: options.targets ?? 6,
      hosts: options.hosts ?? 2,
      inProcessSlots: options.inProcessSlots ?? 3,
      workers: options.workers ?? 2,
      slotsPerWorker: options.slotsPerWorker ?? 2,
      jobsPerSlot: options.jobsPerSlot ?? 2,
      timeoutMs: options.timeoutMs ?? 2_000,
      leaseMs: options.leaseMs ?? 3_000,
      lockTimeoutMs: options.lockTimeoutMs ?? 60_000,
      releaseTimeoutMs: options.releaseTimeoutMs ?? 6_000,
      faultGapMs: options.faultGapMs ?? [300, 1_200]
    }
    const runId = randomBytes(4).toString("hex")
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dms-model-"))),
      (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
    )

    // Targets × hosts, and a model server per host.
    const wiring = options.wiring ?? {}
    const hosts = Array.from({ length: o.hosts }, (_, i) => uniqueHost(`model${i}`))
    for (const h of hosts) yield* deleteOnClose(Broker.queueName(h), wiring.adminUrl)
    const pairs: Array<ModelClient.Pair> = []
    for (let t = 0; t < o.targets; t++) {
      for (const host of hosts) {
        const targetId = `model-${runId}-t${t}`
        pairs.push({ targetId, host, mountPath: `/var/lib/trilio/triliovault-mounts/${targetId}` })
      }
    }
    // Under faults, pairs the scripts never touch, for the drift left for reconcile at the end.
    const driftPairs: Array<ModelClient.Pair> = []
    for (let d = 0; options.faults && d < DRIFT_TARGETS; d++) {
      for (const host of hosts) {
        const targetId = `model-${runId}-d${d}`
        driftPairs.push({ targetId, host, mountPath: `/var/lib/trilio/triliovault-mounts/${targetId}` })
      }
    }
    const allPairs = [...pairs, ...driftPairs]
    const servers: Array<ServerHandle> = []
    for (const [i, host] of hosts.entries()) {
      const start = startServer({
        url: wiring.serverUrl?.(i) ?? RABBIT_URL,
        host,
        dir,
        connectionName: `dms-model-${runId}-server-${host}`,
        ...(wiring.queueType === undefined ? {} : { queueType: wiring.queueType })
      })
      servers.push({ host, start, child: yield* start, restarting: false })
    }

    // The scripts, from the seed.
    const slotCount = o.inProcessSlots + o.workers * o.slotsPerWorker
    const perSlot = Math.max(1, Math.ceil(options.ops / slotCount))
    // A run as long as its faults: scripts long enough to outlast them, stopped once they are over.
    const untilFaultsEnd = options.faults && wiring.faultCount !== undefined
    const scriptLength = untilFaultsEnd ? perSlot * 40 : perSlot
    const choice = FastCheck.tuple(
      FastCheck.nat(o.jobsPerSlot - 1),
      FastCheck.nat(pairs.length - 1),
      FastCheck.nat(99),
      FastCheck.nat(99),
      FastCheck.nat(99)
    )
    // Unbiased: fast-check's default bias towards small values would make most steps pick job 0, pair 0
    // and a stray unmount.
    const [scripts, faultPlan] = FastCheck.sample(
      FastCheck.noBias(FastCheck.tuple(
        FastCheck.array(FastCheck.array(choice, { minLength: scriptLength, maxLength: scriptLength }), {
          minLength: slotCount,
          maxLength: slotCount
        }),
        FastCheck.array(
          FastCheck.tuple(
            FastCheck.integer({ min: o.faultGapMs[0], max: o.faultGapMs[1] }),
            FastCheck.nat(1_000)
          ),
          { minLength: 500, maxLength: 500 }
        )
      )),
      { seed: options.seed, numRuns: 1 }
    )[0]!
    const jobsOf = (slot: number) => Array.from({ length: o.jobsPerSlot }, (_, i) => 1 + slot * o.jobsPerSlot + i)
    const client = (name: string, role: ClientRole): ModelClient.ClientSettings => ({
      dbUrl: wiring.dbUrl?.(role, db.name) ?? db.url,
      rabbitmqUrl: wiring.rabbitmqUrl?.(role) ?? RABBIT_URL,
      connectionName: `dms-model-${runId}-${name}`,
      timeoutMs: o.timeoutMs,
      leaseMs: o.leaseMs,
      lockTimeoutMs: o.lockTimeoutMs,
      releaseTimeoutMs: o.releaseTimeoutMs
    })

    // Set once the faults are over (with `faultCount`): the scripts end, each after its share of `ops`.
    let scriptsStop = false

    // Records: the test process writes its own; the workers' are parsed from their output.
    const records = new Map<string, OpRecord>()
    const local: ModelClient.Reporter = {
      start: (op) => Effect.sync(() => void records.set(op.id, { start: op })),
      end: (op) => Effect.sync(() => void (records.get(op.id)!.end = op))
    }

    // Client processes: each worker index runs its slots; a killed worker is replaced by a new
    // generation that goes on with the rest of its slots' scripts, from what its jobs were told.
    interface WorkerHandle {
      readonly index: number
      generation: number
      child: Child
      replacing: boolean
      readonly retired: Array<Child>
    }
    const workerSlots = (w: number) => Array.from({ length: o.slotsPerWorker }, (_, i) => o.inProcessSlots + w * o.slotsPerWorker + i)
    const workerSpec = (w: number, generation: number) => {
      const seen = new Map<string, OpRecord>()
      for (const r of records.values()) seen.set(r.start.id, r)
      const slots = workerSlots(w).map((s, i): ModelClient.SlotSpec => {
        const prefix = `w${w}s${i}`
        const mine = [...seen.values()].filter((r) => r.start.slot.startsWith(`${prefix}g`)).sort((a, b) => a.start.start - b.start.start)
        // Where its jobs were, as the killed generation's slot had them, once that process died.
        const initial: Record<string, ModelClient.JobPairState> = {}
        for (const steps of replay(mine, !options.faults).values()) {
          const last = steps[steps.length - 1]!
          initial[ModelClient.stateKey(last.record.start.jobId, last.record.start.pair)] = ModelClient.restarted(last.after)
        }
        return {
          slot: `${prefix}g${generation}`,
          jobs: jobsOf(s),
          pairs,
          choices: scripts[s]!.slice(mine.length),
          exact: !options.faults,
          initial,
          ...(untilFaultsEnd ? { minOps: Math.max(0, perSlot - mine.length) } : {}),
          ...(options.pauseMs === undefined ? {} : { pauseMs: options.pauseMs })
        }
      })
      return { client: client(`w${w}g${generation}`, w), slots }
    }
    const spawnWorker = (w: number, generation: number) =>
      Effect.gen(function*() {
        const child = yield* spawnTs("test/support/modelWorker.ts", [JSON.stringify(workerSpec(w, generation))]).pipe(
          Scope.extend(scope)
        )
        yield* child.waitFor("ready")
        if (scriptsStop) yield* child.send("stop")
        return child
      })
    const workers: Array<WorkerHandle> = []
    for (let w = 0; w < o.workers; w++) {
      workers.push({ index: w, generation: 0, child: yield* spawnWorker(w, 0), replacing: false, retired: [] })
    }
    const collectWorkerRecords = () => {
      for (const w of workers) {
        for (const c of [...w.retired, w.child]) parseWorkerLines(c.lines(), records)
      }
    }

    // The test process's client and fibers.
    const retriesBefore = yield* ModelClient.retryCounts
    const context = yield* Layer.buildWithScope(ModelClient.clientLayer(client("main", "main")), scope).pipe(
      Effect.mapError((e) => new Error(`client layer: ${e.message}`))
    )
    const localFibers = yield* Effect.forEach(
      Array.from({ length: o.inProcessSlots }, (_, s) => s),
      (s) =>
        ModelClient.runSlot(
          {
            slot: `m${s}`,
            jobs: jobsOf(s),
            pairs,
            choices: scripts[s]!,
            exact: !options.faults,
            ...(untilFaultsEnd ? { minOps: perSlot } : {}),
            ...(options.pauseMs === undefined ? {} : { pauseMs: options.pauseMs })
          },
          local,
          client("main", "main"),
          () => scriptsStop
        ).pipe(
          Effect.provide(context),
          Effect.fork
        )
    )
    const workersDone = Effect.forEach(workers, (w) =>
      Effect.gen(function*() {
        for (;;) {
          const child = w.child
          const result = yield* Effect.either(child.waitFor("done"))
          if (result._tag === "Right") return
          if (!w.replacing && w.child === child) {
            return yield* Effect.fail(new Error(`worker ${w.index} failed: ${result.left.message}`))
          }
          while (w.replacing || w.child === child) yield* Effect.sleep("50 millis")
        }
      }), { concurrency: "unbounded", discard: true })

    // Faults.
    const faults: Record<string, number> = {}
    let skipped = 0
    let stop = false
    const faultLog: Array<{ readonly at: number; readonly kind: string; readonly n: number }> = []
    const count = (kind: string, n = 1) => {
      faults[kind] = (faults[kind] ?? 0) + n
      faultLog.push({ at: Date.now(), kind, n })
    }
    // Model servers that end by themselves (they lost their broker) are restarted once they can
    // connect again, as a supervisor would.
    let serverRestarts = 0
    const supervisorErrors: Array<string> = []
    const supervise = (server: ServerHandle) =>
      Effect.gen(function*() {
        for (;;) {
          const child = server.child
          yield* child.exited
          if (server.restarting || server.child !== child) {
            while (server.restarting) yield* Effect.sleep("50 millis")
            continue
          }
          server.restarting = true
          const restarted = yield* server.start.pipe(
            Scope.extend(scope),
            Effect.retry(Schedule.spaced("500 millis").pipe(Schedule.upTo("120 seconds"))),
            Effect.either
          )
          if (restarted._tag === "Left") {
            supervisorErrors.push(`the model server of ${server.host} could not be restarted: ${restarted.left.message}`)
            return
          }
          server.child = restarted.right
          server.restarting = false
          serverRestarts++
        }
      })
    const supervisors = wiring.superviseServers === true ? yield* Effect.forEach(servers, (s) => Effect.fork(supervise(s))) : []
    const serversUp = Effect.gen(function*() {
      for (let i = 0; servers.some((s) => s.restarting); i++) {
        if (i > 2_400 || supervisorErrors.length > 0) {
          return yield* Effect.fail(new Error(`model servers not back: ${supervisorErrors.join("; ")}`))
        }
        yield* Effect.sleep("50 millis")
      }
    })
    const faultContext: FaultContext = { workers: o.workers, servers: servers.length, queues: hosts.map(Broker.queueName), serversUp }
    const inject = (kind: string, r: number): Effect.Effect<void, Error, Scope.Scope> =>
      Effect.gen(function*() {
        const extra = wiring.extraFaults?.[kind]
        if (extra !== undefined) {
          const label = yield* extra(r, faultContext)
          yield* serversUp
          if (label === undefined) skipped++
          else count(label)
          return
        }
        switch (kind as FaultKind) {
          case "rabbitClose": {
            // The Effect clients and the slots' DMSClients (one closed by its slot just now has none: skipped).
            const main = client("main", "main")
            const names = [
              main.connectionName,
              ...Array.from({ length: o.inProcessSlots }, (_, s) => ModelClient.promiseConnectionName(main, `m${s}`)),
              ...workers.filter((w) => !w.replacing).flatMap((w) => {
                const settings = client(`w${w.index}g${w.generation}`, w.index)
                return [
                  settings.connectionName,
                  ...workerSlots(w.index).map((_, i) => ModelClient.promiseConnectionName(settings, `w${w.index}s${i}g${w.generation}`))
                ]
              })
            ]
            const name = names[r % names.length]!
            const closed = yield* Effect.either(closeConnectionNamed(name, "model test: fault", wiring.rabbitmqctl))
            if (closed._tag === "Right") count("rabbitClose", closed.right)
            else skipped++
            return
          }
          case "dbKill": {
            const ids = yield* db.query<Array<{ ID: number }>>(
              "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID()",
              [db.name]
            )
            let killed = 0
            for (const { ID } of ids) {
              // Only connections to this run's own database; one may end by itself meanwhile.
              yield* Effect.catchAllDefect(Effect.asVoid(db.query(`KILL ${Number(ID)}`)), () => Effect.void)
              killed++
            }
            if (killed > 0) count("dbKill", killed)
            else skipped++
            return
          }
          case "serverKill": {
            const server = servers[r % servers.length]!
            const when = r % 2 === 0 ? "before" : "after"
            if (!(yield* stallNext(server, when, "-"))) {
              skipped++
              return
            }
            server.restarting = true
            yield* server.child.kill("SIGKILL")
            yield* server.child.exited
            server.child = yield* server.start.pipe(Scope.extend(scope))
            server.restarting = false
            count(`serverKill(${when})`)
            return
          }
          case "clientKill": {
            const w = workers[r % workers.length]!
            const server = servers[Math.floor(r / workers.length) % servers.length]!
            const when = r % 3 === 0 ? "after" : "before"
            const prefix = `w${w.index}s`
            if (!(yield* stallNext(server, when, prefix))) {
              skipped++
              return
            }
            // The worker holds the stalled request's lease now: kill it there.
            w.replacing = true
            const old = w.child
            yield* old.kill("SIGKILL")
            yield* old.exited
            yield* server.child.send("release")
            w.retired.push(old)
            parseWorkerLines(old.lines(), records)
            for (const rec of records.values()) {
              if (rec.end === undefined && rec.start.slot.startsWith(prefix) && rec.start.slot.endsWith(`g${w.generation}`)) rec.killed = true
            }
            w.generation++
            w.child = yield* spawnWorker(w.index, w.generation)
            w.replacing = false
            count(`clientKill(${when})`)
            return
          }
          case "delay": {
            const server = servers[r % servers.length]!
            const when = r % 2 === 0 ? "before" : "after"
            const ms = o.timeoutMs + 200 + (r % 1_300)
            yield* server.child.send(`delay ${ms} ${when} -`)
            count(`delay(${when})`)
            return
          }
        }
      })
    const kinds = wiring.faultKinds ?? FAULT_KINDS
    const injector = Effect.gen(function*() {
      // Every kind in turn; which connection, server, worker and variant is drawn. Until every kind has
      // been injected once (a stall can find no request in time and be skipped), the kinds still
      // missing go first, in turn among themselves (a kind skipped again and again must not keep the
      // others from their turn), at short gaps: a quick run must not end before each kind had its turn.
      const injected = (kind: string) => Object.keys(faults).some((k) => k.startsWith(kind))
      const attempts = wiring.faultCount === undefined ? faultPlan.length : Math.min(faultPlan.length, wiring.faultCount)
      for (const [i, [gap, r]] of faultPlan.slice(0, attempts).entries()) {
        const missing = kinds.filter((k) => !injected(k))
        const kind = missing.length > 0 ? missing[i % missing.length]! : kinds[i % kinds.length]!
        yield* Effect.sleep(Duration.millis(missing.length > 0 ? Math.min(gap, 300) : gap))
        if (stop) return
        yield* inject(kind, r)
      }
    })
    // With `faultCount`, the scripts stop once the faults are over (the workers are told on stdin).
    const endScripts = Effect.gen(function*() {
      scriptsStop = true
      for (const w of workers) {
        while (w.replacing) yield* Effect.sleep("50 millis")
        yield* w.child.send("stop")
      }
    })
    const injecting = options.faults
      ? yield* Effect.fork(Effect.scoped(injector).pipe(Effect.zipRight(untilFaultsEnd ? endScripts : Effect.void)))
      : undefined

    yield* Fiber.joinAll(localFibers)
    yield* workersDone
    stop = true
    if (injecting !== undefined) yield* Fiber.join(injecting)
    yield* serversUp
    for (const s of servers) yield* s.child.send("cancel")
    collectWorkerRecords()
    for (const r of records.values()) if (r.end === undefined) r.killed = true
    const ops = records.size

    // Drift that only reconcile repairs (under faults), with every server idle before and after (a
    // request delayed by a fault may still run); then recovery, then the observations.
    const driftBegan = Date.now()
    for (const s of servers) yield* drain(s)
    // A client of its own: the drift is set up, not a fault; the faults' leftovers in the run's client
    // (a killed database connection still pooled) must not fail it.
    const driftContext = options.faults
      ? yield* Layer.buildWithScope(ModelClient.clientLayer(client("drift", "main")), scope).pipe(
        Effect.mapError((e) => new Error(`drift client layer: ${e.message}`))
      )
      : undefined
    const drift = driftContext === undefined ? undefined : yield* leaveDrift(driftPairs, servers, driftContext, local, 3_000_000)
    for (const s of servers) yield* drain(s)
    const recoveryBegan = Date.now()
    const { ops: recoveryOps, reconciled, reconciles } = yield* recover(allPairs, context, local, 1_000_000)
    const recoverySeconds = (Date.now() - recoveryBegan) / 1000
    const transitions = hosts.flatMap((h) => ModelServer.readTransitions(dir, h))
    const stateFiles = new Map(hosts.map((h) => [h, ModelServer.readState(dir, h)]))
    const statusReplies = new Map<string, Record<string, string>>()
    for (const h of hosts) {
      const reply = yield* rpc(Broker.queueName(h), { action: "status" }, {
        timeout: "10 seconds",
        ...(wiring.adminUrl === undefined ? {} : { url: wiring.adminUrl })
      })
      statusReplies.set(
        h,
        Object.fromEntries((reply.body.mounts as Array<{ mount_path: string; backup_target_id: string }>).map((m) => [m.mount_path, m.backup_target_id]))
      )
    }
    const active = yield* db.query<Array<{ jobid: number; backup_target_id: string; host: string }>>(
      "SELECT jobid, backup_target_id, host FROM backup_target_mount_ledger WHERE mounted = 1 AND deleted = 0"
    )
    const lockRows = yield* db.query<Array<{ backup_target_id: string; host: string; owner: string | null; pending_op: string | null }>>(
      "SELECT backup_target_id, host, owner, pending_op FROM backup_target_mount_lock"
    )
    yield* Fiber.interruptAll(supervisors)
    const all = [...records.values()]
    // Retries: the test process's since the run began, and each worker process's last report.
    const retries: Record<string, number> = {}
    const addRetries = (counts: Record<string, number>, sign = 1) => {
      for (const [k, n] of Object.entries(counts)) retries[k] = (retries[k] ?? 0) + sign * n
    }
    addRetries(yield* ModelClient.retryCounts)
    addRetries(retriesBefore, -1)
    for (const w of workers) {
      for (const c of [...w.retired, w.child]) {
        const line = c.lines().filter((l) => l.startsWith("metrics ")).pop()
        if (line !== undefined) addRetries(JSON.parse(line.slice("metrics ".length)) as Record<string, number>)
      }
    }
    for (const k of Object.keys(retries)) if (retries[k] === 0) delete retries[k]
    if (process.env.DMS_MODEL_DUMP) fs.writeFileSync(process.env.DMS_MODEL_DUMP, JSON.stringify({ all, transitions, active, faultLog, reconciles }, null, 1))
    const violations = [
      ...supervisorErrors,
      ...check({ pairs: allPairs, records: all, transitions, stateFiles, statusReplies, active, lockRows, reconciles, exact: !options.faults }),
      ...(drift === undefined ? [] : checkDrift(drift, reconciles))
    ]

    const byOutcome: Record<string, number> = {}
    const errors: Record<string, number> = {}
    let physicalMounts = 0
    let physicalUnmounts = 0
    for (const r of all) {
      const out = r.end?.outcome
      const label = r.killed === true || out === undefined
        ? "killed"
        : out._tag === "success"
        ? `${r.start.action} ok`
        : `${r.start.action} ${out.error}${out.phase ? `(${out.phase})` : ""}${out.error === "MountError" && out.reason ? `(${out.reason})` : ""}`
      byOutcome[label] = (byOutcome[label] ?? 0) + 1
      if (out?._tag === "failure") errors[errorKind(out)] = (errors[errorKind(out)] ?? 0) + 1
      if (out?._tag === "success" && out.physicallyMounted === true) physicalMounts++
      if (out?._tag === "success" && out.unmounted === true) physicalUnmounts++
    }
    return {
      seed: options.seed,
      ops,
      recoveryOps,
      reconciled,
      drift,
      byOutcome,
      script: scriptFigures(all, !options.faults),
      faults,
      faultsSkipped: skipped,
      errors,
      retries,
      serverRestarts,
      transitions: {
        mounted: transitions.filter((t) => t.to === "mounted").length,
        unmounted: transitions.filter((t) => t.to === "unmounted").length
      },
      physicalMounts,
      physicalUnmounts,
      holdsAtEnd: active.length,
      violations,
      seconds: (Date.now() - began) / 1000,
      driftSeconds: (recoveryBegan - driftBegan) / 1000,
      recoverySeconds
    }
  })
