/**
 * The request and reply schemas, from the user's guide's own examples and the recorded Python messages.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as FastCheck from "effect/FastCheck"
import * as Redacted from "effect/Redacted"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Protocol from "../src/Protocol.js"
import * as GuideRequests from "./support/requests.js"

// Recorded from the existing Python DMS (copied from shared/fixtures; see fixtures/python/README.md).
const fixtures = path.resolve(import.meta.dirname, "fixtures/python")
const fixture = (name: string) => JSON.parse(fs.readFileSync(path.join(fixtures, name), "utf8"))

/** The guide's "Mount a Backup Target" request (S3), with Python's None as null. */
const guideRequest = () => ({
  context: { user_id: "user-123", tenant_id: "tenant-456", project_id: "project-789" },
  keystone_token: "your-keystone-token",
  job: {
    jobid: 12345,
    progress: 0,
    status: "running",
    completed_at: null,
    action: "backup",
    parent_jobid: null,
    job_details: [{ id: "vm-detail-1", data: { vm_id: "vm-001", vm_name: "web-server" } }]
  },
  host: "compute-01",
  action: "mount",
  backup_target: {
    id: "target-123",
    deleted: false,
    type: "s3",
    filesystem_export: null,
    filesystem_export_mount_path: "/var/lib/trilio/triliovault-mounts/xxx",
    status: "available",
    secret_ref: "http://barbican:9311/v1/secrets/uuid",
    nfs_mount_opts: null
  }
})

const guideNfs = () => GuideRequests.guideNfs()

const decode = Protocol.decodeMountRequestEither
const issuesOf = (input: unknown) => {
  const r = decode(input)
  assert.isTrue(Either.isLeft(r), "expected a validation error")
  return Either.isLeft(r) ? r.left.issues.map((i) => [i.path, i.message] as const) : []
}
const pathsOf = (input: unknown) => issuesOf(input).map(([p]) => p)

describe("Protocol.MountRequest", () => {
  it("accepts the guide's S3 and NFS requests", () => {
    for (const request of [guideRequest(), guideNfs()]) {
      const r = decode(request)
      assert.isTrue(Either.isRight(r), Either.isLeft(r) ? r.left.message : "")
    }
  })

  it("accepts the guide's backup workflow request, which omits most fields", () => {
    const r = decode({
      context: { user_id: undefined, tenant_id: undefined },
      keystone_token: undefined,
      job: { jobid: 12345, progress: 0, status: "running", action: "backup", job_details: [{ id: "vm-001", data: { vm_id: "vm-001" } }] },
      host: "compute-01",
      backup_target: {
        id: "target-123",
        type: "s3",
        filesystem_export_mount_path: "/var/lib/trilio/triliovault-mounts/xxx",
        secret_ref: "http://barbican:9311/v1/secrets/uuid"
      }
    })
    assert.isTrue(Either.isRight(r), Either.isLeft(r) ? r.left.message : "")
  })

  it("refuses a string jobid, as the guide warns, and job ids that do not fit the INT column", () => {
    const bad = guideRequest()
    ;(bad.job as { jobid: unknown }).jobid = "job-12345"
    const issues = issuesOf(bad)
    assert.deepStrictEqual(issues.map(([p]) => p), ["job.jobid"])
    assert.match(issues[0]![1], /number/)
    for (const jobid of [0, -1, 1.5, 2_147_483_648]) {
      assert.deepStrictEqual(pathsOf({ ...guideRequest(), job: { jobid } }), ["job.jobid"], String(jobid))
    }
    assert.isTrue(Either.isRight(decode({ ...guideRequest(), job: { jobid: 2_147_483_647 } })))
  })

  it("names every missing field at once", () => {
    assert.deepStrictEqual(pathsOf({}), ["job", "host", "backup_target"])
    const noTarget = guideRequest() as Record<string, unknown>
    noTarget.backup_target = { type: "s3" }
    assert.deepStrictEqual(pathsOf(noTarget).sort(), [
      "backup_target.filesystem_export_mount_path",
      "backup_target.id",
      "backup_target.secret_ref"
    ])
  })

  it("requires filesystem_export (host:/path) for NFS and secret_ref for S3", () => {
    const nfs = guideNfs()
    ;(nfs.backup_target as Record<string, unknown>).filesystem_export = null
    assert.deepStrictEqual(pathsOf(nfs), ["backup_target.filesystem_export"])
    ;(nfs.backup_target as Record<string, unknown>).filesystem_export = "/backups"
    assert.deepStrictEqual(pathsOf(nfs), ["backup_target.filesystem_export"])
    const s3 = guideRequest()
    ;(s3.backup_target as Record<string, unknown>).secret_ref = null
    assert.deepStrictEqual(pathsOf(s3), ["backup_target.secret_ref"])
  })

  it("refuses unknown target types, deleted or unavailable targets, and unsafe mount paths", () => {
    const withTarget = (patch: Record<string, unknown>) => ({
      ...guideRequest(),
      backup_target: { ...guideRequest().backup_target, ...patch }
    })
    const [typeIssue] = issuesOf(withTarget({ type: "smb" }))
    assert.deepStrictEqual(typeIssue, ["backup_target.type", 'Expected "nfs" | "s3", actual "smb"'])
    assert.deepStrictEqual(issuesOf(withTarget({ deleted: true })), [["backup_target.deleted", "the backup target is deleted"]])
    assert.deepStrictEqual(pathsOf(withTarget({ status: "error" })), ["backup_target.status"])
    for (const p of ["relative/path", "/var/lib/../../etc", "/a/\0b", ""]) {
      assert.deepStrictEqual(pathsOf(withTarget({ filesystem_export_mount_path: p })), ["backup_target.filesystem_export_mount_path"], p)
    }
    assert.deepStrictEqual(pathsOf(withTarget({ id: "x".repeat(256) })), ["backup_target.id"])
  })

  it("refuses hosts that cannot name a queue", () => {
    for (const host of ["", "compute 01", "h".repeat(252), "é".repeat(126)]) {
      assert.deepStrictEqual(pathsOf({ ...guideRequest(), host }), ["host"], host)
    }
    assert.isTrue(Either.isRight(decode({ ...guideRequest(), host: "h".repeat(251) })))
  })

  it("accepts the Python client's top-level jobid, and refuses one that disagrees with job.jobid", () => {
    const body = fixture("python-client-request-mount.json").body
    const r = decode(body)
    assert.isTrue(Either.isRight(r), Either.isLeft(r) ? r.left.message : "")
    if (Either.isRight(r)) assert.strictEqual(r.right.job.jobid, 9001)
    assert.deepStrictEqual(pathsOf({ ...guideRequest(), jobid: 1 }), ["jobid"])
  })

  it("accepts every request the Python server was sent in the fixtures (except the unknown action)", () => {
    for (const name of fs.readdirSync(fixtures).filter((f) => f.startsWith("python-server-reply-mount") || f.startsWith("python-server-reply-unmount"))) {
      const body = fixture(name).request.body
      const r = decode(body)
      if (name.includes("missing-export")) assert.deepStrictEqual(pathsOf(body), ["backup_target.filesystem_export"])
      else assert.isTrue(Either.isRight(r), `${name}: ${Either.isLeft(r) ? r.left.message : ""}`)
    }
    assert.deepStrictEqual(issuesOf(fixture("python-server-reply-unknown-action.json").request.body), [
      ["action", 'Expected "mount" | "unmount", actual "resize"']
    ])
  })

  it("holds the token as Redacted, keeps unknown fields, and encodes the method's action", () => {
    const input = { ...guideRequest(), extra: { keep: true }, action: "unmount" }
    ;(input.backup_target as Record<string, unknown>).vendor_field = 7
    const decoded = Either.getOrThrow(decode(input))
    assert.isTrue(Redacted.isRedacted(decoded.keystone_token))
    assert.notInclude(String(decoded.keystone_token), "your-keystone-token")
    assert.notInclude(JSON.stringify(decoded), "your-keystone-token")
    const wire: unknown = Protocol.encodeMountRequest(decoded, "mount")
    assert.deepStrictEqual(wire, { ...input, action: "mount" })
  })

  it("a decoded request is frozen, and handing it back is not decoded again (it cannot have changed)", () => {
    const input = guideRequest()
    const decoded = Either.getOrThrow(decode(input))
    assert.isTrue(Object.isFrozen(decoded) && Object.isFrozen(decoded.backup_target) && Object.isFrozen(decoded.job))
    assert.throws(() => {
      ;(decoded.backup_target as { filesystem_export_mount_path: string }).filesystem_export_mount_path = "/etc/../root"
    }, TypeError)
    assert.strictEqual(Either.getOrThrow(decode(decoded)), decoded)
    // The caller's own object is untouched and still decoded afresh.
    assert.isFalse(Object.isFrozen(input))
    assert.notStrictEqual(Either.getOrThrow(decode(input)), decoded)
  })

  it("freezes only what decoding built: the caller's objects in unknown fields and job details stay its own", () => {
    const shared = { counter: 0 }
    const bytes = Buffer.from("not frozen")
    const details = { anything: { nested: true } }
    const input = {
      ...guideRequest(),
      vm_info: shared,
      blob: bytes,
      job: { jobid: 7, job_details: [{ id: "d1", data: details }] }
    }
    const decoded = Either.getOrThrow(decode(input))
    assert.isTrue(Object.isFrozen(decoded.job.job_details![0]))
    for (const own of [shared, bytes, details, input.job, input.backup_target]) assert.isFalse(Object.isFrozen(own))
    shared.counter++
    details.anything.nested = false
    assert.strictEqual((decoded as unknown as { vm_info: typeof shared }).vm_info.counter, 1)
  })

  it("round-trips any valid request (property)", () => {
    const text = FastCheck.string({ minLength: 1, maxLength: 40 }).filter((s) => !/\s/.test(s) && !s.includes("\0"))
    const request = FastCheck.record({
      job: FastCheck.record({ jobid: FastCheck.integer({ min: 1, max: 2_147_483_647 }) }),
      host: text,
      keystone_token: FastCheck.option(FastCheck.string(), { nil: null }),
      backup_target: FastCheck.oneof(
        FastCheck.record({
          id: text,
          type: FastCheck.constant("nfs" as const),
          filesystem_export: FastCheck.constantFrom("10.0.0.1:/x", "nfs.example:/exports/a", "[fd00::1]:/e"),
          filesystem_export_mount_path: text.map((s) => `/var/lib/trilio/${s.replace(/\.\./g, "x")}`)
        }),
        FastCheck.record({
          id: text,
          type: FastCheck.constant("s3" as const),
          secret_ref: text,
          filesystem_export_mount_path: text.map((s) => `/m/${s.replace(/\.\./g, "x")}`)
        })
      )
    })
    FastCheck.assert(
      FastCheck.property(request, FastCheck.constantFrom("mount" as const, "unmount" as const), (req, action) => {
        const decoded = decode(req)
        if (Either.isLeft(decoded)) throw new Error(decoded.left.message)
        assert.deepStrictEqual(Protocol.encodeMountRequest(decoded.right, action), { ...req, action })
      }),
      { numRuns: 300 }
    )
  })
})

describe("Protocol.Reply", () => {
  it("decodes every reply the Python server sent", () => {
    for (const name of fs.readdirSync(fixtures).filter((f) => f.startsWith("python-server-reply-"))) {
      const { body } = fixture(name).reply
      const r = Protocol.decodeReply(body)
      assert.isTrue(Either.isRight(r), name)
      if (Either.isRight(r)) assert.deepStrictEqual(r.right, body)
    }
  })

  it("refuses a reply without a known status, and keeps extra fields", () => {
    assert.isTrue(Either.isLeft(Protocol.decodeReply({ error_msg: "x" })))
    assert.isTrue(Either.isLeft(Protocol.decodeReply({ status: "ok" })))
    assert.deepStrictEqual(Either.getOrThrow(Protocol.decodeReply({ status: "success", mounts: ["a"] })), {
      status: "success",
      mounts: ["a"]
    } as unknown as Protocol.Reply)
  })
})
