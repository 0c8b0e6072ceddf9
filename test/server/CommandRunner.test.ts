/**
 * The command runner: no shell, a minimal environment, a process group per command killed on timeout,
 * and FUSE daemons started in a session of their own.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as fs from "node:fs"
import * as path from "node:path"
import * as CommandRunner from "../../src/server/CommandRunner.js"
import { awaitGone, pollUntil, serverDirs } from "../support/dmsServer.js"

const gone = (pid: number) => awaitGone(pid, "5 seconds")

/** Waits until a helper script wrote its two PIDs. */
const readWhenWritten = (file: string) =>
  pollUntil(
    Effect.sync(() => (fs.existsSync(file) ? fs.readFileSync(file, "utf8").trim() : "")),
    (t) => t.split("\n").length >= 2,
    "5 seconds"
  )

describe("CommandRunner", () => {
  it.live("returns the output of a command that succeeds; arguments are never interpreted by a shell", () =>
    Effect.gen(function*() {
      const out = yield* CommandRunner.run({ command: "echo", args: ["a b", "$(reboot)", ";", "|"], timeout: "5 seconds" })
      assert.strictEqual(out.stdout, "a b $(reboot) ; |\n")
    }))

  it.live("reports the exit status and stderr of a failing command", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        CommandRunner.run({ command: "sh", args: ["-c", "echo boom >&2; exit 3"], timeout: "5 seconds" })
      )
      assert.strictEqual(error.reason, "exit")
      assert.strictEqual(error.exitCode, 3)
      assert.include(error.message, "(exit status 3): boom")
    }))

  it.live("reports a command that cannot be started", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(CommandRunner.run({ command: "/nonexistent/mount", args: [], timeout: "5 seconds" }))
      assert.strictEqual(error.reason, "spawn")
      assert.include(error.message, "ENOENT")
    }))

  it.live("passes only a minimal environment plus what the command asks for", () =>
    Effect.gen(function*() {
      process.env.DMS_TEST_LEAK = "leaked"
      const out = yield* CommandRunner.run({ command: "env", args: [], timeout: "5 seconds", env: { EXTRA: "1" } }).pipe(
        Effect.ensuring(Effect.sync(() => delete process.env.DMS_TEST_LEAK))
      )
      const names = out.stdout.split("\n").filter((l) => l !== "").map((l) => l.slice(0, l.indexOf("=")))
      assert.sameMembers(names, ["PATH", "LANG", "LC_ALL", "EXTRA"], out.stdout)
    }))

  it.scopedLive("a command past its timeout is killed with its whole process group", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const pids = path.join(dirs.root, "pids")
      const started = Date.now()
      // The leader starts a child that ignores SIGTERM, then both hang.
      const fiber = yield* Effect.fork(
        CommandRunner.run({
          command: "sh",
          args: ["-c", `sh -c 'trap "" TERM; echo $$ >> ${pids}; exec sleep 300' & echo $$ >> ${pids}; wait`],
          timeout: "400 millis"
        }).pipe(Effect.flip)
      )
      const [a, b] = (yield* readWhenWritten(pids)).split("\n").map(Number)
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error.reason, "timeout")
      assert.include(error.message, "did not finish within 400 ms and was killed")
      assert.isBelow(Date.now() - started, 5_000)
      assert.isTrue(yield* gone(a!), "the leader is gone")
      assert.isTrue(yield* gone(b!), "the child that ignored SIGTERM is gone too (SIGKILL to the group)")
    }))

  it.scopedLive("interrupting a command kills its process group", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const pids = path.join(dirs.root, "pids")
      const fiber = yield* Effect.fork(
        CommandRunner.run({
          command: "sh",
          args: ["-c", `sleep 300 & echo $! >> ${pids}; echo $$ >> ${pids}; wait`],
          timeout: "60 seconds"
        })
      )
      const [a, b] = (yield* readWhenWritten(pids)).split("\n").map(Number)
      yield* Fiber.interrupt(fiber)
      assert.isTrue(yield* gone(a!))
      assert.isTrue(yield* gone(b!))
    }))

  it.scopedLive("a daemon runs in its own session, is the PID it reports, and logs to its file", () =>
    Effect.gen(function*() {
      const dirs = yield* serverDirs
      const log = path.join(dirs.run, "d.log")
      const daemon = yield* Effect.acquireRelease(
        CommandRunner.spawnDaemon({
          command: "sh",
          args: ["-c", "echo started $SECRET_FOR_TEST; exec sleep 300"],
          env: { SECRET_FOR_TEST: "from-env" },
          logFile: log
        }),
        (d) => Effect.sync(() => CommandRunner.killGroup(d.pid, "SIGKILL")).pipe(Effect.zipRight(Effect.timeout(d.exited, "5 seconds")), Effect.ignore)
      )
      const stat = fs.readFileSync(`/proc/${daemon.pid}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      // fields: state ppid pgrp session
      assert.strictEqual(Number(fields[3]), daemon.pid, "session leader")
      assert.strictEqual(Number(fields[2]), daemon.pid, "process group leader")
      const text = yield* pollUntil(Effect.sync(() => fs.readFileSync(log, "utf8")), (t) => t.includes("started"), "5 seconds")
      assert.strictEqual(text, "started from-env\n")
      assert.strictEqual(fs.statSync(log).mode & 0o777, 0o600)
      assert.isFalse(daemon.hasExited())
      CommandRunner.killGroup(daemon.pid, "SIGTERM")
      const exit = yield* daemon.exited.pipe(Effect.timeout(Duration.seconds(5)))
      assert.strictEqual(exit.signal, "SIGTERM")
    }))

  it.live("a daemon that cannot be started fails at once", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        CommandRunner.spawnDaemon({ command: "/nonexistent/s3fs", args: [], logFile: "/dev/null" })
      )
      assert.strictEqual(error.reason, "spawn")
      assert.include(error.message, "ENOENT")
    }))
})
