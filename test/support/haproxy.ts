/**
 * HAProxy (Debian's package) in front of the test Galera cluster, as deployments run it: a TCP proxy on
 * loopback, on a port of its own, balancing connections over the three nodes round robin (the worst
 * case for a client: consecutive connections land on different nodes). Stopped with the scope.
 */
import * as Effect from "effect/Effect"
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { GALERA_NODES } from "./galera.js"

const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

const accepts = (port: number) =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect(port, "127.0.0.1")
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => resume(Effect.succeed(false)))
  })

/** Starts HAProxy; its port. */
export const haproxy = Effect.gen(function*() {
  const port = yield* freePort
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dms-haproxy-"))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  const config = path.join(dir, "haproxy.cfg")
  fs.writeFileSync(
    config,
    [
      "global",
      "  maxconn 512",
      "defaults",
      "  mode tcp",
      "  timeout connect 2s",
      "  timeout client 1h",
      "  timeout server 1h",
      "listen galera",
      `  bind 127.0.0.1:${port}`,
      "  balance roundrobin",
      "  option tcpka",
      ...GALERA_NODES.map((node, i) => `  server db${i + 1} ${node} check inter 1s`),
      ""
    ].join("\n")
  )
  yield* Effect.acquireRelease(
    Effect.sync(() => spawn("/usr/sbin/haproxy", ["-db", "-f", config], { stdio: "ignore" })),
    (child) =>
      Effect.async<void>((resume) => {
        if (child.exitCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        child.kill("SIGTERM")
      })
  )
  for (let i = 0; i < 100 && !(yield* accepts(port)); i++) yield* Effect.sleep("50 millis")
  if (!(yield* accepts(port))) return yield* Effect.die(new Error(`HAProxy did not listen on 127.0.0.1:${port}`))
  return port
})
