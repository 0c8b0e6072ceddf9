/**
 * The benchmarks' DMS server stand-in: declares and consumes `dms.<host>` for each host given, and
 * answers every request at once with success (no real mount), as the Python server replies.
 *   node .bench-build/bench/responder.js '{"url": "amqp://…", "hosts": ["h1", …]}'
 */
import amqp from "amqplib"

const args = JSON.parse(process.argv[2] ?? "{}") as { url: string; hosts: ReadonlyArray<string> }
const conn = await amqp.connect(args.url, { noDelay: true })
conn.on("error", () => process.exit(1))
const ch = await conn.createChannel()
ch.on("error", () => process.exit(1))
const reply = Buffer.from(JSON.stringify({ status: "success", error_msg: null, success_msg: "ok" }))
for (const host of args.hosts) {
  const queue = `dms.${host}`
  await ch.assertQueue(queue, { durable: true })
  await ch.consume(queue, (msg) => {
    if (msg === null) return
    if (msg.properties.replyTo) {
      ch.sendToQueue(msg.properties.replyTo as string, reply, {
        contentType: "application/json",
        correlationId: msg.properties.correlationId as string
      })
    }
    ch.ack(msg)
  }, { exclusive: true })
}
process.stdout.write("ready\n")
