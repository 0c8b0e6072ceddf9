/**
 * Helpers for the command line's tests: build the CLI as it ships (tsc, into a scratch directory of the
 * checkout so it resolves the project's node_modules), run it (or npm) as a child process in its own
 * process group with an environment cleaned of trilio-dms settings and a HOME of its own, and a model
 * DMS server on a host's real queue.
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as FiberId from "effect/FiberId"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { execFileSync, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as MountInfo from "../../src/server/MountInfo.js"

export const ROOT = path.resolve(import.meta.dirname, "../..")

/** What a finished child printed and how it ended. */
export interface Result {
  /** The exit code, or the signal's name. */
  readonly code: number | string
  readonly stdout: string
  readonly stderr: string
  /** Wall time from spawn to exit. */
  readonly ms: number
}

export interface ExecOptions {
  readonly cwd?: string
  readonly env: NodeJS.ProcessEnv
  /** Killed (process group, SIGKILL) after this long; the result then has code "timeout". */
  readonly timeoutMs?: number
}

const killGroup = (pid: number | undefined, signal: NodeJS.Signals) => {
  if (pid === undefined) return
  try {
    process.kill(-pid, signal)
  } catch {
    // already gone
  }
}

/** Runs a command to its end in its own process group; interrupting the effect kills the group. */
export const exec = (command: string, args: ReadonlyArray<string>, options: ExecOptions): Effect.Effect<Result> =>
  Effect.async<Result>((resume) => {
    const start = Date.now()
    const child = spawn(command, [...args], {
      cwd: options.cwd ?? ROOT,
      env: options.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    let timedOut = false
    child.stdout!.on("data", (d) => (stdout += String(d)))
    child.stderr!.on("data", (d) => (stderr += String(d)))
    const timer = setTimeout(() => {
      timedOut = true
      killGroup(child.pid, "SIGKILL")
    }, options.timeoutMs ?? 60_000)
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code: timedOut ? "timeout" : code ?? signal ?? "unknown", stdout, stderr, ms: Date.now() - start }))
    })
    child.on("error", (e) => {
      clearTimeout(timer)
      resume(Effect.succeed({ code: "spawn-error", stdout, stderr: `${stderr}${e.message}`, ms: Date.now() - start }))
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      killGroup(child.pid, "SIGKILL")
    })
  })

/**
 * The parent's environment without any trilio-dms setting (DMS_*, KEYSTONE_TOKEN), with its own HOME
 * (so no ~/.trilio-dms/client.conf is read), no colours, and no npm update check.
 */
export const cleanEnv = (home: string, extra: Readonly<Record<string, string>> = {}): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const key of Object.keys(env)) {
    if ((key.startsWith("DMS_") && !key.startsWith("DMS_TEST_")) || key === "KEYSTONE_TOKEN") delete env[key]
  }
  return { ...env, HOME: home, NO_COLOR: "1", npm_config_update_notifier: "false", npm_config_fund: "false", ...extra }
}

/** A temporary directory, removed with the scope. */
export const tempDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), prefix))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

const mountsUnder = (dir: string) =>
  MountInfo.under(MountInfo.parse(fs.readFileSync(MountInfo.DEFAULT_FILE, "utf8")), dir)

/** What is mounted under `dir` (the demo's bind mounts), from the mount table. */
export const mountPointsUnder = (dir: string): ReadonlyArray<string> => mountsUnder(dir).map((m) => m.mountPoint)

/**
 * A HOME for the demo, removed with the scope. Anything left mounted under it is detached first: a
 * removal through a live bind mount would delete the target's files.
 */
export const demoHome = Effect.gen(function*() {
  const home = yield* tempDir("dms-demo-home-")
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const point of [...mountPointsUnder(home)].reverse()) execFileSync("umount", ["-l", point])
    })
  )
  return home
})

/** The package as a user has it: packed from this checkout and installed into a temporary project. */
export class InstalledCli extends Context.Tag("test/InstalledCli")<InstalledCli, {
  /** `node_modules/.bin/trilio-dms` of the project (what `npx trilio-dms` runs). */
  readonly bin: string
  /** The project's directory. */
  readonly app: string
  /** The files in the tarball (`package/dist/index.js`, …). */
  readonly files: ReadonlyArray<string>
  /** How long packing and installing took, in ms. */
  readonly packMs: number
  readonly installMs: number
}>() {}

const version = (dir: string) => (JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8")) as { version: string }).version

/**
 * `npm pack` of this checkout (its `prepack` builds `dist/` with tsc), and the tarball installed with npm
 * into a temporary project, as users install it; everything removed afterwards.
 *
 * The install is `--prefer-offline`: from the local npm cache, which holds every dependency once
 * `@types/node` (pulled in by mysql2 with `*`) is pinned to the checkout's version; the registry is only
 * asked for what is missing. It is `--ignore-scripts`: building better-sqlite3 from source takes about a
 * minute here, so its compiled addon is copied from this checkout's node_modules (same version, checked)
 * for the commands that open an SQLite ledger.
 */
export const InstalledCliLive = Layer.scoped(
  InstalledCli,
  Effect.gen(function*() {
    const dir = yield* tempDir("dms-pack-")
    // npm's cache is under the real HOME; no trilio-dms settings.
    const env = { ...cleanEnv(process.env.HOME ?? os.homedir()), npm_config_audit: "false" }
    const packed = yield* exec("npm", ["pack", "--pack-destination", dir], { env, timeoutMs: 120_000 })
    const tarball = fs.readdirSync(dir).find((f) => f.endsWith(".tgz"))
    if (packed.code !== 0 || tarball === undefined) {
      return yield* Effect.die(new Error(`npm pack failed (${packed.code}):\n${packed.stdout}${packed.stderr}`))
    }
    const listed = yield* exec("tar", ["-tzf", path.join(dir, tarball)], { env })
    const app = path.join(dir, "app")
    fs.mkdirSync(app)
    const typesNode = version(path.join(ROOT, "node_modules", "@types", "node"))
    fs.writeFileSync(
      path.join(app, "package.json"),
      JSON.stringify({ name: "app", private: true, type: "module", overrides: { "@types/node": typesNode } })
    )
    const installed = yield* exec(
      "npm",
      ["install", path.join(dir, tarball), "--prefer-offline", "--ignore-scripts", "--no-audit", "--no-fund"],
      { cwd: app, env, timeoutMs: 120_000 }
    )
    if (installed.code !== 0) {
      return yield* Effect.die(new Error(`npm install of the tarball failed (${installed.code}):\n${installed.stdout}${installed.stderr}`))
    }
    const sqlite = path.join(app, "node_modules", "better-sqlite3")
    const ours = path.join(ROOT, "node_modules", "better-sqlite3")
    if (version(sqlite) !== version(ours)) {
      return yield* Effect.die(new Error(`the tarball installed better-sqlite3 ${version(sqlite)}, this checkout has ${version(ours)}`))
    }
    fs.cpSync(path.join(ours, "build"), path.join(sqlite, "build"), { recursive: true })
    return {
      bin: path.join(app, "node_modules", ".bin", "trilio-dms"),
      app,
      files: listed.stdout.split("\n").filter((f) => f !== ""),
      packMs: packed.ms,
      installMs: installed.ms
    }
  })
)

/** Runs the installed `trilio-dms` with `args` in `env`. */
export const cli = (args: ReadonlyArray<string>, env: NodeJS.ProcessEnv, timeoutMs = 60_000) =>
  Effect.flatMap(InstalledCli, ({ app, bin }) => exec(bin, args, { cwd: app, env, timeoutMs }))

/** Parses stdout as JSON (fails the test with the output when it is not). */
export const parseJson = (result: Result): any => {
  try {
    return JSON.parse(result.stdout)
  } catch {
    throw new Error(`stdout is not JSON (exit ${result.code}):\n${result.stdout}\nstderr:\n${result.stderr}`)
  }
}

/** A long-running child (the server): stderr watched line by line, its group killed with the scope. */
export interface LongRunning {
  readonly pid: number
  /** Waits until stderr has a line containing `text` (fails if the child exits first). */
  readonly waitForStderr: (text: string) => Effect.Effect<void, Error>
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
  readonly exited: Effect.Effect<number | string>
  readonly output: () => string
}

export const spawnLongRunning = (
  command: string,
  args: ReadonlyArray<string>,
  env: NodeJS.ProcessEnv,
  cwd: string = ROOT
): Effect.Effect<LongRunning, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(command, [...args], { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] })
      let output = ""
      const exited = Deferred.unsafeMake<number | string>(FiberId.none)
      const waiters: Array<{ text: string; done: Deferred.Deferred<void, Error> }> = []
      const check = () => {
        for (const w of waiters.filter((w) => output.includes(w.text))) {
          waiters.splice(waiters.indexOf(w), 1)
          Deferred.unsafeDone(w.done, Effect.void)
        }
      }
      child.stdout!.on("data", (d) => (output += String(d)))
      child.stderr!.on("data", (d) => {
        output += String(d)
        check()
      })
      child.on("exit", (code, signal) => {
        Deferred.unsafeDone(exited, Effect.succeed(code ?? signal ?? "unknown"))
        for (const w of waiters.splice(0)) {
          Deferred.unsafeDone(w.done, Effect.fail(new Error(`exited (${code ?? signal}) before "${w.text}":\n${output}`)))
        }
      })
      const handle: LongRunning = {
        pid: child.pid!,
        waitForStderr: (text) =>
          Effect.suspend(() => {
            if (output.includes(text)) return Effect.void
            if (child.exitCode !== null || child.signalCode !== null) {
              return Effect.fail(new Error(`exited before "${text}":\n${output}`))
            }
            const done = Deferred.unsafeMake<void, Error>(FiberId.none)
            waiters.push({ text, done })
            return Deferred.await(done)
          }),
        signal: (signal) => Effect.sync(() => killGroup(child.pid, signal)),
        exited: Deferred.await(exited),
        output: () => output
      }
      return handle
    }),
    (child) => Effect.zipRight(child.signal("SIGKILL"), Effect.ignore(Effect.timeout(child.exited, "10 seconds")))
  )

export { modelServer } from "./responder.js"
