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
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Barbican from "../../src/server/Barbican.js"
import * as Mounter from "../../src/server/Mounter.js"
import { startBarbican, startRecorder } from "../support/barbican.js"

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
      const client = Barbican.make({ endpoint: fake.url })
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

  it("a secret_ref is under the endpoint only with the same scheme, host and port and the endpoint's path, after normalisation", () => {
    const endpoint = "https://barbican.example:9311/key-manager"
    const accepted = [
      "https://barbican.example:9311/key-manager/v1/secrets/abc",
      "https://BARBICAN.EXAMPLE:9311/key-manager/v1/secrets/abc",
      "https://barbican.example:9311/key-manager/v1/secrets/abc/"
    ]
    for (const ref of accepted) assert.isTrue(Either.isRight(Barbican.checkSecretRef(ref, endpoint)), ref)
    assert.isTrue(Either.isRight(Barbican.checkSecretRef("https://barbican.example:443/v1/secrets/x", "https://barbican.example")))
    const refused: ReadonlyArray<[string, string]> = [
      ["https://evil.example:9311/key-manager/v1/secrets/abc", "not under the configured Barbican endpoint"],
      ["https://barbican.example:9311@evil.example/key-manager/v1/secrets/abc", "no user info"],
      ["https://barbican.example:9311/key-manager@evil.example/v1/secrets/abc", "not under"],
      ["https://barbican.example.evil:9311/key-manager/v1/secrets/abc", "not under"],
      ["https://barbican.example:19311/key-manager/v1/secrets/abc", "not under"],
      ["https://barbican.example:9312/key-manager/v1/secrets/abc", "not under"],
      ["https://barbican.example:9311/key-manager-evil/v1/secrets/abc", "not under"],
      ["https://barbican.example:9311/key-manager/../v1/secrets/abc", "'..' segments"],
      ["https://barbican.example:9311/key-manager/%2e%2e/v1/secrets/abc", "percent-encoded"],
      ["https://barbican.example:9311/key-manager/v1%2F..%2F..%2Fadmin", "percent-encoded"],
      ["https://barbican.example:9311/key-manager\\..\\admin", "backslashes"],
      ["http://barbican.example:9311/key-manager/v1/secrets/abc", "not under"],
      ["https://barbican.example:9311/key-manager/v1/secrets/abc?x=1", "no user info, query or fragment"],
      ["file:///etc/shadow", "http(s) URL"],
      ["not a url", "not a URL"]
    ]
    for (const [ref, reason] of refused) {
      const result = Barbican.checkSecretRef(ref, endpoint)
      assert.isTrue(Either.isLeft(result), ref)
      assert.include(Either.isLeft(result) ? result.left : "", reason, ref)
    }
    const none = Barbican.checkSecretRef("https://barbican.example:9311/key-manager/v1/secrets/abc", undefined)
    assert.include(Either.isLeft(none) ? none.left : "", "no Barbican endpoint is configured")
    assert.include(Either.isLeft(none) ? none.left : "", "barbican_url")
  })

  it.scopedLive("the token never leaves for a foreign URL: each attack is refused and nothing is fetched, from Barbican or elsewhere", () =>
    Effect.gen(function*() {
      const fake = yield* startBarbican
      const elsewhere = yield* startRecorder
      const ref = fake.addSecret("abc", "tok-123", { aws_access_key_id: "A", aws_secret_access_key: "S", bucket: "b" })
      const fakeHost = new URL(fake.url).host
      const evilHost = new URL(elsewhere.url).host
      const attacks: ReadonlyArray<[string, Barbican.Options, string, string]> = [
        ["no endpoint configured", {}, ref, "no Barbican endpoint is configured"],
        ["another host", { endpoint: fake.url }, `${elsewhere.url}/v1/secrets/abc`, "not under"],
        ["user info naming Barbican", { endpoint: fake.url }, `http://${fakeHost}@${evilHost}/v1/secrets/abc`, "no user info"],
        ["a look-alike host", { endpoint: fake.url }, `http://127.0.0.1.evil.example:${new URL(fake.url).port}/v1/secrets/abc`, "not under"],
        ["'..' out of the endpoint's path", { endpoint: `${fake.url}/key-manager` }, `${fake.url}/key-manager/../v1/secrets/abc`, "'..'"],
        ["encoded '..' out of the endpoint's path", { endpoint: `${fake.url}/key-manager` }, `${fake.url}/key-manager/%2e%2e/v1/secrets/abc`, "percent-encoded"],
        ["http where https is configured", { endpoint: `https://${fakeHost}` }, ref, "not under"]
      ]
      for (const [name, options, secretRef, reason] of attacks) {
        const e = yield* Effect.flip(Barbican.make(options).s3Credentials(secretRef, token))
        assert.include(e.message, reason, name)
        assert.notInclude(e.message, "tok-123", name)
      }
      assert.deepStrictEqual(fake.requests(), [], "Barbican was asked nothing")
      assert.deepStrictEqual(elsewhere.requests(), [], "nothing went elsewhere")
    }))

  it.scopedLive("a redirect from the Barbican endpoint is not followed: refused, and its target receives nothing", () =>
    Effect.gen(function*() {
      const elsewhere = yield* startRecorder
      const redirector = yield* startRecorder
      redirector.answer((res) => {
        res.writeHead(302, { location: `${elsewhere.url}/v1/secrets/abc` })
        res.end()
      })
      const e = yield* Effect.flip(Barbican.make({ endpoint: redirector.url }).s3Credentials(`${redirector.url}/v1/secrets/abc`, token))
      assert.include(e.message, "HTTP 302 (a redirect)")
      assert.include(e.message, "redirects are not followed")
      assert.strictEqual(e.status, 302)
      assert.deepStrictEqual(redirector.requests(), ["GET /v1/secrets/abc"], "one request, to the endpoint")
      assert.deepStrictEqual(elsewhere.requests(), [], "the redirect's target received nothing")
    }))

  it.live("an unreachable Barbican is a clear error", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(
        Barbican.make({ endpoint: "http://127.0.0.1:9", timeout: "2 seconds" }).s3Credentials("http://127.0.0.1:9/v1/secrets/x", token)
      )
      assert.include(e.message, "Barbican is not reachable")
    }))

  it.scoped("the layer warns at start when no endpoint is configured and when the endpoint is plain http", () =>
    Effect.gen(function*() {
      const logged: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => void logged.push(`${logLevel.label} ${String(message)}`))
      const start = (options: Barbican.Options) =>
        Layer.build(Barbican.layer(options)).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      yield* start({})
      yield* start({ endpoint: "http://barbican.example:9311" })
      yield* start({ endpoint: "https://barbican.example:9311" })
      assert.deepStrictEqual(logged, [
        "WARN no Barbican endpoint is configured (barbican_url): S3 mount requests will be refused",
        "WARN the Barbican endpoint http://barbican.example:9311/ is plain http: the Keystone token travels unencrypted",
        "INFO S3 credentials are read only from the Barbican endpoint https://barbican.example:9311/"
      ])
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
