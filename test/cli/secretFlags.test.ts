/**
 * Secrets on the command line, end to end through `trilio-dms` (run from the source with tsx; no
 * services): a secret flag is accepted with a warning on stderr that names the safer ways and never the
 * secret; `--db-url-file` and `--token-file` are read (a loose mode warned about); a value flag and its
 * file flag together exit 2 naming both.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as fs from "node:fs"
import * as path from "node:path"
import { cleanEnv, exec, ROOT, tempDir } from "../support/cli.js"

const PASSWORD = "Pw-51c2-s3cr3t"
const TOKEN = "gAAAAA-token-0b7e-t0ken"
const TSX = path.join(ROOT, "node_modules", ".bin", "tsx")
const MAIN = path.join(ROOT, "src", "cli", "main.ts")

const trilioDms = (home: string, args: ReadonlyArray<string>, env: Readonly<Record<string, string>> = {}) =>
  exec(TSX, [MAIN, ...args], { cwd: home, env: cleanEnv(home, env), timeoutMs: 60_000 })

const noSecret = (text: string) => {
  assert.notInclude(text, PASSWORD)
  assert.notInclude(text, TOKEN)
}

describe("trilio-dms: secrets on the command line", () => {
  it.scoped("secret flags warn (without the secret), *-file flags are read, both at once exit 2", () =>
    Effect.gen(function*() {
      const home = yield* tempDir("dms-secret-flags-")

      // A bad URL parameter stops migrate before any connection, after the warning.
      const dbUrl = yield* trilioDms(home, ["migrate", "--db-url", `mysql://dms:${PASSWORD}@127.0.0.1:1/x?bogus=1`])
      assert.strictEqual(dbUrl.code, 2, dbUrl.stderr)
      assert.include(
        dbUrl.stderr,
        "trilio-dms: warning: --db-url holds a password: a command line is visible to every local user in the process list " +
          "(ps, /proc/<pid>/cmdline); use --db-url-file <file>, DMS_DB_URL_FILE, DMS_DB_URL in the environment or db_url_file in client.conf instead"
      )
      noSecret(dbUrl.stdout + dbUrl.stderr)

      const urlFile = path.join(home, "db-url")
      fs.writeFileSync(urlFile, `sqlite:///${path.join(home, "ledger.db")}\n`, { mode: 0o644 })
      fs.chmodSync(urlFile, 0o644)
      const fromFile = yield* trilioDms(home, ["migrate", "--db-url-file", urlFile])
      assert.strictEqual(fromFile.code, 0, fromFile.stderr)
      assert.include(fromFile.stdout, "backup_target_mount_ledger: created")
      assert.include(
        fromFile.stderr,
        `trilio-dms: warning: the secret file ${urlFile} (--db-url-file) is readable by users other than its owner (mode 0644): run chmod 600 ${urlFile}`
      )

      const tokenFile = path.join(home, "token")
      fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 })
      const both = yield* trilioDms(home, ["mount", "--job-id", "1", "--token", TOKEN, "--token-file", tokenFile])
      assert.strictEqual(both.code, 2, both.stderr)
      assert.include(both.stderr, "--token-file: is given together with --token: give only one")
      noSecret(both.stdout + both.stderr)

      // An incomplete request exits 2 after the warning about --token.
      const token = yield* trilioDms(home, ["mount", "--job-id", "1", "--token", TOKEN])
      assert.strictEqual(token.code, 2, token.stderr)
      assert.include(token.stderr, "trilio-dms: warning: --token puts a secret on the command line")
      assert.include(token.stderr, "use --token-file <file>, KEYSTONE_TOKEN_FILE or KEYSTONE_TOKEN in the environment instead")
      noSecret(token.stdout + token.stderr)

      // KEYSTONE_TOKEN_FILE open to others: warned about once (the configuration is resolved once), before
      // the unreachable broker ends the mount with exit 5.
      fs.chmodSync(tokenFile, 0o640)
      const envFile = yield* trilioDms(
        home,
        ["mount", "--job-id", "1", "--target-id", "t1", "--nfs-export", "192.0.2.1:/x", "--mount-path", "/var/lib/trilio/triliovault-mounts/t1"],
        { DMS_DB_URL: `sqlite:///${path.join(home, "ledger.db")}`, DMS_RABBITMQ_URL: "amqp://127.0.0.1:1", KEYSTONE_TOKEN_FILE: tokenFile }
      )
      assert.strictEqual(envFile.code, 5, envFile.stderr)
      const warning = `trilio-dms: warning: the secret file ${tokenFile} (KEYSTONE_TOKEN_FILE) is readable by users other than its owner (mode 0640): run chmod 600 ${tokenFile}`
      assert.strictEqual(envFile.stderr.split(warning).length - 1, 1, envFile.stderr)
      noSecret(envFile.stdout + envFile.stderr)

      const server = yield* trilioDms(home, [
        "server",
        "--node-id",
        "compute-01",
        "--rabbitmq-url",
        `amqp://dms:${PASSWORD}@127.0.0.1:1`,
        "--queue-type",
        "bogus",
        "--config",
        path.join(home, "none.conf")
      ])
      assert.strictEqual(server.code, 2, server.stderr)
      assert.include(server.stderr, "trilio-dms: warning: --rabbitmq-url holds a password")
      assert.include(server.stderr, "use --rabbitmq-url-file <file>, DMS_RABBITMQ_URL_FILE,")
      noSecret(server.stdout + server.stderr)
    }), { timeout: 120_000 })
})
