/**
 * The ledger over TLS, against a MariaDB of the test's own that accepts only TLS connections, with
 * certificates the test makes with openssl: verified against the right CA it works (and with a client
 * certificate); a wrong CA, or no TLS, fails with a DatabaseError that says why, and writes nothing.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { DatabaseError, ValidationError } from "../src/DmsError.js"
import * as Ledger from "../src/Ledger.js"
import { certificates, tlsMariadb } from "./support/tls.js"

const build = (url: string) => Layer.build(Ledger.layerMysql({ url })).pipe(Effect.map(Context.get(Ledger.Ledger)))

describe("Ledger over TLS (MariaDB with require_secure_transport)", () => {
  it.scopedLive("verified against the right CA (with and without a client certificate) it works; a wrong CA or no TLS fails clearly", () =>
    Effect.gen(function*() {
      const certs = yield* certificates
      const db = yield* tlsMariadb(certs)

      yield* Ledger.migrate({ url: `${db.url}?ssl_ca=${encodeURIComponent(certs.ca)}` })
      const verified = yield* build(`${db.url}?ssl_ca=${encodeURIComponent(certs.ca)}`)
      yield* verified.withTargetLock("t-tls", "compute-tls", (lease) => lease.write({ job: { jobId: 1, mounted: true } }))
      const status = yield* verified.getMountStatus(1, "t-tls", "compute-tls")
      assert.isTrue(Option.isSome(status) && status.value.mounted)

      const withCert = yield* build(
        `${db.url}?ssl_ca=${encodeURIComponent(certs.ca)}&ssl_cert=${encodeURIComponent(certs.clientCert)}&ssl_key=${encodeURIComponent(certs.clientKey)}`
      )
      assert.lengthOf(yield* withCert.getActiveMounts(), 1)

      const wrongCa = yield* Effect.flip(build(`${db.url}?ssl_ca=${encodeURIComponent(certs.otherCa)}`))
      assert.instanceOf(wrongCa, DatabaseError)
      assert.match(wrongCa.message, /certificate/i, wrongCa.message)
      assert.include(wrongCa.message, `127.0.0.1:${db.port}`)
      assert.notInclude(wrongCa.message, "dms:dms@")

      const plain = yield* Effect.flip(build(db.url))
      assert.instanceOf(plain, DatabaseError)
      assert.match(plain.message, /secure transport|SSL|TLS/i, plain.message)

      const missingFile = yield* Effect.flip(build(`${db.url}?ssl_ca=/nonexistent/ca.pem`))
      assert.instanceOf(missingFile, DatabaseError)
      assert.include(missingFile.message, "/nonexistent/ca.pem")

      // Nothing was written by the clients that failed: still the one row.
      assert.lengthOf(yield* verified.getActiveMounts(), 1)
    }), { timeout: 120_000 })

  it.effect("bad TLS parameters are a ValidationError naming the parameter, before any connection", () =>
    Effect.gen(function*() {
      for (const [query, expected] of [
        ["ssl_cert=/a.pem", "ssl_cert and ssl_key go together"],
        ["ssl_verify_cert=maybe", "ssl_verify_cert must be true or false"],
        ["sslmode=require", 'unknown URL parameter "sslmode"'],
        ["ssl_ca=", "ssl_ca is empty"]
      ] as const) {
        const error = yield* Effect.flip(build(`mysql://u:p@127.0.0.1:1/db?${query}`)).pipe(Effect.scoped)
        assert.instanceOf(error, ValidationError)
        assert.include(error.message, expected)
        assert.notInclude(error.message, "u:p@")
      }
    }))
})
