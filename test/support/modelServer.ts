/**
 * A model DMS server for the randomized model test, as a separate process so that it can be SIGKILLed
 * and restarted mid-request:
 *   node --import tsx test/support/modelServer.ts '{"url":…,"host":…,"dir":…,"connectionName":…[,"queueType":"quorum"]}'
 *
 * It answers like the real server (src/server/Server.ts): one exclusive consumer on `dms.<host>`,
 * requests for one mount path in FIFO order, idempotent mount (`already_mounted`) and unmount
 * (`was_mounted`), a request refused when it arrives or its turn comes past `x-dms-deadline`, the
 * message acked only once answered (a killed server's requests are redelivered), and `status` with the
 * real reply's shape. Nothing is mounted: the mount table is a file.
 *
 * Its record, in `dir`:
 * - `<host>.transitions.jsonl`: every state transition (unmounted→mounted, mounted→unmounted), one JSON
 *   line each, appended before the state file is written and before the reply; it is the authority a
 *   restarted server rebuilds its table from;
 * - `<host>.state.json`: the mount table (path → target id), rewritten atomically on every transition.
 *
 * Control lines on stdin (the faults of the test), each applying to the next matching request when its
 * turn comes (`prefix`: its `context.request_id` starts with it; `-` for any):
 * - `delay <ms> <before|after> <prefix>`: sleep before executing (a slow mount that completes after the
 *   client gave up) or after executing, before replying (a late reply);
 * - `stall <before|after> <prefix> <tag>`: stop there and print
 *   `stalled <tag> <request_id> <action> <before|after>` (the tag tells whose stall was hit),
 *   until `release` (or a SIGKILL);
 * - `release`: lets every stalled request go on (each prints `answered <request_id>` once replied);
 *   `cancel`: drops the armed delays and stalls;
 * - `reboot`: the host reboots: it forgets every mount at once, each logged as a transition with
 *   `cause: "reboot"` (no operation caused it), and prints `rebooted <count>`;
 * - `drain`: prints `drained` once no request is in progress or waiting for its turn.
 * It prints `ready` once consuming.
 */
import amqp from "amqplib"
import type { ConsumeMessage } from "amqplib"
import * as fs from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import { pathToFileURL } from "node:url"
import * as Broker from "../../src/Broker.js"
import * as Protocol from "../../src/Protocol.js"

/** Arguments of the model server process. */
export interface ModelServerArgs {
  /** The broker's URL, or a comma-separated list of a cluster's nodes: the first that answers is used. */
  readonly url: string
  readonly host: string
  readonly dir: string
  readonly connectionName: string
  /** The queue's type (`quorum`: replicated over a cluster's nodes); classic by default. */
  readonly queueType?: "classic" | "quorum"
}

/** Connects to the first of a comma-separated list of broker URLs that accepts the connection. */
const connectFirst = async (urls: string, connectionName: string) => {
  let last: unknown = new Error("no broker URL")
  for (const url of urls.split(",").map((u) => u.trim()).filter((u) => u !== "")) {
    try {
      return await amqp.connect(url, { noDelay: true, clientProperties: { connection_name: connectionName } })
    } catch (e) {
      last = e
    }
  }
  throw last
}

/** One line of the transition log. */
export interface Transition {
  readonly seq: number
  readonly at: number
  readonly host: string
  readonly path: string
  readonly targetId: string
  readonly to: "mounted" | "unmounted"
  /** The `context.request_id` of the request that caused it (the test's operation id). */
  readonly opId: string | null
  /** Set when no request caused it: the host rebooted and lost the mount. */
  readonly cause?: "reboot"
  readonly jobId: number | null
  readonly correlationId: string
  readonly redelivered: boolean
  readonly pid: number
}

export const transitionsFile = (dir: string, host: string) => path.join(dir, `${host}.transitions.jsonl`)
export const stateFile = (dir: string, host: string) => path.join(dir, `${host}.state.json`)

/** The transitions logged so far for a host (a torn last line, from a kill mid-append, is ignored). */
export const readTransitions = (dir: string, host: string): Array<Transition> => {
  const file = transitionsFile(dir, host)
  if (!fs.existsSync(file)) return []
  const out: Array<Transition> = []
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    if (line.trim() === "") continue
    try {
      out.push(JSON.parse(line) as Transition)
    } catch {
      // torn
    }
  }
  return out
}

/** The mount table a transition log implies: path → target id. */
export const fold = (transitions: ReadonlyArray<Transition>): Map<string, string> => {
  const table = new Map<string, string>()
  for (const t of transitions) {
    if (t.to === "mounted") table.set(t.path, t.targetId)
    else table.delete(t.path)
  }
  return table
}

/** The mount table as the state file has it. */
export const readState = (dir: string, host: string): Record<string, string> => {
  const file = stateFile(dir, host)
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, "utf8")) as { mounts: Record<string, string> }).mounts : {}
}

interface Armed {
  readonly kind: "delay" | "stall"
  readonly ms: number
  readonly when: "before" | "after"
  readonly prefix: string
  readonly tag: string
}

const run = async (args: ModelServerArgs) => {
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const fatal = (detail: string) => {
    say(`fatal ${detail}`)
    process.exit(1)
  }
  fs.mkdirSync(args.dir, { recursive: true })
  const logFile = transitionsFile(args.dir, args.host)
  const history = readTransitions(args.dir, args.host)
  const table = fold(history)
  let seq = history.reduce((m, t) => Math.max(m, t.seq), 0)
  const writeState = () => {
    const file = stateFile(args.dir, args.host)
    fs.writeFileSync(`${file}.tmp`, JSON.stringify({ mounts: Object.fromEntries(table) }))
    fs.renameSync(`${file}.tmp`, file)
  }
  writeState()

  const log = (change: Omit<Transition, "seq" | "at" | "host" | "pid">) => {
    const t: Transition = { seq: ++seq, at: Date.now(), host: args.host, ...change, pid: process.pid }
    fs.appendFileSync(logFile, `${JSON.stringify(t)}\n`)
    if (t.to === "mounted") table.set(t.path, t.targetId)
    else table.delete(t.path)
    writeState()
  }

  const armed: Array<Armed> = []
  const drainers: Array<() => void> = []
  const stalled: Array<() => void> = []
  readline.createInterface({ input: process.stdin }).on("line", (line) => {
    const [cmd, a, b, c] = line.trim().split(" ")
    if (cmd === "delay") armed.push({ kind: "delay", ms: Number(a), when: b as "before" | "after", prefix: c ?? "-", tag: "-" })
    else if (cmd === "stall") armed.push({ kind: "stall", ms: 0, when: a as "before" | "after", prefix: b ?? "-", tag: c ?? "-" })
    else if (cmd === "release") for (const go of stalled.splice(0)) go()
    else if (cmd === "cancel") armed.splice(0)
    else if (cmd === "reboot") {
      const lost = [...table]
      for (const [where, targetId] of lost) {
        log({ path: where, targetId, to: "unmounted", opId: null, cause: "reboot", jobId: null, correlationId: "", redelivered: false })
      }
      say(`rebooted ${lost.length}`)
    } else if (cmd === "drain") {
      if (lanes.size === 0) say("drained")
      else drainers.push(() => say("drained"))
    }
  })
  const take = (opId: string) => {
    const i = armed.findIndex((x) => x.prefix === "-" || opId.startsWith(x.prefix))
    return i < 0 ? undefined : armed.splice(i, 1)[0]
  }
  const pause = (fault: Armed | undefined, when: "before" | "after", opId: string, action: string) =>
    new Promise<void>((resolve) => {
      if (fault === undefined || fault.when !== when) return resolve()
      if (fault.kind === "delay") return void setTimeout(resolve, fault.ms)
      stalled.push(resolve)
      say(`stalled ${fault.tag} ${opId} ${action} ${when}`)
    })

  const model = await connectFirst(args.url, args.connectionName)
  model.on("error", (e: Error) => fatal(`connection error: ${e.message}`))
  model.on("close", () => fatal("connection closed"))
  const channel = await model.createChannel()
  channel.on("error", (e: Error) => fatal(`channel error: ${e.message}`))
  channel.on("close", () => fatal("channel closed"))
  const queue = Broker.queueName(args.host)
  await channel.assertQueue(queue, { durable: true, ...(args.queueType === "quorum" ? { arguments: { "x-queue-type": "quorum" } } : {}) })
  await channel.prefetch(200)

  const answer = (msg: ConsumeMessage, body: unknown) => {
    const to = msg.properties.replyTo as string | undefined
    if (to !== undefined) {
      channel.sendToQueue(to, Buffer.from(JSON.stringify(body)), {
        contentType: "application/json",
        correlationId: msg.properties.correlationId
      })
    }
    channel.ack(msg)
  }
  const expired = (deadline: number) =>
    Protocol.failure(`Request expired before it could start (deadline ${new Date(deadline).toISOString()}); not executed`)

  const execute = (msg: ConsumeMessage, body: Record<string, unknown>) => {
    const target = (body.backup_target ?? {}) as Record<string, unknown>
    const where = String(target.filesystem_export_mount_path)
    const targetId = String(target.id)
    const action = String(body.action)
    const record = (to: "mounted" | "unmounted") => {
      const job = body.job as { jobid?: unknown } | undefined
      log({
        path: where,
        targetId,
        to,
        opId: typeof (body.context as any)?.request_id === "string" ? (body.context as any).request_id : null,
        jobId: typeof job?.jobid === "number" ? job.jobid : null,
        correlationId: String(msg.properties.correlationId),
        redelivered: msg.fields.redelivered
      })
    }
    if (action === "mount") {
      if (table.has(where)) return { ...Protocol.success(`Already mounted at ${where}`), already_mounted: true }
      record("mounted")
      return { ...Protocol.success(`NFS target mounted successfully at ${where}`), already_mounted: false }
    }
    if (action === "unmount") {
      if (!table.has(where)) return { ...Protocol.success(`Target not mounted at ${where}`), was_mounted: false }
      record("unmounted")
      return { ...Protocol.success(`Target unmounted successfully from ${where}`), was_mounted: true }
    }
    return Protocol.failure(`Unknown action: ${action}`)
  }

  // One FIFO lane per mount path, as the real server.
  const lanes = new Map<string, Array<() => Promise<void>>>()
  const enqueue = (key: string, job: () => Promise<void>) => {
    const lane = lanes.get(key)
    if (lane !== undefined) return void lane.push(job)
    const fresh = [job]
    lanes.set(key, fresh)
    void (async () => {
      while (fresh.length > 0) {
        await fresh[0]!().catch((e) => fatal(`request failed: ${String(e)}`))
        fresh.shift()
      }
      lanes.delete(key)
      if (lanes.size === 0) for (const done of drainers.splice(0)) done()
    })()
  }

  await channel.consume(queue, (msg) => {
    if (msg === null) return fatal("consumer cancelled")
    let body: Record<string, unknown>
    try {
      body = JSON.parse(msg.content.toString("utf8")) as Record<string, unknown>
    } catch {
      return answer(msg, Protocol.failure("Invalid JSON format in request"))
    }
    const deadline = Broker.deadlineOf((msg.properties.headers ?? {}) as Record<string, unknown>)
    const deadlineMs = deadline._tag === "Some" ? deadline.value : Infinity
    if (Date.now() >= deadlineMs) return answer(msg, expired(deadlineMs))
    if (body.action === "status") {
      return answer(msg, {
        ...Protocol.success(`${table.size} mount(s) under /model`),
        node_id: args.host,
        mount_base: "/model",
        mounts: [...table].map(([mountPath, targetId]) => ({
          backup_target_id: targetId,
          type: "nfs",
          mount_path: mountPath,
          source: `model:${targetId}`,
          fs_type: "nfs",
          mounted: true,
          pid: null,
          daemon_alive: null
        }))
      })
    }
    const where = String((body.backup_target as Record<string, unknown> | undefined)?.filesystem_export_mount_path)
    enqueue(path.resolve("/", where), async () => {
      if (Date.now() >= deadlineMs) return answer(msg, expired(deadlineMs))
      const opId = String((body.context as any)?.request_id ?? "")
      const fault = take(opId)
      await pause(fault, "before", opId, String(body.action))
      const reply = execute(msg, body)
      await pause(fault, "after", opId, String(body.action))
      answer(msg, reply)
      if (fault?.kind === "stall") say(`answered ${opId}`)
    })
  }, { exclusive: true })
  say("ready")
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  run(JSON.parse(process.argv[2] ?? "{}") as ModelServerArgs).catch((e) => {
    process.stdout.write(`fatal ${String(e)}\n`)
    process.exit(1)
  })
}
