/**
 * Helpers for the DMS server's tests:
 * - {@link serverDirs}: a temporary mount base and run directory, cleaned up safely (everything mounted
 *   under the base is detached and every FUSE daemon started there killed *before* anything is deleted,
 *   so a cleanup never deletes through a live mount);
 * - {@link recordingRunner}: a CommandRunner that records every argv and lets the test decide what each
 *   command does (fail, hang on a gate, or really mount a tmpfs that plays the NFS export);
 * - {@link rpc}: sends any body (even not JSON) to a queue as the Python client does (`amq.gen-…` reply
 *   queue, no expiration) or as ours does (direct reply-to), and returns the reply with its properties;
 * - {@link spawnServer}: the server as a separate process (`trilio-dms server` from `src/cli/main.ts`), in its own process group.
 */
import amqp from "amqplib"
import type { MessageProperties } from "amqplib"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { execFileSync, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import * as MountInfo from "../../src/server/MountInfo.js"
import { RABBIT_URL } from "./rabbit.js"

// ---------------------------------------------------------------------------------------------------
// Polling

class Pending<A> {
  constructor(readonly value: A) {}
}

/**
 * Re-runs `effect` every 20 ms until `predicate` holds, for at most `within`; returns the last value
 * (the caller asserts on it).
 */
export const pollUntil = <A, E>(
  effect: Effect.Effect<A, E>,
  predicate: (a: A) => boolean,
  within: Duration.DurationInput = "10 seconds"
): Effect.Effect<A, E> =>
  effect.pipe(
    Effect.filterOrFail(predicate, (a) => new Pending(a)),
    Effect.retry({
      schedule: Schedule.spaced("20 millis").pipe(Schedule.upTo(within)),
      while: (e) => e instanceof Pending
    }),
    Effect.catchIf((e): e is Pending<A> => e instanceof Pending, (p) => Effect.succeed(p.value))
  )

/** Waits (bounded) until a process is gone; true if it is. */
export const awaitGone = (pid: number, within: Duration.DurationInput = "10 seconds") =>
  pollUntil(Effect.sync(() => !alive(pid)), (g) => g, within)

// ---------------------------------------------------------------------------------------------------
// Directories

export interface ServerDirs {
  readonly root: string
  readonly base: string
  readonly run: string
}

const mountsUnder = (dir: string) => MountInfo.under(MountInfo.parse(fs.readFileSync("/proc/self/mountinfo", "utf8")), dir)

const alive = (pid: number) => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z"
  } catch {
    return false
  }
}

/** PIDs of processes whose argv or environment mentions `dir` (FUSE daemons we started there). */
export const processesUsing = (dir: string): ReadonlyArray<number> => {
  const out: Array<number> = []
  for (const name of fs.readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(name) || Number(name) === process.pid) continue
    try {
      const argv = fs.readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0")
      if (argv.some((a) => a.startsWith(dir)) && alive(Number(name))) out.push(Number(name))
    } catch {
      // gone
    }
  }
  return out
}

/** Detaches every mount under `dir` and kills every process started on it. */
export const releaseAll = (dir: string) =>
  Effect.sync(() => {
    for (const pid of processesUsing(dir)) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // gone
      }
    }
    for (const m of [...mountsUnder(dir)].reverse()) {
      try {
        execFileSync("umount", ["-l", m.mountPoint], { stdio: "ignore", timeout: 10_000 })
      } catch {
        // already gone
      }
    }
  })

/** A mount base and a run directory under a fresh temporary root. */
export const serverDirs: Effect.Effect<ServerDirs, never, Scope.Scope> = Effect.acquireRelease(
  Effect.sync(() => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "dms-server-"))
    const base = path.join(root, "mounts")
    const run = path.join(root, "run")
    fs.mkdirSync(base)
    fs.mkdirSync(run)
    return { root, base, run }
  }),
  ({ root }) =>
    Effect.gen(function*() {
      yield* releaseAll(root)
      // Never delete through a mount: wait until the table shows none under the root.
      const clear = yield* pollUntil(Effect.sync(() => mountsUnder(root).length === 0), (ok) => ok, "5 seconds")
      if (clear) fs.rmSync(root, { recursive: true, force: true })
    })
)

// ---------------------------------------------------------------------------------------------------
// A recording command runner

export interface Call {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly timeoutMs: number
  readonly env: Readonly<Record<string, string>> | undefined
  /** The args, with a `/proc/<pid>/fd/<n>` argument shown as the directory it named when the command ran. */
  readonly resolved: ReadonlyArray<string>
}

export type Behaviour = (call: Call) => Effect.Effect<CommandRunner.Output, CommandRunner.CommandError>

export interface RecordingRunner {
  readonly service: CommandRunner.Service
  readonly calls: Array<Call>
  /** Decides what a command does; default: succeed without doing anything. */
  behave: Behaviour
}

/** Really runs a command (for behaviours that play `mount` with a tmpfs). */
export const sh = (command: string, args: ReadonlyArray<string>) =>
  CommandRunner.run({ command, args, timeout: Duration.seconds(20) })

export const failWith = (call: Call, stderr: string): Effect.Effect<never, CommandRunner.CommandError> =>
  Effect.fail(new CommandRunner.CommandError({ command: call.command, args: [...call.args], reason: "exit", exitCode: 32, stderr }))

/** `mount [--no-canonicalize] -t nfs -o <o> <export> <target>` played by a real tmpfs whose source is the export. */
export const playNfsMount = (call: Call) =>
  sh("mount", ["--no-canonicalize", "-t", "tmpfs", "-o", "size=1m", call.args.at(-2)!, call.args.at(-1)!])

const FD_LINK = /^\/proc\/\d+\/fd\/\d+$/
const resolveFdLinks = (args: ReadonlyArray<string>) =>
  args.map((a) => {
    if (!FD_LINK.test(a)) return a
    try {
      return fs.readlinkSync(a)
    } catch {
      return a
    }
  })

export const recordingRunner = (): RecordingRunner => {
  const r: RecordingRunner = {
    calls: [],
    behave: () => Effect.succeed({ stdout: "", stderr: "" }),
    service: {
      run: (cmd) =>
        Effect.suspend(() => {
          const call: Call = {
            command: cmd.command,
            args: [...cmd.args],
            timeoutMs: Duration.toMillis(Duration.decode(cmd.timeout)),
            env: cmd.env,
            resolved: resolveFdLinks(cmd.args)
          }
          r.calls.push(call)
          return r.behave(call)
        }),
      spawnDaemon: (cmd) =>
        Effect.suspend(() => {
          r.calls.push({ command: cmd.command, args: [...cmd.args], timeoutMs: 0, env: cmd.env, resolved: resolveFdLinks(cmd.args) })
          return CommandRunner.spawnDaemon(cmd)
        })
    }
  }
  return r
}

// ---------------------------------------------------------------------------------------------------
// Raw RPC over RabbitMQ

export interface RawReply {
  readonly properties: MessageProperties
  readonly raw: string
  readonly body: any
}

export interface RpcOptions {
  /** `python`: an exclusive `amq.gen-…` reply queue, persistent, no expiration (as the Python client). */
  readonly style?: "python" | "direct"
  readonly headers?: Record<string, unknown>
  readonly correlationId?: string
  readonly timeout?: Duration.DurationInput
  /** The broker (default: the test broker). */
  readonly url?: string
}

/** Sends `content` to `queue` and waits for one reply. */
export const rpc = (queue: string, content: string | object, options: RpcOptions = {}): Effect.Effect<RawReply, Error> =>
  Effect.acquireUseRelease(
    Effect.tryPromise({
      try: async () => {
        const model = await amqp.connect(options.url ?? RABBIT_URL, { noDelay: true })
        model.on("error", () => {})
        model.on("close", () => {})
        return model
      },
      catch: (e) => new Error(String(e))
    }),
    (model) =>
      Effect.gen(function*() {
        const channel = yield* Effect.tryPromise(() => model.createChannel())
        channel.on("error", () => {})
        channel.on("close", () => {})
        const python = options.style === "python"
        const replyQueue = python
          ? (yield* Effect.tryPromise(() => channel.assertQueue("", { exclusive: true, autoDelete: true }))).queue
          : "amq.rabbitmq.reply-to"
        const correlationId = options.correlationId ?? randomUUID()
        const reply = Deferred.unsafeMake<RawReply>(FiberId.none)
        yield* Effect.tryPromise(() =>
          channel.consume(replyQueue, (msg) => {
            if (msg === null || msg.properties.correlationId !== correlationId) return
            const raw = msg.content.toString("utf8")
            let body: unknown
            try {
              body = JSON.parse(raw)
            } catch {
              body = undefined
            }
            Deferred.unsafeDone(reply, Effect.succeed({ properties: msg.properties, raw, body }))
          }, { noAck: true })
        )
        channel.sendToQueue(queue, Buffer.from(typeof content === "string" ? content : JSON.stringify(content)), {
          contentType: "application/json",
          correlationId,
          replyTo: replyQueue,
          persistent: python,
          ...(options.headers === undefined ? {} : { headers: options.headers })
        })
        return yield* Deferred.await(reply).pipe(
          Effect.timeoutFail({
            duration: options.timeout ?? Duration.seconds(20),
            onTimeout: () => new Error(`no reply from ${queue} for ${correlationId}`)
          })
        )
      }).pipe(Effect.mapError((e) => (e instanceof Error ? e : new Error(String(e))))),
    (model) => Effect.promise(() => model.close().catch(() => undefined))
  )

// ---------------------------------------------------------------------------------------------------
// The server as a process

export interface ServerProcess {
  readonly pid: number
  readonly output: () => string
  /** Waits until the output contains `text` (fails if the process exits first). */
  readonly waitForOutput: (text: string) => Effect.Effect<void, Error>
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
  readonly exited: Effect.Effect<number | string>
}

const root = path.resolve(import.meta.dirname, "../..")

/** Starts `trilio-dms server` (`src/cli/main.ts server`) with `args` and `env`; SIGKILLs its process group when the scope closes. */
export const spawnServer = (
  args: ReadonlyArray<string>,
  env: Readonly<Record<string, string>>
): Effect.Effect<ServerProcess, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "server", ...args], {
        cwd: root,
        detached: true,
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, ...env }
      })
      let output = ""
      const waiters: Array<{ text: string; done: Deferred.Deferred<void, Error> }> = []
      const exited = Deferred.unsafeMake<number | string>(FiberId.none)
      const onData = (d: unknown) => {
        output += String(d)
        for (const w of waiters.filter((w) => output.includes(w.text))) {
          waiters.splice(waiters.indexOf(w), 1)
          Deferred.unsafeDone(w.done, Effect.void)
        }
      }
      readline.createInterface({ input: child.stdout! }).on("line", (l) => onData(`${l}\n`))
      readline.createInterface({ input: child.stderr! }).on("line", (l) => onData(`${l}\n`))
      child.on("exit", (code, sig) => {
        Deferred.unsafeDone(exited, Effect.succeed(code ?? sig ?? "unknown"))
        for (const w of waiters.splice(0)) {
          Deferred.unsafeDone(w.done, Effect.fail(new Error(`the server exited (${code ?? sig}) before "${w.text}":\n${output}`)))
        }
      })
      const handle: ServerProcess = {
        pid: child.pid!,
        output: () => output,
        waitForOutput: (text) =>
          Effect.suspend(() => {
            if (output.includes(text)) return Effect.void
            if (child.exitCode !== null || child.signalCode !== null) {
              return Effect.fail(new Error(`the server exited before "${text}":\n${output}`))
            }
            const done = Deferred.unsafeMake<void, Error>(FiberId.none)
            waiters.push({ text, done })
            return Deferred.await(done)
          }),
        signal: (sig) =>
          Effect.sync(() => {
            try {
              process.kill(-child.pid!, sig)
            } catch {
              // gone
            }
          }),
        exited: Deferred.await(exited)
      }
      return handle
    }),
    (p) => Effect.zipRight(p.signal("SIGKILL"), Effect.timeout(p.exited, "10 seconds").pipe(Effect.ignore))
  )

/** Polls the mount table until `predicate` holds for the entry at `mountPoint` (bounded). */
export const awaitMountState = (mountPoint: string, predicate: (e: MountInfo.Entry | undefined) => boolean) =>
  pollUntil(Effect.sync(() => MountInfo.at(MountInfo.parse(fs.readFileSync("/proc/self/mountinfo", "utf8")), mountPoint)), predicate)

export const isAlive = alive
