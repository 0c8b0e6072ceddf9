/**
 * The guide's "Full Backup Workflow": a backup manager that mounts the target for the length of the
 * backup, using a mount context for automatic cleanup.
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { DMSClient, withMount } from "trilio-dms/promise"

export interface BackupTarget {
  readonly id: string
  readonly type: "s3" | "nfs"
  readonly filesystem_export_mount_path: string
  readonly filesystem_export?: string | null
  readonly secret_ref?: string | null
  readonly nfs_mount_opts?: string | null
}

export class BackupManager {
  readonly dmsClient: DMSClient

  constructor(client: DMSClient = new DMSClient()) {
    this.dmsClient = client
  }

  /** Backup a VM to a backup target. */
  async backupVm(vmId: string, backupTarget: BackupTarget, jobId: number, host = os.hostname()): Promise<boolean> {
    // Prepare DMS request
    const request = {
      context: { user_id: process.env.USER_ID, tenant_id: process.env.TENANT_ID },
      keystone_token: process.env.KEYSTONE_TOKEN,
      job: {
        jobid: jobId,
        progress: 0,
        status: "running",
        action: "backup",
        job_details: [{ id: vmId, data: { vm_id: vmId } }]
      },
      host,
      backup_target: backupTarget
    }

    try {
      // Use a mount context for automatic cleanup
      return await withMount(this.dmsClient, request, async (mount) => {
        const mountPath = mount.getMountPath()
        console.log(`Backing up VM ${vmId} to ${mountPath}`)

        // Perform backup
        await this.createSnapshot(vmId)
        await this.copyToTarget(vmId, mountPath)
        await this.createMetadata(vmId, mountPath)

        console.log(`Backup completed for VM ${vmId}`)
        return true
      })
    } catch (e) {
      console.log(`Backup failed: ${String(e)}`)
      return false
    } finally {
      await this.dmsClient.close()
    }
  }

  /** Create VM snapshot (your snapshot logic). */
  async createSnapshot(_vmId: string): Promise<void> {}

  /** Copy data to backup target (your copy logic; here a marker file when the path is writable). */
  async copyToTarget(vmId: string, mountPath: string): Promise<void> {
    await fs.writeFile(path.join(mountPath, `${vmId}.img`), `backup of ${vmId}\n`).catch(() => undefined)
  }

  /** Create backup metadata (your metadata logic). */
  async createMetadata(_vmId: string, _mountPath: string): Promise<void> {}
}

// Usage: npx tsx examples/backup-workflow.ts  (with DMS_DB_URL, DMS_RABBITMQ_URL and a DMS server)
if (import.meta.url === `file://${process.argv[1]}`) {
  const manager = new BackupManager()
  const success = await manager.backupVm(
    "vm-001",
    {
      id: "target-123",
      type: "s3",
      filesystem_export_mount_path: "/var/lib/trilio/triliovault-mounts/xxx",
      secret_ref: "http://barbican:9311/v1/secrets/uuid"
    },
    12345
  )
  process.exitCode = success ? 0 : 1
}
