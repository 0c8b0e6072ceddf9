/**
 * Brings up the 3-node Galera cluster and the 3-node RabbitMQ cluster (scripts/cluster) once for every
 * cluster test, in parallel, and stops them at the end if this run started them. A cluster that does not
 * come up fails the run loudly: the cluster tests never skip.
 */
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import { clusterUrls, startClusters } from "../support/clusters.js"

export { clusterUrls }

export default async function setup(project: TestProject) {
  // Idempotent: a cluster that is already up (a developer's, or a node restarted by a test) is kept.
  const stop = await startClusters(path.resolve(import.meta.dirname, "../.."))
  project.provide("cluster", clusterUrls)
  return stop
}

declare module "vitest" {
  export interface ProvidedContext {
    cluster: typeof clusterUrls
  }
}
