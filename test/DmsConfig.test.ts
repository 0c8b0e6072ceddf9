/**
 * Configuration: explicit options > environment > client.conf > defaults, and clear errors naming the
 * key and where it came from.
 */
import { assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as path from "node:path"
import * as DmsConfig from "../src/DmsConfig.js"
import { ValidationError } from "../src/DmsError.js"
import { parseBrokerUrl, parseLedgerUrl, redactUrl } from "../src/internal/urls.js"
import { tempDir } from "./support/backends.js"

const GUIDE_DB = "mysql+pymysql://dms_user:dms_password@localhost:3306/trilio_dms"
const GUIDE_MQ = "amqp://dms_user:dms_password@localhost:5672"

/** Resolves with the given environment (and nothing from the real one). */
const withEnv = (env: Record<string, string>, options: DmsConfig.Options = {}) =>
  DmsConfig.fromEnv(options).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))

const writeConf = (dir: string, body: string) =>
  Effect.sync(() => {
    const file = path.join(dir, "client.conf")
    fs.writeFileSync(file, body)
    return file
  })

describe("DmsConfig", () => {
  it.effect("uses the guide's defaults: 300 s timeout, lock timeout 30 s longer, INFO, no token", () =>
    Effect.gen(function*() {
      const c = yield* DmsConfig.make({ dbUrl: GUIDE_DB, rabbitmqUrl: GUIDE_MQ })
      assert.strictEqual(Duration.toSeconds(c.requestTimeout), 300)
      assert.strictEqual(Duration.toSeconds(c.lockTimeout), 330)
      assert.strictEqual(c.logLevel, LogLevel.Info)
      assert.isTrue(Option.isNone(c.keystoneToken))
      assert.strictEqual(Redacted.value(c.dbUrl), GUIDE_DB)
      assert.deepStrictEqual(c.sources.requestTimeout, { _tag: "Default" })
      assert.deepStrictEqual(c.sources.dbUrl, { _tag: "Argument", name: "dbUrl" })
    }))

  it.scoped("takes each key from the highest source: argument > environment > file > default", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = yield* writeConf(dir, [
        "[client]",
        "db_url = sqlite:///from-file.db",
        "rabbitmq_url = amqp://file-host:5672",
        "timeout = 100",
        "lock_timeout = 200",
        "log_level = ERROR",
        ""
      ].join("\n"))
      const fromFile = yield* withEnv({ DMS_CLIENT_CONF: file })
      assert.strictEqual(Redacted.value(fromFile.dbUrl), "sqlite:///from-file.db")
      assert.strictEqual(Duration.toSeconds(fromFile.requestTimeout), 100)
      assert.strictEqual(Duration.toSeconds(fromFile.lockTimeout), 200)
      assert.strictEqual(fromFile.logLevel, LogLevel.Error)
      assert.deepStrictEqual(fromFile.sources.requestTimeout, { _tag: "File", file, key: "timeout" })

      const env = { DMS_CLIENT_CONF: file, DMS_REQUEST_TIMEOUT: "60", DMS_LOG_LEVEL: "WARNING", KEYSTONE_TOKEN: "tok", DMS_DB_URL: GUIDE_DB }
      const fromEnv = yield* withEnv(env)
      assert.strictEqual(Duration.toSeconds(fromEnv.requestTimeout), 60)
      assert.strictEqual(Duration.toSeconds(fromEnv.lockTimeout), 200, "lock_timeout still from the file")
      assert.strictEqual(fromEnv.logLevel, LogLevel.Warning)
      assert.strictEqual(Redacted.value(fromEnv.dbUrl), GUIDE_DB)
      assert.strictEqual(Redacted.value(fromEnv.rabbitmqUrl), "amqp://file-host:5672")
      assert.strictEqual(Redacted.value(Option.getOrThrow(fromEnv.keystoneToken)), "tok")
      assert.deepStrictEqual(fromEnv.sources.requestTimeout, { _tag: "Environment", variable: "DMS_REQUEST_TIMEOUT" })

      const fromArgs = yield* withEnv(env, { timeout: 600, logLevel: "DEBUG", rabbitmqUrl: GUIDE_MQ })
      assert.strictEqual(Duration.toSeconds(fromArgs.requestTimeout), 600)
      assert.strictEqual(fromArgs.logLevel, LogLevel.Debug)
      assert.strictEqual(Redacted.value(fromArgs.rabbitmqUrl), GUIDE_MQ)
      assert.deepStrictEqual(fromArgs.sources.requestTimeout, { _tag: "Argument", name: "timeout" })
    }))

  it.effect("derives the lock timeout from the request timeout when it is not set", () =>
    Effect.gen(function*() {
      const c = yield* withEnv({ DMS_DB_URL: GUIDE_DB, DMS_RABBITMQ_URL: GUIDE_MQ, DMS_REQUEST_TIMEOUT: "10", DMS_CLIENT_CONF: "/nonexistent/client.conf" })
      assert.strictEqual(Duration.toSeconds(c.lockTimeout), 40)
    }))

  it.effect("maps Python log level names onto Effect's", () =>
    Effect.gen(function*() {
      const cases = [["DEBUG", LogLevel.Debug], ["info", LogLevel.Info], ["WARNING", LogLevel.Warning], ["ERROR", LogLevel.Error], ["CRITICAL", LogLevel.Fatal]] as const
      for (const [name, level] of cases) {
        const c = yield* DmsConfig.make({ dbUrl: GUIDE_DB, rabbitmqUrl: GUIDE_MQ, logLevel: name })
        assert.strictEqual(c.logLevel, level, name)
      }
    }))

  it.effect("a missing URL names the environment variable, the file key and the option", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(withEnv({ DMS_RABBITMQ_URL: GUIDE_MQ, DMS_CLIENT_CONF: "/nonexistent/client.conf" }))
      assert.instanceOf(error, ValidationError)
      assert.strictEqual(error.subject, "config")
      assert.deepStrictEqual(error.issues.map((i) => i.path), ["db_url"])
      assert.include(error.message, "DMS_DB_URL")
      assert.include(error.message, "/nonexistent/client.conf")
      assert.include(error.message, "dbUrl")
    }))

  it.scoped("reports every bad value with its key and source, without echoing secrets", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const file = yield* writeConf(dir, "[client]\nlog_level = LOUD\nlock_timeout = -5\n")
      const error = yield* Effect.flip(withEnv({
        DMS_CLIENT_CONF: file,
        DMS_DB_URL: "postgres://u:hunter2@db/x",
        DMS_RABBITMQ_URL: "amqp://guest:guest@127.0.0.1:5672",
        DMS_REQUEST_TIMEOUT: "abc"
      }))
      const byPath = Object.fromEntries(error.issues.map((i) => [i.path, i.message]))
      assert.deepStrictEqual(Object.keys(byPath).sort(), ["DMS_DB_URL", "DMS_REQUEST_TIMEOUT", "lock_timeout", "log_level"])
      assert.match(byPath.DMS_REQUEST_TIMEOUT!, /number of seconds.*"abc".*environment/)
      assert.match(byPath.DMS_DB_URL!, /unsupported scheme "postgres"/)
      assert.match(byPath.log_level!, new RegExp(`LOUD.*${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`))
      assert.notInclude(error.message, "hunter2")
    }))

  it.effect("refuses a zero or negative timeout given as an argument", () =>
    Effect.gen(function*() {
      for (const timeout of [0, -1, Number.NaN, Duration.zero]) {
        const error = yield* Effect.flip(DmsConfig.make({ dbUrl: GUIDE_DB, rabbitmqUrl: GUIDE_MQ, timeout }))
        assert.deepStrictEqual(error.issues.map((i) => i.path), ["timeout"], String(timeout))
      }
    }))

  it.scoped("an unreadable configuration file is an error naming the file", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const error = yield* Effect.flip(withEnv({ DMS_CLIENT_CONF: dir }))
      assert.strictEqual(error.issues[0]!.path, dir)
    }))

  it.effect("keeps URLs and the token redacted when printed", () =>
    Effect.gen(function*() {
      const c = yield* DmsConfig.make({ dbUrl: GUIDE_DB, rabbitmqUrl: GUIDE_MQ, keystoneToken: "secret-token" })
      const printed = JSON.stringify(c) + String(c.dbUrl) + JSON.stringify(DmsConfig.describe(c))
      assert.notInclude(printed, "dms_password")
      assert.notInclude(printed, "secret-token")
      assert.strictEqual(DmsConfig.describe(c).db_url, "mysql+pymysql://dms_user:***@localhost:3306/trilio_dms")
    }))
})

describe("ledger and broker URLs", () => {
  it("parses the guide's and SQLAlchemy's forms", () => {
    assert.deepInclude(parseLedgerUrl(GUIDE_DB) as object, { kind: "mysql", host: "localhost", port: 3306, user: "dms_user", database: "trilio_dms" })
    assert.deepInclude(parseLedgerUrl("mysql://root@127.0.0.1/test") as object, { port: 3306, password: undefined })
    assert.deepStrictEqual(parseLedgerUrl("sqlite:///ledger.db"), { kind: "sqlite", filename: "ledger.db" })
    assert.deepStrictEqual(parseLedgerUrl("sqlite:////var/lib/dms/ledger.db"), { kind: "sqlite", filename: "/var/lib/dms/ledger.db" })
    assert.deepStrictEqual(parseLedgerUrl("sqlite:/tmp/l.db"), { kind: "sqlite", filename: "/tmp/l.db" })
    assert.deepStrictEqual(parseLedgerUrl("sqlite://"), { kind: "sqlite", filename: ":memory:" })
    assert.deepStrictEqual(parseLedgerUrl("memory:"), { kind: "memory" })
    assert.isString(parseLedgerUrl("mysql://localhost:3306/"))
    assert.isString(parseLedgerUrl("trilio_dms"))
    assert.deepInclude(parseBrokerUrl(GUIDE_MQ) as object, { kind: "amqp" })
    assert.isString(parseBrokerUrl("http://x"))
    const pw = parseLedgerUrl("mysql://u:p%40ss@h:3307/d")
    assert.strictEqual(typeof pw === "object" && pw.kind === "mysql" ? Redacted.value(pw.password!) : "", "p@ss")
    assert.strictEqual(redactUrl("amqp://guest:guest@127.0.0.1:5672"), "amqp://guest:***@127.0.0.1:5672")
    assert.strictEqual(redactUrl("amqp://127.0.0.1"), "amqp://127.0.0.1")
  })
})

describe("broker URL lists (a cluster's nodes)", () => {
  const LIST = "amqp://dms:pw-one@mq1:5672, amqps://dms:pw-two@mq2:5671/vhost ,amqp://mq3"

  it("parses every entry, in order, each kept secret", () => {
    const parsed = parseBrokerUrl(LIST)
    assert.isTrue(typeof parsed === "object" && parsed.kind === "amqp")
    const urls = typeof parsed === "object" && parsed.kind === "amqp" ? parsed.urls.map(Redacted.value) : []
    assert.deepStrictEqual(urls, ["amqp://dms:pw-one@mq1:5672", "amqps://dms:pw-two@mq2:5671/vhost", "amqp://mq3"])
    assert.strictEqual(String(typeof parsed === "object" && parsed.kind === "amqp" ? parsed.urls[0] : ""), "<redacted>")
  })

  it("names the bad entry by position and never echoes it", () => {
    assert.strictEqual(parseBrokerUrl("amqp://a:pw-a@h1,http://u:pw-b@h2"), 'entry 2 of 2: unsupported scheme "http": expected amqp:// or amqps://')
    assert.strictEqual(parseBrokerUrl("amqp://a:pw-a@h1,,amqp://h3"), "entry 2 of 3: empty (a list is amqp://host1:5672,amqp://host2:5672)")
    assert.strictEqual(parseBrokerUrl("amqp://a:pw-a@h1,"), "entry 2 of 2: empty (a list is amqp://host1:5672,amqp://host2:5672)")
    assert.strictEqual(parseBrokerUrl("u:pw-c@h0,amqp://h1"), "entry 1 of 2: expected a URL such as amqp://user:password@host:5672")
    assert.strictEqual(parseBrokerUrl("amqp://h1,memory:"), "entry 2 of 2: memory: cannot be part of a list of RabbitMQ nodes")
    assert.strictEqual(parseBrokerUrl("amqp://h1,amqp://a:pw-d@[::1"), "entry 2 of 2: not a valid URL")
  })

  it("redacts every password of a list, even one with a comma, and keeps the hosts", () => {
    assert.strictEqual(redactUrl("amqp://a:p1@h1,amqp://h2:5672,amqp://b:p,2@h3"), "amqp://a:***@h1,amqp://h2:5672,amqp://b:***@h3")
    assert.strictEqual(redactUrl("mysql://u:p@h1,h2/db"), "mysql://u:***@h1,h2/db")
  })

  it.effect("config: a list is accepted; a bad entry fails naming the key, its source and the entry, without the password", () =>
    Effect.gen(function*() {
      const ok = yield* withEnv({ DMS_DB_URL: "memory:", DMS_RABBITMQ_URL: LIST })
      assert.strictEqual(Redacted.value(ok.rabbitmqUrl), LIST)
      assert.strictEqual(DmsConfig.describe(ok).rabbitmq_url, "amqp://dms:***@mq1:5672, amqps://dms:***@mq2:5671/vhost ,amqp://mq3")
      const error = yield* Effect.flip(withEnv({ DMS_DB_URL: "memory:", DMS_RABBITMQ_URL: "amqp://dms:pw-one@mq1,ftp://dms:pw-two@mq2" }))
      assert.instanceOf(error, ValidationError)
      assert.strictEqual(error.issues[0]?.path, "DMS_RABBITMQ_URL")
      assert.include(error.message, "entry 2 of 2")
      assert.include(error.message, "DMS_RABBITMQ_URL")
      assert.notInclude(error.message, "pw-one")
      assert.notInclude(error.message, "pw-two")
    }))
})
