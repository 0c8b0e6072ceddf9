/**
 * AMQPS: a TLS endpoint of the test's own (TLS from the first byte, certificates from `support/tls.ts`)
 * in front of the real RabbitMQ. Client and server connect through it with the CA file; a wrong CA, a
 * missing file, and a missing client certificate where one is required fail with a clear `BrokerError`.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import * as Broker from "../src/Broker.js"
import * as DmsConfig from "../src/DmsConfig.js"
import * as Barbican from "../src/server/Barbican.js"
import * as CommandRunner from "../src/server/CommandRunner.js"
import * as Mounter from "../src/server/Mounter.js"
import * as Server from "../src/server/Server.js"
import { recordingRunner, serverDirs } from "./support/dmsServer.js"
import { deleteOnClose, RABBIT_URL, uniqueHost } from "./support/rabbit.js"
import { certificates, tlsProxy } from "./support/tls.js"

const target = (() => {
  const u = new URL(RABBIT_URL)
  return { host: u.hostname, port: Number(u.port || 5672), auth: `${u.username}:${u.password}` }
})()

const amqpsUrl = (port: number) => `amqps://${target.auth}@127.0.0.1:${port}`

/** A client that tries once: its first failure is what `connected` reports. */
const client = (url: string, tls: Broker.TlsFiles) =>
  Layer.build(Broker.layerAmqp({ url, tls, reconnectSchedule: Schedule.stop, connectTimeout: "10 seconds" })).pipe(
    Effect.map((ctx) => Context.get(ctx, Broker.Broker))
  )

const startServer = (url: string, tls: Broker.TlsFiles) =>
  Effect.gen(function*() {
    const dirs = yield* serverDirs
    const host = uniqueHost("tls")
    yield* deleteOnClose(Broker.queueName(host))
    const mounter = Layer.effect(Mounter.Mounter, Mounter.make({ mountBase: dirs.base, runDir: dirs.run })).pipe(
      Layer.provide(Layer.succeed(CommandRunner.CommandRunner, recordingRunner().service)),
      Layer.provide(Barbican.layer())
    )
    const ctx = yield* Layer.build(Server.layer({ nodeId: host, rabbitmqUrl: url, tls }).pipe(Layer.provide(mounter)))
    const server = Context.get(ctx, Server.Server)
    yield* server.ready.pipe(Effect.timeout("20 seconds"))
    return host
  })

describe("AMQPS", () => {
  it.scopedLive("client and server through a TLS endpoint with the CA file: a round trip; a wrong CA is refused", () =>
    Effect.gen(function*() {
      const certs = yield* certificates
      const proxy = yield* tlsProxy(certs, target)
      const url = amqpsUrl(proxy.port)
      const host = yield* startServer(url, { caFile: certs.ca })
      assert.strictEqual(proxy.secured(), 1, "the server connected through the TLS endpoint")
      const broker = yield* client(url, { caFile: certs.ca })
      const reply = yield* broker.request(host, { action: "status" }, { timeout: "20 seconds" })
      assert.strictEqual(reply.status, "success")
      assert.strictEqual(proxy.secured(), 2, "the client connected through the TLS endpoint")

      const wrong = yield* client(url, { caFile: certs.otherCa })
      const error = yield* Effect.flip(wrong.connected)
      assert.strictEqual(error._tag, "BrokerError")
      assert.match(error.message, /cannot connect to amqps:\/\/guest:\*\*\*@127\.0\.0\.1:\d+: .*certificate.*\(TLS: the broker's certificate is not trusted/)
      assert.notInclude(error.message, target.auth)
      // Without any CA file the system's CAs do not know the test CA either.
      const none = yield* Effect.flip((yield* client(url, {})).connected)
      assert.match(none.message, /TLS: the broker's certificate is not trusted/)
      assert.strictEqual(proxy.secured(), 2, "no TLS session with a wrong CA")
    }), { timeout: 60_000 })

  it.scopedLive("a client certificate required by the endpoint: works when configured, fails clearly when not", () =>
    Effect.gen(function*() {
      const certs = yield* certificates
      const proxy = yield* tlsProxy(certs, target, { requireClientCert: true })
      const url = amqpsUrl(proxy.port)
      const host = yield* startServer(url, { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey })
      const broker = yield* client(url, { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey })
      const reply = yield* broker.request(host, { action: "status" }, { timeout: "20 seconds" })
      assert.strictEqual(reply.status, "success")
      assert.strictEqual(proxy.secured(), 2)

      const without = yield* Effect.flip((yield* client(url, { caFile: certs.ca })).connected)
      assert.strictEqual(without._tag, "BrokerError")
      assert.match(without.message, /cannot connect to amqps:/)
      assert.match(without.message, /client certificate/, without.message)
      assert.strictEqual(proxy.secured(), 2, "refused by the endpoint")
      assert.isAtLeast(proxy.rejected(), 1)
    }), { timeout: 60_000 })

  it.scopedLive("the client's configuration: DMS_RABBITMQ_CA_FILE (and rabbitmq_cert_file / rabbitmq_key_file) reach the broker layer", () =>
    Effect.gen(function*() {
      const certs = yield* certificates
      const proxy = yield* tlsProxy(certs, target, { requireClientCert: true })
      const url = amqpsUrl(proxy.port)
      const host = yield* startServer(url, { caFile: certs.ca, certFile: certs.clientCert, keyFile: certs.clientKey })
      const configured = (env: Record<string, string>) =>
        Layer.build(
          Broker.layerAmqpConfig({ reconnectSchedule: Schedule.stop, connectTimeout: "10 seconds" }).pipe(
            Layer.provide(DmsConfig.layerConfig({ dbUrl: "memory:", rabbitmqUrl: url }).pipe(
              Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
            ))
          )
        ).pipe(Effect.map(Context.get(Broker.Broker)))
      const broker = yield* configured({
        DMS_RABBITMQ_CA_FILE: certs.ca,
        DMS_RABBITMQ_CERT_FILE: certs.clientCert,
        DMS_RABBITMQ_KEY_FILE: certs.clientKey
      })
      const reply = yield* broker.request(host, { action: "status" }, { timeout: "20 seconds" })
      assert.strictEqual(reply.status, "success")
      const half = yield* Effect.flip(configured({ DMS_RABBITMQ_CA_FILE: certs.ca, DMS_RABBITMQ_CERT_FILE: certs.clientCert }))
      assert.match(half.message, /rabbitmq_cert_file and rabbitmq_key_file/)
    }), { timeout: 60_000 })

  it.scoped("unreadable TLS files, or a certificate without its key, fail the layer before connecting", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(client("amqps://u:p@127.0.0.1:1", { caFile: "/nonexistent/ca.pem" }))
      assert.match(missing.message, /cannot read the broker's CA file \/nonexistent\/ca\.pem: .*ENOENT/)
      const half = yield* Effect.flip(client("amqps://u:p@127.0.0.1:1", { certFile: "/x/cert.pem" }))
      assert.match(half.message, /needs both its certificate file and its key file/)
    }))
})
