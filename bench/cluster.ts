/**
 * The cluster scenario of `npm run bench` (issue 13): the sequential cycle and the 64 × 8 fan-out on a
 * 3-node Galera cluster and a 3-node RabbitMQ cluster (scripts/cluster, started here if they are down
 * and stopped again at the end if so), against the single node measured beside them: the sequential
 * cycles alternate between the single node and the cluster, and the single node's fan-out runs just
 * before the cluster's, so that the ratios hold on a machine whose load moves (figures of the single
 * node taken minutes earlier in the run would not):
 *
 * - galera via one node: every client statement through node 1 (3307); the client publishes through
 *   RabbitMQ node A and the responder consumes on node B, so every request and reply crosses nodes;
 * - galera multi-writer: the fan-out with half of each target's jobs on a client of node 1 (3307) and
 *   half on a client of node 2 (3308), the same rows written through two nodes at once: certification
 *   conflicts (errno 1213) are counted by kind, and the client's ledger retries
 *   (`dms_ledger_retries_total`, by `error`).
 */
import * as Effect from "effect/Effect"
import * as ManagedRuntime from "effect/ManagedRuntime"
import * as Metric from "effect/Metric"
import * as MetricState from "effect/MetricState"
import mysql from "mysql2/promise"
import * as Dms from "../src/Dms.js"
import * as Ledger from "../src/Ledger.js"
import * as Mount from "../src/Mount.js"
import { clusterUrls, startClusters } from "../test/support/clusters.js"
import { alternating, deleteQueues, type Errors, fanOut, root, round, type Runtime, type Stats, startResponder } from "./common.js"

type Single = { readonly cyclesPerSecond: number; readonly latency: Stats }

const RETRIES = "dms_ledger_retries_total"

/** The client's ledger retries so far, by their `error` tag. */
const retries = (): Map<string, number> => {
  const counts = new Map<string, number>()
  for (const pair of Effect.runSync(Metric.snapshot)) {
    if (pair.metricKey.name !== RETRIES || !MetricState.isCounterState(pair.metricState)) continue
    const kind = pair.metricKey.tags.find((t) => t.key === "error")?.value ?? "untagged"
    counts.set(kind, (counts.get(kind) ?? 0) + Number(pair.metricState.count))
  }
  return counts
}

/** Runs `f`, counting its failures by kind and the ledger retries it caused. */
const counted = async <A>(f: (errors: Errors) => Promise<A>) => {
  const errors: Errors = new Map()
  const before = retries()
  const result = await f(errors)
  const after = retries()
  const retried = Object.fromEntries([...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)]).filter(([, v]) => v !== 0))
  return { result, errors: Object.fromEntries(errors), retries: retried }
}

/** A fan-out's figures, failures and retries, and its ratios to the single node's. */
const fanFigures = (f: Awaited<ReturnType<typeof counted<Awaited<ReturnType<typeof fanOut>>>>>, single: Single) => ({
  cyclesPerSecond: round(f.result.cyclesPerSecond, 1),
  latency: f.result.latency,
  minShare: round(f.result.minShare, 2),
  maxShare: round(f.result.maxShare, 2),
  /** Cycles that took over 5 s: they waited for a lease a failed cycle left held until it expired. */
  stalled: f.result.latencies.filter((ms) => ms > 5000).length,
  errors: f.errors,
  retries: f.retries,
  rateRatio: round(f.result.cyclesPerSecond / single.cyclesPerSecond, 2),
  p99Ratio: round(f.result.latency.p99 / single.latency.p99, 2)
})

export const cluster = async (options: {
  /** Sequential cycles measured. */
  readonly n: number
  /** Seconds of each fan-out. */
  readonly seconds: number
  readonly hostPrefix: string
  /** A client of the single node (3306 + 5672) and a host its responder answers for. */
  readonly single: { readonly rt: Runtime; readonly host: string }
}) => {
  const stopClusters = await startClusters(root)
  const [sql1, sql2] = clusterUrls.galera
  const [rabbitA, rabbitB] = clusterUrls.rabbit
  const credentials = `${clusterUrls.galeraUser}:${clusterUrls.galeraPassword}`
  const db = `dms_bench_cluster_${process.pid}`
  const host = `${options.hostPrefix}-cluster`
  // A connection per statement: node 1 may be restarted meanwhile by someone else's cluster test.
  const admin = async (statement: string) => {
    const conn = await mysql.createConnection({
      host: "127.0.0.1",
      port: Number(sql1!.split(":")[1]),
      user: clusterUrls.galeraUser,
      password: clusterUrls.galeraPassword
    })
    await conn.query(statement).finally(() => conn.end())
  }
  await admin(`CREATE DATABASE ${db}`)
  const responder = await startResponder([host], rabbitB)
  const client = (sql: string): Runtime =>
    ManagedRuntime.make(Dms.layer({ dbUrl: `mysql://${credentials}@${sql}/${db}`, rabbitmqUrl: rabbitA!, timeout: 30 }))
  const node1 = client(sql1!)
  const node2 = client(sql2!)
  try {
    // The tables, as an operator creates them (`trilio-dms migrate`), through node 1; then both clients connect.
    await Effect.runPromise(Ledger.migrate({ url: `mysql://${credentials}@${sql1}/${db}` }))
    await node1.runPromise(Mount.getActiveMounts())
    await node2.runPromise(Mount.getActiveMounts())
    // Failures are counted on the single node too (the Galera ones are the cluster's, split below).
    const singleErrors: Errors = new Map()
    const seq = await counted((errors) =>
      alternating([{ ...options.single, errors: singleErrors }, { rt: node1, host, errors }], options.n, "cseq-target", 400_000_000)
    )
    const [singleCycle, galeraCycle] = seq.result as [Stats, Stats]
    const singleFan = await counted((errors) => fanOut(options.single.rt, 64, 8, [options.single.host], options.seconds, 405_000_000, errors))
    const one = await counted((errors) => fanOut(node1, 64, 8, [host], options.seconds, 410_000_000, errors))
    const multi = await counted((errors) => fanOut([node1, node2], 64, 8, [host], options.seconds, 420_000_000, errors))
    return {
      setup: "Galera 3 nodes (SQL 3307-3309), RabbitMQ 3 nodes (client on A, responder on B); single node: 3306 + 5672",
      seconds: options.seconds,
      single: {
        cycle: { ...singleCycle, errors: Object.fromEntries(singleErrors) },
        fanOut: fanFigures(singleFan, singleFan.result)
      },
      galera: {
        // The ledger retries of the alternating cycles are the cluster's: the single node has none to retry.
        cycle: { ...galeraCycle, errors: seq.errors, retries: seq.retries, p50Ratio: round(galeraCycle.p50 / singleCycle.p50, 2) },
        fanOut: fanFigures(one, singleFan.result)
      },
      multiWriter: { fanOut: fanFigures(multi, singleFan.result) }
    }
  } finally {
    await Promise.allSettled([node1.dispose(), node2.dispose()])
    responder.stop()
    await deleteQueues([host], rabbitA).catch(() => undefined)
    await admin(`DROP DATABASE IF EXISTS ${db}`).catch((e) => console.error(`could not drop ${db} on Galera:`, e))
    await stopClusters()
  }
}

/** The scenario's lines of results.md. */
export const clusterMarkdown = (c: Awaited<ReturnType<typeof cluster>> | { failed: string } | undefined): Array<string> => {
  if (c === undefined) return []
  if ("failed" in c) return ["", `Clusters: the scenario failed: ${c.failed}`]
  const ms = (s: Stats) => `${round(s.p50, 2)} / ${round(s.p90, 2)} / ${round(s.p99, 2)}`
  const list = (counts: Record<string, number>) => Object.entries(counts).map(([k, v]) => `${v} × ${k}`).join(", ") || "none"
  const failures = (r: { errors: Record<string, number>; retries?: Record<string, number>; stalled?: number }) =>
    `failed cycles: ${list(r.errors)}${r.retries ? `; ledger retries: ${list(r.retries)}` : ""}${r.stalled ? `; ${r.stalled} cycles over 5 s` : ""}`
  return [
    "",
    `Clusters (${c.setup}):`,
    "",
    `| scenario | p50 / p90 / p99 ms | throughput | cluster / single | errors |`,
    `| --- | --- | --- | --- | --- |`,
    `| cycle, single node, sequential (alternating with the next) | ${ms(c.single.cycle)} | ${round(1000 / c.single.cycle.mean, 0)}/s | | ${failures(c.single.cycle)} |`,
    `| cycle, Galera via node 1, RabbitMQ A → B, sequential | ${ms(c.galera.cycle)} | ${round(1000 / c.galera.cycle.mean, 0)}/s | p50 ${c.galera.cycle.p50Ratio} × | ${failures(c.galera.cycle)} |`,
    `| fan-out 64 jobs x 8 targets, single node, ${c.seconds} s | ${ms(c.single.fanOut.latency)} | ${round(c.single.fanOut.cyclesPerSecond, 0)}/s | | ${failures(c.single.fanOut)} |`,
    `| fan-out 64 x 8, Galera via node 1, ${c.seconds} s | ${ms(c.galera.fanOut.latency)} | ${round(c.galera.fanOut.cyclesPerSecond, 0)}/s | rate ${c.galera.fanOut.rateRatio} ×, p99 ${c.galera.fanOut.p99Ratio} × | ${failures(c.galera.fanOut)} |`,
    `| fan-out 64 x 8, Galera multi-writer (nodes 1 and 2), ${c.seconds} s | ${ms(c.multiWriter.fanOut.latency)} | ${round(c.multiWriter.fanOut.cyclesPerSecond, 0)}/s | rate ${c.multiWriter.fanOut.rateRatio} ×, p99 ${c.multiWriter.fanOut.p99Ratio} × | ${failures(c.multiWriter.fanOut)} |`
  ]
}
