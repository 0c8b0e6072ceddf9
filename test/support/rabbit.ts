/**
 * Helpers for tests against the real RabbitMQ (amqp://guest:guest@127.0.0.1:5672, or
 * DMS_TEST_RABBITMQ_URL): unique host names per run, an admin connection, queues deleted after the
 * test, and closing one of our own connections from the broker side by its name.
 */
import amqp from "amqplib"
import type { Channel, ChannelModel } from "amqplib"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFile } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as Broker from "../../src/Broker.js"

export const RABBIT_URL = process.env.DMS_TEST_RABBITMQ_URL ?? "amqp://guest:guest@127.0.0.1:5672"

/** Every queue a test of this process created, for a last sweep. */
const created = new Set<string>()

/** A host name no other test (or test run) uses: `dms-test-<pid>-<random>-<label>`. */
export const uniqueHost = (label: string): string =>
  `dms-test-${process.pid}-${randomBytes(4).toString("hex")}-${label}`

/** A connection name no other test uses, to close it by name. */
export const uniqueConnectionName = (label: string): string =>
  `dms-test-${process.pid}-${randomBytes(4).toString("hex")}-${label}`

export interface Admin {
  readonly model: ChannelModel
  /** A channel for RPCs that cannot fail (declare, delete, purge). */
  readonly channel: Channel
}

const quiet = (emitter: NodeJS.EventEmitter) => {
  emitter.on("error", () => {})
  emitter.on("close", () => {})
}

/** A connection of the test's own (fails loudly if RabbitMQ is down), closed with the scope. */
export const admin: Effect.Effect<Admin, Error, Scope.Scope> = Effect.acquireRelease(
  Effect.tryPromise({
    try: async () => {
      const model = await amqp.connect(RABBIT_URL, { noDelay: true })
      quiet(model)
      const channel = await model.createChannel()
      quiet(channel)
      return { model, channel }
    },
    catch: (e) => new Error(`RabbitMQ is not reachable at ${RABBIT_URL}: ${String(e)}`)
  }),
  ({ model }) => Effect.promise(() => model.close().catch(() => undefined))
)

/**
 * Registers a queue for deletion when the scope closes (and, on the test broker, in the file's final
 * sweep); `url`: on another broker (e.g. a cluster's node).
 */
export const deleteOnClose = (queue: string, url?: string): Effect.Effect<void, never, Scope.Scope> =>
  Effect.sync(() => void (url === undefined && created.add(queue))).pipe(
    Effect.zipRight(Effect.addFinalizer(() => deleteQueues([queue], url)))
  )

/** Declares a host's queue as the DMS server does (durable, no arguments), deleted with the scope. */
export const declareHostQueue = (host: string): Effect.Effect<string, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = Broker.queueName(host)
    yield* deleteOnClose(queue)
    const { channel } = yield* admin
    yield* Effect.tryPromise({ try: () => channel.assertQueue(queue, { durable: true }), catch: (e) => new Error(String(e)) })
    return queue
  })

/** Deletes queues (missing ones are fine), on a connection of its own (to the test broker, or `url`). */
export const deleteQueues = (queues: Iterable<string>, url = RABBIT_URL): Effect.Effect<void> =>
  Effect.promise(async () => {
    const names = [...queues]
    if (names.length === 0) return
    const model = await amqp.connect(url, { noDelay: true }).catch(() => undefined)
    if (model === undefined) return
    quiet(model)
    try {
      const channel = await model.createChannel()
      quiet(channel)
      for (const q of names) {
        await channel.deleteQueue(q).catch(() => undefined)
        created.delete(q)
      }
    } finally {
      await model.close().catch(() => undefined)
    }
  }).pipe(Effect.ignore)

/** Deletes every queue this process registered and did not delete yet (for `afterAll`). */
export const sweepQueues = (): Promise<void> => Effect.runPromise(deleteQueues([...created]))

/** Whether a queue exists, and its consumer and message counts. */
export const queueInfo = (
  queue: string
): Effect.Effect<{ readonly consumerCount: number; readonly messageCount: number } | undefined, Error> =>
  Effect.promise(async () => {
    const model = await amqp.connect(RABBIT_URL, { noDelay: true })
    quiet(model)
    try {
      const channel = await model.createChannel()
      quiet(channel)
      return await channel.checkQueue(queue).then(
        (r) => ({ consumerCount: r.consumerCount, messageCount: r.messageCount }),
        () => undefined
      )
    } finally {
      await model.close().catch(() => undefined)
    }
  })

/** Runs a `rabbitmqctl` command and gives its output (the test broker's; a cluster's is another). */
export type Rabbitmqctl = (args: ReadonlyArray<string>) => Effect.Effect<string, Error>

const rabbitmqctl: Rabbitmqctl = (args) =>
  Effect.async<string, Error>((resume) => {
    const child = execFile("rabbitmqctl", [...args], { timeout: 60_000 }, (error, stdout, stderr) => {
      if (error !== null) resume(Effect.fail(new Error(`rabbitmqctl ${args.join(" ")} failed: ${String(error)} ${stderr}`)))
      else resume(Effect.succeed(stdout))
    })
    return Effect.sync(() => void child.kill())
  })

export interface ConnectionInfo {
  readonly pid: string
  readonly name: string | undefined
}

/**
 * The broker's connections with their `connection_name` client property. The table output is used
 * because its pids (`<rabbit@host.123.456.0>`) are the form `close_connection` accepts.
 */
export const listConnectionsWith = (ctl: Rabbitmqctl): Effect.Effect<ReadonlyArray<ConnectionInfo>, Error> =>
  ctl([
    "list_connections",
    "pid",
    "client_properties",
    "-q",
    "--no-table-headers"
  ]).pipe(
    Effect.map((out) =>
      out.split("\n").filter((line) => line.startsWith("<")).map((line) => {
        const pid = line.slice(0, line.indexOf("\t"))
        const name = /\{"connection_name","([^"]*)"\}/.exec(line)?.[1]
        return { pid, name }
      })
    )
  )

/** The test broker's connections. */
export const listConnections: Effect.Effect<ReadonlyArray<ConnectionInfo>, Error> = listConnectionsWith(rabbitmqctl)

/** The pids of the connections named `name` (only our own: names are unique per test). */
export const connectionsNamed = (name: string, ctl: Rabbitmqctl = rabbitmqctl): Effect.Effect<ReadonlyArray<string>, Error> =>
  Effect.map(listConnectionsWith(ctl), (all) => all.filter((c) => c.name === name).map((c) => c.pid))

/**
 * Closes, from the broker side, the connections named `name` (as `rabbitmqctl close_connection` does
 * on a broker restart or `close_all_connections`). Fails if there is none.
 */
export const closeConnectionNamed = (
  name: string,
  reason = "test: closed by the broker",
  ctl: Rabbitmqctl = rabbitmqctl
): Effect.Effect<number, Error> =>
  Effect.gen(function*() {
    const pids = yield* connectionsNamed(name, ctl)
    if (pids.length === 0) return yield* Effect.fail(new Error(`no connection named ${name}`))
    for (const pid of pids) yield* ctl(["close_connection", pid, reason])
    return pids.length
  })

/** A broker user of the test's own, with its password and URL to the test broker. */
export interface BrokerUser {
  readonly user: string
  readonly password: string
  readonly url: string
}

/**
 * Adds a user with `permissions` on vhost `/` (`rabbitmqctl add_user`, `set_permissions`), deleted when
 * the scope closes. Its name is unique to the test.
 */
export const brokerUser = (
  label: string,
  permissions: { readonly configure: string; readonly write: string; readonly read: string }
): Effect.Effect<BrokerUser, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const user = uniqueConnectionName(label)
    const password = randomBytes(12).toString("hex")
    yield* Effect.acquireRelease(rabbitmqctl(["add_user", user, password]), () => Effect.ignore(rabbitmqctl(["delete_user", user])))
    yield* rabbitmqctl(["set_permissions", "-p", "/", user, permissions.configure, permissions.write, permissions.read])
    const { hostname, port } = new URL(RABBIT_URL)
    return { user, password, url: `amqp://${user}:${password}@${hostname}:${port || 5672}` }
  })
