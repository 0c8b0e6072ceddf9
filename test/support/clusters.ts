/**
 * The 3-node Galera and RabbitMQ clusters of scripts/cluster: where they listen, and bringing them up
 * (idempotently) with a way to stop them again only if this caller started them. Shared by the cluster
 * tests' global setup and the benchmark's cluster scenario.
 */
import { execFile } from "node:child_process"
import * as path from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)

/** Where the clusters listen. */
export const clusterUrls = {
  galera: ["127.0.0.1:3307", "127.0.0.1:3308", "127.0.0.1:3309"],
  galeraUser: "dms",
  galeraPassword: "dms",
  rabbit: ["amqp://dms:dms@127.0.0.1:5682", "amqp://dms:dms@127.0.0.1:5683", "amqp://dms:dms@127.0.0.1:5684"]
} as const

const scriptNames = ["galera.sh", "rabbitmq.sh"] as const

/**
 * Starts both clusters in parallel (`scripts/cluster/*.sh start`, idempotent: a cluster already up is
 * kept) from the project `root`. Resolves to a function that stops those this call found down (none
 * with DMS_CLUSTER_KEEP=1: other users may have come to rely on them meanwhile).
 */
export const startClusters = async (root: string): Promise<() => Promise<void>> => {
  const script = (s: string) => path.join(root, "scripts/cluster", s)
  // Up already when any node's process runs: someone's cluster (maybe with a node stopped or killed by
  // their test for a moment), which this run must not stop at its end.
  const upAlready = async (s: string): Promise<boolean> => {
    const { stdout } = await run("bash", [script(s), "status"], { timeout: 60_000 })
    return / pid \d+/.test(stdout)
  }
  const wasUp = await Promise.all(scriptNames.map(upAlready))
  await Promise.all(scriptNames.map((s) => run("bash", [script(s), "start"], { timeout: 300_000 })))
  return async () => {
    if (process.env.DMS_CLUSTER_KEEP === "1") return
    await Promise.all(
      scriptNames.map((s, i) => (wasUp[i] ? Promise.resolve() : run("bash", [script(s), "stop"], { timeout: 300_000 })))
    )
  }
}
