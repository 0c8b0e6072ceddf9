/**
 * The guide's "Basic Usage": initialize a client, mount a backup target, unmount it.
 */
import { DMSClient } from "trilio-dms/promise"

// The database's tables are made once beforehand with `trilio-dms migrate` (a client never creates them).
// Using environment variables (DMS_DB_URL, DMS_RABBITMQ_URL, …) or ~/.trilio-dms/client.conf
export const fromEnvironment = () => new DMSClient()

// Or with explicit configuration
export const explicit = () =>
  new DMSClient({
    dbUrl: "mysql+pymysql://user:pass@localhost/trilio_dms",
    rabbitmqUrl: "amqp://user:pass@localhost:5672",
    timeout: 300
  })

export const request = {
  context: { user_id: "user-123", tenant_id: "tenant-456", project_id: "project-789" },
  keystone_token: "your-keystone-token",
  job: {
    jobid: 12345, // INTEGER
    progress: 0,
    status: "running",
    completed_at: null,
    action: "backup",
    parent_jobid: null,
    job_details: [{ id: "vm-detail-1", data: { vm_id: "vm-001", vm_name: "web-server" } }]
  },
  host: "compute-01",
  action: "mount",
  backup_target: {
    id: "target-123",
    deleted: false,
    type: "s3", // or 'nfs'
    filesystem_export: null, // For NFS: '192.168.1.100:/export'
    filesystem_export_mount_path: "/var/lib/trilio/triliovault-mounts/xxx",
    status: "available",
    secret_ref: "http://barbican:9311/v1/secrets/uuid", // For S3
    nfs_mount_opts: null // For NFS: 'rw,sync,hard'
  }
}

export const mountAndUnmount = async (client: DMSClient) => {
  // Execute mount
  const response = await client.mount(request)
  if (response.status === "success") console.log(`✓ ${response.success_msg}`)
  else console.log(`✗ ${response.error_msg}`)

  // Same request, just change action
  const unmountResponse = await client.unmount({ ...request, action: "unmount" })
  if (unmountResponse.status === "success") console.log(`✓ ${unmountResponse.success_msg}`)
  else console.log(`✗ ${unmountResponse.error_msg}`)
}
