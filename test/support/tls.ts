/**
 * TLS for the tests: a certificate authority and certificates made with `openssl` in a temporary
 * directory (a second, unrelated CA for "wrong CA" cases), and a MariaDB of the test's own that accepts
 * only TLS connections, on loopback, on a port of its own; everything removed with the scope.
 */
import * as Effect from "effect/Effect"
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as tls from "node:tls"
import { promisify } from "node:util"

const run = promisify(execFile)

/** PEM files of one CA, a server certificate it signed (for 127.0.0.1 and localhost), and a client certificate. */
export interface Certificates {
  readonly dir: string
  readonly ca: string
  readonly serverCert: string
  readonly serverKey: string
  readonly clientCert: string
  readonly clientKey: string
  /** A CA that signed none of these. */
  readonly otherCa: string
}

const openssl = (dir: string, ...args: ReadonlyArray<string>) =>
  Effect.tryPromise({
    try: () => run("openssl", args, { cwd: dir }),
    catch: (cause) => new Error(`openssl ${args[0]} failed: ${String(cause)}`)
  })

const selfSignedCa = (dir: string, name: string) =>
  openssl(dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.pem`)

const signed = (dir: string, name: string, extensions: string) =>
  Effect.gen(function*() {
    yield* openssl(dir, "req", "-newkey", "rsa:2048", "-nodes", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.csr`)
    fs.writeFileSync(path.join(dir, `${name}.ext`), extensions)
    yield* openssl(
      dir,
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.pem`
    )
  })

/** A fresh CA with server and client certificates, removed with the scope. */
export const certificates = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dms-tls-"))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  fs.chmodSync(dir, 0o755)
  yield* selfSignedCa(dir, "ca")
  yield* selfSignedCa(dir, "other-ca")
  yield* signed(dir, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
  yield* signed(dir, "client", "extendedKeyUsage=clientAuth\n")
  for (const f of fs.readdirSync(dir)) fs.chmodSync(path.join(dir, f), 0o644)
  const at = (f: string) => path.join(dir, f)
  return {
    dir,
    ca: at("ca.pem"),
    serverCert: at("server.pem"),
    serverKey: at("server.key"),
    clientCert: at("client.pem"),
    clientKey: at("client.key"),
    otherCa: at("other-ca.pem")
  } satisfies Certificates
})

/** A free TCP port on loopback. */
export const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

/**
 * A MariaDB that refuses connections without TLS (`require_secure_transport`), serving `certs`'
 * server certificate; user `dms`/`dms` on 127.0.0.1 and a database `dms_tls`. Stopped and removed with
 * the scope.
 */
export const tlsMariadb = (certs: Certificates) =>
  Effect.gen(function*() {
    const port = yield* freePort
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dms-mariadb-tls-"))),
      (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
    )
    fs.chmodSync(dir, 0o755) // mariadbd runs as mysql
    const socket = path.join(dir, "mysqld.sock")
    yield* Effect.tryPromise({
      try: () =>
        run("mariadb-install-db", [
          "--no-defaults",
          "--user=mysql",
          `--datadir=${dir}/data`,
          "--auth-root-authentication-method=socket",
          "--skip-test-db"
        ]),
      catch: (cause) => new Error(`mariadb-install-db failed: ${String(cause)}`)
    })
    yield* Effect.tryPromise(() => run("chown", ["-R", "mysql:mysql", dir]))
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn("/usr/sbin/mariadbd", [
          "--no-defaults",
          "--user=mysql",
          `--datadir=${dir}/data`,
          `--socket=${socket}`,
          `--pid-file=${dir}/mysqld.pid`,
          `--log-error=${dir}/error.log`,
          `--port=${port}`,
          "--bind-address=127.0.0.1",
          "--skip-name-resolve",
          "--innodb-buffer-pool-size=32M",
          `--ssl-ca=${certs.ca}`,
          `--ssl-cert=${certs.serverCert}`,
          `--ssl-key=${certs.serverKey}`,
          "--require-secure-transport=ON"
        ], { stdio: "ignore" })
      ),
      (c) =>
        Effect.async<void>((resume) => {
          if (c.exitCode !== null || c.signalCode !== null) return resume(Effect.void)
          c.once("exit", () => resume(Effect.void))
          c.kill("SIGTERM")
        })
    )
    const admin = (sql: string) => run("mariadb", ["--no-defaults", "--protocol=socket", "-S", socket, "-u", "root", "-e", sql])
    for (let i = 0;; i++) {
      const ready = yield* Effect.promise(() => admin("SELECT 1").then(() => true, () => false))
      if (ready) break
      if (child.exitCode !== null || i > 300) {
        const log = fs.existsSync(`${dir}/error.log`) ? fs.readFileSync(`${dir}/error.log`, "utf8").slice(-2000) : ""
        return yield* Effect.fail(new Error(`the TLS MariaDB did not start:\n${log}`))
      }
      yield* Effect.sleep("100 millis")
    }
    yield* Effect.tryPromise(() =>
      admin(`CREATE USER 'dms'@'127.0.0.1' IDENTIFIED BY 'dms' REQUIRE SSL;
        GRANT ALL PRIVILEGES ON *.* TO 'dms'@'127.0.0.1'; CREATE DATABASE dms_tls;`)
    )
    return { port, url: `mysql://dms:dms@127.0.0.1:${port}/dms_tls` }
  })

/** A TLS endpoint in front of a plain TCP one, counting what it served. */
export interface TlsProxy {
  readonly port: number
  /** TLS handshakes that succeeded (connections piped to the target). */
  readonly secured: () => number
  /** Handshakes that failed (e.g. no client certificate when one is required). */
  readonly rejected: () => number
}

/**
 * An `amqps://` endpoint on loopback: TLS from the first byte with `certs`' server certificate, the
 * decrypted stream piped to `target` (the test's RabbitMQ). `requireClientCert`: the client must present
 * a certificate signed by `certs`' CA. Closed with the scope.
 */
export const tlsProxy = (certs: Certificates, target: { readonly host: string; readonly port: number }, options: { readonly requireClientCert?: boolean } = {}) =>
  Effect.acquireRelease(
    Effect.async<{ readonly server: tls.Server; readonly sockets: Set<net.Socket>; readonly proxy: TlsProxy }>((resume) => {
      let secured = 0
      let rejected = 0
      const sockets = new Set<net.Socket>()
      const server = tls.createServer({
        key: fs.readFileSync(certs.serverKey),
        cert: fs.readFileSync(certs.serverCert),
        ca: fs.readFileSync(certs.ca),
        requestCert: options.requireClientCert === true,
        rejectUnauthorized: options.requireClientCert === true
      }, (socket) => {
        secured++
        const upstream = net.connect(target.port, target.host)
        for (const s of [socket, upstream]) {
          sockets.add(s)
          s.on("error", () => {})
          s.on("close", () => {
            sockets.delete(s)
            socket.destroy()
            upstream.destroy()
          })
        }
        socket.pipe(upstream)
        upstream.pipe(socket)
      })
      server.on("tlsClientError", () => void rejected++)
      server.listen(0, "127.0.0.1", () =>
        resume(Effect.succeed({
          server,
          sockets,
          proxy: { port: (server.address() as net.AddressInfo).port, secured: () => secured, rejected: () => rejected }
        })))
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const s of sockets) s.destroy()
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ proxy }) => proxy))
