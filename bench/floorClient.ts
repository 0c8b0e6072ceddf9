/**
 * The benchmark's raw floor client: what a mount + unmount cycle costs without the client, with plain
 * amqplib (the client's exact publish options, direct reply-to) and plain mysql2 (one connection,
 * multi-statement round trips: per operation, one that takes the lease, marks the request pending and
 * reads the target's state, and one that records the outcome, clears the mark and releases the lease;
 * the statements the client sends). Used by run.ts's `floor` scenario and by the `procs` scenario's
 * floor processes (procWorker.ts), so that both measure the same round trips.
 */
import amqp from "amqplib"
import mysql from "mysql2/promise"
import { createHash, randomUUID } from "node:crypto"
import * as Broker from "../src/Broker.js"
import { request } from "./common.js"

/**
 * A floor client on its own lock row (`target` on `host`).
 */
export interface FloorClient {
  /** One request to the host's responder and its reply. */
  readonly rpc: () => Promise<void>
  /** The ledger SQL of one cycle of `job`: 4 round trips. */
  readonly sqlCycle: (job: number) => Promise<void>
  /** A whole cycle in the client's order: take, request, record + release; for mount, then unmount. */
  readonly cycle: (job: number) => Promise<void>
  readonly close: () => Promise<void>
}

/**
 * Connects a floor client for `target` on `host` to the database `db` and the broker at `url`, and
 * creates its lock row.
 */
export const openFloor = async (db: string, host: string, target: string, url: string): Promise<FloorClient> => {
  const conn = await amqp.connect(url, { noDelay: true })
  const ch = await conn.createConfirmChannel()
  const pending = new Map<string, () => void>()
  await ch.consume("amq.rabbitmq.reply-to", (m) => {
    const id = m?.properties.correlationId as string
    pending.get(id)?.()
    pending.delete(id)
  }, { noAck: true })
  const rpc = () =>
    new Promise<void>((resolve) => {
      const id = randomUUID()
      pending.set(id, resolve)
      ch.publish("", Broker.queueName(host), Buffer.from(JSON.stringify(request(1, target, host))), {
        contentType: "application/json",
        correlationId: id,
        replyTo: "amq.rabbitmq.reply-to",
        deliveryMode: 1,
        mandatory: true,
        expiration: "30000",
        headers: { [Broker.DEADLINE_HEADER]: Date.now() + 30_000 }
      })
    })
  const sqlConn = await mysql.createConnection({ host: "127.0.0.1", user: "root", database: db, multipleStatements: true })
  const owner = randomUUID()
  const key = createHash("sha1").update(`${target}\0${host}`).digest("hex")
  await sqlConn.query(
    "INSERT IGNORE INTO backup_target_mount_lock (lock_key, backup_target_id, host) VALUES (?, ?, ?)",
    [key, target, host]
  )
  const takeSql = `UPDATE backup_target_mount_lock SET owner = ?, expires_at = UTC_TIMESTAMP(3) + INTERVAL 30 SECOND,
        pending_owner = ?, pending_op = ?, pending_deadline = UTC_TIMESTAMP(3) + INTERVAL 30 SECOND
      WHERE lock_key = ? AND (owner IS NULL OR expires_at < UTC_TIMESTAMP(3)) AND pending_op IS NULL;
    SELECT * FROM backup_target_mount_ledger WHERE backup_target_id = ? AND host = ? AND deleted = 0 AND mounted = 1`
  const take = (op: "mount" | "unmount") => sqlConn.query(takeSql, [owner, owner, op, key, target, host])
  const mounted = (job: number) =>
    sqlConn.query(
      `INSERT INTO backup_target_mount_ledger (backup_target_id, jobid, host, mounted) SELECT ?, ?, ?, 1
         FROM backup_target_mount_lock WHERE lock_key = ? AND owner = ?;
       UPDATE backup_target_mount_lock SET owner = NULL, pending_op = NULL WHERE lock_key = ? AND owner = ?`,
      [target, job, host, key, owner, key, owner]
    )
  const unmounted = (job: number) =>
    sqlConn.query(
      `UPDATE backup_target_mount_ledger e JOIN backup_target_mount_lock l ON l.lock_key = ? AND l.owner = ?
         SET e.mounted = 0, l.owner = NULL, l.pending_op = NULL WHERE e.jobid = ? AND e.backup_target_id = ?`,
      [key, owner, job, target]
    )
  return {
    rpc,
    sqlCycle: async (job) => {
      await take("mount")
      await mounted(job)
      await take("unmount")
      await unmounted(job)
    },
    cycle: async (job) => {
      await take("mount")
      await rpc()
      await mounted(job)
      await take("unmount")
      await rpc()
      await unmounted(job)
    },
    close: async () => {
      await sqlConn.end()
      await conn.close()
    }
  }
}
