/**
 * The guide's "Advanced Usage": mount status, active mounts, history, soft delete.
 */
import type { DMSClient } from "trilio-dms/promise"

export const checkMountStatus = async (client: DMSClient) => {
  // Get status for specific job and target
  const status = await client.getMountStatus(12345, "target-123")
  if (status) {
    console.log(`Mounted: ${status.mounted}`)
    console.log(`Host: ${status.host}`)
    console.log(`Created: ${status.createdAt.toISOString()}`)
  } else {
    console.log("No mount record found")
  }
}

export const listActiveMounts = async (client: DMSClient) => {
  // All active mounts
  let activeMounts = await client.getActiveMounts()
  // Filter by host
  activeMounts = await client.getActiveMounts({ host: "compute-01" })
  // Filter by target
  activeMounts = await client.getActiveMounts({ backupTargetId: "target-123" })
  for (const mount of activeMounts) {
    console.log(`Target: ${mount.backupTargetId}`)
    console.log(`  Job: ${mount.jobId}`)
    console.log(`  Host: ${mount.host}`)
    console.log(`  Mounted: ${mount.mounted}`)
    console.log(`  Created: ${mount.createdAt.toISOString()}`)
  }
}

export const viewHistory = async (client: DMSClient) => {
  // Get history for a target (newest first)
  const history = await client.getLedgerHistory("target-123", 20)
  for (const entry of history) {
    console.log(`${entry.createdAt.toISOString()}: Job ${entry.jobId}, Mounted: ${entry.mounted}`)
  }
}

export const softDelete = async (client: DMSClient) => {
  // Soft delete (sets deleted = true); false when the row is still mounted
  const success = await client.softDeleteEntry(12345, "target-123")
  // force: release the mount first (the server unmounts it if this job was the last holder)
  const forced = await client.softDeleteEntry(12345, "target-123", { force: true })
  return { success, forced }
}
