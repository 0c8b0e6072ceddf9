/**
 * A test responder playing the DMS server on `dms.<host>`: it declares the queue as the server does
 * (durable, no arguments), consumes it, and answers to `reply_to` with `content_type` and
 * `correlation_id` only, as the Python server does.
 *
 * - In the test process: {@link startResponder}, whose handler decides each answer (Deferreds let a
 *   test hold a request at a known point).
 * - As a separate process: `node --import tsx test/support/responder.ts '<json>'` with
 *   `{url, host, checkDeadline?}`, started by {@link spawnResponder}. It prints one JSON event a line:
 *   `ready`, `received`, `replied`, `refused`. Each request's body may carry `_test: {hold: true}`
 *   (never answer) or `_test: {delayMs}` (answer after a delay). With `checkDeadline`, a request past
 *   its `x-dms-deadline` when its turn comes is refused (not executed) with an error reply.
 */
import amqp from "amqplib"
import type { ConsumeMessage, MessageProperties, Options } from "amqplib"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Queue from "effect/Queue"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath, pathToFileURL } from "node:url"
import * as Broker from "../../src/Broker.js"
import * as Option from "effect/Option"
import * as FakeServer from "./fakeServer.js"
import * as Protocol from "../../src/Protocol.js"
import { deleteOnClose, RABBIT_URL } from "./rabbit.js"

/** A request as the responder received it. */
export interface Received {
  readonly correlationId: string
  readonly properties: MessageProperties
  readonly exchange: string
  readonly routingKey: string
  /** The body as sent (text). */
  readonly raw: string
  /** The body parsed as JSON (undefined if it is not JSON). */
  readonly body: any
  readonly receivedAt: number
}

/** What the responder does with a request. */
export type Answer =
  | { readonly _tag: "reply"; readonly body: unknown }
  | { readonly _tag: "raw"; readonly content: string; readonly properties?: Options.Publish }
  | { readonly _tag: "none" }

export const reply = (body: unknown): Answer => ({ _tag: "reply", body })
export const raw = (content: string, properties?: Options.Publish): Answer =>
  properties === undefined ? { _tag: "raw", content } : { _tag: "raw", content, properties }
export const noAnswer: Answer = { _tag: "none" }

/** The default answer: success, echoing `seq` and the correlation id (extra fields are allowed). */
export const echo = (req: Received): Answer =>
  reply({ ...Protocol.success(`ok ${req.correlationId}`), seq: req.body?.seq ?? null, correlation: req.correlationId })

const parse = (msg: ConsumeMessage): Received => {
  const text = msg.content.toString("utf8")
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  return {
    correlationId: String(msg.properties.correlationId),
    properties: msg.properties,
    exchange: msg.fields.exchange,
    routingKey: msg.fields.routingKey,
    raw: text,
    body,
    receivedAt: Date.now()
  }
}

export interface Responder {
  readonly queue: string
  /** Every request received, in arrival order. */
  readonly received: Queue.Queue<Received>
  /** The correlation id of every answer, once it is published. */
  readonly replied: Queue.Queue<string>
  /** Cancels the consumer; the queue stays (as when a server stops). */
  readonly detach: Effect.Effect<void>
}

export interface ResponderOptions {
  readonly host: string
  readonly handle?: (req: Received) => Effect.Effect<Answer>
  readonly prefetch?: number
}

/**
 * Starts a responder in this process on a connection of its own. Requests are handled concurrently.
 * The queue is deleted and the connection closed with the scope.
 */
export const startResponder = (options: ResponderOptions): Effect.Effect<Responder, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = Broker.queueName(options.host)
    yield* deleteOnClose(queue)
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const received = yield* Effect.acquireRelease(Queue.unbounded<Received>(), Queue.shutdown)
    const replied = yield* Effect.acquireRelease(Queue.unbounded<string>(), Queue.shutdown)
    const handle = options.handle ?? ((req: Received) => Effect.succeed(echo(req)))
    const model = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => amqp.connect(RABBIT_URL, { noDelay: true }),
        catch: (e) => new Error(`RabbitMQ is not reachable at ${RABBIT_URL}: ${String(e)}`)
      }),
      (m) => Effect.promise(() => m.close().catch(() => undefined))
    )
    model.on("error", () => {})
    model.on("close", () => {})
    const channel = yield* Effect.tryPromise({ try: () => model.createChannel(), catch: (e) => new Error(String(e)) })
    channel.on("error", () => {})
    channel.on("close", () => {})
    yield* Effect.tryPromise({
      try: async () => {
        await channel.assertQueue(queue, { durable: true })
        await channel.prefetch(options.prefetch ?? 0)
      },
      catch: (e) => new Error(String(e))
    })
    const send = (req: Received, answer: Answer) => {
      const to = req.properties.replyTo as string | undefined
      if (answer._tag === "none" || to === undefined) return
      try {
        if (answer._tag === "reply") {
          channel.sendToQueue(to, Buffer.from(JSON.stringify(answer.body)), {
            contentType: "application/json",
            correlationId: req.correlationId
          })
        } else {
          channel.sendToQueue(
            to,
            Buffer.from(answer.content),
            answer.properties ?? { contentType: "application/json", correlationId: req.correlationId }
          )
        }
      } catch {
        // the channel is gone (the test is over)
      }
    }
    const { consumerTag } = yield* Effect.tryPromise({
      try: () =>
        channel.consume(queue, (msg) => {
          if (msg === null) return
          channel.ack(msg)
          const req = parse(msg)
          runFork(
            Queue.offer(received, req).pipe(
              Effect.zipRight(handle(req)),
              Effect.tap((answer) => Effect.sync(() => send(req, answer))),
              Effect.tap((answer) => (answer._tag === "none" ? Effect.void : Queue.offer(replied, req.correlationId)))
            )
          )
        }),
      catch: (e) => new Error(String(e))
    })
    return {
      queue,
      received,
      replied,
      detach: Effect.promise(() => channel.cancel(consumerTag).then(() => undefined, () => undefined))
    }
  })

// ---------------------------------------------------------------------------------------------------
// As a separate process

/** Arguments of the responder process. */
export interface ProcessArgs {
  readonly url: string
  readonly host: string
  readonly checkDeadline?: boolean
}

/** An event printed by the responder process. */
export interface Event {
  readonly event: "ready" | "received" | "replied" | "refused" | "fatal"
  readonly correlationId?: string
  readonly deadline?: number | null
  readonly at: number
  readonly detail?: string
}

export interface ResponderProcess {
  readonly pid: number
  /** The events so far. */
  readonly events: () => ReadonlyArray<Event>
  /** Waits for the first event (past or future) matching `predicate`; fails if the process exits first. */
  readonly waitFor: (predicate: (e: Event) => boolean) => Effect.Effect<Event, Error>
  /** SIGKILLs the process group and waits for the exit. */
  readonly kill: Effect.Effect<void>
}

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..")

/**
 * Starts the responder as a separate process (its own process group), waits until it consumes, and
 * kills its process group when the scope closes. The queue is deleted with the scope.
 */
export const spawnResponder = (args: ProcessArgs): Effect.Effect<ResponderProcess, Error, Scope.Scope> =>
  Effect.gen(function*() {
    yield* deleteOnClose(Broker.queueName(args.host))
    const proc = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(process.execPath, ["--import", "tsx", "test/support/responder.ts", JSON.stringify(args)], {
          cwd: root,
          detached: true,
          stdio: ["ignore", "pipe", "pipe"]
        })
        const events: Array<Event> = []
        const waiters: Array<{ predicate: (e: Event) => boolean; done: Deferred.Deferred<Event, Error> }> = []
        const exited = Deferred.unsafeMake<void>(FiberId.none)
        let stderr = ""
        child.stderr!.on("data", (d) => (stderr += String(d)))
        readline.createInterface({ input: child.stdout! }).on("line", (line) => {
          let e: Event
          try {
            e = JSON.parse(line) as Event
          } catch {
            return
          }
          events.push(e)
          for (const w of waiters.filter((w) => w.predicate(e))) {
            waiters.splice(waiters.indexOf(w), 1)
            Deferred.unsafeDone(w.done, Effect.succeed(e))
          }
        })
        child.on("exit", (code, signal) => {
          Deferred.unsafeDone(exited, Effect.void)
          for (const w of waiters.splice(0)) {
            Deferred.unsafeDone(w.done, Effect.fail(new Error(`responder exited (${code ?? signal}): ${stderr}`)))
          }
        })
        const kill = Effect.sync(() => {
          try {
            process.kill(-child.pid!, "SIGKILL")
          } catch {
            // already gone
          }
        }).pipe(Effect.zipRight(Effect.timeout(Deferred.await(exited), "10 seconds")), Effect.ignore)
        const handle: ResponderProcess = {
          pid: child.pid!,
          events: () => [...events],
          waitFor: (predicate) =>
            Effect.suspend(() => {
              const seen = events.find(predicate)
              if (seen !== undefined) return Effect.succeed(seen)
              if (child.exitCode !== null || child.signalCode !== null) {
                return Effect.fail(new Error(`responder exited (${child.exitCode ?? child.signalCode}): ${stderr}`))
              }
              const done = Deferred.unsafeMake<Event, Error>(FiberId.none)
              waiters.push({ predicate, done })
              return Deferred.await(done)
            }),
          kill
        }
        return handle
      }),
      (p) => p.kill
    )
    yield* proc.waitFor((e) => e.event === "ready" || e.event === "fatal").pipe(
      Effect.filterOrFail((e) => e.event === "ready", (e) => new Error(`responder failed: ${e.detail}`))
    )
    return proc
  })

const runProcess = async (args: ProcessArgs) => {
  const say = (e: Omit<Event, "at">) => process.stdout.write(`${JSON.stringify({ ...e, at: Date.now() })}\n`)
  const fatal = (detail: string) => {
    say({ event: "fatal", detail })
    process.exit(1)
  }
  const queue = Broker.queueName(args.host)
  const model = await amqp.connect(args.url, { noDelay: true })
  model.on("error", (e: Error) => fatal(`connection error: ${e.message}`))
  model.on("close", () => fatal("connection closed"))
  const channel = await model.createChannel()
  channel.on("error", (e: Error) => fatal(`channel error: ${e.message}`))
  channel.on("close", () => fatal("channel closed"))
  await channel.assertQueue(queue, { durable: true })
  await channel.prefetch(100)
  await channel.consume(queue, (msg) => {
    if (msg === null) return fatal("consumer cancelled")
    channel.ack(msg)
    const req = parse(msg)
    const headers = (msg.properties.headers ?? {}) as Record<string, unknown>
    const deadline = Broker.deadlineOf(headers)
    say({
      event: "received",
      correlationId: req.correlationId,
      deadline: deadline._tag === "Some" ? deadline.value : null
    })
    const test = (req.body?._test ?? {}) as { hold?: boolean; delayMs?: number }
    if (test.hold === true) return
    const answer = () => {
      const to = msg.properties.replyTo as string | undefined
      const expired = args.checkDeadline === true && Broker.isExpired(headers, Date.now())
      const body = expired
        ? Protocol.failure("request expired before it could start")
        : { ...Protocol.success(`ok ${req.correlationId}`), seq: req.body?.seq ?? null, correlation: req.correlationId }
      say({ event: expired ? "refused" : "replied", correlationId: req.correlationId })
      if (to !== undefined) {
        channel.sendToQueue(to, Buffer.from(JSON.stringify(body)), {
          contentType: "application/json",
          correlationId: req.correlationId
        })
      }
    }
    if (typeof test.delayMs === "number") setTimeout(answer, test.delayMs)
    else answer()
  })
  say({ event: "ready" })
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runProcess(JSON.parse(process.argv[2] ?? "{}") as ProcessArgs).catch((e) => {
    process.stdout.write(`${JSON.stringify({ event: "fatal", detail: String(e), at: Date.now() })}\n`)
    process.exit(1)
  })
}

/**
 * A model DMS server (test/support/fakeServer.ts) consuming the host's real queue, with the responder
 * that plays it (to stop consuming, or to see what was answered). Given `server`, the same host comes
 * back: a server restarted with its mounts.
 */
export const modelResponder = (host: string, server: FakeServer.FakeServer = FakeServer.make()) =>
  Effect.map(
    startResponder({
      host,
      handle: (req) =>
        server.respond(host, req.body ?? {}, Option.getOrElse(Broker.deadlineOf(req.properties.headers), () => Infinity)).pipe(
          Effect.map(reply)
        )
    }),
    (responder) => ({ server, responder })
  )

/** A model DMS server (test/support/fakeServer.ts) consuming the host's real queue. */
export const modelServer = (host: string) => Effect.map(modelResponder(host), ({ server }) => server)
