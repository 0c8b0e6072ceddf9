/**
 * Requests from the user's guide, for tests (Python's None as null).
 */

/** The guide's "NFS Backup Target Example", with the job id, host and mount path to use. */
export const guideNfs = (
  options: { readonly jobid?: number; readonly host?: string; readonly mountPath?: string } = {}
) => ({
  context: { user_id: "user-123", tenant_id: "tenant-456", request_id: `req-${options.jobid ?? 12346}` },
  keystone_token: "gAAAAABxxx...",
  job: { jobid: options.jobid ?? 12346, progress: 0, status: "running", action: "backup", job_details: [] },
  host: options.host ?? "compute-01",
  action: "mount",
  backup_target: {
    id: "target-nfs-prod",
    type: "nfs",
    deleted: false,
    status: "available",
    filesystem_export: "192.168.1.100:/backups",
    filesystem_export_mount_path: options.mountPath ?? "/var/lib/trilio/triliovault-mounts/nfs-prod",
    secret_ref: null as string | null,
    nfs_mount_opts: "rw,sync,hard,intr,nfsvers=4"
  }
})
