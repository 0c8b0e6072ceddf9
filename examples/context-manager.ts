/**
 * The guide's "Using Context Manager (Recommended)": automatic mount and unmount.
 */
import { type DMSClient, MountContext, withMount } from "trilio-dms/promise"

declare function performBackup(path: string): Promise<void>

// `await using` unmounts when the block ends, however it ends.
export const withAwaitUsing = async (client: DMSClient, request: unknown) => {
  await using mount = await MountContext.enter(client, request)
  // Mount is ready
  console.log(`Mounted at: ${mount.getMountPath()}`)
  // Perform your backup operations
  await performBackup(mount.getMountPath())
  // Automatic unmount when leaving the block
}

// The same with a callback.
export const withCallback = (client: DMSClient, request: unknown) =>
  withMount(client, request, async (mount) => {
    await performBackup(mount.getMountPath())
  })

// Explicit enter/exit, as Python's __enter__/__exit__.
export const explicit = async (client: DMSClient, request: unknown) => {
  const mount = await MountContext.enter(client, request)
  try {
    await performBackup(mount.getMountPath())
  } finally {
    await mount.exit()
  }
}
