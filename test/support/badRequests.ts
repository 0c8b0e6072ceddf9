/**
 * fast-check arbitraries of malformed DMS requests, built from a valid request field by field: every
 * value they produce must be refused (by the client before any I/O, by the server before any command).
 * Each carries its kind (for the report) and the field a clear error must name.
 */
import fc from "fast-check"

/** A malformed request and what is wrong with it. */
export interface Bad {
  readonly kind: string
  /** The field the error must name (`""`: the request as a whole). */
  readonly field: string
  readonly request: unknown
  /** Only a mount must refuse it (an S3 unmount needs no token). */
  readonly mountOnly?: boolean
}

type Json = Record<string, unknown>

/** A valid request of the guide's shape (NFS or S3), with the given host and mount path. */
export const validRequest = (type: "nfs" | "s3", host: string, mountPath: string, jobid = 4242): Json => ({
  context: { user_id: "user-123", tenant_id: "tenant-456", request_id: `req-${jobid}` },
  keystone_token: "gAAAAA-valid-token",
  job: { jobid, progress: 0, status: "running", action: "backup", job_details: [] },
  host,
  action: "mount",
  backup_target: type === "nfs"
    ? {
      id: "target-nfs-prod",
      type: "nfs",
      deleted: false,
      status: "available",
      filesystem_export: "192.168.1.100:/backups",
      filesystem_export_mount_path: mountPath,
      secret_ref: null,
      nfs_mount_opts: "rw,sync,hard,intr,nfsvers=4"
    }
    : {
      id: "target-s3-prod",
      type: "s3",
      deleted: false,
      status: "available",
      filesystem_export: null,
      filesystem_export_mount_path: mountPath,
      secret_ref: "https://barbican.example:9311/v1/secrets/abc-123",
      nfs_mount_opts: null
    }
})

const clone = (v: Json): Json => structuredClone(v)

/** A copy of `request` with `path` set to `value` (or deleted, for `undefined`). */
export const setAt = (request: Json, path: string, value: unknown): Json => {
  const out = clone(request)
  const keys = path.split(".")
  let node: Json = out
  for (const k of keys.slice(0, -1)) node = node[k] as Json
  const last = keys[keys.length - 1]!
  if (value === undefined) delete node[last]
  else node[last] = value
  return out
}

// ---------------------------------------------------------------------------------------------------
// Values

const huge = fc.integer({ min: 256, max: 200_000 }).chain((n) =>
  fc.constantFrom("x", "é", "🚀", "../", "%_'\\").map((unit) => unit.repeat(Math.ceil(n / unit.length)))
)

const notAString = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 3 })
)

const notAnInteger = fc.oneof(
  fc.double({ noInteger: true }),
  fc.constantFrom(Number.NaN, Infinity, -Infinity, 1.5, 12345.0001),
  fc.constantFrom("12345", "job-12345", "", " 1", "0x10", "1e3", "١٢٣"),
  fc.string({ maxLength: 20 }),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.integer({ min: 1, max: 10 }), { maxLength: 2 }),
  fc.constant({ jobid: 1 })
)

const outOfRange = fc.oneof(
  fc.constantFrom(0, -1, 2_147_483_648, Number.MAX_SAFE_INTEGER, -2_147_483_648, 2 ** 53),
  fc.integer({ min: -1_000_000_000, max: 0 }),
  fc.integer({ min: 2_147_483_648, max: Number.MAX_SAFE_INTEGER })
)

/** Host names the DMS cannot serve: too long (bytes, not characters), whitespace, control characters. */
const badHost = fc.oneof(
  fc.constantFrom("", " ", "compute 01", "compute-01\n", "\tcompute", "a\u0000b", "del\u007f", "c1\u0085", "nb\u00a0sp", "line\u2028sep"),
  fc.integer({ min: 252, max: 2000 }).map((n) => "h".repeat(n)),
  // 126 two-byte characters: 252 bytes, though only 126 characters.
  fc.integer({ min: 126, max: 400 }).map((n) => "é".repeat(n)),
  fc.integer({ min: 63, max: 200 }).map((n) => "🚀".repeat(n)),
  fc.tuple(fc.string({ minLength: 1, maxLength: 10 }), fc.constantFrom(" ", "\n", "\r", "\t", "\u0001", "\u001b", "\u3000"), fc.string({ maxLength: 10 }))
    .map(([a, ws, b]) => `${a}${ws}${b}`)
)

/** Mount paths that are relative, climb out with `..`, hold NUL, or are too long. */
const badPath = fc.oneof(
  fc.constantFrom(
    "",
    "relative/path",
    "./mounts/x",
    "~/mounts",
    "..",
    "../etc",
    "/..",
    "/var/lib/trilio/../../etc",
    "/var/lib/trilio/triliovault-mounts/..",
    "/var/lib/trilio/triliovault-mounts/../../../root/.ssh",
    "/a/b/../../../etc/shadow",
    "/mnt/x\u0000/y",
    "C:\\mounts\\x",
    "mounts/../../etc",
    " /var/lib/x"
  ),
  fc.tuple(fc.array(fc.constantFrom("a", "b", "..", "trilio", "é", "🚀"), { minLength: 1, maxLength: 6 }), fc.boolean()).map(
    ([parts, absolute]) => (absolute ? `/${[...parts, ".."].join("/")}` : parts.join("/"))
  ),
  fc.integer({ min: 4097, max: 20_000 }).map((n) => `/${"p".repeat(n)}`)
)

/** `nfs_mount_opts` that would weaken the host or smuggle in another option or flag. */
const badNfsOptions = fc.oneof(
  fc.constantFrom(
    "exec",
    "suid",
    "dev",
    "rw,exec",
    "rw,suid,dev",
    "rw, exec",
    "rw,,exec",
    "nfsvers=4,exec",
    "-o exec",
    "rw -o exec",
    "rw;exec",
    "rw\nexec",
    "rw,exec=1",
    "remount",
    "bind",
    "rbind",
    "defaults",
    "rw,context=system_u:object_r:nfs_t",
    "x-systemd.automount",
    "nfsvers=5",
    "port=-1",
    "timeo=1 0",
    "rw,sec=krb5;reboot",
    "rw,\u0000exec",
    "--bind",
    "rw,mounthost=-oexec",
    "RW,EXEC",
    "uid=0",
    "user",
    "users"
  ),
  fc.tuple(
    fc.array(fc.constantFrom("rw", "sync", "hard", "nfsvers=4"), { maxLength: 3 }),
    fc.constantFrom("exec", "suid", "dev", "defaults", "bind", "-o", "--rw", "$(id)", "`id`", "a b", "rw;", "é")
  ).chain(([ok, bad]) =>
    fc.integer({ min: 0, max: ok.length }).map((at) => [...ok.slice(0, at), bad, ...ok.slice(at)].join(","))
  )
)

/** NFS exports that are not `host:/path`, or could be read as a flag. */
const badExport = fc.oneof(
  fc.constantFrom(
    "",
    "host",
    ":/x",
    "/backups",
    "host:relative",
    "host:/a b",
    "host:/a/../b",
    "-oexec:/x",
    "--bind:/x",
    "-o:/x",
    "a;b:/x",
    "host:/x\n",
    "$(reboot):/x",
    "ho st:/x",
    "host:/x\u0000"
  ),
  fc.tuple(fc.constantFrom("-", "--", "-o"), fc.string({ maxLength: 10 })).map(([dash, s]) => `${dash}${s.replace(/[:/]/g, "")}x:/e`)
)

const badType = fc.oneof(
  fc.constantFrom("smb", "cifs", "NFS", "S3", "nfs ", " s3", "", "nfs\u200b", "ｎｆｓ", "s3fs", "local"),
  fc.string({ maxLength: 8 }).filter((s) => s !== "nfs" && s !== "s3"),
  fc.integer(),
  fc.constant(null)
)

const badStatus = fc.oneof(
  fc.constantFrom("deleted", "error", "unavailable", "creating", "", "AVAILABLE", "available "),
  fc.string({ maxLength: 12 }).filter((s) => s !== "available")
)

const notAnObject = fc.oneof(
  fc.constantFrom(null, undefined, 0, 42, "", "mount", true, [], [1, 2]),
  fc.string({ maxLength: 50 }),
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
  fc.double()
)

// ---------------------------------------------------------------------------------------------------
// Mutations

type Mutation = fc.Arbitrary<{ readonly kind: string; readonly field: string; readonly apply: (r: Json) => unknown; readonly mountOnly?: boolean }>

/** The field each mutation made by {@link at} changes. */
const fieldOf = new WeakMap<Mutation, string>()

const at = (kind: string, field: string, value: fc.Arbitrary<unknown>, mountOnly = false): Mutation => {
  const m = value.map((v) => ({ kind, field, apply: (r: Json) => setAt(r, field, v), ...(mountOnly ? { mountOnly } : {}) }))
  fieldOf.set(m, field)
  return m
}

const required = (type: "nfs" | "s3") => [
  "job",
  "job.jobid",
  "host",
  "backup_target",
  "backup_target.id",
  "backup_target.type",
  "backup_target.filesystem_export_mount_path",
  type === "nfs" ? "backup_target.filesystem_export" : "backup_target.secret_ref"
]

/** Optional fields whose value, when present, has a type, and values of the wrong one. */
const typedOptional: ReadonlyArray<readonly [string, ReadonlyArray<unknown>]> = [
  ["context", ["ctx", 1, [], true]],
  ["context.request_id", [1, true, [1], { a: 1 }]],
  ["keystone_token", [1, true, [1], { a: 1 }]],
  ["job.progress", [-1, 101, "50", Number.NaN]],
  ["job.parent_jobid", ["1", 1.5, true, [1]]],
  ["job.job_details", [1, "x", { a: 1 }, [1]]],
  ["backup_target.status", [1, true, []]]
]

/** Mutations of the backup target only (what the server also decodes on a mount). */
export const targetMutations = (type: "nfs" | "s3"): ReadonlyArray<Mutation> => [
  ...required(type).filter((f) => f.startsWith("backup_target.")).map((f) => at("missing field", f, fc.constant(undefined))),
  ...required(type).filter((f) => f.startsWith("backup_target.") && f !== "backup_target.type").map((f) =>
    at("wrong type", f, notAString)
  ),
  at("wrong type", "backup_target", notAnObject),
  at("wrong type", "backup_target.deleted", fc.constantFrom("false", 0, 1, "yes", [], {})),
  at("unknown type", "backup_target.type", badType),
  at("huge string", "backup_target.id", huge),
  at("huge string", "backup_target.filesystem_export_mount_path", huge.map((s) => `/${s}`).filter((s) => s.length > 4096 || s.includes("/../"))),
  at("empty id", "backup_target.id", fc.constant("")),
  at("path traversal / relative path", "backup_target.filesystem_export_mount_path", badPath),
  at("deleted or unavailable target", "backup_target.deleted", fc.constant(true)),
  at("deleted or unavailable target", "backup_target.status", badStatus),
  ...(type === "nfs"
    ? [
      at("nfs option injection", "backup_target.nfs_mount_opts", badNfsOptions),
      at("nfs export injection", "backup_target.filesystem_export", badExport),
      at("wrong type", "backup_target.nfs_mount_opts", fc.oneof(fc.integer(), fc.boolean(), fc.array(fc.constant("rw"))))
    ]
    : [
      at("s3 without secret_ref", "backup_target.secret_ref", fc.constantFrom(undefined, null, "")),
      fc.constant({
        kind: "s3 without keystone token",
        field: "keystone_token",
        mountOnly: true,
        apply: (r: Json) => setAt(r, "keystone_token", undefined)
      }),
      fc.constant({
        kind: "s3 without keystone token",
        field: "keystone_token",
        mountOnly: true,
        apply: (r: Json) => setAt(r, "keystone_token", null)
      })
    ])
]

/** Mutations of the rest of the request (the client refuses them; the server does not need them). */
export const requestMutations = (type: "nfs" | "s3"): ReadonlyArray<Mutation> => [
  ...required(type).filter((f) => !f.startsWith("backup_target")).map((f) => at("missing field", f, fc.constant(undefined))),
  at("wrong type", "job", notAnObject),
  at("jobid float / string / wrong type", "job.jobid", notAnInteger),
  at("jobid out of range", "job.jobid", outOfRange),
  at("wrong type", "host", notAString),
  at("host too long or illegal characters", "host", badHost),
  at("huge string", "host", huge),
  ...typedOptional.map(([f, values]) => at("wrong type", f, fc.constantFrom(...values))),
  fc.constant({ kind: "not an object", field: "", apply: () => undefined as unknown }).chain((m) =>
    notAnObject.map((v) => ({ ...m, apply: () => v }))
  ),
  fc.constant({ kind: "request as a JSON string", field: "", apply: (r: Json) => JSON.stringify(r) }),
  fc.integer({ min: 1, max: 2_147_483_647 }).map((other) => ({
    kind: "jobid alias conflict",
    field: "jobid",
    apply: (r: Json) => ({ ...r, jobid: other === (r.job as Json).jobid ? other - 1 || 2 : other })
  }))
]

/** Applies two mutations; a second one that cannot apply (its parent was replaced) is skipped. */
const both = (a: { apply: (r: Json) => unknown }, b: { apply: (r: Json) => unknown }, base: Json): unknown => {
  const first = a.apply(base)
  if (typeof first !== "object" || first === null || Array.isArray(first)) return first
  try {
    return b.apply(first as Json)
  } catch {
    return first
  }
}

/**
 * A malformed request: a valid NFS or S3 request (with `host` and `mountPath`) with one mutation, or
 * two at once (the error must name at least one of them). `fields` keeps only mutations of those
 * fields (the server's unmount reads only the target's id, type and path).
 */
export const badRequest = (
  host: string,
  mountPath: string,
  options: { readonly targetOnly?: boolean; readonly fields?: ReadonlyArray<string> } = {}
): fc.Arbitrary<Bad> =>
  fc.constantFrom<"nfs" | "s3">("nfs", "s3").chain((type) => {
    const all = options.targetOnly === true ? targetMutations(type) : [...targetMutations(type), ...requestMutations(type)]
    const fields = options.fields
    const mutations = fields === undefined ? all : all.filter((m) => fields.includes(fieldOf.get(m) ?? ""))
    const one = fc.oneof(...mutations)
    const base = validRequest(type, host, mountPath)
    return fc.oneof(
      { weight: 9, arbitrary: one.map((m) => ({ kind: m.kind, field: m.field, request: m.apply(base), ...(m.mountOnly ? { mountOnly: true } : {}) })) },
      {
        weight: 1,
        arbitrary: fc.tuple(one, one).filter(([a, b]) =>
          // A top-level jobid with the job removed is the Python client's valid shape: not a pair.
          [a, b].every((m) => m.field !== "" && m.field !== "jobid" && m.mountOnly !== true)
        ).map(([a, b]) => ({
          kind: "two fields at once",
          field: `${a.field}|${b.field}`,
          request: both(a, b, base)
        }))
      }
    )
  })

/** Whether a validation error's issue paths name the field a {@link Bad} request broke. */
export const namesField = (bad: Bad, paths: ReadonlyArray<string>): boolean => {
  if (paths.length === 0) return false
  const fields = bad.field.split("|")
  return fields.some((field) => field === "" || paths.some((p) => p === field || p.startsWith(`${field}.`) || p.startsWith(`${field}[`) || (field.startsWith(`${p}.`) && p !== "")))
}
