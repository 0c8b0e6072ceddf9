/**
 * The Barbican client (against a fake Barbican over HTTP) and the FUSE driver invocations built from
 * its credentials: payload keys of existing deployments, errors that name the cause and never a
 * secret, and option values that cannot add options.
 */
import { assertSome } from "@effect/vitest/utils"
import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as Barbican from "../../src/server/Barbican.js"
import * as Mounter from "../../src/server/Mounter.js"
import { startBarbican } from "../support/barbican.js"

const token = Redacted.make("tok-123")

const creds = (overrides: Partial<Barbican.S3Credentials> = {}): Barbican.S3Credentials => ({
  accessKeyId: Redacted.make("AKIAEXAMPLE"),
  secretAccessKey: Redacted.make("very/secret+key"),
  bucket: "backups",
  region: "us-west-2",
  endpointUrl: Option.none(),
  ssl: Option.none(),
  sslVerify: Option.none(),
  signatureVersion: Option.none(),
  authVersion: Option.none(),
  sslCert: Option.none(),
  objectLock: Option.none(),
  maxPoolConnections: Option.none(),
  ...overrides
})

describe("Barbican", () => {
  it("decodes both payload spellings, with the default region", () => {
    const a = Barbican.decodePayload(JSON.stringify({ aws_access_key_id: "A", aws_secret_access_key: "S", bucket: "b1", endpoint_url: "http://rgw:8080", region: "eu-1", ssl_verify: "False" }))
    assert.isTrue(Either.isRight(a))
    const ra = Either.getOrThrow(a)
    assert.deepInclude(ra, { bucket: "b1", region: "eu-1" })
    assertSome(ra.endpointUrl, "http://rgw:8080")
    assertSome(ra.sslVerify, false)
    assert.strictEqual(Redacted.value(ra.secretAccessKey), "S")
    const b = Either.getOrThrow(
      Barbican.decodePayload(JSON.stringify({ aws_access_key_id: "A", aws_secret_access_key: "S", vault_s3_bucket: "b2", vault_s3_endpoint_url: "https://s3", vault_s3_ssl: true, max_pool_connections: "50" }))
    )
    assert.deepInclude(b, { bucket: "b2", region: "us-west-2" })
    assertSome(b.endpointUrl, "https://s3")
    assertSome(b.maxPoolConnections, 50)
    assert.notInclude(String(b.secretAccessKey), "S\"")
  })

  it("refuses payloads without keys or bucket, never echoing values", () => {
    const cases: ReadonlyArray<[string, string]> = [
      ["not json {", "not JSON"],
      ["[1]", "not a JSON object"],
      [JSON.stringify({ aws_secret_access_key: "TOPSECRET", bucket: "b" }), "lacks aws_access_key_id"],
      [JSON.stringify({ aws_access_key_id: "A", aws_secret_access_key: "TOPSECRET" }), "names no bucket"],
      [JSON.stringify({ aws_access_key_id: "A", aws_secret_access_key: "TOPSECRET", bucket: "b", ssl: "maybe" }), "wrong type"]
    ]
    for (const [text, message] of cases) {
      const result = Barbican.decodePayload(text)
      assert.isTrue(Either.isLeft(result), text)
      const reason = Either.isLeft(result) ? result.left : ""
      assert.include(reason, message)
      assert.notInclude(reason, "TOPSECRET")
    }
  })

  it.scopedLive("reads the metadata then the payload with the token; 401 and 404 name the cause", () =>
    Effect.gen(function*() {
      const fake = yield* startBarbican
      const ref = fake.addSecret("abc", "tok-123", { aws_access_key_id: "A", aws_secret_access_key: "S", bucket: "b" })
      const client = Barbican.make()
      const got = yield* client.s3Credentials(ref, token)
      assert.strictEqual(got.bucket, "b")
      assert.deepStrictEqual(fake.requests().map((r) => [r.path, r.token]), [["/v1/secrets/abc", "tok-123"], ["/v1/secrets/abc/payload", "tok-123"]])
      const unauthorized = yield* Effect.flip(client.s3Credentials(ref, Redacted.make("other")))
      assert.strictEqual(unauthorized.status, 401)
      assert.include(unauthorized.message, `Barbican secret ${ref}: Barbican answered 401 Unauthorized`)
      assert.notInclude(unauthorized.message, "other")
      const missing = yield* Effect.flip(client.s3Credentials(`${fake.url}/v1/secrets/nope`, token))
      assert.strictEqual(missing.status, 404)
      assert.include(missing.message, "no such secret")
    }))

  it.scopedLive("refuses secret_refs that are not plain http(s) URLs, outside the configured endpoint, or that redirect", () =>
    Effect.gen(function*() {
      const fake = yield* startBarbican
      const ref = fake.addSecret("abc", "tok-123", { aws_access_key_id: "A", aws_secret_access_key: "S", bucket: "b" })
      const restricted = Barbican.make({ endpoint: "https://barbican.example:9311" })
      assert.include((yield* Effect.flip(restricted.s3Credentials(ref, token))).message, "not under the configured Barbican endpoint")
      const client = Barbican.make()
      for (const bad of ["file:///etc/shadow", "not a url", `${ref}?x=1`, "http://user:pw@host/v1/secrets/x"]) {
        const e = yield* Effect.flip(client.s3Credentials(bad, token))
        assert.match(e.reason, /secret_ref/, bad)
      }
      assert.deepStrictEqual(fake.requests(), [])
      // A redirect would carry the token elsewhere: it is not followed.
      const redirector = yield* Effect.acquireRelease(
        Effect.async<http.Server>((resume) => {
          const s = http.createServer((_, res) => {
            res.writeHead(302, { location: ref })
            res.end()
          })
          s.listen(0, "127.0.0.1", () => void resume(Effect.succeed(s)))
        }),
        (s) =>
          Effect.async<void>((resume) => {
            s.close(() => resume(Effect.void))
          })
      )
      const port = (redirector.address() as AddressInfo).port
      const e = yield* Effect.flip(client.s3Credentials(`http://127.0.0.1:${port}/v1/secrets/abc`, token))
      assert.include(e.message, "HTTP 302")
      assert.deepStrictEqual(fake.requests(), [])
    }))

  it.live("an unreachable Barbican is a clear error", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(Barbican.make({ timeout: "2 seconds" }).s3Credentials("http://127.0.0.1:9/v1/secrets/x", token))
      assert.include(e.message, "Barbican is not reachable")
    }))
})

describe("FUSE driver invocations", () => {
  it("s3fs: bucket, mount point, foreground, options; the keys only in the passwd file content", () => {
    const inv = Either.getOrThrow(
      Mounter.s3Invocation("s3fs", "s3fs", creds({ endpointUrl: Option.some("http://127.0.0.1:4568"), sslVerify: Option.some(false) }), "/m/t", "/run/dms/s3/t.passwd", ["allow_other"])
    )
    assert.deepStrictEqual(inv.args, [
      "backups",
      "/m/t",
      "-f",
      "-o",
      "passwd_file=/run/dms/s3/t.passwd,fsname=s3fs:backups,subtype=s3fs,endpoint=us-west-2,url=http://127.0.0.1:4568,use_path_request_style,no_check_certificate,ssl_verify_hostname=0,allow_other"
    ])
    assert.deepStrictEqual(inv.env, {})
    assert.strictEqual(Option.map(inv.passwd, Redacted.value).pipe(Option.getOrElse(() => "")), "AKIAEXAMPLE:very/secret+key\n")
    assert.notInclude(inv.args.join(" "), "very/secret+key")
    assert.notInclude(inv.args.join(" "), "AKIAEXAMPLE")
  })

  it("s3vaultfuse: everything through its environment, nothing on the command line", () => {
    const inv = Either.getOrThrow(
      Mounter.s3Invocation("s3vaultfuse", "/usr/bin/s3vaultfuse", creds({ endpointUrl: Option.some("rgw.example:8080"), ssl: Option.some(false), signatureVersion: Option.some("s3v4") }), "/m/t", "/unused", [])
    )
    assert.deepStrictEqual(inv.args, [])
    assert.deepStrictEqual(inv.env, {
      vault_s3_bucket: "backups",
      vault_s3_region_name: "us-west-2",
      vault_data_directory: "/m/t",
      vault_s3_endpoint_url: "http://rgw.example:8080",
      vault_s3_ssl: "false",
      vault_s3_signature_version: "s3v4",
      AWS_ACCESS_KEY_ID: "AKIAEXAMPLE",
      AWS_SECRET_ACCESS_KEY: "very/secret+key"
    })
    assert.isTrue(Option.isNone(inv.passwd))
  })

  it("values that would add s3fs options are refused", () => {
    const bad: ReadonlyArray<Partial<Barbican.S3Credentials>> = [
      { bucket: "b,allow_other" },
      { bucket: "-b" },
      { region: "us,allow_other" },
      { endpointUrl: Option.some("http://h/x,allow_other") },
      { endpointUrl: Option.some("ftp://h") }
    ]
    for (const o of bad) assert.isTrue(Either.isLeft(Mounter.s3Invocation("s3fs", "s3fs", creds(o), "/m/t", "/p", [])), JSON.stringify(o))
  })
})
