/**
 * Child processes for tests: started in their own process group (so a kill takes the whole group,
 * not only a wrapper), stdout read line by line, always killed when the scope closes.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"

export interface Child {
  readonly pid: number
  /** Waits until the child prints `line` (fails if it exits first). */
  readonly waitFor: (line: string) => Effect.Effect<void, Error>
  /** Waits for the first line starting with `prefix` that was not taken yet, and takes it. */
  readonly take: (prefix: string) => Effect.Effect<string, Error>
  readonly send: (line: string) => Effect.Effect<void>
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** The exit code (or signal name), once it exited and every line it printed was read. */
  readonly exited: Effect.Effect<number | string>
  readonly stderr: () => string
  /** Every line printed so far. */
  readonly lines: () => ReadonlyArray<string>
}

const root = path.resolve(import.meta.dirname, "../..")

/** Runs `node --import tsx <script> <args…>` from the project root. */
export const spawnTs = (script: string, args: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const child = spawn(process.execPath, ["--import", "tsx", script, ...args], {
        cwd: root,
        detached: true,
        stdio: ["pipe", "pipe", "pipe"]
      })
      const exited = yield* Deferred.make<number | string>()
      const lines: Array<string> = []
      const waiters: Array<{ line: string; done: Deferred.Deferred<void, Error> }> = []
      const taken = new Set<number>()
      const takers: Array<() => void> = []
      let stderr = ""
      // Set on "close", not "exit": "exit" can come before the last lines are read, and a wait that
      // begins after the child ended must fail at once rather than wait for a line that never comes.
      let ended = false
      child.stderr!.on("data", (d) => (stderr += String(d)))
      readline.createInterface({ input: child.stdout! }).on("line", (line) => {
        lines.push(line)
        for (const w of waiters.filter((w) => w.line === line)) Deferred.unsafeDone(w.done, Effect.void)
        for (const t of takers.splice(0)) t()
      })
      const gone = (line: string, code: number | null, signal: NodeJS.Signals | null) =>
        new Error(`child exited (${code ?? signal}) before "${line}": ${stderr}`)
      child.on("close", (code, signal) => {
        ended = true
        for (const t of takers.splice(0)) t()
        Deferred.unsafeDone(exited, Effect.succeed(code ?? signal ?? "unknown"))
        for (const w of waiters.splice(0)) Deferred.unsafeDone(w.done, Effect.fail(gone(w.line, code, signal)))
      })
      const handle: Child = {
        pid: child.pid!,
        waitFor: (line) =>
          Effect.suspend(() => {
            if (lines.includes(line)) return Effect.void
            if (ended) return Effect.fail(gone(line, child.exitCode, child.signalCode))
            const done = Deferred.unsafeMake<void, Error>(FiberId.none)
            waiters.push({ line, done })
            return Deferred.await(done)
          }),
        take: (prefix) =>
          Effect.async<string, Error>((resume) => {
            // An interrupted take (e.g. timed out) must not take a line later: another take waits for it.
            let waiting = true
            const attempt = () => {
              if (!waiting) return
              const i = lines.findIndex((l, n) => !taken.has(n) && l.startsWith(prefix))
              if (i >= 0) {
                taken.add(i)
                resume(Effect.succeed(lines[i]!))
              } else if (ended) {
                resume(Effect.fail(gone(`${prefix}…`, child.exitCode, child.signalCode)))
              } else {
                takers.push(attempt)
              }
            }
            attempt()
            return Effect.sync(() => {
              waiting = false
            })
          }),
        send: (line) => Effect.sync(() => void child.stdin!.write(`${line}\n`)),
        kill: (signal) => Effect.sync(() => {
          try {
            process.kill(-child.pid!, signal)
          } catch {
            // already gone
          }
        }),
        exited: Deferred.await(exited),
        stderr: () => stderr,
        lines: () => [...lines]
      }
      return handle
    }),
    (child) => Effect.zipRight(child.kill("SIGKILL"), Effect.timeout(child.exited, "5 seconds").pipe(Effect.ignore))
  )
