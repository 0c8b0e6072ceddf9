/**
 * The `trilio-dms` command as a user has it: this checkout packed with `npm pack` and installed from the
 * tarball into a temporary project; its `trilio-dms` executable spawned as a process, against the real
 * MariaDB and RabbitMQ and a model DMS server on the host's queue (and, once, the real server via
 * `trilio-dms server`). Checks the package's contents and entry points, the tables, `--json`, and the
 * exit code of every outcome.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import {
  cleanEnv,
  cli,
  demoHome,
  exec,
  InstalledCli,
  InstalledCliLive,
  modelServer,
  mountPointsUnder,
  parseJson,
  ROOT,
  spawnLongRunning,
  tempDir
} from "../support/cli.js"
import type { Result } from "../support/cli.js"
import { TestDatabase, TestDatabaseEmpty } from "../support/mysql.js"
import { deleteOnClose, RABBIT_URL, uniqueHost } from "../support/rabbit.js"
import { guideNfs } from "../support/requests.js"

const COMMANDS = ["mount", "unmount", "status", "mounts", "history", "soft-delete", "migrate", "purge", "reconcile", "server", "doctor", "demo"]

const show = (r: Result) => `exit ${r.code} after ${r.ms} ms\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`

const expectCode = (r: Result, code: number) => assert.strictEqual(r.code, code, show(r))

const uniqueTarget = (label: string) => `cli-${label}-${randomBytes(4).toString("hex")}`

/** The flags of a mount/unmount of an NFS target. */
const nfsFlags = (job: number, target: string, host: string) => [
  "--job-id",
  String(job),
  "--target-id",
  target,
  "--host",
  host,
  "--nfs-export",
  "10.0.0.5:/backups",
  "--mount-path",
  `/var/lib/trilio/triliovault-mounts/${target}`
]

/** A HOME of its own, and the environment of a user with the real services configured. */
const liveEnv = Effect.gen(function*() {
  const db = yield* TestDatabase
  const home = yield* tempDir("dms-cli-home-")
  return cleanEnv(home, { DMS_DB_URL: db.url, DMS_RABBITMQ_URL: RABBIT_URL, DMS_REQUEST_TIMEOUT: "30" })
})

/** The tests' database, prepared as a user prepares one: created empty, then `trilio-dms migrate`. */
const MigratedDatabaseLive = Layer.scopedDiscard(Effect.gen(function*() {
  const db = yield* TestDatabase
  const migrated = yield* cli(["migrate", "--db-url", db.url], cleanEnv(yield* tempDir("dms-cli-home-")))
  expectCode(migrated, 0)
})).pipe(Layer.provideMerge(Layer.mergeAll(InstalledCliLive, TestDatabaseEmpty)))

// The tests spawn processes and mostly wait for them: run them side by side.
describe.concurrent("trilio-dms (packed, installed)", () => {
  layer(MigratedDatabaseLive, { excludeTestServices: true, timeout: "180 seconds" })((it) => {
    it.scoped("the package: built JavaScript and types, every entry point importable and typed, the licence, the demo runs", () =>
      Effect.gen(function*() {
        const { app, files } = yield* InstalledCli
        const shipped = ["dist/index.js", "dist/index.d.ts", "dist/promise.js", "dist/promise.d.ts", "dist/testing.js", "dist/testing.d.ts"]
        for (const f of [...shipped, "dist/cli/main.js", "schema.sql", "README.md", "LICENSE"]) {
          assert.include(files, `package/${f}`)
        }
        assert.strictEqual(
          fs.readFileSync(path.join(app, "node_modules", "trilio-dms", "LICENSE"), "utf8"),
          fs.readFileSync(path.join(ROOT, "LICENSE"), "utf8")
        )
        assert.match(fs.readFileSync(path.join(ROOT, "LICENSE"), "utf8"), /Apache License\s+Version 2\.0, January 2004/)
        assert.isFalse(files.some((f) => f.startsWith("package/test/")), "tests are not shipped")
        const manifest = JSON.parse(fs.readFileSync(path.join(app, "node_modules", "trilio-dms", "package.json"), "utf8"))
        assert.deepStrictEqual(manifest.bin, { "trilio-dms": "./dist/cli/main.js" })
        assert.strictEqual(manifest.license, "Apache-2.0")
        assert.match(fs.readFileSync(path.join(app, "node_modules", "trilio-dms", "dist", "cli", "main.js"), "utf8"), /^#!\/usr\/bin\/env node\n/)

        // Imports, as a user's ES module does; the testing entry runs without the package's devDependencies.
        const nfs = (action: string) =>
          JSON.stringify({ ...guideNfs({ jobid: 7, host: "compute-01", mountPath: "/var/lib/trilio/triliovault-mounts/t" }), action })
        fs.writeFileSync(
          path.join(app, "check.mjs"),
          [
            `import * as dms from "trilio-dms"`,
            `import { DMSClient, MountContext, RequestValidationException } from "trilio-dms/promise"`,
            `import * as testing from "trilio-dms/testing"`,
            `const invalid = await new DMSClient({ dbUrl: "memory:", rabbitmqUrl: "memory:" }).mount({}).catch((e) => e)`,
            `const { client, server } = testing.TestDms.client()`,
            `await client.mount(${nfs("mount")})`,
            `await client.unmount(${nfs("unmount")})`,
            `await client.close()`,
            `console.log(JSON.stringify({ modules: Object.keys(dms).sort(), client: typeof DMSClient, context: typeof MountContext,`,
            `  invalid: invalid instanceof RequestValidationException, testing: Object.keys(testing).sort(),`,
            `  transitions: server.transitions.map((t) => t.to) }))`
          ].join("\n")
        )
        const env = cleanEnv(yield* tempDir("dms-cli-home-"))
        const imported = yield* exec(process.execPath, ["check.mjs"], { cwd: app, env })
        expectCode(imported, 0)
        assert.deepStrictEqual(JSON.parse(imported.stdout), {
          modules: ["Broker", "Dms", "DmsConfig", "DmsError", "Ledger", "Mount", "Protocol", "Reconcile", "Telemetry"],
          client: "function",
          context: "function",
          invalid: true,
          testing: ["FakeDmsServer", "TestDms"],
          transitions: ["mounted", "unmounted"]
        })

        // Types: the package's .d.ts files serve a TypeScript user (NodeNext resolution through exports).
        fs.writeFileSync(
          path.join(app, "check.ts"),
          [
            `import { Effect } from "effect"`,
            `import { Dms, Mount } from "trilio-dms"`,
            `import { DMSClient, type MountResponse } from "trilio-dms/promise"`,
            `import { FakeDmsServer, TestDms } from "trilio-dms/testing"`,
            `export const program: Effect.Effect<string, unknown> = Mount.withMount({}, (m) => Effect.succeed(m.mountPath))`,
            `  .pipe(Effect.provide(Dms.layerConfig()))`,
            `export const test: Effect.Effect<ReadonlyArray<FakeDmsServer.Transition>, unknown> = FakeDmsServer.FakeDmsServer.pipe(`,
            `  Effect.tap(() => Mount.mount({})), Effect.map((server) => server.transitions), Effect.provide(TestDms.layer({ timeout: 5 })))`,
            `export const hold: FakeDmsServer.Hold = TestDms.client().server.hold("mount")`,
            `// @ts-expect-error: the fake's own modules are not exported`,
            `import type * as Fake from "trilio-dms/testing/FakeDmsServer.js"`,
            `export const response: Promise<MountResponse> = new DMSClient().mount({})`,
            `// @ts-expect-error: internal modules are not exported`,
            `import type * as Urls from "trilio-dms/internal/urls.js"`
          ].join("\n")
        )
        fs.writeFileSync(
          path.join(app, "tsconfig.json"),
          JSON.stringify({
            compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, skipLibCheck: true, types: [] },
            files: ["check.ts"]
          })
        )
        const typed = yield* exec(process.execPath, [path.join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", "."], { cwd: app, env })
        expectCode(typed, 0)

        // `npx trilio-dms demo` from the installed package.
        const home = yield* demoHome
        const demo = yield* cli(["demo"], cleanEnv(home))
        expectCode(demo, 0)
        assert.include(demo.stdout, "summary: 3 jobs, 1 physical mount, 1 physical unmount")
        assert.deepStrictEqual(mountPointsUnder(home), [])
      }), 120_000)

    it.scoped("--help works for the command and every subcommand with no environment", () =>
      Effect.gen(function*() {
        const env = cleanEnv(yield* tempDir("dms-cli-home-"))
        const results = yield* Effect.forEach(
          [[], ...COMMANDS.map((c) => [c])],
          (cmd) => Effect.map(cli([...cmd, "--help"], env), (r) => [cmd, r] as const),
          { concurrency: 4 }
        )
        for (const [cmd, r] of results) {
          expectCode(r, 0)
          assert.include(r.stdout, "USAGE", show(r))
          assert.notMatch(r.stdout, /\x1b\[/, "no colour codes when stdout is not a terminal")
          if (cmd.length > 0) assert.include(r.stdout, `$ ${cmd[0]}`, show(r))
        }
        const root = results[0]![1].stdout
        for (const c of COMMANDS) assert.include(root, `- ${c}`)
        assert.include(root, "Exit codes: 0 success")
        const mountHelp = results[1]![1].stdout
        for (const flag of ["--job-id", "--target-id", "--target-type", "--host", "--mount-path", "--nfs-export", "--nfs-opts", "--secret-ref", "--token", "--request", "--json"]) {
          assert.include(mountHelp, flag)
        }
      }), 120_000)

    it.scoped("bad input exits 2 and names the field, before any configuration or connection", () =>
      Effect.gen(function*() {
        const home = yield* tempDir("dms-cli-home-")
        const env = cleanEnv(home)
        const badRequest = path.join(home, "request.json")
        fs.writeFileSync(badRequest, JSON.stringify({ ...guideNfs(), job: { jobid: "job-12345" } }))
        const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
          [["mount", "--job-id", "abc"], "--job-id: expected an integer"],
          [["mount", "--job-id", "7", "--target-id", "t", "--target-type", "smb"], "--target-type: expected s3 or nfs"],
          [["mount", ...nfsFlags(7, "t", "h").slice(0, -1), "relative/path"], "--mount-path (backup_target.filesystem_export_mount_path): Expected an absolute path"],
          [["mount", "--job-id", "0", "--target-id", "t", "--mount-path", "/m"], "--target-type (backup_target.type): is missing"],
          [["unmount", "--request", badRequest], `${badRequest}: job.jobid: Expected number, actual "job-12345"`],
          [["mounts", "--older-than", "soon"], "--older-than: expected a duration"],
          [["reconcile", "--host", ""], "--host: Expected a non-empty host name"],
          [["reconcile", "--host", "two words", "--repair"], "--host: Expected a host name without whitespace"],
          [["status", "--target-id", "t"], "--job-id"],
          [["status", "--job-id", "1", "--target-id", "t"], "DMS_DB_URL"]
        ]
        const results = yield* Effect.forEach(cases, ([args]) => cli(args, env), { concurrency: 4 })
        results.forEach((r, i) => {
          expectCode(r, 2)
          assert.include(r.stderr, cases[i]![1], show(r))
          assert.notInclude(r.stderr, "    at ", "no stack trace")
        })
        // --json: the error as JSON on stdout, nothing else.
        const json = yield* cli(["mount", ...nfsFlags(7, "t", "h").slice(0, -1), "relative", "--json"], env)
        expectCode(json, 2)
        assert.deepInclude(parseJson(json), { status: "error", error: "ValidationError", exit_code: 2 })
        assert.strictEqual(json.stderr, "")
      }), 120_000)

    it.scoped("mount, status, mounts, history, unmount, soft-delete against MariaDB, RabbitMQ and a server", () =>
      Effect.gen(function*() {
        const db = yield* TestDatabase
        const env = yield* liveEnv
        const host = uniqueHost("cli")
        const target = uniqueTarget("flow")
        const server = yield* modelServer(host)

        const migrated = yield* cli(["migrate"], env)
        expectCode(migrated, 0)
        assert.strictEqual(
          migrated.stdout,
          `ledger on ${db.url} already current: backup_target_mount_ledger, backup_target_mount_lock have every column and index\n`
        )
        const tables = yield* db.query<Array<Record<string, string>>>("SHOW TABLES")
        assert.sameMembers(tables.map((t) => Object.values(t)[0]!), ["backup_target_mount_ledger", "backup_target_mount_lock"])

        const first = yield* cli(["mount", ...nfsFlags(101, target, host)], env)
        expectCode(first, 0)
        assert.match(first.stdout, new RegExp(`^mounted ${target} on ${host} at /var/lib/trilio/triliovault-mounts/${target} for job 101 \\(physical mount; `))
        assert.include(first.stdout, "server: NFS target mounted successfully")

        // The second job from a guide-format request file; a flag overrides the file's host.
        const file = path.join(env.HOME!, "request.json")
        const guide = guideNfs({ jobid: 102, host: "not-this-host", mountPath: `/var/lib/trilio/triliovault-mounts/${target}` })
        fs.writeFileSync(file, JSON.stringify({ ...guide, backup_target: { ...guide.backup_target, id: target } }))
        const second = yield* cli(["mount", "--request", file, "--host", host, "--json"], env)
        expectCode(second, 0)
        assert.deepInclude(parseJson(second), {
          status: "success",
          error_msg: null,
          mount_path: `/var/lib/trilio/triliovault-mounts/${target}`,
          reused_existing: true,
          physically_mounted: false,
          job_id: 102,
          backup_target_id: target,
          host
        })
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted"])
        assert.deepStrictEqual(server.received.map((r) => [r.action, (r.body.job as { jobid: number }).jobid]), [["mount", 101], ["mount", 102]])

        // Read-only queries, run side by side.
        const [status, statusJson, none, mounts, mountsJson, old, oldJson] = yield* Effect.all([
          cli(["status", "--job-id", "101", "--target-id", target], env),
          cli(["status", "--job-id", "101", "--target-id", target, "--host", host, "--json"], env),
          cli(["status", "--job-id", "999", "--target-id", target, "--json"], env),
          cli(["mounts", "--host", host], env),
          cli(["mounts", "--target-id", target, "--json"], env),
          cli(["mounts", "--host", host, "--older-than", "1h"], env),
          cli(["mounts", "--host", host, "--older-than", "24h", "--json"], env)
        ], { concurrency: 3 })
        expectCode(status, 0)
        const [header, row] = status.stdout.trimEnd().split("\n")
        assert.match(header!, /^ID\s+JOB\s+TARGET\s+HOST\s+MOUNTED\s+CREATED \(UTC\)\s+UPDATED \(UTC\)$/)
        assert.strictEqual(row!.indexOf(host), header!.indexOf("HOST"), "columns are aligned")
        assert.strictEqual(row!.indexOf("yes"), header!.indexOf("MOUNTED"), "columns are aligned")
        assert.deepInclude(parseJson(statusJson), { jobid: 101, backup_target_id: target, host, mounted: true, deleted: false })
        expectCode(none, 0)
        assert.isNull(parseJson(none))
        expectCode(mounts, 0)
        assert.include(mounts.stdout, `2 active mount(s) on ${host}`)
        assert.match(mounts.stdout, /ID\s+JOB\s+TARGET\s+HOST\s+MOUNTED\s+CREATED \(UTC\)\s+UPDATED \(UTC\)\s+AGE/)
        assert.deepStrictEqual(parseJson(mountsJson).map((m: any) => m.jobid), [101, 102])
        expectCode(old, 0)
        assert.strictEqual(old.stdout, `no active mounts on ${host} older than 1h\n`)
        assert.deepStrictEqual(parseJson(oldJson), [])

        const released = yield* cli(["unmount", ...nfsFlags(101, target, host), "--json"], env)
        expectCode(released, 0)
        assert.deepInclude(parseJson(released), { status: "success", unmounted: false, active_mounts_remaining: 1 })
        assert.isTrue(server.isMounted(host, `/var/lib/trilio/triliovault-mounts/${target}`))
        const again = yield* cli(["unmount", ...nfsFlags(101, target, host)], env)
        expectCode(again, 1)
        assert.include(again.stderr, "No active mount found for this job")

        const refused = yield* cli(["soft-delete", "--job-id", "102", "--target-id", target], env)
        expectCode(refused, 1)
        assert.include(refused.stderr, "pass --force to unmount and delete")
        const deleted = yield* cli(["soft-delete", "--job-id", "101", "--target-id", target], env)
        expectCode(deleted, 0)
        assert.match(deleted.stdout, new RegExp(`^soft-deleted ledger row \\d+ \\(job 101, target ${target}, host ${host}\\)`))
        const forced = yield* cli(["soft-delete", "--job-id", "102", "--target-id", target, "--force", "--json"], env)
        expectCode(forced, 0)
        assert.deepInclude(parseJson(forced), { status: "success", deleted: true, jobid: 102 })
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])

        const [history, historyJson, limited, badLimit, after] = yield* Effect.all([
          cli(["history", "--target-id", target], env),
          cli(["history", "--target-id", target, "--json"], env),
          cli(["history", "--target-id", target, "--limit", "1", "--json"], env),
          cli(["history", "--target-id", target, "--limit", "0"], env),
          cli(["mounts", "--host", host], env)
        ], { concurrency: 3 })
        expectCode(history, 0)
        const lines = history.stdout.trimEnd().split("\n")
        assert.match(lines[0]!, /^ID\s+JOB\s+TARGET\s+HOST\s+MOUNTED\s+DELETED\s+CREATED \(UTC\)\s+UPDATED \(UTC\)\s+DELETED AT \(UTC\)\s+VERSION$/)
        assert.lengthOf(lines, 3)
        for (const line of lines.slice(1)) assert.match(line, new RegExp(`${target}\\s+${host}\\s+no\\s+yes\\s`))
        assert.deepStrictEqual(parseJson(historyJson).map((h: any) => [h.jobid, h.mounted, h.deleted]), [[102, false, true], [101, false, true]])
        assert.lengthOf(parseJson(limited), 1)
        expectCode(badLimit, 2)
        assert.include(badLimit.stderr, "limit")
        assert.strictEqual(after.stdout, `no active mounts on ${host}\n`)
      }), 120_000)

    it.scoped("migrate creates or upgrades the tables and says what it did; a client on an unprepared database says to run it", () =>
      Effect.gen(function*() {
        const db = yield* Effect.map(Layer.build(TestDatabaseEmpty), (c) => Context.get(c, TestDatabase))
        const home = yield* tempDir("dms-cli-home-")
        const env = cleanEnv(home, { DMS_DB_URL: db.url })
        const unprepared = yield* cli(["mounts"], env)
        expectCode(unprepared, 4)
        assert.include(unprepared.stderr, `do not exist in database ${db.name}: run \`trilio-dms migrate\``)
        assert.deepStrictEqual(yield* db.query("SHOW TABLES"), [])

        const created = yield* cli(["migrate"], env)
        expectCode(created, 0)
        assert.strictEqual(
          created.stdout,
          `migrated the ledger on ${db.url}:\n  backup_target_mount_ledger: created\n  backup_target_mount_lock: created\n`
        )
        const current = yield* cli(["migrate", "--json"], env)
        expectCode(current, 0)
        assert.deepStrictEqual(parseJson(current), {
          status: "success",
          db_url: db.url,
          changed: false,
          tables: [
            { table: "backup_target_mount_ledger", action: "current", added_columns: [], added_indexes: [] },
            { table: "backup_target_mount_lock", action: "current", added_columns: [], added_indexes: [] }
          ]
        })

        // An earlier version's lock table; --db-url instead of the environment.
        yield* db.query("ALTER TABLE backup_target_mount_lock DROP COLUMN pending_owner, DROP COLUMN last_write")
        const outdated = yield* cli(["mounts", "--json"], env)
        expectCode(outdated, 4)
        assert.include(parseJson(outdated).error_msg, "is outdated (lacks the column(s) pending_owner, last_write)")
        const upgraded = yield* cli(["migrate", "--db-url", db.url, "--json"], cleanEnv(home))
        expectCode(upgraded, 0)
        assert.deepInclude(parseJson(upgraded), { changed: true })
        assert.deepStrictEqual(parseJson(upgraded).tables[1], {
          table: "backup_target_mount_lock",
          action: "upgraded",
          added_columns: ["pending_owner", "last_write"],
          added_indexes: []
        })
        const text = yield* cli(["migrate", "--db-url", db.url], cleanEnv(home))
        assert.include(text.stdout, "already current")
        expectCode(yield* cli(["mounts"], env), 0)
        const bad = yield* cli(["migrate", "--db-url", "postgres://db/x"], cleanEnv(home))
        expectCode(bad, 2)
        assert.include(bad.stderr, "invalid config: dbUrl")
      }), 120_000)

    it.scoped("purge: --dry-run counts, then old rows that hold nothing are deleted in batches; a bad --older-than exits 2", () =>
      Effect.gen(function*() {
        const db = yield* Effect.map(Layer.build(TestDatabaseEmpty), (c) => Context.get(c, TestDatabase))
        const env = cleanEnv(yield* tempDir("dms-cli-home-"), { DMS_DB_URL: db.url })
        expectCode(yield* cli(["migrate"], env), 0)
        // Two rows 100 days old (one holds nothing, one is a holder's) and a recent one that holds nothing.
        yield* db.query(
          `INSERT INTO backup_target_mount_ledger (created_at, updated_at, deleted, version, backup_target_id, jobid, host, mounted) VALUES
            (UTC_TIMESTAMP() - INTERVAL 100 DAY, UTC_TIMESTAMP() - INTERVAL 100 DAY, 0, 'x', 't-old', 1, 'h', 0),
            (UTC_TIMESTAMP() - INTERVAL 100 DAY, UTC_TIMESTAMP() - INTERVAL 100 DAY, 0, 'x', 't-old', 2, 'h', 1),
            (UTC_TIMESTAMP(), UTC_TIMESTAMP(), 0, 'x', 't-new', 3, 'h', 0)`
        )
        const dry = yield* cli(["purge", "--older-than", "90d", "--dry-run", "--json"], env)
        expectCode(dry, 0)
        assert.deepInclude(JSON.parse(dry.stdout), { status: "success", dry_run: true, deleted: 1 })
        const done = yield* cli(["purge", "--older-than", "90d", "--batch", "1"], env)
        expectCode(done, 0)
        assert.include(done.stdout, "deleted 1 ledger row(s) older than 90d that held nothing")
        const left = yield* db.query<Array<{ jobid: number }>>("SELECT jobid FROM backup_target_mount_ledger ORDER BY jobid")
        assert.deepStrictEqual(left.map((r) => r.jobid), [2, 3])
        const bad = yield* cli(["purge", "--older-than", "soon"], env)
        expectCode(bad, 2)
        assert.include(bad.stderr, "--older-than")
      }), 120_000)

    it.scoped("a repeated mount is a no-op: mount, mount again, one unmount leaves nothing mounted or held", () =>
      Effect.gen(function*() {
        const env = yield* liveEnv
        const host = uniqueHost("cli-retry")
        const target = uniqueTarget("retry")
        const server = yield* modelServer(host)
        expectCode(yield* cli(["migrate"], env), 0)
        expectCode(yield* cli(["mount", ...nfsFlags(301, target, host)], env), 0)
        const again = yield* cli(["mount", ...nfsFlags(301, target, host), "--json"], env)
        expectCode(again, 0)
        assert.deepInclude(parseJson(again), { status: "success", reused_existing: true, physically_mounted: false })
        const released = yield* cli(["unmount", ...nfsFlags(301, target, host), "--json"], env)
        expectCode(released, 0)
        assert.deepInclude(parseJson(released), { status: "success", unmounted: true, active_mounts_remaining: 0 })
        assert.deepStrictEqual(server.transitions.map((t) => t.to), ["mounted", "unmounted"])
        const after = yield* cli(["mounts", "--host", host], env)
        assert.strictEqual(after.stdout, `no active mounts on ${host}\n`)
      }), 120_000)

    it.scoped("reconcile: drift exits 1 (table or --json), --repair repairs it, agreement exits 0", () =>
      Effect.gen(function*() {
        const env = yield* liveEnv
        const host = uniqueHost("cli-reconcile")
        const server = yield* modelServer(host)
        const stale = uniqueTarget("stale")
        const orphan = uniqueTarget("orphan")
        const at = (t: string) => `/var/lib/trilio/triliovault-mounts/${t}`
        expectCode(yield* cli(["mount", ...nfsFlags(1, stale, host)], env), 0)
        // A reboot took the stale target; the orphan was mounted with no ledger record.
        server.reboot(host)
        server.mounts.set(host, new Map([[at(orphan), orphan]]))

        const [report, reportJson] = yield* Effect.all([
          cli(["reconcile", "--host", host], env),
          cli(["reconcile", "--host", host, "--json"], env)
        ], { concurrency: 2 })
        expectCode(report, 1)
        const lines = report.stdout.trimEnd().split("\n")
        assert.strictEqual(lines[0], `reconcile of ${host}: the server lists 1 mount(s); the ledger has 1 held target(s) and 0 pending mark(s)`)
        assert.match(lines[1]!, /^KIND\s+TARGET\s+PATH\s+JOBS\s+FOUND\s+ACTION$/)
        assert.match(lines[2]!, new RegExp(`^stale\\s+${stale}\\s+${at(stale)}\\s+1\\s+the host does not have it mounted\\s+-$`))
        assert.match(lines[3]!, new RegExp(`^orphan\\s+${orphan}\\s+${at(orphan)}\\s+-\\s+mounted from \\?, no job holds it\\s+-$`))
        assert.strictEqual(lines[4], "summary: 1 stale, 1 orphan(s), 0 pending; nothing changed (run with --repair to repair)")
        expectCode(reportJson, 1)
        const parsed = parseJson(reportJson)
        assert.deepInclude(parsed, { status: "success", host, status_supported: true, repair: false, clean: false, exit_code: 1 })
        assert.deepStrictEqual(parsed.stale.map((x: any) => [x.backup_target_id, x.job_ids, x.action]), [[stale, [1], "none"]])
        assert.deepStrictEqual(parsed.orphans.map((x: any) => [x.backup_target_id, x.mount_path]), [[orphan, at(orphan)]])
        assert.strictEqual(reportJson.stderr, "")
        assert.deepStrictEqual(server.received.filter((r) => r.action !== "status").map((r) => r.action), ["mount"], "nothing changed")

        const repaired = yield* cli(["reconcile", "--host", host, "--repair", "--json"], env)
        expectCode(repaired, 1) // the stale target is only marked: the host still lacks it
        const r = parseJson(repaired)
        assert.deepStrictEqual(r.stale.map((x: any) => x.action), ["marked"])
        assert.deepStrictEqual(r.orphans.map((x: any) => x.action), ["unmounted"])
        assert.deepInclude(r.counts, { repaired: 1, marked: 1, remaining: 0 })
        assert.isFalse(server.isMounted(host, at(orphan)))

        // The holder's release remounts first (the mark), then unmounts as the last holder.
        expectCode(yield* cli(["unmount", ...nfsFlags(1, stale, host)], env), 0)
        assert.deepStrictEqual(server.received.filter((x) => x.targetId === stale).map((x) => x.action), ["mount", "mount", "unmount"])
        const agreed = yield* cli(["reconcile", "--host", host, "--repair"], env)
        expectCode(agreed, 0)
        assert.strictEqual(agreed.stdout, `reconcile of ${host}: the server lists 0 mount(s); the ledger has 0 held target(s) and 0 pending mark(s)\nthe ledger and the host agree\n`)

        // A server without status (as the Python one): said so, exit 0 when nothing else is found.
        const python = uniqueHost("cli-reconcile-py")
        const old = yield* modelServer(python)
        old.supportsStatus = false
        const unseen = yield* cli(["reconcile", "--host", python], env)
        expectCode(unseen, 0)
        assert.include(unseen.stdout, `the server does not answer status (Unknown action: status), so stale and orphan mounts cannot be detected`)
        assert.include(unseen.stderr, "does not answer status")

        const lonely = uniqueHost("cli-reconcile-none")
        const none = yield* cli(["reconcile", "--host", lonely], env)
        expectCode(none, 5)
        assert.include(none.stderr, `no DMS server for host ${lonely}`)
      }), 120_000)

    it.scoped("a server's error exits 1, a reply that never comes exits 3, no server for the host exits 5 fast", () =>
      Effect.gen(function*() {
        const env = yield* liveEnv
        const host = uniqueHost("cli-errors")
        const server = yield* modelServer(host)
        const target = uniqueTarget("errors")

        server.failNext = { action: "mount", message: "Mount failed: Permission denied" }
        const refused = yield* cli(["mount", ...nfsFlags(1, target, host), "--token", "tok-secret-4711", "--verbose"], env)
        expectCode(refused, 1)
        // A token given as a flag is accepted with a warning (it is visible in the process list), never echoed.
        assert.match(refused.stderr, /^trilio-dms: warning: --token puts a secret on the command line: .*\n/)
        assert.isTrue(refused.stderr.endsWith("\ntrilio-dms: the DMS server refused: Mount failed: Permission denied\n"), refused.stderr)
        assert.notInclude(refused.stderr, "tok-secret-4711")
        server.failNext = { action: "mount", message: "Mount failed: Permission denied" }
        const refusedJson = yield* cli(["mount", ...nfsFlags(1, target, host), "--json"], env)
        expectCode(refusedJson, 1)
        assert.deepStrictEqual(parseJson(refusedJson), {
          status: "error",
          error: "MountError",
          error_msg: "the DMS server refused: Mount failed: Permission denied",
          exit_code: 1
        })

        // The server holds requests for this target and never answers.
        const held = uniqueTarget("held")
        server.gate = (r) => (r.targetId === held ? Effect.never : Effect.void)
        const timedOut = yield* cli(["mount", ...nfsFlags(2, held, host), "--timeout", "1"], env)
        expectCode(timedOut, 3)
        assert.match(timedOut.stderr, /^trilio-dms: timeout: mount of cli-held-\w+ on .* got no reply within 1000 ms/)

        const lonely = uniqueHost("cli-no-server")
        const noServer = yield* cli(["mount", ...nfsFlags(3, target, lonely)], env)
        expectCode(noServer, 5)
        assert.include(noServer.stderr, `no DMS server for host ${lonely}`)
        assert.include(noServer.stderr, `trilio-dms doctor --host ${lonely}`)
        // Fast: about a second of re-checks, far from the 30 s request timeout (the bound leaves room for
        // process start-up on a busy machine; the tests run side by side).
        assert.isBelow(noServer.ms, 10_000, show(noServer))

        for (const r of [refused, refusedJson, timedOut, noServer]) {
          assert.notInclude(r.stdout + r.stderr, "tok-secret-4711")
          assert.notInclude(r.stdout + r.stderr, "    at ")
        }
      }), 120_000)

    it.scoped("an unreachable database exits 4, an unreachable broker exits 5; --verbose adds the cause", () =>
      Effect.gen(function*() {
        const env = yield* liveEnv
        const database = yield* cli(["status", "--job-id", "1", "--target-id", "t", "--verbose"], {
          ...env,
          DMS_DB_URL: "mysql://dms:db-secret-99@127.0.0.1:1/trilio_dms"
        })
        expectCode(database, 4)
        assert.match(database.stderr, /^trilio-dms: database error in connect to mysql:\/\/dms:\*\*\*@127\.0\.0\.1:1\/trilio_dms: .*ECONNREFUSED/)
        assert.include(database.stderr, "  caused by: ")
        assert.notInclude(database.stderr, "db-secret-99")
        const broker = yield* cli(["mount", ...nfsFlags(1, "t", uniqueHost("cli-broker"))], {
          ...env,
          DMS_RABBITMQ_URL: "amqp://guest:mq-secret-77@127.0.0.1:1"
        })
        expectCode(broker, 5)
        assert.include(broker.stderr, "amqp://guest:***@127.0.0.1:1")
        assert.notInclude(broker.stderr, "mq-secret-77")
      }), 120_000)

    it.scoped("doctor: all checks pass with a server, says what is wrong and how to fix it otherwise", () =>
      Effect.gen(function*() {
        const env: NodeJS.ProcessEnv = { ...(yield* liveEnv), KEYSTONE_TOKEN: "ks-secret-123" }
        const host = uniqueHost("cli-doctor")
        yield* modelServer(host)
        yield* Effect.asVoid(cli(["migrate"], env))
        const ok = yield* cli(["doctor", "--host", host], env)
        expectCode(ok, 0)
        assert.match(ok.stdout, /db_url\s+mysql:\/\/root@127\.0\.0\.1:3306\/dms_test_\w+\s+DMS_DB_URL \(environment\)/)
        assert.match(ok.stdout, /rabbitmq_url\s+amqp:\/\/guest:\*\*\*@127\.0\.0\.1:5672\s+DMS_RABBITMQ_URL \(environment\)/)
        assert.match(ok.stdout, /timeout\s+30 s\s+DMS_REQUEST_TIMEOUT \(environment\)/)
        assert.match(ok.stdout, /keystone_token\s+<redacted>\s+KEYSTONE_TOKEN \(environment\)/)
        assert.match(ok.stdout, new RegExp(`server\\s+OK\\s+queue dms\\.${host}: 1 consumer\\(s\\)`))
        assert.include(ok.stdout, "all checks passed")
        assert.notInclude(ok.stdout, "ks-secret-123")
        assert.notInclude(ok.stdout, "guest:guest")

        const lonely = uniqueHost("cli-doctor-none")
        const missing = yield* cli(["doctor", "--host", lonely], env)
        expectCode(missing, 5)
        assert.include(missing.stdout, `queue dms.${lonely} does not exist`)
        assert.include(missing.stdout, `trilio-dms server --node-id ${lonely}`)

        const badDb = yield* cli(["doctor", "--host", host, "--json"], { ...env, DMS_DB_URL: `${env.DMS_DB_URL}_absent` })
        expectCode(badDb, 4)
        const report = parseJson(badDb)
        assert.isFalse(report.ok)
        assert.deepInclude(report.checks.find((c: any) => c.check === "database"), { status: "fail" })
        assert.include(report.checks.find((c: any) => c.check === "database").fix, "does not exist: CREATE DATABASE")

        const unconfigured = yield* cli(["doctor"], cleanEnv(env.HOME!))
        expectCode(unconfigured, 2)
        assert.include(unconfigured.stdout, "DMS_DB_URL")
        assert.include(unconfigured.stdout, "DMS_RABBITMQ_URL")
      }), 120_000)

    it.scoped("trilio-dms server consumes the host's queue and stops with exit 0 on SIGTERM", () =>
      Effect.gen(function*() {
        const { app, bin } = yield* InstalledCli
        const dir = yield* tempDir("dms-cli-server-")
        const host = uniqueHost("cli-server")
        yield* deleteOnClose(`dms.${host}`)
        const env = yield* liveEnv
        const base = path.join(dir, "base")
        const run = path.join(dir, "run")
        fs.mkdirSync(base)
        fs.mkdirSync(run)
        const server = yield* spawnLongRunning(bin, ["server", "--node-id", host, "--mount-base", base, "--run-dir", run], env, app)
        yield* server.waitForStderr(`consuming dms.${host}`)
        const doctor = yield* cli(["doctor", "--host", host], env)
        expectCode(doctor, 0)
        assert.match(doctor.stdout, new RegExp(`server\\s+OK\\s+queue dms\\.${host}: 1 consumer\\(s\\)`))
        yield* server.signal("SIGTERM")
        assert.strictEqual(yield* server.exited, 0, server.output())
      }), 120_000)
  })
})
