/**
 * The server's configuration: command line > environment > server.conf [server] > defaults, and every
 * bad value reported with where it came from.
 */
import { afterAll, assert, describe, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as ServerConfig from "../../src/server/ServerConfig.js"

const withEnv = (env: Record<string, string>) => Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))

const confDir = fs.mkdtempSync(path.join(os.tmpdir(), "dms-conf-"))
afterAll(() => fs.rmSync(confDir, { recursive: true, force: true }))
let confFiles = 0

const confFile = (text: string) => {
  const file = path.join(confDir, `server-${++confFiles}.conf`)
  fs.writeFileSync(file, text)
  return file
}

describe("ServerConfig", () => {
  it.effect("defaults", () =>
    Effect.gen(function*() {
      const s = yield* ServerConfig.fromEnv({ configFile: "/nonexistent/server.conf" }).pipe(
        withEnv({ DMS_NODE_ID: "compute-01", DMS_RABBITMQ_URL: "amqp://u:secret@mq:5672" })
      )
      assert.strictEqual(s.nodeId, "compute-01")
      assert.strictEqual(Redacted.value(s.rabbitmqUrl), "amqp://u:secret@mq:5672")
      assert.strictEqual(s.mountBase, "/var/lib/trilio/triliovault-mounts")
      assert.strictEqual(s.runDir, "/run/dms")
      assert.strictEqual(s.s3Driver, "s3fs")
      assert.strictEqual(s.s3Command, "s3fs")
      assert.strictEqual(Duration.toSeconds(s.commandTimeout), 120)
      assert.strictEqual(s.prefetch, 64)
      assert.strictEqual(s.logLevel, LogLevel.Info)
      assert.isTrue(Option.isNone(s.barbicanUrl))
      assert.strictEqual(ServerConfig.describe(s).rabbitmq_url, "amqp://u:***@mq:5672")
    }))

  it.effect("command line > environment > server.conf [server]", () =>
    Effect.gen(function*() {
      const file = confFile(
        "[server]\nnode_id = from-file\nrabbitmq_url = amqp://file\nmount_base = /srv/file-mounts\nrun_dir = /srv/run\ns3_driver = s3vaultfuse\ns3_command = /opt/bin/s3vaultfuse\nlog_level = DEBUG\n[client]\nnode_id = ignored\n"
      )
      const s = yield* ServerConfig.fromEnv({ configFile: file, nodeId: "from-cli" }).pipe(
        withEnv({ DMS_NODE_ID: "from-env", DMS_MOUNT_BASE: "/srv/env-mounts", DMS_COMMAND_TIMEOUT: "30" })
      )
      assert.strictEqual(s.nodeId, "from-cli")
      assert.strictEqual(s.mountBase, "/srv/env-mounts")
      assert.strictEqual(s.runDir, "/srv/run")
      assert.strictEqual(Redacted.value(s.rabbitmqUrl), "amqp://file")
      assert.strictEqual(s.s3Driver, "s3vaultfuse")
      assert.strictEqual(s.s3Command, "/opt/bin/s3vaultfuse")
      assert.strictEqual(Duration.toSeconds(s.commandTimeout), 30)
      assert.strictEqual(s.logLevel, LogLevel.Debug)
    }))

  it.effect("DMS_SERVER_CONF names the file", () =>
    Effect.gen(function*() {
      const file = confFile("[server]\nnode_id = n1\nrabbitmq_url = amqp://h\n")
      const s = yield* ServerConfig.fromEnv().pipe(withEnv({ DMS_SERVER_CONF: file }))
      assert.strictEqual(s.nodeId, "n1")
    }))

  it.effect("reports every missing or bad value, naming where to set it", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(ServerConfig.fromEnv({ configFile: "/nonexistent/server.conf" }).pipe(withEnv({})))
      assert.include(missing.message, "DMS_NODE_ID: is required: pass --node-id")
      assert.include(missing.message, "DMS_RABBITMQ_URL: is required")
      const bad = yield* Effect.flip(
        ServerConfig.fromEnv({ configFile: "/nonexistent/server.conf" }).pipe(
          withEnv({
            DMS_NODE_ID: "bad host",
            DMS_RABBITMQ_URL: "memory:",
            DMS_MOUNT_BASE: "relative",
            DMS_S3_DRIVER: "goofys",
            DMS_COMMAND_TIMEOUT: "0",
            DMS_S3FS_OPTIONS: "allow_other,bad option",
            DMS_PREFETCH: "x",
            DMS_LOG_LEVEL: "LOUD"
          })
        )
      )
      for (
        const text of [
          "DMS_NODE_ID: must be a host name",
          "DMS_RABBITMQ_URL: the server needs a RabbitMQ URL",
          "DMS_MOUNT_BASE: must be an absolute path",
          "DMS_S3_DRIVER: must be s3fs or s3vaultfuse",
          "DMS_COMMAND_TIMEOUT: must be a positive number of seconds",
          "DMS_S3FS_OPTIONS: not an s3fs option",
          "DMS_PREFETCH",
          "DMS_LOG_LEVEL",
          "(from DMS_S3_DRIVER (environment))"
        ]
      ) assert.include(bad.message, text)
    }))

  it("parses the command line", () => {
    assert.deepInclude(ServerConfig.parseCommandLine(["--node-id", "compute-01", "--mount-base", "/m", "--config", "/c"]), {
      nodeId: "compute-01",
      mountBase: "/m",
      configFile: "/c"
    })
    assert.strictEqual(ServerConfig.parseCommandLine(["--help"]), "help")
    assert.throws(() => ServerConfig.parseCommandLine(["--nope"]))
  })

  it.effect("a list of RabbitMQ nodes and the queue type: command line > environment > server.conf; a bad entry is named, its password never shown", () =>
    Effect.gen(function*() {
      const file = confFile("[server]\nnode_id = n1\nrabbitmq_url = amqp://u:pw-file@mq1,amqp://u:pw-file@mq2\nqueue_type = quorum\n")
      const fromFile = yield* ServerConfig.fromEnv({ configFile: file }).pipe(withEnv({}))
      assert.strictEqual(fromFile.queueType, "quorum")
      assert.strictEqual(Redacted.value(fromFile.rabbitmqUrl), "amqp://u:pw-file@mq1,amqp://u:pw-file@mq2")
      assert.deepInclude(ServerConfig.describe(fromFile), { rabbitmq_url: "amqp://u:***@mq1,amqp://u:***@mq2", queue_type: "quorum" })
      const fromEnv = yield* ServerConfig.fromEnv({ configFile: file }).pipe(withEnv({ DMS_QUEUE_TYPE: "classic" }))
      assert.strictEqual(fromEnv.queueType, "classic")
      const fromCli = yield* ServerConfig.fromEnv({ ...ServerConfig.parseCommandLine(["--queue-type", "CLASSIC"]) as object, configFile: file }).pipe(
        withEnv({ DMS_QUEUE_TYPE: "quorum" })
      )
      assert.strictEqual(fromCli.queueType, "classic")
      const defaults = yield* ServerConfig.make({ nodeId: "n1", rabbitmqUrl: "amqp://h" })
      assert.strictEqual(defaults.queueType, "classic")

      const bad = yield* Effect.flip(
        ServerConfig.fromEnv({ configFile: file, rabbitmqUrl: "amqp://u:pw-one@mq1,amqp//u:pw-two@mq2,amqp://mq3" }).pipe(
          withEnv({ DMS_QUEUE_TYPE: "stream" })
        )
      )
      assert.include(bad.message, "DMS_RABBITMQ_URL: entry 2 of 3: expected a URL such as amqp://user:password@host:5672 (from the command line)")
      assert.include(bad.message, 'DMS_QUEUE_TYPE: must be classic or quorum, got "stream" (from DMS_QUEUE_TYPE (environment))')
      assert.notInclude(bad.message, "pw-one")
      assert.notInclude(bad.message, "pw-two")
    }))
})
