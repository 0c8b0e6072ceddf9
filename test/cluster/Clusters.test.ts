/**
 * The clusters the cluster tests run on: three Galera nodes that each see a cluster of three, and three
 * RabbitMQ nodes that each see three running.
 */
import { describe, expect, inject, it } from "vitest"
import mysql from "mysql2/promise"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)

describe("test clusters", () => {
  it("Galera: every node is in a cluster of 3 and ready", async () => {
    const cluster = inject("cluster")
    for (const node of cluster.galera) {
      const [host, port] = node.split(":")
      const conn = await mysql.createConnection({
        host: host!,
        port: Number(port),
        user: cluster.galeraUser,
        password: cluster.galeraPassword
      })
      try {
        const [rows] = await conn.query("SHOW STATUS WHERE Variable_name IN ('wsrep_cluster_size', 'wsrep_ready')")
        const status = Object.fromEntries((rows as Array<{ Variable_name: string; Value: string }>).map((r) => [r.Variable_name, r.Value]))
        expect(status).toEqual({ wsrep_cluster_size: "3", wsrep_ready: "ON" })
      } finally {
        await conn.end()
      }
    }
  })

  it("RabbitMQ: three nodes, each running and seeing the other two", async () => {
    const { stdout } = await run("bash", [path.resolve(import.meta.dirname, "../../scripts/cluster/rabbitmq.sh"), "status"])
    const lines = stdout.trim().split("\n")
    expect(lines).toHaveLength(3)
    for (const line of lines) expect(line).toMatch(/running, sees 3 running$/)
  })
})
