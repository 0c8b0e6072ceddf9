/**
 * Runs the server's commands (`mount`, `umount`, the FUSE driver) without a shell.
 *
 * - {@link Service.run}: a short command (`execFile`-like, via `spawn`) in a process group of its own,
 *   with a timeout that kills the whole group (SIGTERM, then SIGKILL), so a hung `mount.nfs` and its
 *   helpers never outlive their budget. Interrupting the call kills the group too.
 * - {@link Service.spawnDaemon}: a long-lived FUSE daemon started in a session of its own (`setsid`),
 *   output to a log file, environment passed explicitly; the server then watches it by PID. It is never
 *   killed by a timeout of the server: only an unmount stops it.
 *
 * The service is a tag so tests can inject a runner that records argv and plays commands.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { spawn } from "node:child_process"
import * as fs from "node:fs"

/**
 * A command to run: the program (a path or a name looked up on `PATH`) and its arguments, never
 * interpreted by a shell.
 *
 * @since 0.1.0
 * @category models
 */
export interface Command {
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** How long it may run; then its process group is killed. */
  readonly timeout: Duration.DurationInput
  /** Extra environment variables (added to a minimal environment: `PATH`, `LANG=C`). */
  readonly env?: Readonly<Record<string, string>> | undefined
}

/**
 * What a command printed, once it exited with status 0.
 *
 * @since 0.1.0
 * @category models
 */
export interface Output {
  readonly stdout: string
  readonly stderr: string
}

/**
 * A command that could not be started, exited with a non-zero status or a signal, or ran out of time
 * (its process group was then killed).
 *
 * @since 0.1.0
 * @category errors
 */
export class CommandError extends Schema.TaggedError<CommandError>()("CommandError", {
  command: Schema.String,
  args: Schema.Array(Schema.String),
  reason: Schema.Literal("spawn", "exit", "timeout"),
  exitCode: Schema.optional(Schema.Number),
  signal: Schema.optional(Schema.String),
  timeoutMs: Schema.optional(Schema.Number),
  stderr: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    const line = [this.command, ...this.args].join(" ")
    const detail = this.stderr.trim() === "" ? "" : `: ${lastLines(this.stderr, 3)}`
    switch (this.reason) {
      case "spawn":
        return `cannot run ${line}: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
      case "timeout":
        return `${line} did not finish within ${this.timeoutMs} ms and was killed${detail}`
      case "exit":
        return `${line} failed (${
          this.signal === undefined ? `exit status ${this.exitCode}` : `signal ${this.signal}`
        })${detail}`
    }
  }
}

/**
 * A FUSE daemon to start in its own session.
 *
 * @since 0.1.0
 * @category models
 */
export interface DaemonCommand {
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** The daemon's environment variables (credentials for drivers that take them this way). */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Where its stdout and stderr go (truncated first). */
  readonly logFile: string
}

/**
 * How a daemon ended.
 *
 * @since 0.1.0
 * @category models
 */
export interface DaemonExit {
  readonly exitCode: number | null
  readonly signal: string | null
}

/**
 * A started daemon.
 *
 * @since 0.1.0
 * @category models
 */
export interface Daemon {
  readonly pid: number
  /** Completes when the daemon exits (only while this process is its parent). */
  readonly exited: Effect.Effect<DaemonExit>
  /** Whether it has exited (as far as this process saw). */
  readonly hasExited: () => boolean
}

/**
 * The CommandRunner service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly run: (command: Command) => Effect.Effect<Output, CommandError>
  readonly spawnDaemon: (command: DaemonCommand) => Effect.Effect<Daemon, CommandError>
}

/**
 * The CommandRunner tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class CommandRunner extends Context.Tag("trilio-dms/server/CommandRunner")<CommandRunner, Service>() {}

/**
 * How long a process group gets between SIGTERM and SIGKILL.
 *
 * @since 0.1.0
 * @category constants
 */
export const KILL_GRACE = Duration.millis(500)

/**
 * How much of a command's output is kept (the end of it).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_OUTPUT = 64 * 1024

const lastLines = (text: string, n: number): string => text.trim().split("\n").slice(-n).join(" / ")

const baseEnv = (extra: Readonly<Record<string, string>> | undefined): Record<string, string> => ({
  PATH: process.env.PATH ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
  LANG: "C",
  LC_ALL: "C",
  ...extra
})

/**
 * Sends a signal to a process group, ignoring a group that is already gone.
 *
 * @since 0.1.0
 * @category utils
 */
export const killGroup = (pid: number, signal: NodeJS.Signals): boolean => {
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false
  }
}

const append = (acc: { text: string }, chunk: unknown) => {
  acc.text += String(chunk)
  if (acc.text.length > MAX_OUTPUT) acc.text = acc.text.slice(-MAX_OUTPUT)
}

/**
 * Runs one command in its own process group.
 *
 * @since 0.1.0
 * @category constructors
 */
export const run = (cmd: Command): Effect.Effect<Output, CommandError> =>
  Effect.async<Output, CommandError>((resume) => {
    const timeoutMs = Math.max(1, Math.round(Duration.toMillis(Duration.decode(cmd.timeout))))
    const args = [...cmd.args]
    const stdout = { text: "" }
    const stderr = { text: "" }
    let done = false
    let timedOut = false
    let killTimer: ReturnType<typeof setTimeout> | undefined
    const finish = (effect: Effect.Effect<Output, CommandError>) => {
      if (done) return
      done = true
      clearTimeout(timer)
      resume(effect)
    }
    const child = (() => {
      try {
        return spawn(cmd.command, args, {
          detached: true,
          stdio: ["ignore", "pipe", "pipe"],
          env: baseEnv(cmd.env),
          shell: false
        })
      } catch (cause) {
        return cause as Error
      }
    })()
    const timer = setTimeout(() => {
      timedOut = true
      terminate()
    }, timeoutMs)
    if (child instanceof Error) {
      finish(Effect.fail(new CommandError({ command: cmd.command, args, reason: "spawn", stderr: "", cause: child })))
      return
    }
    // SIGTERM to the whole group, SIGKILL after a grace period; the call returns once the leader has
    // exited, or after a second grace period if it cannot even be killed (stuck in the kernel).
    const terminate = () => {
      if (child.pid === undefined) return
      killGroup(child.pid, "SIGTERM")
      killTimer = setTimeout(() => {
        if (child.pid !== undefined) killGroup(child.pid, "SIGKILL")
        killTimer = setTimeout(() => onExit(null, "SIGKILL"), Duration.toMillis(KILL_GRACE))
      }, Duration.toMillis(KILL_GRACE))
    }
    // 'exit' can come before the last output is read: report once the pipes closed too, or after a
    // short grace if something outside the group still holds them.
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined
    let closed = false
    let closeTimer: ReturnType<typeof setTimeout> | undefined
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      if (killTimer !== undefined) clearTimeout(killTimer)
      // Whatever the leader left in its group goes too (a helper that forked and hung).
      if (child.pid !== undefined) killGroup(child.pid, "SIGKILL")
      exited ??= { code, signal }
      if (closed) report()
      else closeTimer ??= setTimeout(report, 1000)
    }
    const onClose = () => {
      closed = true
      if (exited !== undefined) report()
    }
    const report = () => {
      if (closeTimer !== undefined) clearTimeout(closeTimer)
      const { code, signal } = exited!
      if (timedOut) {
        finish(Effect.fail(
          new CommandError({ command: cmd.command, args, reason: "timeout", timeoutMs, stderr: stderr.text })
        ))
      } else if (code === 0) {
        finish(Effect.succeed({ stdout: stdout.text, stderr: stderr.text }))
      } else {
        finish(Effect.fail(
          new CommandError({
            command: cmd.command,
            args,
            reason: "exit",
            stderr: stderr.text || stdout.text,
            ...(code === null ? {} : { exitCode: code }),
            ...(signal === null ? {} : { signal })
          })
        ))
      }
    }
    child.stdout?.on("data", (d) => append(stdout, d))
    child.stderr?.on("data", (d) => append(stderr, d))
    child.on("error", (cause) => {
      if (child.pid === undefined) {
        finish(Effect.fail(new CommandError({ command: cmd.command, args, reason: "spawn", stderr: "", cause })))
      }
    })
    child.on("exit", onExit)
    child.on("close", onClose)
    return Effect.sync(() => {
      if (done) return
      timedOut = true
      terminate()
      done = true
      clearTimeout(timer)
    })
  })

/**
 * Starts a daemon in a session of its own, output to its log file. The returned handle's `exited`
 * completes when it exits; the daemon is not tied to this process's lifetime.
 *
 * @since 0.1.0
 * @category constructors
 */
export const spawnDaemon = (cmd: DaemonCommand): Effect.Effect<Daemon, CommandError> =>
  Effect.async<Daemon, CommandError>((resume) => {
    const fail = (cause: unknown) =>
      resume(Effect.fail(new CommandError({ command: cmd.command, args: [...cmd.args], reason: "spawn", stderr: "", cause })))
    let fd: number
    try {
      fd = fs.openSync(cmd.logFile, "w", 0o600)
    } catch (cause) {
      return fail(cause)
    }
    let child: ReturnType<typeof spawn>
    try {
      child = spawn(cmd.command, [...cmd.args], {
        detached: true,
        stdio: ["ignore", fd, fd],
        env: baseEnv(cmd.env),
        shell: false
      })
    } catch (cause) {
      fs.closeSync(fd)
      return fail(cause)
    }
    // The child has its own copy of the descriptor.
    fs.closeSync(fd)
    const exited = Deferred.unsafeMake<DaemonExit>(FiberId.none)
    let hasExited = false
    let started = false
    child.on("error", (e) => {
      hasExited = true
      Deferred.unsafeDone(exited, Effect.succeed({ exitCode: null, signal: null }))
      if (!started) fail(e)
    })
    child.on("exit", (code, signal) => {
      hasExited = true
      Deferred.unsafeDone(exited, Effect.succeed({ exitCode: code, signal }))
    })
    child.on("spawn", () => {
      started = true
      child.unref()
      resume(Effect.succeed({ pid: child.pid!, exited: Deferred.await(exited), hasExited: () => hasExited }))
    })
  })

/**
 * The real runner.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<CommandRunner> = Layer.succeed(CommandRunner, { run, spawnDaemon })
