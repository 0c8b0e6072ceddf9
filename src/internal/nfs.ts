/**
 * The NFS checks shared by the client (before any I/O) and the server (before any command): an
 * allow-list of mount options (`exec`, `suid`, `dev` refused; nothing that could add another option or
 * be read as a flag), and exports that cannot be read as options.
 */
import * as Either from "effect/Either"

/** A value for an error message: quoted, and cut short (a request may carry megabytes). */
export const show = (s: string, max = 80): string =>
  s.length <= max ? JSON.stringify(s) : `${JSON.stringify(s.slice(0, max))}… (${s.length} characters)`

const NFS_FLAGS = new Set([
  "rw",
  "ro",
  "sync",
  "async",
  "hard",
  "soft",
  "softerr",
  "intr",
  "nointr",
  "lock",
  "nolock",
  "atime",
  "noatime",
  "diratime",
  "nodiratime",
  "relatime",
  "norelatime",
  "strictatime",
  "nostrictatime",
  "lazytime",
  "nolazytime",
  "noexec",
  "nosuid",
  "nodev",
  "ac",
  "noac",
  "cto",
  "nocto",
  "fsc",
  "nofsc",
  "sharecache",
  "nosharecache",
  "resvport",
  "noresvport",
  "rdirplus",
  "nordirplus",
  "acl",
  "noacl",
  "tcp",
  "udp",
  "fg",
  "softreval",
  "nosoftreval",
  "_netdev"
])

const UINT = /^[0-9]{1,10}$/
const PROTO = /^(tcp|udp|tcp6|udp6|rdma|rdma6)$/
const NFS_VALUES: Record<string, RegExp> = {
  proto: PROTO,
  mountproto: PROTO,
  port: UINT,
  mountport: UINT,
  nfsvers: /^(2|3|4|4\.0|4\.1|4\.2)$/,
  vers: /^(2|3|4|4\.0|4\.1|4\.2)$/,
  minorversion: /^[0-2]$/,
  timeo: UINT,
  retrans: UINT,
  retry: UINT,
  rsize: UINT,
  wsize: UINT,
  bsize: UINT,
  acregmin: UINT,
  acregmax: UINT,
  acdirmin: UINT,
  acdirmax: UINT,
  actimeo: UINT,
  nconnect: UINT,
  max_connect: UINT,
  namlen: UINT,
  sec: /^(sys|none|krb5|krb5i|krb5p)(:(sys|none|krb5|krb5i|krb5p))*$/,
  lookupcache: /^(all|none|pos|positive)$/,
  local_lock: /^(none|all|flock|posix)$/,
  clientaddr: /^[0-9A-Fa-f:.]{2,45}$/,
  mountaddr: /^[0-9A-Fa-f:.]{2,45}$/,
  mounthost: /^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$/,
  xprtsec: /^(none|tls|mtls)$/
}

/** Options that would make the export dangerous to the host. */
const REFUSED = new Set(["exec", "suid", "dev", "defaults"])

/** Added to every NFS mount; `noexec` unless the server's configuration allows exec. */
const ENFORCED = ["nosuid", "nodev", "noexec"] as const

/**
 * Checks `nfs_mount_opts` (comma-separated) against the allow-list: the options to pass, with
 * `nosuid,nodev,noexec` always added (`noexec` not when `allowExec`), or why they are refused.
 */
export const checkOptions = (
  raw: string | null | undefined,
  options: { readonly allowExec?: boolean | undefined } = {}
): Either.Either<string, string> => {
  const tokens = (raw ?? "").split(",").map((t) => t.trim()).filter((t) => t !== "")
  const out: Array<string> = []
  for (const token of tokens) {
    if (!/^[a-z_][a-z0-9_]*(=[A-Za-z0-9._:-]+)?$/.test(token)) {
      return Either.left(`${show(token)} is not a mount option`)
    }
    const eq = token.indexOf("=")
    const name = eq < 0 ? token : token.slice(0, eq)
    const value = eq < 0 ? undefined : token.slice(eq + 1)
    if (REFUSED.has(name)) {
      return Either.left(`option ${show(name)} is not allowed (exec, suid and dev are refused)`)
    }
    const allowed = value === undefined ? NFS_FLAGS.has(name) : NFS_VALUES[name]?.test(value) === true
    if (!allowed) {
      return Either.left(
        value !== undefined && NFS_VALUES[name] !== undefined
          ? `bad value for ${name}: ${show(value)}`
          : `option ${show(name)} is not allowed`
      )
    }
    if (!out.includes(token)) out.push(token)
  }
  for (const o of ENFORCED) if (!out.includes(o) && !(o === "noexec" && options.allowExec === true)) out.push(o)
  return Either.right(out.join(","))
}

const HOST_NAME = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/

/**
 * Checks an NFS export (`host:/path`, `[v6]:/path`): a host name or address (never starting with `-`,
 * so it cannot be read as an option) and an absolute path without whitespace or control characters.
 */
export const checkExport = (exp: string): Either.Either<string, string> => {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^:/[\]]+):(\/.*)$/.exec(exp)
  const bad = Either.left(`expected host:/path, got ${show(exp)}`)
  if (m === null) return bad
  const host = m[1]!
  const p = m[2]!
  if (!host.startsWith("[") && !HOST_NAME.test(host)) return bad
  // eslint-disable-next-line no-control-regex
  if (/[\s\u0000-\u001f\u007f]/.test(p) || p.split("/").includes("..") || p.length > 1024) return bad
  return Either.right(exp)
}
