/**
 * The guide's "Restore Workflow": mount the target, read the backup, restore the VM.
 */
import * as os from "node:os"
import { type DMSClient, withMount } from "trilio-dms/promise"
import type { BackupTarget } from "./backup-workflow.js"

declare function readBackup(backupId: string, mountPath: string): Promise<Uint8Array>
declare function restoreVmData(vmId: string, data: Uint8Array): Promise<void>

export const restoreVm = async (
  client: DMSClient,
  vmId: string,
  backupId: string,
  backupTarget: BackupTarget,
  jobId: number
): Promise<boolean> => {
  const request = {
    context: { user_id: process.env.USER_ID, tenant_id: process.env.TENANT_ID },
    keystone_token: process.env.KEYSTONE_TOKEN,
    job: {
      jobid: jobId,
      progress: 0,
      status: "running",
      action: "restore",
      job_details: [{ id: vmId, data: { vm_id: vmId, backup_id: backupId } }]
    },
    host: os.hostname(),
    backup_target: backupTarget
  }
  try {
    return await withMount(client, request, async (mount) => {
      const mountPath = mount.getMountPath()
      console.log(`Restoring VM ${vmId} from ${mountPath}`)
      const backupData = await readBackup(backupId, mountPath)
      await restoreVmData(vmId, backupData)
      console.log(`Restore completed for VM ${vmId}`)
      return true
    })
  } catch (e) {
    console.log(`Restore failed: ${String(e)}`)
    return false
  }
}
