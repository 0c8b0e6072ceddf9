/**
 * One process of the `procs` benchmark (procs.ts): cycles mount + unmount of its own target on the
 * shared host, one cycle after the other, as a user's program does.
 *
 *   node .bench-build/bench/procWorker.js '{"mode": "client" | "floor", "db", "host", "target", "url", "seconds", "warmup", "jobBase"}'
 *
 * `client` goes through the user's Promise facade (`DMSClient` of trilio-dms/promise); `floor` is the
 * raw floor client (floorClient.ts: plain mysql2 + amqplib, the same round trips). After `warmup`
 * cycles it writes `ready`, waits for a `go` line on stdin, cycles for `seconds`, and writes one JSON
 * line: its cycles, the window's length, the CPU it used in it (from /proc/self/stat) and the latencies.
 */
import * as readline from "node:readline"
import { DMSClient } from "../src/promise.js"
import { cpuOf, request, round } from "./common.js"
import { openFloor } from "./floorClient.js"

/**
 * What procs.ts passes to a worker.
 */
export interface WorkerArgs {
  readonly mode: "client" | "floor"
  readonly db: string
  readonly host: string
  readonly target: string
  readonly url: string
  readonly seconds: number
  readonly warmup: number
  readonly jobBase: number
}

/**
 * What a worker writes at the end: cycles and CPU seconds within its measured window of `seconds`.
 */
export interface WorkerResult {
  readonly cycles: number
  readonly seconds: number
  readonly cpuSeconds: number
  readonly latencies: Array<number>
  /** CPU seconds from the process's start (module loading, connecting) through its warm-up cycles. */
  readonly warmupCpuSeconds: number
}

const open = async (args: WorkerArgs): Promise<{ cycle: (job: number) => Promise<void>; close: () => Promise<void> }> => {
  if (args.mode === "floor") return openFloor(args.db, args.host, args.target, args.url)
  const client = new DMSClient({ dbUrl: `mysql://root@127.0.0.1:3306/${args.db}`, rabbitmqUrl: args.url, timeout: 30 })
  return {
    cycle: async (job) => {
      const req = request(job, args.target, args.host)
      const mounted = await client.mount(req)
      if (mounted.status !== "success") throw new Error(`mount of job ${job}: ${mounted.error_msg}`)
      const unmounted = await client.unmount(req)
      if (unmounted.status !== "success") throw new Error(`unmount of job ${job}: ${unmounted.error_msg}`)
    },
    close: () => client.close()
  }
}

const main = async () => {
  const args = JSON.parse(process.argv[2] ?? "{}") as WorkerArgs
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
  const started = cpuOf("self")
  const { close, cycle } = await open(args)
  let job = args.jobBase
  for (let i = 0; i < args.warmup; i++) await cycle(job++)
  const warmupCpuSeconds = cpuOf("self") - started
  process.stdout.write("ready\n")
  for (let line = await lines.next(); line.value !== "go"; line = await lines.next()) {
    if (line.done === true) throw new Error("stdin closed before go")
  }
  const latencies: Array<number> = []
  const cpu = cpuOf("self")
  const start = performance.now()
  const until = start + args.seconds * 1000
  while (performance.now() < until) {
    const t = performance.now()
    await cycle(job++)
    latencies.push(round(performance.now() - t, 3))
  }
  const result: WorkerResult = {
    cycles: latencies.length,
    seconds: (performance.now() - start) / 1000,
    cpuSeconds: cpuOf("self") - cpu,
    latencies,
    warmupCpuSeconds
  }
  process.stdout.write(JSON.stringify(result) + "\n")
  await close()
}

main().then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
