/**
 * The guide's "Monitoring Mounts" and "Monitor Active Mounts" (orphaned-mount check).
 */
import { DMSClient } from "trilio-dms/promise"

export const monitorMounts = async () => {
  const client = new DMSClient()
  try {
    // Get all active mounts
    const active = await client.getActiveMounts()
    console.log(`Active mounts: ${active.length}`)
    for (const mount of active) {
      console.log(`\nTarget: ${mount.backupTargetId}`)
      console.log(`  Job: ${mount.jobId}`)
      console.log(`  Host: ${mount.host}`)
      console.log(`  Created: ${mount.createdAt.toISOString()}`)
      console.log(`  Updated: ${mount.updatedAt.toISOString()}`)
    }
  } finally {
    await client.close()
  }
}

/** Periodically check for orphaned mounts: holds older than a day. */
export const checkOrphanedMounts = async (maxAgeMs = 24 * 60 * 60 * 1000) => {
  const client = new DMSClient()
  try {
    const active = await client.getActiveMounts()
    const old = active.filter((mount) => Date.now() - mount.createdAt.getTime() > maxAgeMs)
    for (const mount of old) console.warn(`Long-running mount: ${mount.backupTargetId}`)
    return old
  } finally {
    await client.close()
  }
}
