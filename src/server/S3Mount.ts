/**
 * S3 mounts: credentials from Barbican, handed to the FUSE driver — `s3fs -f` through a 0600 passwd
 * file (removed once mounted), or `s3vaultfuse` through its environment — never on a command line, never
 * in a log. The daemon runs in its own session; `<run dir>/s3/<target>.pid` names it. Mounted means: the
 * mount shows, a lookup through it reaches the bucket with the keys ("no such file" for a name that does
 * not exist), and the same mount still shows after that answer. A mount whose daemon died is detached
 * and mounted again.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import type * as Barbican from "./Barbican.js"
import * as FuseDaemon from "./FuseDaemon.js"
import * as MountInfo from "./MountInfo.js"
import type { Mounted } from "./Mounter.js"
import { mountFailure, MounterError } from "./MounterError.js"
import * as MountState from "./MountState.js"
import type * as MountSteps from "./MountSteps.js"
import type * as ServerConfig from "./ServerConfig.js"

/**
 * An S3 target to mount.
 *
 * @since 0.1.0
 * @category models
 */
export interface Spec {
  readonly type: "s3"
  readonly targetId: string
  readonly path: string
  readonly secretRef: string
  readonly token: Redacted.Redacted<string>
}

const BUCKET = /^[A-Za-z0-9][A-Za-z0-9._-]{1,254}$/
const REGION = /^[A-Za-z0-9_-]{1,64}$/

/**
 * The mount-table source an s3fs mount of `bucket` shows (set with `-o fsname=`).
 *
 * @since 0.1.0
 * @category s3
 */
export const s3fsSource = (bucket: string): string => `s3fs:${bucket}`

/**
 * How to start a FUSE driver for a bucket: argv and environment, plus the passwd file content for
 * s3fs. Values that reach `-o` are checked so they cannot add options.
 *
 * @since 0.1.0
 * @category s3
 */
export const s3Invocation = (
  driver: ServerConfig.S3Driver,
  command: string,
  creds: Barbican.S3Credentials,
  mountPoint: string,
  passwdFile: string,
  extraOptions: ReadonlyArray<string>
): Either.Either<
  { readonly command: string; readonly args: ReadonlyArray<string>; readonly env: Readonly<Record<string, string>>; readonly passwd: Option.Option<Redacted.Redacted<string>> },
  string
> => {
  if (!BUCKET.test(creds.bucket)) return Either.left(`the secret names an invalid bucket ${JSON.stringify(creds.bucket)}`)
  if (!REGION.test(creds.region)) return Either.left(`the secret names an invalid region ${JSON.stringify(creds.region)}`)
  let endpoint: string | undefined
  if (Option.isSome(creds.endpointUrl)) {
    const raw = creds.endpointUrl.value
    const withScheme = /^[a-z]+:\/\//i.test(raw) ? raw : `${Option.getOrElse(creds.ssl, () => true) ? "https" : "http"}://${raw}`
    let url: URL
    try {
      url = new URL(withScheme)
    } catch {
      return Either.left("the secret's endpoint_url is not a URL")
    }
    if ((url.protocol !== "http:" && url.protocol !== "https:") || url.username !== "" || url.password !== "") {
      return Either.left("the secret's endpoint_url must be a plain http(s) URL")
    }
    endpoint = url.href.replace(/\/+$/, "")
    if (/[\s,]/.test(endpoint)) return Either.left("the secret's endpoint_url must not contain commas or spaces")
  }
  if (driver === "s3vaultfuse") {
    const env: Record<string, string> = {
      vault_s3_bucket: creds.bucket,
      vault_s3_region_name: creds.region,
      vault_data_directory: mountPoint,
      AWS_ACCESS_KEY_ID: Redacted.value(creds.accessKeyId),
      AWS_SECRET_ACCESS_KEY: Redacted.value(creds.secretAccessKey)
    }
    if (endpoint !== undefined) env.vault_s3_endpoint_url = endpoint
    if (Option.isSome(creds.ssl)) env.vault_s3_ssl = String(creds.ssl.value)
    if (Option.isSome(creds.sslVerify)) env.vault_s3_ssl_verify = String(creds.sslVerify.value)
    if (Option.isSome(creds.signatureVersion)) env.vault_s3_signature_version = creds.signatureVersion.value
    if (Option.isSome(creds.authVersion)) env.vault_s3_auth_version = creds.authVersion.value
    return Either.right({ command, args: [], env, passwd: Option.none() })
  }
  const options = [
    `passwd_file=${passwdFile}`,
    `fsname=${s3fsSource(creds.bucket)}`,
    "subtype=s3fs",
    `endpoint=${creds.region}`
  ]
  if (endpoint !== undefined) options.push(`url=${endpoint}`, "use_path_request_style")
  if (Option.contains(creds.sslVerify, false)) options.push("no_check_certificate", "ssl_verify_hostname=0")
  const sig = Option.getOrUndefined(creds.signatureVersion)?.toLowerCase()
  if (sig === "s3v4" || sig === "v4") options.push("sigv4")
  else if (sig === "s3" || sig === "s3v2" || sig === "v2") options.push("sigv2")
  options.push(...extraOptions)
  if (options.some((o) => o.includes(",") || /\s/.test(o))) return Either.left("an s3fs option would contain a comma or a space")
  return Either.right({
    command,
    args: [creds.bucket, mountPoint, "-f", "-o", options.join(",")],
    env: {},
    passwd: Option.some(Redacted.make(`${Redacted.value(creds.accessKeyId)}:${Redacted.value(creds.secretAccessKey)}\n`))
  })
}

/**
 * Options of {@link make}.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  readonly barbican: Barbican.Service
  readonly driver: ServerConfig.S3Driver
  /** The FUSE driver's command. */
  readonly command: string
  readonly s3fsOptions: ReadonlyArray<string>
}

const scrub = (text: string, creds: Barbican.S3Credentials) =>
  [Redacted.value(creds.accessKeyId), Redacted.value(creds.secretAccessKey)]
    .filter((s) => s.length > 0)
    .reduce((t, s) => t.split(s).join("***"), text)

const logTail = (file: string, creds: Barbican.S3Credentials) =>
  Effect.promise(() => fs.readFile(file, "utf8").catch(() => "")).pipe(
    Effect.map((t) => {
      const lines = scrub(t, creds).split("\n").map((l) => l.trim()).filter((l) => l !== "")
      const important = lines.filter((l) => /\[(CRT|ERR)\]|error|fail|invalid|denied/i.test(l))
      return (important.length > 0 ? important : lines).slice(-3).join(" / ")
    })
  )

/**
 * The S3 mount over the shared steps.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (steps: MountSteps.Steps, options: Options) => {
  const { barbican, driver } = options
  const s3Command = options.command
  const { confinement, daemons, mountTable, runner, stopGrace, store, umountCommand } = steps

  /** Whether an s3 mount entry is the one expected for `bucket`. */
  const s3SourceMatches = (entry: MountInfo.Entry, bucket: string | undefined, daemon: FuseDaemon.Found | undefined) => {
    if (!MountInfo.isFuse(entry.fsType)) return false
    if (driver === "s3fs" && bucket !== undefined && entry.source === s3fsSource(bucket)) return true
    // A mount made without our fsname (another server, or s3vaultfuse): its daemon tells the bucket.
    return daemon !== undefined && bucket !== undefined && daemon.bucket === bucket
  }

  /**
   * An S3 mount serves the secret it was made from: a FUSE mount at the path is reused, or detached when
   * its daemon died, only when its state file records this very secret_ref. Another secret_ref may name
   * another tenant's bucket; an older state file, or none, does not tell, so that mount is refused too.
   */
  const refuseOtherSecret = (requested: string, mountPoint: string, state: MountState.State | undefined, secretRef: string) => {
    const recorded = state !== undefined && state.mount_path === mountPoint ? state.secret_ref : undefined
    if (recorded === secretRef) return Effect.void
    return mountFailure(requested)(
      recorded === undefined
        ? `${requested} is already mounted, and this server has no record of the secret_ref it was mounted from; refusing to hand it to this request: unmount it first`
        : `${requested} is already mounted from another secret_ref (${recorded}); refusing to hand it to this request's secret_ref ${secretRef}: unmount it first`,
      true
    )
  }

  return (spec: Spec, deadline: number): Effect.Effect<Mounted, MounterError> =>
    Effect.gen(function*() {
      const fail = mountFailure(spec.path)
      // Refused before anything else: a secret_ref that is not Barbican's never gets near the token.
      const checked = barbican.check(spec.secretRef)
      if (Either.isLeft(checked)) return yield* fail(`cannot mount ${spec.path}: ${checked.left}`, true)
      const secretRef = checked.right
      const origin = (creds: Barbican.S3Credentials): MountState.S3Origin => ({
        secret_ref: secretRef,
        bucket: creds.bucket,
        endpoint: Option.getOrNull(creds.endpointUrl)
      })
      return yield* steps.atMountPoint("mount", spec.path, spec.targetId, (mountPoint, current) =>
        Effect.gen(function*() {
          const f = store.files(spec.targetId)
          if (current !== undefined) {
            yield* steps.refuseOtherTarget(spec.path, mountPoint, spec.targetId)
            const state = yield* store.read(spec.targetId)
            if (MountInfo.isFuse(current.fsType)) yield* refuseOtherSecret(spec.path, mountPoint, state, secretRef)
            const known = yield* daemons.daemonFor(spec.targetId)
            const knownAlive = known !== undefined && (yield* FuseDaemon.isAlive(known.pid)) && (yield* FuseDaemon.servesPath(known.pid, mountPoint))
            if (
              state !== undefined && state.mount_path === mountPoint && state.source === current.source &&
              MountInfo.isFuse(current.fsType) && knownAlive
            ) {
              return { alreadyMounted: true, mountPoint, message: `Already mounted at ${spec.path}` }
            }
            // Not ours, or its daemon is gone: find out what it is.
            const found = knownAlive && known !== undefined ? { pid: known.pid, bucket: undefined } : yield* FuseDaemon.find(mountPoint)
            if (found === undefined && MountInfo.isFuse(current.fsType)) {
              // A FUSE mount whose daemon died ("Transport endpoint is not connected"): detach it and mount again.
              yield* Effect.logWarning("the S3 mount's FUSE daemon is gone; detaching the dead mount and mounting again").pipe(
                Effect.annotateLogs({ mountPath: mountPoint })
              )
              const timeout = yield* steps.timeLeft("mount", spec.path, deadline, "detaching a dead FUSE mount")
              yield* runner.run({ command: umountCommand, args: ["-l", mountPoint], timeout }).pipe(
                Effect.catchAll((e) => fail(`cannot detach the dead FUSE mount at ${spec.path}: ${e.message}`, false, e))
              )
            } else {
              const creds = yield* barbican.s3Credentials(spec.secretRef, spec.token, {
                timeout: yield* steps.timeLeft("mount", spec.path, deadline, "reading the credentials")
              }).pipe(Effect.mapError((e) => new MounterError({ operation: "mount", path: spec.path, reason: e.message, cause: e })))
              if (s3SourceMatches(current, creds.bucket, found)) {
                if (found !== undefined) {
                  daemons.set(spec.targetId, { pid: found.pid, mountPoint })
                  yield* MountState.writeAtomic(f.pid, `${found.pid}\n`, 0o644).pipe(Effect.ignore)
                }
                yield* steps.recordIfMissing(spec.targetId, "s3", current, spec.path, mountPoint, origin(creds))
                return { alreadyMounted: true, mountPoint, message: `Already mounted at ${spec.path}` }
              }
              return yield* fail(
                `${spec.path} is already mounted from ${current.source} (${current.fsType}), not bucket ${creds.bucket}; refusing to mount over it`,
                true
              )
            }
          }
          yield* steps.refuseOtherPath(spec.targetId, spec.path, mountPoint)
          const creds = yield* barbican.s3Credentials(spec.secretRef, spec.token, {
            timeout: yield* steps.timeLeft("mount", spec.path, deadline, "reading the credentials")
          }).pipe(Effect.mapError((e) => new MounterError({ operation: "mount", path: spec.path, reason: e.message, cause: e })))
          const invocation = s3Invocation(driver, s3Command, creds, mountPoint, f.passwd, options.s3fsOptions ?? [])
          if (Either.isLeft(invocation)) return yield* fail(invocation.left, true)
          const inv = invocation.right
          yield* confinement.ensureDir("mount", spec.path, mountPoint)
          // The driver is given the path (its command line names the mount it serves), so the directory
          // is only checked again here, as late as possible.
          yield* steps.betweenCheckAndUse("mount", mountPoint)
          yield* Effect.scoped(confinement.pin("mount", spec.path, mountPoint))
          const timeout = yield* steps.timeLeft("mount", spec.path, deadline, "starting the FUSE driver")
          return yield* Effect.gen(function*() {
            if (Option.isSome(inv.passwd)) {
              yield* MountState.removeFile(f.passwd)
              yield* MountState.writeAtomic(f.passwd, Redacted.value(inv.passwd.value), 0o600).pipe(
                Effect.catchAll((e) => fail(`cannot write the s3fs passwd file: ${e.message}`, false, e))
              )
            }
            const daemon = yield* runner.spawnDaemon({ command: inv.command, args: inv.args, env: inv.env, logFile: f.log }).pipe(
              Effect.catchAll((e) => fail(`cannot start the S3 driver: ${e.message}`, false, e))
            )
            daemons.set(spec.targetId, { pid: daemon.pid, mountPoint, handle: daemon })
            yield* MountState.writeAtomic(f.pid, `${daemon.pid}\n`, 0o644).pipe(Effect.ignore)
            // Ready when the mount shows; failed when the daemon exits first or time runs out.
            const ready = yield* mountTable("mount", spec.path).pipe(
              Effect.map((t) => MountInfo.at(t, mountPoint)),
              Effect.flatMap((entry) =>
                entry !== undefined
                  ? Effect.succeed(Option.some(entry))
                  : daemon.hasExited()
                  ? Effect.succeed(Option.none())
                  : Effect.fail("pending" as const)
              ),
              Effect.retry(Schedule.spaced(Duration.millis(50)).pipe(Schedule.upTo(timeout))),
              Effect.catchAll(() => Effect.succeed(Option.none<MountInfo.Entry>()))
            )
            const driverFailed = (what: string) =>
              Effect.flatMap(logTail(f.log, creds), (tail) =>
                fail(`the S3 driver ${path.basename(inv.command)} could not mount ${spec.path}: ${what}${tail === "" ? "" : `: ${tail}`}`))
            if (Option.isNone(ready)) {
              return yield* daemon.hasExited()
                ? driverFailed("it exited")
                : driverFailed(`the mount did not show within ${Duration.toMillis(timeout)} ms`)
            }
            const entry = ready.value
            if (!MountInfo.isFuse(entry.fsType) || (driver === "s3fs" && entry.source !== s3fsSource(creds.bucket))) {
              return yield* fail(`${spec.path} shows ${entry.source} (${entry.fsType}) instead of the S3 bucket ${creds.bucket}`)
            }
            // The mount shows before the driver has checked the bucket and the keys (s3fs does that in
            // FUSE's init, after the mount; when the check fails it unmounts and exits). So: one lookup
            // of a name that does not exist, in a time-bounded child process. It waits for that check,
            // and goes to the bucket with the keys: a driver that serves it answers "no such file";
            // refused keys give another error. The answer counts only if the same mount is still there
            // afterwards: a driver that gave up unmounts before it exits, and a lookup that lands in
            // that gap answers from the bare directory underneath ("no such file" too).
            const probeTimeout = yield* steps.timeLeft("mount", spec.path, deadline, "checking the new mount")
            const probe = yield* Effect.either(
              runner.run({ command: "stat", args: ["-c", "%F", path.join(mountPoint, `.dms-mount-check-${randomUUID()}`)], timeout: probeTimeout })
            )
            const answered = Either.isRight(probe) || (probe.left.reason === "exit" && /No such file or directory/.test(probe.left.stderr))
            const after = yield* Effect.map(mountTable("mount", spec.path), (t) => MountInfo.at(t, mountPoint))
            const stillMounted = after !== undefined && after.id === entry.id
            if (!answered || !stillMounted || daemon.hasExited()) {
              // A driver that gave up exits right away: let it, so its log says why.
              yield* Effect.ignore(Effect.timeout(daemon.exited, stopGrace))
              return yield* driverFailed(
                daemon.hasExited()
                  ? "it exited"
                  : !stillMounted
                  ? "the mount went away"
                  : `the new mount does not answer (${Either.isLeft(probe) ? probe.left.message : "?"})`
              )
            }
            yield* MountState.removeFile(f.passwd)
            yield* steps.record(spec.targetId, "s3", entry, spec.path, mountPoint, origin(creds))
            return { alreadyMounted: false, mountPoint, message: `S3 target mounted successfully at ${spec.path}` }
          }).pipe(
            // On any failure after the start: no daemon, no credentials, no half mount left behind.
            Effect.onError(() =>
              Effect.gen(function*() {
                yield* MountState.removeFile(f.passwd)
                const d = daemons.get(spec.targetId)
                if (d !== undefined) {
                  daemons.delete(spec.targetId)
                  const still = MountInfo.at(yield* Effect.orElseSucceed(mountTable("mount", spec.path), () => []), mountPoint)
                  if (still !== undefined) {
                    yield* runner.run({ command: umountCommand, args: ["-l", mountPoint], timeout: Duration.seconds(10) }).pipe(Effect.ignore)
                  }
                  FuseDaemon.signal(d.pid, "SIGTERM")
                  if (!(yield* FuseDaemon.waitGone(d.pid, stopGrace))) FuseDaemon.signal(d.pid, "SIGKILL")
                  yield* FuseDaemon.waitGone(d.pid, stopGrace)
                }
                yield* MountState.removeFile(f.pid)
                yield* steps.removeEmptyDir(mountPoint)
              })
            )
          )
        }))
    })
}
