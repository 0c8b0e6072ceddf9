/**
 * What the benchmark programs share: statistics and the cycles they run.
 */
import * as Effect from "effect/Effect"
import type * as ManagedRuntime from "effect/ManagedRuntime"
import type * as Dms from "../src/Dms.js"
import * as Mount from "../src/Mount.js"

export interface Stats {
  readonly n: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly mean: number
}
export const stats = (samples: ReadonlyArray<number>): Stats => {
  const s = [...samples].sort((a, b) => a - b)
  const at = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? Number.NaN
  return { n: s.length, p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: s.reduce((a, b) => a + b, 0) / Math.max(1, s.length) }
}
export const round = (n: number, d = 3) => Number(n.toFixed(d))

export const request = (jobid: number, target: string, host: string) => ({
  job: { jobid },
  host,
  backup_target: { id: target, type: "nfs", filesystem_export: "10.0.0.1:/b", filesystem_export_mount_path: `/m/${target}` }
})

export type Runtime = ManagedRuntime.ManagedRuntime<Dms.Services, Dms.LayerError>

export const cycle = (rt: Runtime, jobid: number, target: string, host: string) =>
  rt.runPromise(Effect.zipRight(Mount.mount(request(jobid, target, host)), Mount.unmount(request(jobid, target, host))))

export const sequential = async (rt: Runtime, n: number, target: string, host: string, firstJob: number) => {
  for (let i = 0; i < 50; i++) await cycle(rt, firstJob + i, target, host)
  const samples: Array<number> = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await cycle(rt, firstJob + 100 + i, target, host)
    samples.push(performance.now() - t)
  }
  return stats(samples)
}

/** `jobs` workers, each cycling its own job on its target (jobs % targets) and host, for `seconds`. */
export const fanOut = async (rt: Runtime, jobs: number, targets: number, hosts: ReadonlyArray<string>, seconds: number, jobBase: number) => {
  const until = performance.now() + seconds * 1000
  const latencies: Array<number> = []
  const perJob = new Array<number>(jobs).fill(0)
  await Promise.all(Array.from({ length: jobs }, async (_, j) => {
    let i = 0
    while (performance.now() < until) {
      const t = performance.now()
      await cycle(rt, jobBase + j * 100_000 + i++, `fan-t${j % targets}`, hosts[j % hosts.length]!)
      latencies.push(performance.now() - t)
      perJob[j]!++
    }
  }))
  const total = perJob.reduce((a, b) => a + b, 0)
  const mean = total / jobs
  return {
    cyclesPerSecond: total / seconds,
    latency: stats(latencies),
    minShare: Math.min(...perJob) / mean,
    maxShare: Math.max(...perJob) / mean
  }
}

