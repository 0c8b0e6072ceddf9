/**
 * Secrets never leak. With debug logging on, the flows run against a MariaDB user and a RabbitMQ user
 * created for this test with distinctive passwords, a distinctive Keystone token, and a Barbican secret
 * whose payload holds distinctive S3 keys: the client (Effect API and Promise facade), the server in
 * process (through the fake Barbican to an S3 driver that fails), the CLI with `--json` and the server
 * as child processes. Error paths included: wrong database password, wrong broker password, a server
 * error reply, a Barbican refusal, a reply timeout, a bad URL in the configuration.
 *
 * Everything is captured: every log line (a replaced Logger, all levels, in logfmt and JSON), every
 * span (name, attributes, events, and how it ended), every error's message, String() and JSON, and the
 * children's stdout and stderr. No secret may appear anywhere; the capture is shown to work by finding
 * the non-secret parts (user names, hosts, target ids) in it.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Tracer from "effect/Tracer"
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Broker from "../src/Broker.js"
import * as Dms from "../src/Dms.js"
import * as Mount from "../src/Mount.js"
import { DMSClient } from "../src/promise.js"
import * as Barbican from "../src/server/Barbican.js"
import * as CommandRunner from "../src/server/CommandRunner.js"
import * as Mounter from "../src/server/Mounter.js"
import * as Server from "../src/server/Server.js"
import { startBarbican } from "./support/barbican.js"
import { cleanEnv, exec, ROOT, tempDir } from "./support/cli.js"
import { recordingRunner, serverDirs, spawnServer } from "./support/dmsServer.js"
import { adminConnection, MYSQL_HOST, MYSQL_PORT, TestDatabase, TestDatabaseLive } from "./support/mysql.js"
import { deleteOnClose, uniqueHost } from "./support/rabbit.js"
import { noAnswer, startResponder } from "./support/responder.js"

const tag = randomBytes(6).toString("hex")
const SECRETS = {
  dbPassword: `Db-Pw-${tag}-s3cr3t`,
  wrongDbPassword: `Wrong-Db-Pw-${tag}`,
  brokerPassword: `Mq-Pw-${tag}-s3cr3t`,
  wrongBrokerPassword: `Wrong-Mq-Pw-${tag}`,
  keystoneToken: `gAAAAA-keystone-${tag}-t0ken`,
  wrongToken: `gAAAAA-wrong-${tag}-t0ken`,
  accessKey: `AKIA${tag.toUpperCase()}SECRET`,
  secretKey: `s3-secret-key-${tag}-xyz`
}
const DB_USER = `dms_sec_${tag}`
const MQ_USER = `dms_sec_${tag}`

/** Everything the test saw: log lines, spans, errors, child output. */
const captured: Array<{ readonly where: string; readonly text: string }> = []
const capture = (where: string, text: string) => void captured.push({ where, text })

const captureLogger = Logger.make((options) => {
  capture("log (logfmt)", Logger.logfmtLogger.log(options))
  capture("log (json)", Logger.jsonLogger.log(options))
})

const spans: Array<Tracer.Span> = []
const captureTracer = Effect.map(Effect.tracer, (native) =>
  Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = native.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: (f, fiber) => native.context(f, fiber)
  }))

const spanText = (span: Tracer.Span) => {
  const s = span as Tracer.Span & { events?: ReadonlyArray<unknown> }
  const exit = span.status._tag === "Ended" ? span.status.exit : undefined
  return JSON.stringify({
    name: span.name,
    attributes: [...span.attributes],
    events: s.events ?? [],
    exit: exit === undefined ? null : Exit.isSuccess(exit) ? "success" : Cause.pretty(exit.cause)
  }, (_k, v) => (typeof v === "bigint" ? String(v) : v))
}

/** Every way an error is shown: message, String(), JSON, its cause chain, and Effect's pretty cause. */
const captureError = (where: string, e: unknown) => {
  const chain: Array<unknown> = []
  for (let c: unknown = e; c !== undefined && chain.length < 8; c = (c as { cause?: unknown }).cause) chain.push(c)
  for (const c of chain) {
    capture(`${where} (message)`, String((c as { message?: unknown }).message ?? ""))
    capture(`${where} (String)`, String(c))
    capture(`${where} (JSON)`, JSON.stringify(c, (_k, v) => (typeof v === "bigint" ? String(v) : v)) ?? "")
  }
}

const captureExit = (where: string, exit: Exit.Exit<unknown, unknown>) => {
  if (Exit.isSuccess(exit)) return capture(where, JSON.stringify(exit.value))
  capture(`${where} (cause)`, Cause.pretty(exit.cause))
  captureError(where, Cause.squash(exit.cause))
}

const rabbitmqctl = (...args: ReadonlyArray<string>) => execFileSync("rabbitmqctl", args, { encoding: "utf8", timeout: 60_000, stdio: "pipe" })

/** A MariaDB user with a password, allowed on the test database, dropped afterwards. */
const dbUser = (database: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const admin = yield* adminConnection()
      yield* Effect.promise(() => admin.query(`CREATE USER '${DB_USER}'@'%' IDENTIFIED BY '${SECRETS.dbPassword}'`))
      yield* Effect.promise(() => admin.query(`GRANT ALL ON \`${database}\`.* TO '${DB_USER}'@'%'`))
    }).pipe(Effect.scoped),
    () => Effect.scoped(Effect.flatMap(adminConnection(), (admin) => Effect.promise(() => admin.query(`DROP USER IF EXISTS '${DB_USER}'@'%'`)))).pipe(Effect.orDie)
  )

/** A RabbitMQ user with a password and full rights on `/`, deleted afterwards. */
const brokerUser = Effect.acquireRelease(
  Effect.sync(() => {
    rabbitmqctl("add_user", MQ_USER, SECRETS.brokerPassword)
    rabbitmqctl("set_permissions", "-p", "/", MQ_USER, ".*", ".*", ".*")
  }),
  () => Effect.sync(() => void rabbitmqctl("delete_user", MQ_USER))
)

const s3Request = (host: string, mountPath: string, secretRef: string, token: string | null, jobid = 7001) => ({
  context: { request_id: `req-secrets-${tag}` },
  keystone_token: token,
  job: { jobid },
  host,
  backup_target: { id: `target-s3-${tag}`, type: "s3", filesystem_export_mount_path: mountPath, secret_ref: secretRef }
})

const nfsRequest = (host: string, mountPath: string, jobid = 7002) => ({
  job: { jobid },
  host,
  backup_target: { id: `target-nfs-${tag}`, type: "nfs", filesystem_export: "192.0.2.10:/backups", filesystem_export_mount_path: mountPath }
})

describe("Secrets", () => {
  it.scopedLive("no password, token or Barbican payload in any log line, span, error or child output", () =>
    Effect.gen(function*() {
      const db = yield* TestDatabase
      yield* dbUser(db.name)
      yield* brokerUser
      const dbUrl = `mysql://${DB_USER}:${SECRETS.dbPassword}@${MYSQL_HOST}:${MYSQL_PORT}/${db.name}`
      const brokerUrl = `amqp://${MQ_USER}:${SECRETS.brokerPassword}@127.0.0.1:5672`

      const barbican = yield* startBarbican
      const secretRef = barbican.addSecret(`s3-${tag}`, SECRETS.keystoneToken, {
        aws_access_key_id: SECRETS.accessKey,
        aws_secret_access_key: SECRETS.secretKey,
        vault_s3_bucket: "dms-secret-bucket",
        vault_s3_endpoint_url: "http://127.0.0.1:9",
        vault_s3_region_name: "us-east-1"
      })

      // The server in process: the real Barbican client, the real FUSE spawn of a driver that fails.
      const dirs = yield* serverDirs
      const runner = recordingRunner()
      const host = uniqueHost("secrets")
      yield* deleteOnClose(Broker.queueName(host))
      const mounter = Layer.effect(
        Mounter.Mounter,
        Mounter.make({ mountBase: dirs.base, runDir: dirs.run, s3Command: "/bin/false", commandTimeout: "10 seconds", daemonStopGrace: "200 millis" })
      ).pipe(Layer.provide(Layer.succeed(CommandRunner.CommandRunner, runner.service)), Layer.provide(Barbican.layer({ endpoint: barbican.url })))
      const serverCtx = yield* Layer.build(Server.layer({ nodeId: host, rabbitmqUrl: brokerUrl }).pipe(Layer.provide(mounter)))
      yield* Context.get(serverCtx, Server.Server).ready.pipe(Effect.timeout("20 seconds"))

      // A host whose consumer never answers: a reply timeout.
      const silentHost = uniqueHost("secrets-silent")
      yield* startResponder({ host: silentHost, handle: () => Effect.succeed(noAnswer) })

      const client = yield* Layer.build(Dms.layer({ dbUrl, rabbitmqUrl: brokerUrl, timeout: 10, lockTimeout: 30, logLevel: "DEBUG" }))
      const run = (where: string, effect: Effect.Effect<unknown, unknown, Dms.Services>) =>
        Effect.flatMap(Effect.exit(Effect.provide(effect, client)), (exit) => Effect.sync(() => captureExit(where, exit)))

      // S3 through Barbican to the failing driver (server error reply), and with a wrong token (Barbican 401).
      yield* run("s3 mount", Mount.mount(s3Request(host, path.join(dirs.base, "s3"), secretRef, SECRETS.keystoneToken)))
      yield* run("s3 mount, wrong token", Mount.mount(s3Request(host, path.join(dirs.base, "s3b"), secretRef, SECRETS.wrongToken, 7003)))
      // NFS where the runner "succeeds" but nothing is mounted (server error reply).
      yield* run("nfs mount", Mount.mount(nfsRequest(host, path.join(dirs.base, "nfs"))))
      // A reply timeout.
      const quick = yield* Layer.build(Dms.layer({ dbUrl, rabbitmqUrl: brokerUrl, timeout: 1, lockTimeout: 30, logLevel: "DEBUG" }))
      const timedOut = yield* Effect.exit(Effect.provide(Mount.mount(nfsRequest(silentHost, "/var/lib/trilio/triliovault-mounts/silent")), quick))
      captureExit("timeout", timedOut)
      assert.isTrue(Exit.isFailure(timedOut) && String(Cause.squash(timedOut.cause)).includes("TimeoutError"), "a reply timeout")
      yield* run("queries", Effect.all([Mount.getActiveMounts(), Mount.getLedgerHistory(`target-s3-${tag}`)]))
      assert.isAbove(barbican.requests().filter((r) => r.token === SECRETS.keystoneToken).length, 0, "the server used the token")

      // Wrong database password, wrong broker password, a bad URL carrying a password.
      const wrongDb = yield* Effect.exit(Layer.build(Dms.layer({ dbUrl: dbUrl.replace(SECRETS.dbPassword, SECRETS.wrongDbPassword), rabbitmqUrl: brokerUrl, logLevel: "DEBUG" })))
      captureExit("wrong database password", wrongDb)
      assert.isTrue(Exit.isFailure(wrongDb))
      const wrongBroker = yield* Layer.build(
        Dms.layer({ dbUrl, rabbitmqUrl: brokerUrl.replace(SECRETS.brokerPassword, SECRETS.wrongBrokerPassword), timeout: 5, logLevel: "DEBUG", broker: { connectTimeout: "3 seconds" } })
      ).pipe(Effect.exit)
      if (Exit.isSuccess(wrongBroker)) {
        const exit = yield* Effect.exit(Effect.provide(Mount.mount(nfsRequest(host, path.join(dirs.base, "nfs2"), 7004)), wrongBroker.value))
        captureExit("wrong broker password", exit)
        assert.isTrue(Exit.isFailure(exit))
      } else captureExit("wrong broker password", wrongBroker)
      const badUrl = yield* Effect.exit(Layer.build(Dms.layer({ dbUrl: `mysql://${DB_USER}:${SECRETS.dbPassword}@${MYSQL_HOST}:notaport/x`, rabbitmqUrl: brokerUrl })))
      captureExit("bad database URL", badUrl)

      // The Promise facade, success and failures.
      const facade = new DMSClient({ dbUrl, rabbitmqUrl: brokerUrl, timeout: 10, keystoneToken: SECRETS.keystoneToken, logLevel: "DEBUG" })
      for (const [where, call] of [
        ["facade s3 mount", () => facade.mount(s3Request(host, path.join(dirs.base, "s3c"), secretRef, null, 7005))],
        ["facade nfs unmount", () => facade.unmount(nfsRequest(host, path.join(dirs.base, "nfs"), 7006))],
        ["facade wrong password", () => {
          const wrong = new DMSClient({ dbUrl: dbUrl.replace(SECRETS.dbPassword, SECRETS.wrongDbPassword), rabbitmqUrl: brokerUrl })
          return wrong.getActiveMounts().finally(() => wrong.close())
        }]
      ] as const) {
        yield* Effect.promise(() => (call() as Promise<unknown>).then((r) => capture(where, JSON.stringify(r)), (e: unknown) => captureError(where, e)))
      }
      yield* Effect.promise(() => facade.close())

      // The CLI (--json, debug) and the server as child processes.
      const home = yield* tempDir("dms-secrets-home-")
      const cliEnv = (dbPassword: string) =>
        cleanEnv(home, {
          DMS_DB_URL: dbUrl.replace(SECRETS.dbPassword, dbPassword),
          DMS_RABBITMQ_URL: brokerUrl,
          KEYSTONE_TOKEN: SECRETS.keystoneToken,
          DMS_LOG_LEVEL: "DEBUG",
          DMS_REQUEST_TIMEOUT: "10"
        })
      const cli = (where: string, args: ReadonlyArray<string>, dbPassword = SECRETS.dbPassword) =>
        Effect.map(exec(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], { cwd: ROOT, env: cliEnv(dbPassword), timeoutMs: 60_000 }), (r) => {
          capture(`${where} (stdout)`, r.stdout)
          capture(`${where} (stderr)`, r.stderr)
          return r
        })
      const childHost = uniqueHost("secrets-child")
      yield* deleteOnClose(Broker.queueName(childHost))
      const childDirs = yield* serverDirs
      const child = yield* spawnServer(
        ["--node-id", childHost, "--mount-base", childDirs.base, "--run-dir", childDirs.run, "--s3-command", "/bin/false", "--log-level", "DEBUG", "--command-timeout", "10", "--barbican-url", barbican.url],
        { DMS_RABBITMQ_URL: brokerUrl, HOME: home }
      )
      yield* child.waitForOutput(`consuming dms.${childHost}`).pipe(Effect.timeout("60 seconds"))
      const s3Args = (h: string, p: string, job: string) => ["mount", "--json", "--job-id", job, "--target-id", `target-s3-${tag}`, "--target-type", "s3", "--host", h, "--mount-path", p, "--secret-ref", secretRef]
      const viaChild = yield* cli("cli s3 mount via the server process", s3Args(childHost, path.join(childDirs.base, "s3"), "7101"))
      assert.notStrictEqual(viaChild.code, 0, "the failing S3 driver makes it an error")
      yield* cli("cli s3 mount via the in-process server", s3Args(host, path.join(dirs.base, "s3d"), "7102"))
      yield* cli("cli wrong database password", ["mounts", "--json"], SECRETS.wrongDbPassword)
      yield* child.signal("SIGTERM")
      yield* child.exited.pipe(Effect.timeout("20 seconds"), Effect.ignore)
      capture("server process output", child.output())

      for (const span of spans) capture("span", spanText(span))
      // To inspect what was captured: DMS_TEST_DUMP=/tmp/captured.json npx vitest run test/Secrets.test.ts
      if (process.env.DMS_TEST_DUMP !== undefined) fs.writeFileSync(process.env.DMS_TEST_DUMP, JSON.stringify(captured, null, 1))
      const all = captured.map((c) => c.text).join("\n")

      // The capture works: it holds the non-secret parts of what it saw.
      for (const visible of [DB_USER, MQ_USER, host, childHost, `target-s3-${tag}`, "Barbican", "dms.mount", "level=DEBUG"]) {
        assert.include(all, visible, `the capture should contain ${visible}`)
      }
      assert.isAbove(spans.length, 5)
      assert.isTrue(captured.some((c) => c.where.startsWith("server process") && c.text.includes("s3")), "the server process output was captured")
      // No secret anywhere.
      const leaks = Object.entries(SECRETS).flatMap(([name, secret]) =>
        captured.filter((c) => c.text.includes(secret)).map((c) => `${name} in ${c.where}: …${c.text.slice(Math.max(0, c.text.indexOf(secret) - 150), c.text.indexOf(secret) + 50)}…`)
      )
      assert.deepStrictEqual(leaks, [], `secrets leaked:\n${leaks.join("\n")}`)
      console.log(`secrets checked: ${Object.keys(SECRETS).length} values in ${captured.length} captured texts (${spans.length} spans, ${captured.filter((c) => c.where.startsWith("log")).length / 2} log lines, ${all.length} characters)`)
    }).pipe(
      Effect.provide(TestDatabaseLive),
      Effect.provide(Logger.replace(Logger.defaultLogger, captureLogger)),
      Effect.provide(Logger.minimumLogLevel(LogLevel.All)),
      Effect.provide(Layer.unwrapEffect(Effect.map(captureTracer, Layer.setTracer)))
    ), { timeout: 180_000 })
})
