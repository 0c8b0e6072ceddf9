/**
 * A local S3 server for tests: `s3rver` (a dev dependency) as a child process in its own process
 * group, on 127.0.0.1 with a free port, over a temporary data directory, with one bucket. Killed and
 * removed when the scope closes.
 *
 * s3rver checks signatures against the fixed key pair S3RVER/S3RVER.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as readline from "node:readline"
import { startBarbican } from "./barbican.js"

export const S3_ACCESS_KEY = "S3RVER"
export const S3_SECRET_KEY = "S3RVER"

export interface LocalS3 {
  readonly endpoint: string
  readonly bucket: string
  readonly dataDir: string
  /** The object's content, if the bucket has it. */
  readonly object: (key: string) => Effect.Effect<string | undefined>
  /** The keys in the bucket. */
  readonly keys: Effect.Effect<ReadonlyArray<string>>
}

const root = path.resolve(import.meta.dirname, "../..")
const SUFFIX = "._S3rver_object"

export const startS3 = (bucket = "dms-test-bucket"): Effect.Effect<LocalS3, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const dataDir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dms-s3rver-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(
          process.execPath,
          [path.join(root, "node_modules/s3rver/bin/s3rver.js"), "-a", "127.0.0.1", "-p", "0", "-d", dataDir, "--configure-bucket", bucket],
          { detached: true, stdio: ["ignore", "pipe", "pipe"] }
        )
      ),
      (child) =>
        Effect.async<void>((resume) => {
          if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
          child.on("exit", () => resume(Effect.void))
          try {
            process.kill(-child.pid!, "SIGKILL")
          } catch {
            resume(Effect.void)
          }
        }).pipe(Effect.timeout("10 seconds"), Effect.ignore)
    )
    const port = yield* Effect.async<number, Error>((resume) => {
      let stderr = ""
      child.stderr!.on("data", (d) => (stderr += String(d)))
      readline.createInterface({ input: child.stdout! }).on("line", (line) => {
        const m = /listening on [^:]+:(\d+)/i.exec(line)
        if (m !== null) resume(Effect.succeed(Number(m[1])))
      })
      child.on("exit", (code) => resume(Effect.fail(new Error(`s3rver exited (${code}): ${stderr}`))))
    }).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("s3rver did not start") }))
    const bucketDir = path.join(dataDir, bucket)
    return {
      endpoint: `http://127.0.0.1:${port}`,
      bucket,
      dataDir,
      object: (key: string) =>
        Effect.sync(() => {
          try {
            return fs.readFileSync(path.join(bucketDir, `${key}${SUFFIX}`), "utf8")
          } catch {
            return undefined
          }
        }),
      keys: Effect.sync(() => {
        const out: Array<string> = []
        const walk = (dir: string, prefix: string) => {
          for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
            if (e.isDirectory()) walk(path.join(dir, e.name), `${prefix}${e.name}/`)
            else if (e.name.endsWith(SUFFIX)) out.push(`${prefix}${e.name.slice(0, -SUFFIX.length)}`)
          }
        }
        if (fs.existsSync(bucketDir)) walk(bucketDir, "")
        return out
      })
    }
  })

/**
 * A local S3 bucket and a fake Barbican holding its keys (the payload existing deployments store),
 * readable with `token`: what an S3 mount request's `secret_ref` points to.
 */
export const startS3WithSecret = (token: string) =>
  Effect.gen(function*() {
    const s3 = yield* startS3()
    const barbican = yield* startBarbican
    const secretRef = barbican.addSecret("creds", token, {
      aws_access_key_id: S3_ACCESS_KEY,
      aws_secret_access_key: S3_SECRET_KEY,
      bucket: s3.bucket,
      endpoint_url: s3.endpoint
    })
    return { s3, barbican, secretRef }
  })
