/**
 * The client and the DMS server on the 3-node RabbitMQ cluster: a quorum queue declared through one
 * node, requests through another, direct reply-to across them; failover to the next node of the URL
 * list when the node in use is stopped (client and server); and a queue of the other type refused with
 * a message that says what to do.
 *
 * Nodes are stopped only here, one at a time, and always started again in a finalizer.
 */
import { assert, describe, it } from "@effect/vitest"
import amqp from "amqplib"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { inject } from "vitest"
import * as Broker from "../../src/Broker.js"
import * as Dms from "../../src/Dms.js"
import * as Mount from "../../src/Mount.js"
import * as Barbican from "../../src/server/Barbican.js"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as Mounter from "../../src/server/Mounter.js"
import * as Server from "../../src/server/Server.js"
import { type Call, playNfsMount, recordingRunner, type ServerDirs, serverDirs, sh } from "../support/dmsServer.js"
import { uniqueConnectionName, uniqueHost } from "../support/rabbit.js"
import { guideNfs } from "../support/requests.js"

type NodeName = "A" | "B" | "C"

const rabbit = () => {
  const [A, B, C] = inject("cluster").rabbit
  return { A, B, C } as Record<NodeName, string>
}
const list = (...nodes: ReadonlyArray<NodeName>) => nodes.map((n) => rabbit()[n]).join(",")
/** How a node shows in the logs: its URL with the password masked. */
const shown = (node: NodeName) => rabbit()[node].replace("dms:dms@", "dms:***@")

const script = path.resolve(import.meta.dirname, "../../scripts/cluster/rabbitmq.sh")
const rabbitmq = (...args: ReadonlyArray<string>) =>
  Effect.async<string, Error>((resume) => {
    const child = execFile("bash", [script, ...args], { timeout: 180_000 }, (error, stdout, stderr) =>
      resume(error === null ? Effect.succeed(stdout) : Effect.fail(new Error(`rabbitmq.sh ${args.join(" ")}: ${String(error)} ${stderr}`))))
    return Effect.sync(() => void child.kill())
  })

/**
 * Waits (bounded) until the three nodes run and see each other: other engineers' node-loss tests share
 * the cluster, and a test that means "the server on C" needs C.
 */
const clusterWhole = rabbitmq("status").pipe(
  Effect.filterOrFail((out) => out.trim().split("\n").filter((l) => /running, sees 3 running$/.test(l)).length === 3, (out) => new Error(`cluster not whole:\n${out}`)),
  Effect.retry(Schedule.spaced("1 second").pipe(Schedule.upTo("180 seconds"))),
  Effect.asVoid
)

/** Stops RabbitMQ on `node` (a node loss), and starts it again when the scope closes. */
const nodeDown = (node: NodeName): Effect.Effect<void, Error, Scope.Scope> =>
  Effect.acquireRelease(rabbitmq("stop-app", node), () => Effect.orDie(rabbitmq("start-app", node))).pipe(Effect.asVoid)

/** A connection to the first node that answers (others share the cluster and stop nodes too). */
const anyNode = async (first: NodeName = "A") => {
  const order = (["A", "B", "C"] as const).filter((n) => n !== first)
  let failure: unknown
  for (const node of [first, ...order]) {
    try {
      const model = await amqp.connect(rabbit()[node], { noDelay: true })
      model.on("error", () => {})
      return model
    } catch (e) {
      failure = e
    }
  }
  throw failure
}

/** Deletes queues when the scope closes. */
const deleteOnClose = (queue: string) =>
  Effect.addFinalizer(() =>
    Effect.tryPromise(async () => {
      const model = await anyNode()
      const channel = await model.createChannel()
      channel.on("error", () => {})
      await channel.deleteQueue(queue).catch(() => undefined)
      await model.close().catch(() => undefined)
    }).pipe(Effect.ignore)
  )

/** Declares `queue` through `node` with `args`, as another server (or an older version) would have. */
const declareQueue = (node: NodeName, queue: string, args?: Record<string, unknown>) =>
  Effect.promise(async () => {
    const model = await anyNode(node)
    const channel = await model.createChannel()
    await channel.assertQueue(queue, { durable: true, ...(args === undefined ? {} : { arguments: args }) })
    await model.close()
  })

// ---------------------------------------------------------------------------------------------------
// Log events, to wait on (never on time)

interface Entry {
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
  readonly at: number
}

const logWatch = () => {
  const entries: Array<Entry> = []
  const waiters: Array<{ readonly match: (e: Entry) => boolean; readonly done: Deferred.Deferred<Entry> }> = []
  const logger = Logger.make(({ annotations, message }) => {
    const text = (Array.isArray(message) ? message : [message]).map(String).join(" ")
    const entry: Entry = { message: text, annotations: Object.fromEntries(HashMap.toEntries(annotations)), at: Date.now() }
    entries.push(entry)
    for (const w of waiters.filter((w) => w.match(entry))) {
      waiters.splice(waiters.indexOf(w), 1)
      Deferred.unsafeDone(w.done, Effect.succeed(entry))
    }
  })
  /** The first entry from `from` on that matches, waiting for it (bounded). */
  const waitFor = (description: string, match: (e: Entry) => boolean, from = 0) =>
    Effect.suspend(() => {
      const found = entries.slice(from).find(match)
      if (found !== undefined) return Effect.succeed(found)
      const done = Deferred.unsafeMake<Entry>(FiberId.none)
      waiters.push({ match, done })
      return Deferred.await(done)
    }).pipe(Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error(`no log entry: ${description}`) }))
  return { entries, logger: Logger.add(logger), waitFor, mark: () => entries.length }
}

const connectedTo = (connectionName: string, node: NodeName) => (e: Entry) =>
  e.message === "connected to the broker" && e.annotations.connectionName === connectionName && e.annotations.node === shown(node)
const consumingOn = (queue: string, node: NodeName) => (e: Entry) =>
  e.message === `consuming ${queue}` && e.annotations.node === shown(node)

// ---------------------------------------------------------------------------------------------------
// The server (tmpfs plays NFS) and the client (in-memory ledger)

const realistic = (call: Call) => (call.command === "mount" ? playNfsMount(call) : sh(call.command, call.args))

const mounter = (dirs: ServerDirs) => {
  const runner = recordingRunner()
  runner.behave = realistic
  return Layer.effect(Mounter.Mounter, Mounter.make({ mountBase: dirs.base, runDir: dirs.run, nfsFsTypes: ["nfs", "nfs4", "tmpfs"] })).pipe(
    Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)),
    Layer.provide(Barbican.layer())
  )
}

const startServer = (host: string, urls: string, dirs: ServerDirs, connectionName: string) =>
  Layer.build(
    Server.layer({ nodeId: host, rabbitmqUrl: urls, queueType: "quorum", connectionName })
      .pipe(Layer.provide(mounter(dirs)))
  ).pipe(Effect.map(Context.get(Server.Server)))

const startClient = (urls: string, connectionName: string) =>
  Layer.build(Dms.layer({ dbUrl: "memory:", rabbitmqUrl: urls, timeout: 30, broker: { connectionName } }))

const roundTrip = (client: Context.Context<Dms.Services>, host: string, dirs: ServerDirs, jobid: number) =>
  Effect.gen(function*() {
    const request = guideNfs({ jobid, host, mountPath: path.join(dirs.base, `job-${jobid}`) })
    const mounted = yield* Mount.mount(request)
    const unmounted = yield* Mount.unmount({ ...request, action: "unmount" })
    return { mounted, unmounted }
  }).pipe(Effect.provide(client))

const queueType = (node: NodeName, queue: string) =>
  Effect.map(rabbitmq("ctl", node, "-q", "list_queues", "name", "type", "--no-table-headers"), (out) =>
    out.split("\n").map((l) => l.trim().split(/\s+/)).find(([name]) => name === queue)?.[1])

/** A server on C (list C,A,B) with a quorum queue, then a client through B (list B,C,A). */
const serverOnCClientOnB = (label: string) =>
  Effect.gen(function*() {
    yield* clusterWhole
    const dirs = yield* serverDirs
    const host = uniqueHost(label)
    const queue = Broker.queueName(host)
    yield* deleteOnClose(queue)
    const clientName = uniqueConnectionName("client")
    const server = yield* startServer(host, list("C", "A", "B"), dirs, uniqueConnectionName("server"))
    yield* server.ready
    const client = yield* startClient(list("B", "C", "A"), clientName)
    return { dirs, host, queue, clientName, server, client }
  })

describe("RabbitMQ cluster: quorum queue, URL lists, failover", () => {
  it.scopedLive("server on C with a quorum queue, client through B (list B,C,A): mount and unmount round trip, replies across nodes", () => {
    const logs = logWatch()
    return Effect.gen(function*() {
      const { client, clientName, dirs, host, queue, server } = yield* serverOnCClientOnB("quorum")
      yield* logs.waitFor("server consuming on C", consumingOn(queue, "C"))
      assert.strictEqual(yield* queueType("C", queue), "quorum")
      const { mounted, unmounted } = yield* roundTrip(client, host, dirs, 101)
      assert.deepInclude(mounted, { physicallyMounted: true, reusedExisting: false })
      assert.include(unmounted as object, { unmounted: true })
      yield* logs.waitFor("client connected to B", connectedTo(clientName, "B"))
      assert.strictEqual(server.stats().replied, 2)
      // The password never reaches a log line.
      assert.isFalse(logs.entries.some((e) => JSON.stringify(e).includes("dms:dms@")))
    }).pipe(Effect.provide(logs.logger))
  }, 300_000)

  it.scopedLive("failover: the node in use is stopped; the client and the server move on to the next node of their lists", () => {
    const logs = logWatch()
    return Effect.gen(function*() {
      const { client, clientName, dirs, host, queue } = yield* serverOnCClientOnB("failover")
      yield* roundTrip(client, host, dirs, 201)
      yield* logs.waitFor("client connected to B", connectedTo(clientName, "B"))

      // B (the client's node) goes: the client reconnects to C, the next of its list.
      const beforeB = logs.mark()
      const lossB = yield* Effect.scoped(Effect.gen(function*() {
        yield* nodeDown("B")
        const stoppedAt = Date.now()
        const moved = yield* logs.waitFor("client connected to C", connectedTo(clientName, "C"), beforeB)
        const { mounted } = yield* roundTrip(client, host, dirs, 202)
        assert.isTrue(mounted.physicallyMounted)
        return moved.at - stoppedAt
      }))
      // C (the server's node, and now the client's) goes: both move on to A.
      const beforeC = logs.mark()
      const lossC = yield* Effect.scoped(Effect.gen(function*() {
        yield* nodeDown("C")
        const stoppedAt = Date.now()
        const serverMoved = yield* logs.waitFor("server consuming on A", consumingOn(queue, "A"), beforeC)
        const clientMoved = yield* logs.waitFor("client connected to A", connectedTo(clientName, "A"), beforeC)
        const { mounted, unmounted } = yield* roundTrip(client, host, dirs, 203)
        assert.isTrue(mounted.physicallyMounted)
        assert.include(unmounted as object, { unmounted: true })
        return { server: serverMoved.at - stoppedAt, client: clientMoved.at - stoppedAt }
      }))
      const lost = logs.entries.filter((e) => e.message === "lost the connection to the broker")
      assert.includeMembers(lost.map((e) => e.annotations.node), [shown("B"), shown("C")])
      console.log(`failover (ms after stop_app returned): B lost → client on C ${lossB}; C lost → server consuming on A ${lossC.server}, client on A ${lossC.client}`)
    }).pipe(Effect.provide(logs.logger))
  }, 480_000)

  it.scopedLive("a queue of the other type: the server does not start, and says which queue, which type and what to do", () =>
    Effect.gen(function*() {
      yield* clusterWhole
      const dirs = yield* serverDirs
      for (const [existing, wanted] of [["classic", "quorum"], ["quorum", "classic"]] as const) {
        const host = uniqueHost(`mismatch-${existing}`)
        const queue = Broker.queueName(host)
        yield* deleteOnClose(queue)
        yield* declareQueue("A", queue, existing === "quorum" ? { "x-queue-type": "quorum", "x-single-active-consumer": true } : undefined)
        const exit = yield* Effect.exit(Effect.scoped(Layer.build(
          Server.layer({ nodeId: host, rabbitmqUrl: list("B", "C"), queueType: wanted }).pipe(Layer.provide(mounter(dirs)))
        )))
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? exit.cause : undefined
        const message = String(error)
        assert.include(message, `queue ${queue} already exists as a ${existing} queue`)
        assert.include(message, `queue_type ${wanted}`)
        assert.include(message, `set queue_type ${existing}`)
        assert.include(message, `rabbitmqctl delete_queue ${queue}`)
        assert.notInclude(message, "dms:dms@")
      }
    }), 300_000)
})
