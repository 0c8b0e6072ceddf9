/**
 * Secrets from files: the client's `db_url_file`, `rabbitmq_url_file`, `keystone_token_file` (and their
 * `*_FILE` variables and options) and the server's `rabbitmq_url_file` / `DMS_RABBITMQ_URL_FILE` /
 * `--rabbitmq-url-file`. Each source, the precedence between levels, a value and its file at one level
 * (an error), an unreadable file (an error naming the key and the file, never the content), and the
 * warnings about configuration and secret files open to other users, captured from the log and shown
 * to hold no secret.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as path from "node:path"
import * as DmsConfig from "../src/DmsConfig.js"
import type * as DmsError from "../src/DmsError.js"
import * as ServerConfig from "../src/server/ServerConfig.js"
import { tempDir } from "./support/backends.js"

const PASSWORD = "Pw-9f3c-s3cr3t"
const TOKEN = "gAAAAA-token-7e1d-t0ken"
const DB = `mysql://dms:${PASSWORD}@db.internal:3306/trilio_dms`
const MQ = `amqp://dms:${PASSWORD}@mq.internal:5672`

/** Runs `self` with the given environment only, returning what it logged. */
const run = <A, E>(self: Effect.Effect<A, E>, env: Record<string, string>) =>
  Effect.gen(function*() {
    const logged: Array<string> = []
    const logger = Logger.make(({ logLevel, message }) => void logged.push(`${logLevel.label}: ${String(message)}`))
    const result = yield* self.pipe(
      Effect.either,
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))),
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
    return { result, logged }
  })

const write = (dir: string, name: string, text: string, mode = 0o600) => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  fs.chmodSync(file, mode)
  return file
}

const noSecret = (text: string) => {
  assert.notInclude(text, PASSWORD)
  assert.notInclude(text, TOKEN)
}

describe("client secrets from files", () => {
  it.scoped("each level can name a file: option > environment > client.conf, relative to client.conf", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const dbFile = write(dir, "db", `${DB}\n`)
      const mqFile = write(dir, "mq", MQ)
      const tokenFile = write(dir, "token", `${TOKEN}\n`)
      const conf = write(dir, "client.conf", "[client]\ndb_url_file = db\nrabbitmq_url_file = mq\nkeystone_token_file = token\n")

      const fromConf = yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: conf })
      assert.isTrue(fromConf.result._tag === "Right", JSON.stringify(fromConf.result))
      const c = Either.getOrThrow(fromConf.result)
      assert.strictEqual(Redacted.value(c.dbUrl), DB, "one trailing newline dropped")
      assert.strictEqual(Redacted.value(c.rabbitmqUrl), MQ)
      assert.strictEqual(Redacted.value(Option.getOrThrow(c.keystoneToken)), TOKEN)
      assert.deepStrictEqual(c.sources.dbUrl, { _tag: "File", file: conf, key: "db_url_file", secretFile: dbFile })
      assert.strictEqual(DmsConfig.describeSource(c.sources.keystoneToken), `keystone_token_file in [client] of ${conf}, read from ${tokenFile}`)
      assert.deepStrictEqual(fromConf.logged, [], "mode 0600 files: no warning")

      const other = write(dir, "other-db", "sqlite:///other.db\n")
      const fromEnv = Either.getOrThrow(
        (yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: conf, DMS_DB_URL_FILE: other, KEYSTONE_TOKEN: "env-token" })).result
      )
      assert.strictEqual(Redacted.value(fromEnv.dbUrl), "sqlite:///other.db")
      assert.deepStrictEqual(fromEnv.sources.dbUrl, { _tag: "Environment", variable: "DMS_DB_URL_FILE", secretFile: other })
      assert.strictEqual(Redacted.value(Option.getOrThrow(fromEnv.keystoneToken)), "env-token", "KEYSTONE_TOKEN beats the file's keystone_token_file")

      const fromOption = Either.getOrThrow(
        (yield* run(DmsConfig.fromEnv({ dbUrlFile: dbFile, keystoneTokenFile: tokenFile }), { DMS_CLIENT_CONF: conf, DMS_DB_URL_FILE: other, KEYSTONE_TOKEN: "env-token" })).result
      )
      assert.strictEqual(Redacted.value(fromOption.dbUrl), DB)
      assert.strictEqual(Redacted.value(Option.getOrThrow(fromOption.keystoneToken)), TOKEN)
      assert.deepStrictEqual(fromOption.sources.dbUrl, { _tag: "Argument", name: "dbUrlFile", secretFile: dbFile })

      const fromMake = Either.getOrThrow((yield* run(DmsConfig.make({ dbUrlFile: dbFile, rabbitmqUrlFile: mqFile }), {})).result)
      assert.strictEqual(Redacted.value(fromMake.rabbitmqUrl), MQ)
    }))

  it.scoped("a value and its file at one level are an error naming both; across levels the higher wins", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const dbFile = write(dir, "db", DB)
      const conf = write(dir, "client.conf", `[client]\ndb_url = sqlite:///conf.db\ndb_url_file = ${dbFile}\nrabbitmq_url = memory:\n`)
      const env = yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: "/nonexistent", DMS_DB_URL: "sqlite:///x.db", DMS_DB_URL_FILE: dbFile, DMS_RABBITMQ_URL: "memory:" })
      assert.isTrue(env.result._tag === "Left")
      const error = (env.result as Either.Left<DmsError.ValidationError, unknown>).left
      assert.deepStrictEqual(error.issues.map((i) => i.path), ["DMS_DB_URL_FILE"])
      assert.include(error.message, "is set together with DMS_DB_URL")
      noSecret(error.message)

      const inConf = yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: conf })
      assert.isTrue(inConf.result._tag === "Left")
      assert.include((inConf.result as Either.Left<DmsError.ValidationError, unknown>).left.message, `db_url_file: is set together with db_url`)

      const options = yield* run(DmsConfig.make({ keystoneToken: TOKEN, keystoneTokenFile: dbFile, dbUrl: "memory:", rabbitmqUrl: "memory:" }), {})
      assert.isTrue(options.result._tag === "Left")
      assert.include((options.result as Either.Left<DmsError.ValidationError, unknown>).left.message, "keystoneTokenFile: is set together with keystoneToken")

      // The environment's URL is a higher level than client.conf's pair: no conflict there.
      const higher = Either.getOrThrow((yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: conf, DMS_DB_URL: "sqlite:///env.db" })).result)
      assert.strictEqual(Redacted.value(higher.dbUrl), "sqlite:///env.db")
    }))

  it.scoped("a file that cannot be read fails naming the key, the file and why, never the content", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const empty = write(dir, "empty", "\n")
      const { result } = yield* run(DmsConfig.fromEnv(), {
        DMS_CLIENT_CONF: "/nonexistent",
        DMS_DB_URL_FILE: path.join(dir, "missing"),
        DMS_RABBITMQ_URL_FILE: dir,
        KEYSTONE_TOKEN_FILE: empty
      })
      assert.isTrue(result._tag === "Left")
      const error = (result as Either.Left<DmsError.ValidationError, unknown>).left
      const byPath = Object.fromEntries(error.issues.map((i) => [i.path, i.message]))
      assert.deepStrictEqual(Object.keys(byPath).sort(), ["DMS_DB_URL_FILE", "DMS_RABBITMQ_URL_FILE", "KEYSTONE_TOKEN_FILE"])
      assert.strictEqual(byPath.DMS_DB_URL_FILE, `cannot read the secret file ${path.join(dir, "missing")}: no such file (ENOENT) (from DMS_DB_URL_FILE (environment))`)
      assert.include(byPath.DMS_RABBITMQ_URL_FILE!, `${dir}: it is a directory (EISDIR)`)
      assert.include(byPath.KEYSTONE_TOKEN_FILE!, `${empty}: it is empty`)

      // A file whose content is not a URL: the error names the key and the file, not the content.
      const bad = write(dir, "bad", `postgres://dms:${PASSWORD}@db/x`)
      const badUrl = yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: "/nonexistent", DMS_DB_URL_FILE: bad, DMS_RABBITMQ_URL: "memory:" })
      const message = (badUrl.result as Either.Left<DmsError.ValidationError, unknown>).left.message
      assert.include(message, `DMS_DB_URL_FILE: unsupported scheme "postgres"`)
      assert.include(message, bad)
      noSecret(message)
    }))

  it.scoped("warns about client.conf holding a password and about secret files open to other users, without the secret", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const tokenFile = write(dir, "token", TOKEN, 0o644)
      const conf = write(dir, "client.conf", `[client]\ndb_url = ${DB}\nrabbitmq_url = amqp://mq:5672\nkeystone_token_file = token\n`, 0o640)
      const { logged, result } = yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: conf })
      assert.isTrue(result._tag === "Right")
      assert.deepStrictEqual(logged, [
        `WARN: ${conf} holds a secret (db_url with a password) and is readable by users other than its owner (mode 0640): run chmod 600 ${conf}`,
        `WARN: the secret file ${tokenFile} (keystone_token_file) is readable by users other than its owner (mode 0644): run chmod 600 ${tokenFile}`
      ])
      noSecret(logged.join("\n"))

      // Locked down, or holding no password: nothing to say.
      fs.chmodSync(conf, 0o600)
      fs.chmodSync(tokenFile, 0o600)
      assert.deepStrictEqual((yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: conf })).logged, [])
      const plain = write(dir, "plain.conf", "[client]\ndb_url = sqlite:///x.db\nrabbitmq_url = amqp://mq:5672\n", 0o644)
      assert.deepStrictEqual((yield* run(DmsConfig.fromEnv(), { DMS_CLIENT_CONF: plain })).logged, [])
    }))
})

describe("server secrets from files", () => {
  const base = { DMS_NODE_ID: "compute-01" }

  it.scoped("--rabbitmq-url-file > DMS_RABBITMQ_URL_FILE > rabbitmq_url_file; a value and its file at one level fail", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const confUrl = write(dir, "conf-mq", "amqp://dms:a@conf:5672\n")
      const envUrl = write(dir, "env-mq", "amqp://dms:b@env:5672\n")
      const flagUrl = write(dir, "flag-mq", `${MQ}\n`)
      const conf = write(dir, "server.conf", "[server]\nrabbitmq_url_file = conf-mq\n")
      const value = (r: { result: Either.Either<ServerConfig.Settings, unknown> }) => Redacted.value(Either.getOrThrow(r.result).rabbitmqUrl)

      assert.strictEqual(value(yield* run(ServerConfig.fromEnv({ configFile: conf }), base)), "amqp://dms:a@conf:5672")
      assert.strictEqual(value(yield* run(ServerConfig.fromEnv({ configFile: conf }), { ...base, DMS_RABBITMQ_URL_FILE: envUrl })), "amqp://dms:b@env:5672")
      const parsed = ServerConfig.parseCommandLine(["--rabbitmq-url-file", flagUrl]) as ServerConfig.Options
      assert.strictEqual(value(yield* run(ServerConfig.fromEnv({ ...parsed, configFile: conf }), { ...base, DMS_RABBITMQ_URL_FILE: envUrl })), MQ)
      assert.strictEqual(value(yield* run(ServerConfig.make({ nodeId: "n", rabbitmqUrlFile: flagUrl }), {})), MQ)

      const both = yield* run(ServerConfig.fromEnv({ configFile: conf }), { ...base, DMS_RABBITMQ_URL: MQ, DMS_RABBITMQ_URL_FILE: envUrl })
      const error = (both.result as Either.Left<DmsError.ValidationError, unknown>).left
      assert.deepStrictEqual(error.issues.map((i) => i.path), ["DMS_RABBITMQ_URL_FILE"])
      assert.include(error.message, "is set together with the URL itself (from DMS_RABBITMQ_URL (environment))")
      noSecret(error.message)
    }))

  it.scoped("an unreadable file names the key and the file; loose modes are warned about without the secret", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const missing = yield* run(ServerConfig.fromEnv({ configFile: "/nonexistent", rabbitmqUrlFile: path.join(dir, "nope") }), base)
      const error = (missing.result as Either.Left<DmsError.ValidationError, unknown>).left
      assert.deepStrictEqual(error.issues.map((i) => i.path), ["--rabbitmq-url-file"])
      assert.include(error.message, `cannot read the secret file ${path.join(dir, "nope")}: no such file (ENOENT) (from --rabbitmq-url-file (command line))`)

      const loose = write(dir, "mq", MQ, 0o604)
      const conf = write(dir, "server.conf", `[server]\nrabbitmq_url = ${MQ}\n`, 0o644)
      const { logged, result } = yield* run(ServerConfig.fromEnv({ configFile: conf }), { ...base, DMS_RABBITMQ_URL_FILE: loose })
      assert.isTrue(result._tag === "Right")
      assert.deepStrictEqual(logged, [
        `WARN: ${conf} holds a secret (rabbitmq_url with a password) and is readable by users other than its owner (mode 0644): run chmod 600 ${conf}`,
        `WARN: the secret file ${loose} (DMS_RABBITMQ_URL_FILE) is readable by users other than its owner (mode 0604): run chmod 600 ${loose}`
      ])
      noSecret(logged.join("\n"))
    }))
})
