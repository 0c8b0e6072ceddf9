/**
 * Telemetry end to end, against the real RabbitMQ: a client in this process and `trilio-dms server` as a
 * process, both exporting OTLP/HTTP JSON to a receiver started here; the server's /metrics scraped by a
 * real Prometheus started here and queried through its HTTP API.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as http from "node:http"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Broker from "../../src/Broker.js"
import * as Telemetry from "../../src/Telemetry.js"
import { pollUntil, rpc, serverDirs, spawnServer } from "../support/dmsServer.js"
import { deleteOnClose, RABBIT_URL, uniqueHost } from "../support/rabbit.js"

const TOKEN = `SECRET-TOKEN-${process.pid}-7f3a`

interface OtlpSpan {
  readonly service: string
  readonly name: string
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly attributes: Record<string, unknown>
}

/** An OTLP/HTTP JSON receiver on loopback: keeps every body as received, and the spans in them. */
const receiver = Effect.acquireRelease(
  Effect.async<{ url: string; bodies: Array<string>; spans: Array<OtlpSpan>; server: http.Server }>((resume) => {
    const bodies: Array<string> = []
    const spans: Array<OtlpSpan> = []
    const server = http.createServer((req, res) => {
      let body = ""
      req.on("data", (d) => (body += String(d)))
      req.on("end", () => {
        bodies.push(body)
        const json = JSON.parse(body) as {
          resourceSpans: Array<{
            resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }
            scopeSpans: Array<{ spans: Array<Record<string, unknown>> }>
          }>
        }
        for (const rs of json.resourceSpans) {
          const service = rs.resource.attributes.find((a) => a.key === "service.name")?.value.stringValue ?? ""
          for (const ss of rs.scopeSpans) {
            for (const s of ss.spans) {
              const attrs = (s.attributes ?? []) as Array<{ key: string; value: Record<string, unknown> }>
              spans.push({
                service,
                name: String(s.name),
                traceId: String(s.traceId),
                spanId: String(s.spanId),
                parentSpanId: typeof s.parentSpanId === "string" && s.parentSpanId !== "" ? s.parentSpanId : undefined,
                attributes: Object.fromEntries(attrs.map((a) => [a.key, Object.values(a.value)[0]]))
              })
            }
          }
        }
        res.writeHead(200, { "content-type": "application/json" })
        res.end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, bodies, spans, server }))
    })
  }),
  ({ server }) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
)

const freePort = Effect.async<number>((resume) => {
  const s = net.createServer()
  s.listen(0, "127.0.0.1", () => {
    const port = (s.address() as net.AddressInfo).port
    s.close(() => resume(Effect.succeed(port)))
  })
})

const getText = (url: string) =>
  Effect.tryPromise(() => fetch(url).then(async (r) => ({ status: r.status, text: await r.text() })))

/** A Prometheus of its own: loopback port, a config scraping `target` every second, storage in a temp dir. */
const prometheus = (target: string) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dms-prometheus-"))
      const port = yield* freePort
      fs.writeFileSync(
        path.join(dir, "prometheus.yml"),
        [
          "global:",
          "  scrape_interval: 1s",
          "scrape_configs:",
          "  - job_name: trilio-dms-server",
          `    static_configs: [{ targets: ["${target}"] }]`,
          ""
        ].join("\n")
      )
      const child = spawn("prometheus", [
        `--config.file=${path.join(dir, "prometheus.yml")}`,
        `--storage.tsdb.path=${path.join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`
      ], { detached: true, stdio: ["ignore", "ignore", "pipe"] })
      let log = ""
      child.stderr!.on("data", (d) => (log += String(d)))
      return { url: `http://127.0.0.1:${port}`, dir, child, log: () => log }
    }),
    ({ child, dir }) =>
      Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        try {
          process.kill(-child.pid!, "SIGKILL")
        } catch {
          resume(Effect.void)
        }
      }).pipe(Effect.timeout("10 seconds"), Effect.ignore, Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))))
  )

/** The value of a PromQL query's single sample, or undefined while it has none. */
const query = (base: string, promql: string) =>
  getText(`${base}/api/v1/query?query=${encodeURIComponent(promql)}`).pipe(
    // Not ready yet: 503 with a plain-text body.
    Effect.flatMap(({ text }) => Effect.try(() => JSON.parse(text) as { data?: { result?: Array<{ value: [number, string] }> } })),
    Effect.map((r) => {
      const v = r.data?.result?.[0]?.value[1]
      return v === undefined ? undefined : Number(v)
    }),
    Effect.orElseSucceed(() => undefined)
  )

describe("telemetry across the broker", () => {
  it.live("client and server spans share one trace; Prometheus scrapes the server's counters; no secret leaks", () =>
    Effect.scoped(Effect.gen(function*() {
      const otlp = yield* receiver
      const dirs = yield* serverDirs
      const host = uniqueHost("otel")
      const queue = Broker.queueName(host)
      yield* deleteOnClose(queue)
      const server = yield* spawnServer(
        ["--node-id", host, "--rabbitmq-url", RABBIT_URL, "--mount-base", dirs.base, "--run-dir", dirs.run, "--metrics-port", "0"],
        {
          OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
          OTEL_SERVICE_NAME: "dms-server-under-test",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test",
          OTEL_BSP_SCHEDULE_DELAY: "100",
          DMS_LOG_FORMAT: "json",
          // Port 9 (discard) refuses: the Barbican read fails fast, after its span started.
          DMS_BARBICAN_URL: "http://127.0.0.1:9/"
        }
      )
      yield* server.waitForOutput(`consuming ${queue}`)
      yield* server.waitForOutput("serving metrics on http://127.0.0.1:")
      const metricsPort = Number(/serving metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/.exec(server.output())![1])
      const metricsBase = `http://127.0.0.1:${metricsPort}`

      assert.deepStrictEqual((yield* getText(`${metricsBase}/healthz`)).status, 200)
      assert.deepStrictEqual((yield* getText(`${metricsBase}/readyz`)).status, 200)

      // The client: our own "backup" span around two requests, exported by the library's layer.
      const client = Layer.merge(
        Broker.layerAmqp({ url: Redacted.make(RABBIT_URL) }),
        Telemetry.layerTracing({ url: `${otlp.url}/v1/traces`, serviceName: "backup-tool", scheduledDelayMillis: 100 })
      )
      const [status, mount] = yield* Effect.gen(function*() {
        const broker = yield* Broker.Broker
        const status = yield* broker.request(host, { action: "status" }, { timeout: "20 seconds" })
        const mount = yield* broker.request(host, {
          action: "mount",
          keystone_token: TOKEN,
          backup_target: {
            id: "bt-otel-1",
            type: "s3",
            filesystem_export_mount_path: path.join(dirs.base, "bt-otel-1"),
            secret_ref: "http://127.0.0.1:9/v1/secrets/0f1e2d3c"
          }
        }, { timeout: "20 seconds" })
        return [status, mount] as const
      }).pipe(Effect.withSpan("backup"), Effect.provide(client), Effect.scoped)
      assert.strictEqual(status.status, "success")
      assert.strictEqual(mount.status, "error")

      // A Python client's request: no traceparent.
      const python = yield* rpc(queue, { action: "status" }, { style: "python" })
      assert.strictEqual((python.body as { status: string }).status, "success")

      const serverSpans = () => otlp.spans.filter((s) => s.service === "dms-server-under-test")
      yield* pollUntil(
        Effect.sync(() => serverSpans().filter((s) => s.name === "dms.server.request").length),
        (n) => n >= 3,
        "20 seconds"
      )
      const byName = (name: string) => otlp.spans.filter((s) => s.name === name)
      const backup = byName("backup")
      assert.strictEqual(backup.length, 1)
      const trace = backup[0]!.traceId
      assert.strictEqual(backup[0]!.parentSpanId, undefined)
      assert.strictEqual(backup[0]!.service, "backup-tool")
      const requests = byName("Broker.request")
      assert.strictEqual(requests.length, 2)
      for (const r of requests) {
        assert.strictEqual(r.traceId, trace)
        assert.strictEqual(r.parentSpanId, backup[0]!.spanId)
      }
      // Each server request span is the child of one client Broker.request, in the same trace.
      const handled = serverSpans().filter((s) => s.name === "dms.server.request")
      const continued = handled.filter((s) => s.traceId === trace)
      assert.strictEqual(continued.length, 2)
      assert.deepStrictEqual(
        continued.map((s) => s.parentSpanId).sort(),
        requests.map((r) => r.spanId).sort()
      )
      for (const s of continued) {
        const children = serverSpans().filter((c) => c.parentSpanId === s.spanId).map((c) => c.name)
        assert.includeMembers(children, ["dms.server.decode", "dms.server.reply"])
      }
      // The mount's steps: dms.server.mount under the request, Barbican's read under the mount.
      const serverMount = serverSpans().find((s) => s.name === "dms.server.mount")!
      assert.isDefined(serverMount)
      assert.strictEqual(serverMount.traceId, trace)
      assert.isTrue(continued.some((s) => s.spanId === serverMount.parentSpanId))
      const barbican = serverSpans().find((s) => s.name === "Barbican.s3Credentials")!
      assert.isDefined(barbican)
      assert.strictEqual(barbican.parentSpanId, serverMount.spanId)
      assert.strictEqual(barbican.traceId, trace)
      // The Python client's request starts a trace of its own.
      const fresh = handled.filter((s) => s.traceId !== trace)
      assert.strictEqual(fresh.length, 1)
      assert.strictEqual(fresh[0]!.parentSpanId, undefined)
      assert.notInclude(otlp.spans.map((s) => s.traceId).filter((t) => t !== fresh[0]!.traceId), fresh[0]!.traceId)

      // Prometheus scrapes /metrics and sees the three requests answered.
      const prom = yield* prometheus(`127.0.0.1:${metricsPort}`)
      const total = yield* pollUntil(query(prom.url, "sum(dms_server_requests_total)"), (v) => v === 3, "60 seconds")
      assert.strictEqual(total, 3, `Prometheus saw ${total}; its log:\n${prom.log()}`)
      const statusOk = yield* query(prom.url, `dms_server_requests_total{action="status",outcome="success"}`)
      assert.strictEqual(statusOk, 2)
      const mountErr = yield* query(prom.url, `dms_server_requests_total{action="mount",outcome="error"}`)
      assert.strictEqual(mountErr, 1)
      const consuming = yield* query(prom.url, "dms_server_consumer_active")
      assert.strictEqual(consuming, 1)
      const scraped = (yield* getText(`${metricsBase}/metrics`)).text
      assert.match(scraped, /dms_server_request_duration_seconds_bucket\{action="status",le="[^"]+"\} \d+/)

      // JSON logs: one object a line; the request's lines carry the client's trace id.
      const logLines = server.output().split("\n").filter((l) => l.startsWith("{"))
      const records = logLines.map((l) => JSON.parse(l) as Record<string, unknown>)
      assert.isTrue(records.some((r) => r.trace_id === trace && typeof r.span_id === "string"))

      // No secret in any exported span or any log line.
      assert.isAbove(otlp.bodies.length, 0)
      for (const body of otlp.bodies) assert.notInclude(body, TOKEN)
      assert.notInclude(server.output(), TOKEN)
      assert.notInclude(scraped, TOKEN)
    })), { timeout: 120_000 })
})
