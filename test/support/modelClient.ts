/**
 * The client side of the randomized model test: a "slot" is one fiber that owns a few jobs and runs a
 * random script of mount/unmount/retry operations over the run's (target, host) pairs through the
 * Effect API, reporting when each operation starts and how it ended. The same code runs in the test
 * process and in the worker processes (test/support/modelWorker.ts).
 *
 * What a slot does next depends on what it was told: a job mostly releases a pair it holds; otherwise
 * it mounts the chosen pair if it does not hold it (now and then it unmounts it anyway, which must
 * answer "no active mount") or unmounts it if it does, and retries an operation whose outcome is unknown. Every request carries the operation's id
 * as `context.request_id`, so the model server attributes each state transition to an operation.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Cause from "effect/Cause"
import * as Dms from "../../src/Dms.js"
import * as Mount from "../../src/Mount.js"

/** One (target, host) of the run. */
export interface Pair {
  readonly targetId: string
  readonly host: string
  readonly mountPath: string
}

/** What a job was told about its hold on a pair. */
export type Belief = "held" | "free" | "unknown"

/** A job's view of one pair: its belief and its last operation (what a retry repeats). */
export interface JobPairState {
  readonly belief: Belief
  readonly last: "mount" | "unmount" | null
}

/** One step of a script: which job, which pair, and a percentile (0–99) for the choice of action. */
export type Choice = readonly [job: number, pair: number, percent: number]

export interface SlotSpec {
  /** Prefix of the slot's operation ids (unique in the run). */
  readonly slot: string
  readonly jobs: ReadonlyArray<number>
  readonly pairs: ReadonlyArray<Pair>
  readonly choices: ReadonlyArray<Choice>
  /** Where a slot restarted in a new process begins (`jobId|pairIndex` → state). */
  readonly initial?: Readonly<Record<string, JobPairState>>
}

export type Outcome =
  | {
    readonly _tag: "success"
    readonly physicallyMounted?: boolean
    readonly reusedExisting?: boolean
    readonly unmounted?: boolean
    readonly remaining?: number
  }
  | {
    readonly _tag: "failure"
    /** The error's tag (or "defect"/"interrupted"). */
    readonly error: string
    readonly phase?: string
    readonly reason?: string
    readonly notDelivered?: boolean
    readonly message: string
  }

export interface OpStart {
  readonly id: string
  readonly slot: string
  readonly jobId: number
  readonly pair: number
  readonly targetId: string
  readonly host: string
  readonly action: "mount" | "unmount"
  readonly retry: boolean
  readonly start: number
}

export interface OpEnd {
  readonly id: string
  readonly end: number
  readonly outcome: Outcome
}

export interface Reporter {
  readonly start: (op: OpStart) => Effect.Effect<void>
  readonly end: (op: OpEnd) => Effect.Effect<void>
}

export const stateKey = (jobId: number, pair: number) => `${jobId}|${pair}`

/** A valid NFS request for a pair, carrying the operation id. */
export const request = (pair: Pair, jobId: number, opId: string) => ({
  context: { request_id: opId },
  keystone_token: "model-token",
  job: { jobid: jobId },
  host: pair.host,
  backup_target: {
    id: pair.targetId,
    type: "nfs",
    filesystem_export: `192.0.2.1:/exports/${pair.targetId}`,
    filesystem_export_mount_path: pair.mountPath,
    nfs_mount_opts: "rw,hard"
  }
})

/** Runs one operation and turns its exit into an {@link Outcome} (never fails). */
export const perform = (
  action: "mount" | "unmount",
  body: unknown
): Effect.Effect<Outcome, never, Mount.Services> =>
  (action === "mount"
    ? Effect.map(Mount.mount(body), (r): Outcome => ({
      _tag: "success",
      physicallyMounted: r.physicallyMounted,
      reusedExisting: r.reusedExisting
    }))
    : Effect.map(Mount.unmount(body), (r): Outcome => ({
      _tag: "success",
      unmounted: r.unmounted,
      remaining: r.activeMountsRemaining
    }))).pipe(
      Effect.exit,
      Effect.map((exit) => {
        if (Exit.isSuccess(exit)) return exit.value
        const failure = Cause.failureOption(exit.cause)
        if (Option.isNone(failure)) {
          return {
            _tag: "failure",
            error: Cause.isInterruptedOnly(exit.cause) ? "interrupted" : "defect",
            message: Cause.pretty(exit.cause).slice(0, 500)
          } as Outcome
        }
        const e = failure.value as { _tag: string; message: string; phase?: string; reason?: string; notDelivered?: boolean }
        return {
          _tag: "failure",
          error: e._tag,
          message: e.message,
          ...(e.phase === undefined ? {} : { phase: e.phase }),
          ...(e.reason === undefined ? {} : { reason: e.reason }),
          ...(e.notDelivered === undefined ? {} : { notDelivered: e.notDelivered })
        } as Outcome
      })
    )

/** What a job may believe after an operation, given what it believed before. */
export const nextBelief = (action: "mount" | "unmount", before: Belief, outcome: Outcome): Belief => {
  if (outcome._tag === "success") return action === "mount" ? "held" : "free"
  if (action === "unmount" && outcome.error === "MountError" && outcome.reason === "no-active-mount") return "free"
  // Nothing was done: the lock was not taken, the request was refused before any I/O, or the server
  // answered an error (nothing recorded as mounted or unmounted).
  if (outcome.error === "TimeoutError" && outcome.phase === "lock") return before
  if (outcome.error === "ValidationError" || outcome.error === "MountError") return before
  return "unknown"
}

/** Runs a slot's script, one operation at a time. */
export const runSlot = (spec: SlotSpec, report: Reporter): Effect.Effect<void, never, Mount.Services> =>
  Effect.gen(function*() {
    const states = new Map<string, JobPairState>(Object.entries(spec.initial ?? {}))
    let n = 0
    for (const [j, p, x] of spec.choices) {
      const jobId = spec.jobs[j % spec.jobs.length]!
      const chosen = p % spec.pairs.length
      const stateOf = (pair: number) => states.get(stateKey(jobId, pair)) ?? { belief: "free" as const, last: null }
      // Mostly release what the job holds, so that holds stay few and first holders and last releases
      // (the physical transitions) are frequent; a pair whose last outcome is unknown is retried.
      const held = spec.pairs.map((_, i) => i).filter((i) => stateOf(i).belief === "held")
      const pairIndex = stateOf(chosen).belief !== "unknown" && held.length > 0 && x < 60 ? held[chosen % held.length]! : chosen
      const pair = spec.pairs[pairIndex]!
      const key = stateKey(jobId, pairIndex)
      const state = stateOf(pairIndex)
      const retry = state.belief === "unknown" && state.last !== null
      const action: "mount" | "unmount" = retry
        ? state.last!
        : state.belief === "held"
        ? "unmount"
        : state.belief === "free" && x >= 95
        ? "unmount"
        : "mount"
      const id = `${spec.slot}-${n++}`
      yield* report.start({
        id,
        slot: spec.slot,
        jobId,
        pair: pairIndex,
        targetId: pair.targetId,
        host: pair.host,
        action,
        retry,
        start: Date.now()
      })
      const outcome = yield* perform(action, request(pair, jobId, id))
      yield* report.end({ id, end: Date.now(), outcome })
      states.set(key, { belief: nextBelief(action, state.belief, outcome), last: action })
    }
  })

/** Settings of a test client (short timeouts and lease, so that recovery is quick). */
export interface ClientSettings {
  readonly dbUrl: string
  readonly rabbitmqUrl: string
  readonly connectionName: string
  readonly timeoutMs: number
  readonly leaseMs: number
  readonly lockTimeoutMs: number
}

/** The client's layer: the real MariaDB ledger and the real RabbitMQ, named so a test can close it. */
export const clientLayer = (s: ClientSettings): Layer.Layer<Dms.Services, Dms.LayerError> =>
  Dms.layer({
    dbUrl: s.dbUrl,
    rabbitmqUrl: s.rabbitmqUrl,
    timeout: Duration.millis(s.timeoutMs),
    lockTimeout: Duration.millis(s.lockTimeoutMs),
    logLevel: "ERROR",
    ledger: { leaseDuration: Duration.millis(s.leaseMs), maxConnections: 4 },
    broker: { connectionName: s.connectionName }
  })
