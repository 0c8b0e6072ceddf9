/**
 * One client process of the storm (bench/storm.ts): the Effect API as a user builds it (`Dms.layer` with
 * the defaults), owning some of a phase's mounts. It connects to the phase's database, warms up with
 * cycles on a host of its own, prints `{"event":"ready"}`, and on each `fire <epoch ms>` line from its
 * parent starts its whole wave at once (the mounts; on the next line, the unmounts), then prints the
 * wave's figures as one JSON line. It exits when its stdin ends (or is killed).
 *   node .bench-build/bench/stormWorker.js '{"url": …, "warmHost": …, "phase": { "name": …, "db": …, "hosts": […], "targets": […], "jobs": 5, "jobBase": 1 }}'
 *
 * The channels it opens are counted by wrapping amqplib's `createChannel` and `createConfirmChannel`,
 * which every channel of the client goes through (the request channel and the queue checks' channels),
 * and the queue checks by wrapping the channels' `checkQueue`.
 */
import amqp from "amqplib"
import type { ChannelModel } from "amqplib"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Metric from "effect/Metric"
import * as fs from "node:fs"
import * as readline from "node:readline"
import * as Dms from "../src/Dms.js"
import * as AmqpQueueCheck from "../src/internal/amqpQueueCheck.js"
import * as Mount from "../src/Mount.js"
import { cycle, errorKind, request, type Runtime } from "./common.js"

/** The mounts of one phase: every job on every target of every host. */
export interface Phase {
  readonly name: string
  readonly db: string
  readonly hosts: ReadonlyArray<string>
  readonly targets: ReadonlyArray<string>
  readonly jobs: number
  readonly jobBase: number
}

/** What a worker prints after each wave. */
export interface Wave {
  readonly event: "wave"
  readonly phase: string
  readonly op: "mount" | "unmount"
  /** When the fire line was read, ms after it was sent. */
  readonly firedLateMs: number
  /** Per successful call: ms from the fire moment to its end, and from its own start to its end. */
  readonly fromFire: ReadonlyArray<number>
  readonly fromStart: ReadonlyArray<number>
  /** Per host, ms from the fire moment to the end of its last call (absent: one of its calls failed). */
  readonly hostDone: Readonly<Record<string, number>>
  readonly failures: Readonly<Record<string, number>>
  readonly channelsOpened: number
  readonly maxOpenChannels: number
  /** Passive declares sent (the queue checks). */
  readonly queueChecks: number
  /** The queue checks' cached answers after the wave. */
  readonly cachedQueues: number
  /** After a forced GC, and the peak so far (VmHWM). */
  readonly rssMiB: number
  readonly peakRssMiB: number
}

const args = JSON.parse(process.argv[2] ?? "{}") as { url: string; warmHost: string; phase: Phase }
const now = () => performance.timeOrigin + performance.now()

const channels = { opened: 0, open: 0, maxOpen: 0, checks: 0 }
const probe = await amqp.connect(args.url)
const model = Object.getPrototypeOf(probe) as Record<"createChannel" | "createConfirmChannel", (...a: Array<unknown>) => Promise<any>>
await probe.close()
for (const name of ["createChannel", "createConfirmChannel"] as const) {
  const original = model[name]
  model[name] = async function(this: ChannelModel, ...a: Array<unknown>) {
    const channel = await original.apply(this, a)
    channels.opened++
    channels.maxOpen = Math.max(channels.maxOpen, ++channels.open)
    channel.on("close", () => void channels.open--)
    const checkQueue = channel.checkQueue
    channel.checkQueue = (queue: string) => {
      channels.checks++
      return checkQueue.call(channel, queue)
    }
    return channel
  }
}

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const nextFire = async (): Promise<number> => {
  const line = await lines.next()
  if (line.done === true) process.exit(0)
  return Number(String(line.value).split(" ")[1])
}
const print = (o: object) => process.stdout.write(JSON.stringify(o) + "\n")
const peakRssMiB = () => Number(/VmHWM:\s+(\d+)/.exec(fs.readFileSync("/proc/self/status", "utf8"))?.[1] ?? 0) / 1024

const wave = async (rt: Runtime, phase: Phase, op: "mount" | "unmount", fire: number): Promise<Wave> => {
  const firedLateMs = now() - fire
  const openedBefore = channels.opened
  const checksBefore = channels.checks
  channels.maxOpen = channels.open
  const fromFire: Array<number> = []
  const fromStart: Array<number> = []
  const hostDone: Record<string, number> = {}
  const failed = new Set<string>()
  const failures: Record<string, number> = {}
  const calls: Array<Promise<void>> = []
  let jobid = phase.jobBase
  for (const host of phase.hosts) {
    for (const target of phase.targets) {
      for (let j = 0; j < phase.jobs; j++) {
        const body = request(jobid++, target, host)
        const start = now()
        calls.push(rt.runPromiseExit(op === "mount" ? Effect.asVoid(Mount.mount(body)) : Effect.asVoid(Mount.unmount(body))).then((exit) => {
          const end = now()
          if (Exit.isFailure(exit)) {
            const kind = errorKind(Cause.squash(exit.cause))
            failures[kind] = (failures[kind] ?? 0) + 1
            failed.add(host)
            return
          }
          fromFire.push(end - fire)
          fromStart.push(end - start)
          hostDone[host] = Math.max(hostDone[host] ?? 0, end - fire)
        }))
      }
    }
  }
  await Promise.all(calls)
  for (const host of failed) delete hostDone[host]
  globalThis.gc?.()
  return {
    event: "wave",
    phase: phase.name,
    op,
    firedLateMs,
    fromFire,
    fromStart,
    hostDone,
    failures,
    channelsOpened: channels.opened - openedBefore,
    maxOpenChannels: channels.maxOpen,
    queueChecks: channels.checks - checksBefore,
    cachedQueues: Effect.runSync(Metric.value(AmqpQueueCheck.cachedQueues)).value,
    rssMiB: process.memoryUsage().rss / 1024 / 1024,
    peakRssMiB: peakRssMiB()
  }
}

const { phase } = args
const rt = ManagedRuntime.make(Dms.layer({ dbUrl: `mysql://root@127.0.0.1:3306/${phase.db}`, rabbitmqUrl: args.url }))
for (let i = 0; i < 50; i++) await cycle(rt, phase.jobBase + 900_000 + i, "storm-warm", args.warmHost)
print({ event: "ready" })
print(await wave(rt, phase, "mount", await nextFire()))
print(await wave(rt, phase, "unmount", await nextFire()))
// Alive until the parent is done reading this process's CPU time.
await lines.next()
await rt.dispose()
process.exit(0)
