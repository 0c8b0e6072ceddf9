/**
 * A separate DMS client process for the live tests:
 *   node --import tsx test/support/clientWorker.ts '{"dbUrl":…,"rabbitmqUrl":…}'
 * Prints "ready" once connected, then runs one command per stdin line — a JSON request prefixed with
 * "mount " or "unmount " — and prints "<op> <json response>".
 */
import * as readline from "node:readline"
import { DMSClient } from "../../src/promise.js"

const args = JSON.parse(process.argv[2] ?? "{}") as { dbUrl: string; rabbitmqUrl: string; timeout?: number }
const client = new DMSClient({ dbUrl: args.dbUrl, rabbitmqUrl: args.rabbitmqUrl, timeout: args.timeout ?? 30 })

await client.getActiveMounts()
process.stdout.write("ready\n")

const rl = readline.createInterface({ input: process.stdin })
for await (const line of rl) {
  const space = line.indexOf(" ")
  const op = space < 0 ? line : line.slice(0, space)
  if (op === "exit") break
  const request = JSON.parse(line.slice(space + 1)) as unknown
  try {
    const response = op === "mount" ? await client.mount(request) : await client.unmount(request)
    process.stdout.write(`${op} ${JSON.stringify(response)}\n`)
  } catch (e) {
    process.stdout.write(`${op} ${JSON.stringify({ exception: String(e) })}\n`)
  }
}
await client.close()
process.exit(0)
