/**
 * Brings up the 3-node Galera cluster and the 3-node RabbitMQ cluster (scripts/cluster) once for every
 * cluster test, in parallel, and stops them at the end if this run started them. A cluster that does not
 * come up fails the run loudly: the cluster tests never skip.
 */
import { execFile } from "node:child_process"
import * as path from "node:path"
import { promisify } from "node:util"
import type { TestProject } from "vitest/node"

const run = promisify(execFile)
const scripts = path.resolve(import.meta.dirname, "../../scripts/cluster")

/** Where the clusters listen, handed to the tests with `inject`. */
export const clusterUrls = {
  galera: ["127.0.0.1:3307", "127.0.0.1:3308", "127.0.0.1:3309"],
  galeraUser: "dms",
  galeraPassword: "dms",
  rabbit: ["amqp://dms:dms@127.0.0.1:5682", "amqp://dms:dms@127.0.0.1:5683", "amqp://dms:dms@127.0.0.1:5684"]
} as const

// Up already when any node's process runs: someone's cluster (maybe with a node stopped or killed by
// their test for a moment), which this run must not stop at its end.
const upAlready = async (script: string): Promise<boolean> => {
  const { stdout } = await run("bash", [path.join(scripts, script), "status"], { timeout: 60_000 })
  return / pid \d+/.test(stdout)
}

export default async function setup(project: TestProject) {
  const scriptsToStart = ["galera.sh", "rabbitmq.sh"]
  const wasUp = await Promise.all(scriptsToStart.map(upAlready))
  // Idempotent: a cluster that is already up (a developer's, or a node restarted by a test) is kept.
  await Promise.all(scriptsToStart.map((s) => run("bash", [path.join(scripts, s), "start"], { timeout: 300_000 })))
  project.provide("cluster", clusterUrls)
  return async () => {
    if (process.env.DMS_CLUSTER_KEEP === "1") return
    await Promise.all(
      scriptsToStart.map((s, i) => (wasUp[i] ? Promise.resolve() : run("bash", [path.join(scripts, s), "stop"], { timeout: 300_000 })))
    )
  }
}

declare module "vitest" {
  export interface ProvidedContext {
    cluster: typeof clusterUrls
  }
}
