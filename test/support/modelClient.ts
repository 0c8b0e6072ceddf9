/**
 * The client side of the randomized model test: a "slot" is one fiber that owns a few jobs and runs a
 * random script over the run's (target, host) pairs, reporting when each operation starts and how it
 * ended. The same code runs in the test process and in the worker processes (test/support/modelWorker.ts).
 *
 * A slot works through two clients of its process, drawn per operation: the process's Effect layer
 * (`via: "effect"`, shared by the process's slots) and a `DMSClient` of its own (`via: "promise"`), both
 * on the run's database, so that the process's registry of holds is shared by several clients. Its
 * operations: plain `mount` (repeated by a job that already holds: no count changes) and `unmount`;
 * `enter` a scope (`Mount.mountScoped` in a `Scope` of the slot's, or `MountContext.enter`) and `exit`
 * it later, so that scopes of one job overlap each other and its plain mounts; and `close` of the
 * slot's `DMSClient` between operations, which is then used again (its open mount contexts too).
 *
 * What a slot does next depends on what it was told ({@link JobPairState}, moved on by {@link advance},
 * which the checker replays to predict what the product must have done): a job mostly releases a pair
 * it holds; an unknown outcome is settled before anything else is done with the pair. Every request
 * carries the operation's id as `context.request_id`, so the model server attributes each state
 * transition to an operation.
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Dms from "../../src/Dms.js"
import type * as DmsError from "../../src/DmsError.js"
import * as Mount from "../../src/Mount.js"
import { DMSClient, DMSClientException, MountContext } from "../../src/promise.js"

/** One (target, host) of the run. */
export interface Pair {
  readonly targetId: string
  readonly host: string
  readonly mountPath: string
}

/** What a job was told about whether its ledger row holds a pair. */
export type Belief = "held" | "free" | "unknown"

/** An operation of a script. `close` closes the slot's `DMSClient` (and concerns no job). */
export type Action = "mount" | "unmount" | "enter" | "exit" | "close"

/** Which client runs an operation: the process's Effect layer, or the slot's `DMSClient`. */
export type Via = "effect" | "promise"

/**
 * A job's view of one pair, from what it was told: whether its row holds the pair, whether a plain
 * mount of it is outstanding in its process (null: not known), how many of its scopes are open in its
 * slot, and what settles an unknown row (a plain mount or unmount repeated).
 */
export interface JobPairState {
  readonly row: Belief
  readonly plain: boolean | null
  readonly scopes: number
  readonly settle: "mount" | "unmount" | null
}

/** A job that holds nothing. */
export const FREE: JobPairState = { row: "free", plain: false, scopes: 0, settle: null }

/**
 * One step of a script: which job, which pair, a percentile (0–99) for the pair and a stray unmount, one
 * for the action, and one for the client (and which open scope ends).
 */
export type Choice = readonly [job: number, pair: number, percent: number, action: number, client: number]

export interface SlotSpec {
  /** Prefix of the slot's operation ids (unique in the run). */
  readonly slot: string
  readonly jobs: ReadonlyArray<number>
  readonly pairs: ReadonlyArray<Pair>
  readonly choices: ReadonlyArray<Choice>
  /** A run without faults: a scope's end certainly released what it was the last hold of. */
  readonly exact: boolean
  /** Where a slot restarted in a new process begins (`jobId|pairIndex` → state). */
  readonly initial?: Readonly<Record<string, JobPairState>>
  /**
   * The script may end early, once this many of its choices ran, when its process is told to stop
   * (runSlot's `stopped`): a run that lasts as long as its faults runs long scripts and stops them.
   */
  readonly minOps?: number
  /** A pause between two operations (ms): keeps a long run's load down (a slot has no other timing). */
  readonly pauseMs?: number
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
    /** The error's tag (or "defect"/"interrupted"; "hung" for a close or scope end past its bound). */
    readonly error: string
    readonly phase?: string
    readonly reason?: string
    readonly notDelivered?: boolean
    readonly message: string
  }

export interface OpStart {
  readonly id: string
  readonly slot: string
  /** -1 for a close. */
  readonly jobId: number
  readonly pair: number
  readonly targetId: string
  readonly host: string
  readonly action: Action
  readonly via: Via
  readonly retry: boolean
  /** An exit: the id of the enter whose scope it ends. */
  readonly scope?: string
  readonly start: number
}

export interface OpEnd {
  readonly id: string
  readonly end: number
  readonly outcome: Outcome
  /** What the job believes afterwards, as its slot went on (the checker's replay must agree). */
  readonly state?: JobPairState
}

export interface Reporter {
  readonly start: (op: OpStart) => Effect.Effect<void>
  readonly end: (op: OpEnd) => Effect.Effect<void>
}

export const stateKey = (jobId: number, pair: number) => `${jobId}|${pair}`

/** A valid NFS request for a pair, carrying the operation id (in a `context` the caller may rename). */
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

const failureOf = (e: DmsError.DmsError): Outcome => {
  const f = e as { _tag: string; message: string; phase?: string; reason?: string; notDelivered?: boolean }
  return {
    _tag: "failure",
    error: f._tag,
    message: f.message,
    ...(f.phase === undefined ? {} : { phase: f.phase }),
    ...(f.reason === undefined ? {} : { reason: f.reason }),
    ...(f.notDelivered === undefined ? {} : { notDelivered: f.notDelivered })
  }
}

/** Runs an Effect operation and turns its exit into an {@link Outcome} (never fails). */
const outcomeOf = <A>(effect: Effect.Effect<A, DmsError.DmsError, Mount.Services>, success: (a: A) => Outcome) =>
  effect.pipe(
    Effect.exit,
    Effect.map((exit): Outcome => {
      if (Exit.isSuccess(exit)) return success(exit.value)
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure)) return failureOf(failure.value)
      return {
        _tag: "failure",
        error: Cause.isInterruptedOnly(exit.cause) ? "interrupted" : "defect",
        message: Cause.pretty(exit.cause).slice(0, 500)
      }
    })
  )

/** Runs a Promise facade call and turns how it settled into an {@link Outcome} (never fails). */
const outcomeOfPromise = <A>(call: () => Promise<A>, success: (a: A) => Outcome): Effect.Effect<Outcome> =>
  Effect.promise(() =>
    call().then(success, (e: unknown): Outcome => {
      if (e instanceof DMSClientException && e.error !== undefined) return failureOf(e.error)
      const message = String(e).slice(0, 500)
      return { _tag: "failure", error: message.includes("interrupted") ? "interrupted" : "defect", message }
    })
  )

const mounted = (r: Mount.MountResult): Outcome => ({
  _tag: "success",
  physicallyMounted: r.physicallyMounted,
  reusedExisting: r.reusedExisting
})

/** Runs one plain operation through the Effect API (never fails). */
export const perform = (action: "mount" | "unmount", body: unknown): Effect.Effect<Outcome, never, Mount.Services> =>
  action === "mount"
    ? outcomeOf(Mount.mount(body), mounted)
    : outcomeOf(Mount.unmount(body), (r) => ({ _tag: "success", unmounted: r.unmounted, remaining: r.activeMountsRemaining }))

/**
 * Runs one plain operation through the Promise facade (never fails). Its `{ status: "error" }` response
 * is a `MountError`; for an unmount, the guide's text says which (the response carries no reason).
 */
const performPromise = (client: DMSClient, action: "mount" | "unmount", body: unknown): Effect.Effect<Outcome> =>
  action === "mount"
    ? outcomeOfPromise(() => client.mount(body), (r): Outcome =>
      r.status === "success"
        ? { _tag: "success", physicallyMounted: r.physically_mounted!, reusedExisting: r.reused_existing! }
        : { _tag: "failure", error: "MountError", reason: "server", message: r.error_msg ?? "" })
    : outcomeOfPromise(() => client.unmount(body), (r): Outcome =>
      r.status === "success"
        ? { _tag: "success", unmounted: r.unmounted!, remaining: r.active_mounts_remaining! }
        : {
          _tag: "failure",
          error: "MountError",
          reason: r.error_msg === "No active mount found for this job" ? "no-active-mount" : "server",
          message: r.error_msg ?? ""
        })

const noActiveMount = (o: Outcome) => o._tag === "failure" && o.error === "MountError" && o.reason === "no-active-mount"

/** Failures that certainly did nothing: the lock was not taken, bad input, or the server refused. */
const didNothing = (o: Outcome) =>
  o._tag === "failure" && ((o.error === "TimeoutError" && o.phase === "lock") || o.error === "ValidationError" || o.error === "MountError")

/**
 * Failures after which a mount's hold may be in the ledger: a mount writes its hold only after the
 * server's reply, so only a failing (or cut short) ledger write leaves it unknown. Plain mounts are
 * treated more warily (any failure but {@link didNothing}), so that scripts retry them.
 */
const mayHaveWritten = (o: Outcome) =>
  o._tag === "failure" && !["TimeoutError", "BrokerError", "MountError", "ValidationError"].includes(o.error)

const unknownRow = (settle: "mount" | "unmount"): JobPairState => ({ row: "unknown", plain: null, scopes: 0, settle })

/**
 * What a job may believe after an operation, given what it believed before: the model of the holds
 * table (README, "Holds: which calls count"). A plain mount is one hold however often repeated; an
 * unmount gives it back, and open scopes keep the row; each scope is a hold of its own, and the row is
 * released when the last hold ends. `exact` (no faults): a scope's end certainly released what it was
 * the last hold of; under faults its release may have given up (it never says), so that is unknown.
 */
export const advance = (s: JobPairState, action: Action, outcome: Outcome, exact: boolean): JobPairState => {
  switch (action) {
    case "close":
      return s
    case "mount":
      if (outcome._tag === "success") return { row: "held", plain: true, scopes: s.scopes, settle: null }
      if (didNothing(outcome)) return s
      // A mount never releases: a row that held still holds, counted as before.
      return s.row === "held" ? s : unknownRow("mount")
    case "unmount":
      if (outcome._tag === "success" || noActiveMount(outcome)) {
        return s.scopes > 0 ? { row: "held", plain: false, scopes: s.scopes, settle: null } : FREE
      }
      if (didNothing(outcome)) return s
      return s.scopes > 0 ? { ...s, plain: null } : unknownRow("unmount")
    case "enter":
      if (outcome._tag === "success") {
        return { row: "held", plain: s.row === "held" ? s.plain : false, scopes: s.scopes + 1, settle: null }
      }
      if (!mayHaveWritten(outcome) || s.row === "held") return s
      // Written without its count, a hold counts as the job's own (plain): a plain unmount settles it.
      return unknownRow("unmount")
    case "exit": {
      const scopes = Math.max(0, s.scopes - 1)
      if (scopes > 0 || s.plain === true) return { ...s, scopes, row: "held" }
      if (exact && outcome._tag === "success" && s.plain === false) return FREE
      return { row: "unknown", plain: s.plain, scopes: 0, settle: "unmount" }
    }
  }
}

/**
 * A job's view once its process was killed and a new one goes on: the scopes died with the process
 * (never ended), and the new process has no record of the job's row, so a row that holds counts as
 * the job's own plain hold there.
 */
export const restarted = (s: JobPairState): JobPairState =>
  s.row === "held" ? { row: "held", plain: true, scopes: 0, settle: null } : s.row === "free" ? FREE : unknownRow(s.settle ?? "unmount")

/**
 * Whether an operation certainly leaves the job holding the pair, however it ends: a mount never
 * releases; an unmount or a scope's end does not while other holds of the job remain.
 */
export const keepsHold = (s: JobPairState, action: Action): boolean =>
  s.row === "held" &&
  (action === "mount" || action === "enter" || (action === "unmount" && s.scopes > 0) ||
    (action === "exit" && (s.scopes > 1 || s.plain === true)))

/** The most scopes of one job on one pair a slot keeps open. */
const MAX_SCOPES = 3

/** The bound on a close of a `DMSClient` (it must not hang). */
export const CLOSE_BOUND = Duration.seconds(15)

/** The bound on a scope's end, beyond its release timeout (a ledger write in flight, its re-reads). */
const EXIT_SLACK = Duration.seconds(20)

/** A scope a slot holds open. */
interface OpenScope {
  readonly enterId: string
  readonly via: Via
  /** The request's `context`: renamed to the exit's id before the release, which sends this request. */
  readonly context: { request_id: string }
  readonly end: Effect.Effect<void>
}

/** What a slot does next with a chosen job and pair. */
interface Step {
  readonly pairIndex: number
  readonly action: Action
  readonly retry: boolean
}

const nextStep = (stateOf: (pair: number) => JobPairState, pairs: number, [, p, x, y, c]: Choice): Step => {
  const chosen = p % pairs
  // Mostly release what the job holds, so that holds stay few and first holders and last releases
  // (the physical transitions) are frequent; a pair whose last outcome is unknown is settled first.
  const held = Array.from({ length: pairs }, (_, i) => i).filter((i) => stateOf(i).row === "held")
  const pairIndex = stateOf(chosen).row !== "unknown" && held.length > 0 && x < 70 ? held[chosen % held.length]! : chosen
  const s = stateOf(pairIndex)
  if (s.row === "unknown") return { pairIndex, action: s.settle ?? "unmount", retry: true }
  if (y >= 98) return { pairIndex, action: "close", retry: false }
  if (s.row === "free") {
    const action = x >= 95 ? "unmount" : y < 25 ? "enter" : "mount"
    return { pairIndex, action, retry: false }
  }
  // Held: another scope (overlapping the job's holds), a repeated or added plain mount, or (mostly) a
  // release: a scope's end, or a plain unmount, also while scopes are open.
  const action = y < 12 && s.scopes < MAX_SCOPES
    ? "enter"
    : y < 24
    ? "mount"
    : s.scopes > 0 && (s.plain !== true || c < 60) && c < 75
    ? "exit"
    : "unmount"
  return { pairIndex, action, retry: false }
}

/** The name of a slot's own `DMSClient`'s broker connection (the faults close it by name). */
export const promiseConnectionName = (settings: ClientSettings, slot: string) => `${settings.connectionName}-${slot}`

/** The options of a slot's own `DMSClient`: the process's settings, with a connection of its own. */
const promiseClientOptions = (s: ClientSettings, slot: string) => ({
  dbUrl: s.dbUrl,
  rabbitmqUrl: s.rabbitmqUrl,
  timeout: Duration.millis(s.timeoutMs),
  lockTimeout: Duration.millis(s.lockTimeoutMs),
  logLevel: "ERROR",
  ledger: { leaseDuration: Duration.millis(s.leaseMs), maxConnections: 2 },
  broker: { connectionName: promiseConnectionName(s, slot) }
})

/** Bounds an operation that must end: past the bound, the outcome is "hung" (a violation), not a wait. */
const bounded = (effect: Effect.Effect<Outcome>, bound: Duration.Duration, what: string): Effect.Effect<Outcome> =>
  effect.pipe(
    Effect.timeoutTo({
      duration: bound,
      onSuccess: (o) => o,
      onTimeout: (): Outcome => ({ _tag: "failure", error: "hung", message: `${what} did not end within ${Duration.format(bound)}` })
    })
  )

/** Runs a slot's script, one operation at a time, then ends its open scopes and closes its client. */
export const runSlot = (
  spec: SlotSpec,
  report: Reporter,
  settings: ClientSettings,
  stopped: () => boolean = () => false
): Effect.Effect<void, never, Mount.Services> =>
  Effect.acquireUseRelease(
    Effect.sync(() => new DMSClient(promiseClientOptions(settings, spec.slot))),
    (client) =>
      Effect.gen(function*() {
        const states = new Map<string, JobPairState>(Object.entries(spec.initial ?? {}))
        const open = new Map<string, Array<OpenScope>>()
        const releaseTimeout = Duration.millis(settings.releaseTimeoutMs)
        const exitBound = Duration.sum(releaseTimeout, EXIT_SLACK)
        let n = 0

        const run = (jobId: number, pairIndex: number, action: Action, via: Via, retry: boolean, scope?: OpenScope) =>
          Effect.gen(function*() {
            const pair = spec.pairs[pairIndex]
            const key = stateKey(jobId, pairIndex)
            const id = `${spec.slot}-${n++}`
            yield* report.start({
              id,
              slot: spec.slot,
              jobId,
              pair: pair === undefined ? -1 : pairIndex,
              targetId: pair?.targetId ?? "",
              host: pair?.host ?? "",
              action,
              via,
              retry,
              ...(scope === undefined ? {} : { scope: scope.enterId }),
              start: Date.now()
            })
            const body = pair === undefined ? undefined : request(pair, jobId, id)
            let outcome: Outcome
            switch (action) {
              case "close":
                outcome = yield* bounded(
                  outcomeOfPromise(() => client.close(), (): Outcome => ({ _tag: "success" })),
                  CLOSE_BOUND,
                  "DMSClient.close()"
                )
                break
              case "mount":
              case "unmount":
                outcome = yield* (via === "effect" ? perform(action, body) : performPromise(client, action, body))
                break
              case "enter": {
                let end: Effect.Effect<void> = Effect.void
                if (via === "effect") {
                  const s = yield* Scope.make()
                  outcome = yield* outcomeOf(Mount.mountScoped(body, { releaseTimeout }).pipe(Scope.extend(s)), mounted)
                  end = Scope.close(s, Exit.void)
                  if (outcome._tag === "failure") yield* end
                } else {
                  let context: MountContext | undefined
                  outcome = yield* outcomeOfPromise(() => MountContext.enter(client, body, { releaseTimeout }), (ctx) => {
                    context = ctx
                    return mounted(ctx.result)
                  })
                  end = Effect.promise(() => context!.exit())
                }
                if (outcome._tag === "success") {
                  open.set(key, [...(open.get(key) ?? []), { enterId: id, via, context: body!.context, end }])
                }
                break
              }
              case "exit":
                scope!.context.request_id = id
                open.set(key, (open.get(key) ?? []).filter((x) => x !== scope))
                outcome = yield* bounded(Effect.as(scope!.end, { _tag: "success" } as Outcome), exitBound, "a scope's end")
                break
            }
            const state = pair === undefined ? undefined : advance(states.get(key) ?? FREE, action, outcome, spec.exact)
            yield* report.end({ id, end: Date.now(), outcome, ...(state === undefined ? {} : { state }) })
            if (state !== undefined) states.set(key, state)
          })

        for (const [done, choice] of spec.choices.entries()) {
          if (spec.minOps !== undefined && done >= spec.minOps && stopped()) break
          if (spec.pauseMs !== undefined && done > 0) yield* Effect.sleep(Duration.millis(spec.pauseMs))
          const jobId = spec.jobs[choice[0] % spec.jobs.length]!
          const stateOf = (pair: number) => states.get(stateKey(jobId, pair)) ?? FREE
          const step = nextStep(stateOf, spec.pairs.length, choice)
          const scopes = open.get(stateKey(jobId, step.pairIndex)) ?? []
          if (step.action === "close") yield* run(-1, -1, "close", "promise", false)
          else if (step.action === "exit") {
            const scope = scopes[choice[4] % scopes.length]!
            yield* run(jobId, step.pairIndex, "exit", scope.via, false, scope)
          } else yield* run(jobId, step.pairIndex, step.action, choice[4] < 50 ? "effect" : "promise", step.retry)
        }
        // A scope always ends: what the script left open ends now, then the client is closed.
        for (const [key, scopes] of [...open]) {
          const [jobId, pairIndex] = key.split("|").map(Number) as [number, number]
          for (const scope of scopes) yield* run(jobId, pairIndex, "exit", scope.via, false, scope)
        }
        yield* run(-1, -1, "close", "promise", false)
      }),
    (client) => Effect.promise(() => client.close()).pipe(Effect.timeout(CLOSE_BOUND), Effect.ignore)
  )

/** Settings of a test client (short timeouts and lease, so that recovery is quick). */
export interface ClientSettings {
  readonly dbUrl: string
  readonly rabbitmqUrl: string
  readonly connectionName: string
  readonly timeoutMs: number
  readonly leaseMs: number
  readonly lockTimeoutMs: number
  /** A scope's release timeout. */
  readonly releaseTimeoutMs: number
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

/**
 * The process's retry counters so far (counters whose name has `retries`, e.g. the ledger's
 * `dms_ledger_retries_total`), by name and tags: `{"dms_ledger_retries_total{error=1213}": 3}`.
 */
export const retryCounts: Effect.Effect<Record<string, number>> = Effect.map(Metric.snapshot, (pairs) => {
  const out: Record<string, number> = {}
  for (const { metricKey, metricState } of pairs) {
    if (!metricKey.name.includes("retries") || !MetricState.isCounterState(metricState)) continue
    const count = Number(metricState.count)
    if (count === 0) continue
    const tags = metricKey.tags.map((t) => `${t.key}=${t.value}`).join(",")
    const key = `${metricKey.name}{${tags}}`
    out[key] = (out[key] ?? 0) + count
  }
  return out
})
