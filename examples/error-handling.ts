/**
 * The guide's "Error Handling": exceptions, and mount failures as error responses.
 */
import {
  DatabaseException,
  DMSClient,
  DMSClientException,
  RabbitMQException,
  RequestTimeoutException,
  RequestValidationException,
  withMount
} from "trilio-dms/promise"

declare function performBackup(path: string): Promise<void>
declare function notifyAdmin(e: unknown): void

export const handleExceptions = async (client: DMSClient, request: unknown) => {
  try {
    return await client.mount(request)
  } catch (e) {
    if (e instanceof RequestValidationException) console.log(`Invalid request: ${e.message}`)
    else if (e instanceof RequestTimeoutException) console.log(`Request timed out: ${e.message}`) // DMS Server might be down or queue is full
    else if (e instanceof DatabaseException) console.log(`Database error: ${e.message}`) // Check database connectivity and credentials
    else if (e instanceof RabbitMQException) console.log(`RabbitMQ error: ${e.message}`) // Check RabbitMQ connectivity
    else throw e
  }
}

/** The guide's `try: client = DMSClient() except DatabaseException / RabbitMQException`: connect eagerly. */
export const connectOrExplain = async (): Promise<DMSClient | undefined> => {
  try {
    return await DMSClient.connect()
  } catch (e) {
    if (e instanceof DatabaseException) console.log(`Database error: ${e.message}`) // Check database connectivity and credentials
    else if (e instanceof RabbitMQException) console.log(`RabbitMQ error: ${e.message}`) // Check RabbitMQ connectivity
    else throw e
    return undefined
  }
}

export const handleMountFailures = async (client: DMSClient, request: unknown) => {
  const response = await client.mount(request)
  if (response.status === "error") {
    const errorMsg = response.error_msg ?? ""
    if (errorMsg.includes("Permission denied")) console.log("Check mount permissions")
    else if (errorMsg.toLowerCase().includes("timeout")) console.log("Server not responding")
    else if (errorMsg.toLowerCase().includes("credentials")) console.log("Check Barbican credentials")
    else console.log(`Mount failed: ${errorMsg}`)
  }
}

/** Best practice 2: handle errors gracefully. */
export const gracefully = async (client: DMSClient, request: unknown) => {
  try {
    await withMount(client, request, (mount) => performBackup(mount.getMountPath()))
  } catch (e) {
    if (e instanceof DMSClientException) {
      console.error(`DMS error: ${e.message}`)
      notifyAdmin(e)
    } else {
      console.error(`Backup failed: ${String(e)}`)
      throw e
    }
  }
}
