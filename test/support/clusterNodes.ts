/**
 * The test clusters' nodes (scripts/cluster): stopping, killing and restarting them, and waiting until a
 * cluster is whole again, for the cluster tests that inject node faults.
 */
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import mysql from "mysql2/promise"
import { execFile } from "node:child_process"
import * as path from "node:path"
import type { Rabbitmqctl } from "./rabbit.js"

const scripts = path.resolve(import.meta.dirname, "../../scripts/cluster")

export const RABBIT_NODES = ["A", "B", "C"] as const
export type RabbitNode = (typeof RABBIT_NODES)[number]

/** Runs a cluster script (`galera.sh`, `rabbitmq.sh`) with arguments, giving its output. */
export const script = (name: "galera.sh" | "rabbitmq.sh", args: ReadonlyArray<string>): Effect.Effect<string, Error> =>
  Effect.async<string, Error>((resume) => {
    const child = execFile("bash", [path.join(scripts, name), ...args], { timeout: 300_000 }, (error, stdout, stderr) => {
      if (error !== null) resume(Effect.fail(new Error(`${name} ${args.join(" ")} failed: ${String(error)} ${stderr}`)))
      else resume(Effect.succeed(stdout))
    })
    return Effect.sync(() => void child.kill())
  })

/** `rabbitmqctl` against the first node that answers (A, B, C), for the cluster's connections and queues. */
export const clusterRabbitmqctl: Rabbitmqctl = (args) =>
  Effect.firstSuccessOf(RABBIT_NODES.map((n) => script("rabbitmq.sh", ["ctl", n, ...args])))

/** The node leading a quorum queue (`dmsB@localhost` → B), if any. */
export const quorumLeader = (queue: string): Effect.Effect<RabbitNode | undefined, Error> =>
  Effect.map(clusterRabbitmqctl(["list_queues", "name", "leader", "-q", "--no-table-headers"]), (out) => {
    for (const line of out.split("\n")) {
      const [name, leader] = line.trim().split(/\s+/)
      if (name === queue) return RABBIT_NODES.find((n) => leader === `dms${n}@localhost`)
    }
    return undefined
  })

export interface GaleraLogin {
  readonly galera: ReadonlyArray<string>
  readonly galeraUser: string
  readonly galeraPassword: string
}

/** `wsrep_cluster_size` and `wsrep_ready` as node `host:port` reports them (undefined: not answering). */
export const galeraStatus = (login: GaleraLogin, node: string) =>
  Effect.promise(async () => {
    const [host, port] = node.split(":")
    const conn = await mysql.createConnection({ host: host!, port: Number(port), user: login.galeraUser, password: login.galeraPassword, connectTimeout: 2_000 })
      .catch(() => undefined)
    if (conn === undefined) return undefined
    try {
      const [rows] = await conn.query("SHOW STATUS WHERE Variable_name IN ('wsrep_cluster_size', 'wsrep_ready')")
      const status = Object.fromEntries((rows as Array<{ Variable_name: string; Value: string }>).map((r) => [r.Variable_name, r.Value]))
      return { size: Number(status.wsrep_cluster_size), ready: status.wsrep_ready === "ON" }
    } catch {
      return undefined
    } finally {
      await conn.end().catch(() => undefined)
    }
  })

/** Polls (bounded) until every Galera node is ready in a cluster of all of them. */
export const awaitGaleraWhole = (login: GaleraLogin): Effect.Effect<void, Error> =>
  Effect.forEach(login.galera, (node) => galeraStatus(login, node)).pipe(
    Effect.flatMap((all) =>
      all.every((s) => s !== undefined && s.ready && s.size === login.galera.length)
        ? Effect.void
        : Effect.fail(new Error(`the Galera cluster is not whole: ${JSON.stringify(all)}`))
    ),
    Effect.retry(Schedule.spaced("250 millis").pipe(Schedule.upTo("180 seconds")))
  )

/** Polls (bounded) until every RabbitMQ node runs and sees all three. */
export const awaitRabbitWhole: Effect.Effect<void, Error> = script("rabbitmq.sh", ["status"]).pipe(
  Effect.flatMap((out) => {
    const lines = out.trim().split("\n")
    return lines.length === RABBIT_NODES.length && lines.every((l) => /running, sees 3 running$/.test(l))
      ? Effect.void
      : Effect.fail(new Error(`the RabbitMQ cluster is not whole: ${out}`))
  }),
  Effect.retry(Schedule.spaced("500 millis").pipe(Schedule.upTo("180 seconds")))
)

/**
 * Makes both clusters whole again, whatever a test left: a Galera node that is not running is restarted
 * (it rejoins), a RabbitMQ node whose app is stopped is started. For a test's finalizer.
 */
export const restoreClusters = (login: GaleraLogin): Effect.Effect<void, Error> =>
  Effect.gen(function*() {
    const galera = yield* script("galera.sh", ["status"])
    for (const line of galera.trim().split("\n")) {
      const m = /^node(\d)\s+\S+\s+(.*)$/.exec(line.trim())
      if (m !== null && !/^pid \d+/.test(m[2]!)) yield* script("galera.sh", ["restart", m[1]!])
    }
    yield* awaitGaleraWhole(login)
    const rabbit = yield* script("rabbitmq.sh", ["status"])
    let whole = true
    for (const line of rabbit.trim().split("\n")) {
      const m = /^dms([ABC])\s/.exec(line.trim())
      if (m === null || /running, sees 3 running$/.test(line)) continue
      whole = false
      if (!/running, sees/.test(line)) yield* Effect.ignore(script("rabbitmq.sh", [/app stopped/.test(line) ? "start-app" : "restart", m[1]!]))
    }
    if (!whole) yield* awaitRabbitWhole
  })
