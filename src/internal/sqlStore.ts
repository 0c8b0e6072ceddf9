/**
 * The ledger on SQL: MySQL/MariaDB and SQLite, through @effect/sql. Times come from the database's own
 * UTC clock, so clients on machines with skewed clocks agree on lease expiry.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { DatabaseError } from "../DmsError.js"
import type { HostLock, LeaseWrite, LedgerEntry, PendingOperation } from "../Ledger.js"
import { type Dialect, mysqlDialect, sqliteDialect, toDatabaseError, truthy } from "./sqlDialect.js"
import { check, LEDGER_TABLE, LOCK_TABLE, migrate } from "./sqlSchema.js"
import type { LockKey, Store, StoreState } from "./store.js"
import { leaseLostReason, RESERVATION_MS } from "./store.js"
import { VERSION } from "./version.js"

export { toDatabaseError } from "./sqlDialect.js"

interface LedgerRow {
  readonly id: number
  readonly created_at: unknown
  readonly updated_at: unknown
  readonly deleted_at: unknown
  readonly deleted: unknown
  readonly version: string | null
  readonly backup_target_id: string
  readonly jobid: number
  readonly host: string
  readonly mounted: unknown
}

const targetTypeOf = (v: unknown): Option.Option<"nfs" | "s3"> => (v === "nfs" || v === "s3" ? Option.some(v) : Option.none())


/**
 * `deleted = 0` in a form no index serves. Written plainly, MariaDB may intersect idx_mounted_host
 * with idx_deleted (nearly every row has deleted = 0, so that scans the whole history): on a ledger of
 * 100,000 rows the lease's state read did, and the mount rate fell from about 400 to 117 cycles/s.
 */
const notDeleted = "deleted + 0 = 0"

const ledgerSelect = `id, created_at, updated_at, deleted_at, deleted, version, backup_target_id, jobid, host, mounted`

// One round trip, three index lookups: the lock row (primary key), the holders (mounted rows of the
// host: idx_mounted_host), and the job's own unmounted row (idx_job_target). An OR in one join would
// scan every history row of the target instead. Parameters: lock key, host, target, job id, target, host.
const stateColumns = `id, created_at, updated_at, deleted_at, deleted, version, backup_target_id, jobid, host, mounted`
const stateReadText = (d: Dialect) =>
  `SELECT NULL AS id, NULL AS created_at, NULL AS updated_at, NULL AS deleted_at, NULL AS deleted,
          NULL AS version, NULL AS backup_target_id, NULL AS jobid, NULL AS host, NULL AS mounted,
          mount_path AS l_mount_path, target_type AS l_target_type, pending_op AS l_pending_op,
          pending_deadline AS l_pending_deadline, pending_owner AS l_pending_owner, pending_path AS l_pending_path,
          pending_type AS l_pending_type
        FROM ${LOCK_TABLE} WHERE lock_key = ?
      UNION ALL
      SELECT ${stateColumns}, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM ${LEDGER_TABLE}
        WHERE mounted = 1 AND ${notDeleted} AND host = ${d.exact}? AND backup_target_id = ${d.exact}?
      UNION ALL
      SELECT ${stateColumns}, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM ${LEDGER_TABLE}
        WHERE jobid = ? AND backup_target_id = ${d.exact}? AND host = ${d.exact}? AND ${notDeleted} AND mounted = 0`

/** The MySQL statement that reads a (target, host)'s state under its lease (for plan checks in tests). */
export const mysqlStateReadText = (): string => stateReadText(mysqlDialect)

/**
 * Runs one statement text with `?` parameters (on MySQL several, `;`-separated, in one round trip) and
 * returns the driver's result: rows for a query, the write's result header otherwise, an array of
 * those for several statements.
 */
export type Exec = (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<unknown, SqlError>

/**
 * Builds the SQL store over the current SqlClient (MySQL or SQLite), after checking the tables (read
 * only; `migrate: true` creates or upgrades them first).
 * `exec`, when given, runs the lease's own statements (take, read, write, renew, release) instead of
 * the SqlClient: on MySQL a plain mysql2 pool, because @effect/sql's span and scope per statement cost
 * about 0.15 ms each, a fifth of a statement's round trip, on every operation.
 */
export const make = (
  dialectName: "mysql" | "sqlite",
  exec?: Exec,
  options: { readonly migrate?: boolean | undefined } = {}
): Effect.Effect<Store, DatabaseError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const d = dialectName === "mysql" ? mysqlDialect : sqliteDialect
    yield* (options.migrate === true ? migrate(sql, d) : check(sql, d))
    const lit = (s: string) => sql.literal(s)
    const viaClient: Exec = (text, params) => sql.unsafe(text, params).raw
    const run: Exec = exec ?? viaClient
    // Several statements in one round trip (MySQL): the text protocol.
    const runMany: Exec = exec ?? ((text, params) => sql.unsafe(text, params).unprepared)
    const exact = lit(d.exact)

    const toEntry = (r: LedgerRow): LedgerEntry => ({
      id: Number(r.id),
      jobId: Number(r.jobid),
      backupTargetId: r.backup_target_id,
      host: r.host,
      mounted: truthy(r.mounted),
      deleted: truthy(r.deleted),
      version: r.version ?? null,
      createdAt: d.toDate(r.created_at)!,
      updatedAt: d.toDate(r.updated_at)!,
      deletedAt: d.toDate(r.deleted_at)
    })

    const lostLease = (operation: string) => new DatabaseError({ operation, reason: leaseLostReason })

    /** The fence: the transaction's first statement renews our lease, or matches nothing if it is gone. */
    /** The lock row's assignments of a fenced write (renewing the lease, or releasing it). */
    const lockSets = (w: LeaseWrite, owner: string, leaseMs: number, prefix: string) => {
      const sets: Array<string> = [`${prefix}updated_at = ${d.now}`]
      const params: Array<unknown> = []
      if (w.mountPath !== undefined) {
        sets.push(`${prefix}mount_path = ?`)
        params.push(w.mountPath)
      }
      if (w.targetType !== undefined) {
        sets.push(`${prefix}target_type = ?`)
        params.push(w.targetType)
      }
      if (w.pending === null) {
        sets.push(`${prefix}pending_op = NULL`)
      } else if (w.pending !== undefined) {
        sets.push(
          `${prefix}pending_op = ?`,
          `${prefix}pending_deadline = ?`,
          `${prefix}pending_owner = ?`,
          `${prefix}pending_path = ?`,
          `${prefix}pending_type = ?`
        )
        params.push(
          w.pending.op,
          d.fromDate(w.pending.deadline),
          owner,
          w.pending.mountPath ?? null,
          w.pending.targetType ?? null
        )
      }
      sets.push(
        w.release === true ? `${prefix}owner = NULL, ${prefix}expires_at = NULL` : `${prefix}expires_at = ${d.nowPlus(leaseMs)}`
      )
      return { text: sets.join(", "), params }
    }

    /**
     * The fence: one UPDATE of our lock row, matching nothing if the lease is no longer ours. Inside a
     * SqlClient transaction it must run on the transaction's connection (`via` the client).
     */
    const fence = (key: LockKey, owner: string, leaseMs: number, w: LeaseWrite, operation: string, via: Exec = run) => {
      const sets = lockSets(w, owner, leaseMs, "")
      return via(`UPDATE ${LOCK_TABLE} SET ${sets.text} WHERE lock_key = ? AND owner = ?`, [
        ...sets.params,
        key.key,
        owner
      ]).pipe(Effect.flatMap((raw) => (d.affected(raw) === 1 ? Effect.void : Effect.fail(lostLease(operation)))))
    }

    const insertEntry = (key: LockKey, jobId: number) =>
      sql`INSERT INTO ${lit(LEDGER_TABLE)}
          (created_at, updated_at, deleted, version, backup_target_id, jobid, host, mounted)
        VALUES (${lit(d.nowSeconds)}, ${lit(d.nowSeconds)}, 0, ${VERSION}, ${key.backupTargetId}, ${jobId}, ${key.host}, 1)`

    // SQLite: a local transaction (no round trips): fence, then the job's row.
    const writeInTransaction = (key: LockKey, owner: string, leaseMs: number, w: LeaseWrite, job: NonNullable<LeaseWrite["job"]>) =>
      sql.withTransaction(Effect.gen(function*() {
        yield* fence(key, owner, leaseMs, w, "ledger write", viaClient)
        const raw = yield* sql`UPDATE ${lit(LEDGER_TABLE)} SET mounted = ${job.mounted ? 1 : 0},
            updated_at = ${lit(d.nowSeconds)}, version = ${VERSION}
          WHERE jobid = ${job.jobId} AND backup_target_id = ${exact}${key.backupTargetId} AND host = ${exact}${key.host}
            AND deleted = 0`.raw
        if (d.affected(raw) === 0 && job.mounted) yield* insertEntry(key, job.jobId)
      }))

    // MySQL: every statement is fenced by itself, so no BEGIN/COMMIT round trips. An existing row is
    // updated together with the lock row in one multi-table UPDATE that joins on our ownership; a new
    // row is inserted by an INSERT … SELECT from our lock row, then the lock row is updated. A crash
    // between those two leaves the pending mark set, which the next operation resolves.
    const writeFenced = (key: LockKey, owner: string, leaseMs: number, w: LeaseWrite, job: NonNullable<LeaseWrite["job"]>) =>
      Effect.gen(function*() {
        if (job.entryId !== null) {
          const sets = lockSets(w, owner, leaseMs, "l.")
          // The row read under this lease is found by its primary key; without it, by the job's index.
          const row = typeof job.entryId === "number"
            ? { where: "e.id = ?", params: [job.entryId] }
            : {
              where: `e.jobid = ? AND e.backup_target_id = ${d.exact}? AND e.host = ${d.exact}?`,
              params: [job.jobId, key.backupTargetId, key.host]
            }
          const raw = yield* run(
            `UPDATE ${LEDGER_TABLE} e JOIN ${LOCK_TABLE} l ON l.lock_key = ? AND l.owner = ?
              SET e.mounted = ?, e.updated_at = ${d.nowSeconds}, e.version = ?, ${sets.text}
              WHERE ${row.where} AND e.deleted = 0`,
            [key.key, owner, job.mounted ? 1 : 0, VERSION, ...sets.params, ...row.params]
          )
          if (d.affected(raw) > 0) return
        }
        // No row for the job (or the lease is gone: the fence tells).
        if (!job.mounted) return yield* fence(key, owner, leaseMs, w, "ledger write")
        // The fenced insert and the lock row's update, in one round trip (two statements).
        const sets = lockSets(w, owner, leaseMs, "")
        const [inserted, fenced] = (yield* runMany(
          `INSERT INTO ${LEDGER_TABLE} (created_at, updated_at, deleted, version, backup_target_id, jobid, host, mounted)
            SELECT ${d.nowSeconds}, ${d.nowSeconds}, 0, ?, ?, ?, ?, 1 FROM ${LOCK_TABLE} WHERE lock_key = ? AND owner = ?;
          UPDATE ${LOCK_TABLE} SET ${sets.text} WHERE lock_key = ? AND owner = ?`,
          [VERSION, key.backupTargetId, job.jobId, key.host, key.key, owner, ...sets.params, key.key, owner]
        )) as [unknown, unknown]
        if (d.affected(inserted) !== 1 || d.affected(fenced) !== 1) return yield* Effect.fail(lostLease("ledger write"))
      })

    type StateRow = LedgerRow & {
      l_mount_path: string | null
      l_target_type: string | null
      l_pending_op: string | null
      l_pending_deadline: unknown
      l_pending_owner: string | null
      l_pending_path: string | null
      l_pending_type: string | null
    }
    const readText = stateReadText(d)
    const readParams = (key: LockKey, jobId: number | undefined) => [
      key.key,
      key.host,
      key.backupTargetId,
      jobId ?? -1,
      key.backupTargetId,
      key.host
    ]
    const toState = (rows: ReadonlyArray<StateRow>, jobId: number | undefined): StoreState => {
      const first = rows.find((r) => r.id === null || r.id === undefined)
      const entries = rows.filter((r) => r.id !== null && r.id !== undefined).map(toEntry).sort((x, y) => x.id - y.id)
      const pendingOp = first?.l_pending_op
      const pending: Option.Option<PendingOperation> = pendingOp === "mount" || pendingOp === "unmount"
        ? Option.some({
          op: pendingOp,
          deadline: d.toDate(first?.l_pending_deadline) ?? new Date(0),
          mountPath: first?.l_pending_path ?? null,
          targetType: Option.getOrNull(targetTypeOf(first?.l_pending_type))
        })
        : Option.none()
      const own = entries.filter((e) => e.jobId === jobId)
      return {
        holders: entries.filter((e) => e.mounted),
        job: Option.fromNullable(own[own.length - 1]),
        mountPath: Option.fromNullable(first?.l_mount_path ?? null),
        targetType: targetTypeOf(first?.l_target_type),
        pending,
        pendingOwner: Option.isSome(pending) ? first?.l_pending_owner ?? null : null
      }
    }
    // Fair hand-over between client processes: a process that finds the lease taken reserves the next
    // turn (waiter); the lease is then taken only by that waiter, unless its reservation went stale (it
    // stopped polling). Without it, a process whose fibers queue behind each other re-takes the lease
    // at once on every release and the other process starves.
    const reservationOpen = `(waiter IS NULL OR waiter = ? OR waiter_at < ${d.nowMinus(RESERVATION_MS)})`
    const takeText = `UPDATE ${LOCK_TABLE} SET owner = ?, expires_at = %EXPIRES%, updated_at = ${d.now},
        waiter = CASE WHEN waiter = ? THEN NULL ELSE waiter END%MARK%
      WHERE lock_key = ? AND (owner IS NULL OR expires_at < ${d.now}) AND ${reservationOpen}`
    // The operation's pending mark, written by the statement that takes the lease unless an earlier
    // operation's mark is still there (that one is resolved first). pending_op is assigned last: MySQL
    // evaluates a single-table UPDATE's assignments left to right.
    const markText = `,
        pending_owner = CASE WHEN pending_op IS NULL THEN ? ELSE pending_owner END,
        pending_deadline = CASE WHEN pending_op IS NULL THEN ? ELSE pending_deadline END,
        pending_path = CASE WHEN pending_op IS NULL THEN ? ELSE pending_path END,
        pending_type = CASE WHEN pending_op IS NULL THEN ? ELSE pending_type END,
        pending_op = CASE WHEN pending_op IS NULL THEN ? ELSE pending_op END`
    const reserveText = `UPDATE ${LOCK_TABLE} SET waiter = ?, waiter_at = ${d.now}
      WHERE lock_key = ? AND ${reservationOpen}`

    const store: Store = {
      dialect: d.name,
      tryAcquire: (key, owner, leaseMs, client, readJobId, mark) =>
        Effect.gen(function*() {
          const take = takeText.replace("%EXPIRES%", d.nowPlus(leaseMs)).replace("%MARK%", mark === undefined ? "" : markText)
          const markParams = mark === undefined
            ? []
            : [owner, d.fromDate(mark.deadline), mark.mountPath ?? null, mark.targetType ?? null, mark.op]
          const takeParams = [owner, client, ...markParams, key.key, client]
          if (d.name === "mysql" && readJobId !== undefined) {
            // Take the lease and read the target's state in one round trip (two statements); the state
            // is only used when the take succeeded.
            const [taken, rows] = (yield* runMany(`${take}; ${readText}`, [...takeParams, ...readParams(key, readJobId)])) as [
              unknown,
              ReadonlyArray<StateRow>
            ]
            if (d.affected(taken) === 1) return toState(rows, readJobId)
          } else {
            const taken = yield* run(take, takeParams)
            if (d.affected(taken) === 1) return true
          }
          // No row yet (first use of this target on this host), or held (or reserved) by someone else.
          const inserted = yield* run(
            `INSERT INTO ${LOCK_TABLE} (lock_key, backup_target_id, host, owner, expires_at, updated_at,
                pending_op, pending_deadline, pending_owner, pending_path, pending_type)
              VALUES (?, ?, ?, ?, ${d.nowPlus(leaseMs)}, ${d.now}, ?, ?, ?, ?, ?)`,
            [
              key.key,
              key.backupTargetId,
              key.host,
              owner,
              mark?.op ?? null,
              mark === undefined ? null : d.fromDate(mark.deadline),
              mark === undefined ? null : owner,
              mark?.mountPath ?? null,
              mark?.targetType ?? null
            ]
          ).pipe(
              Effect.as(true),
              Effect.catchIf(d.isDuplicateKey, () => Effect.succeed(false))
            )
          if (!inserted) yield* run(reserveText, [client, key.key, client])
          return inserted
        }).pipe(Effect.mapError(toDatabaseError("acquire lock"))),
      renew: (key, owner, leaseMs) =>
        run(`UPDATE ${LOCK_TABLE} SET expires_at = ${d.nowPlus(leaseMs)} WHERE lock_key = ? AND owner = ?`, [key.key, owner]).pipe(
          Effect.map((raw) => d.affected(raw) === 1),
          Effect.mapError(toDatabaseError("renew lock"))
        ),
      release: (key, owner, clearOwnMark) =>
        run(
          `UPDATE ${LOCK_TABLE} SET owner = NULL, expires_at = NULL, updated_at = ${d.now}${
            clearOwnMark ? ", pending_op = CASE WHEN pending_owner = ? THEN NULL ELSE pending_op END" : ""
          } WHERE lock_key = ? AND owner = ?`,
          clearOwnMark ? [owner, key.key, owner] : [key.key, owner]
        ).pipe(
          Effect.asVoid,
          Effect.mapError(toDatabaseError("release lock"))
        ),
      read: (key, jobId) =>
        (exec === undefined ? sql.unsafe<StateRow>(readText, readParams(key, jobId)) : exec(readText, readParams(key, jobId))).pipe(
          Effect.map((rows) => toState(rows as ReadonlyArray<StateRow>, jobId)),
          Effect.mapError(toDatabaseError("read target state"))
        ),
      // On SQLite the transaction is a deferred BEGIN whose first statement is the fence's UPDATE, so it
      // takes the write lock at once (as BEGIN IMMEDIATE would) and never upgrades from a read snapshot.
      write: (key, owner, leaseMs, w) => {
        const job = w.job
        const run = job === undefined
          ? fence(key, owner, leaseMs, w, "ledger write")
          : d.name === "mysql"
          ? writeFenced(key, owner, leaseMs, w, job)
          : writeInTransaction(key, owner, leaseMs, w, job)
        return run.pipe(Effect.mapError(toDatabaseError("ledger write")))
      },
      softDelete: (key, owner, leaseMs, entryId) =>
        sql.withTransaction(
          Effect.zipRight(
            fence(key, owner, leaseMs, {}, "softDeleteEntry", viaClient),
            sql`UPDATE ${lit(LEDGER_TABLE)} SET deleted = 1, deleted_at = ${lit(d.nowSeconds)},
                updated_at = ${lit(d.nowSeconds)}, version = ${VERSION}
              WHERE id = ${entryId} AND mounted = 0 AND deleted = 0`.raw
          )
        ).pipe(
          Effect.map((raw) => d.affected(raw) === 1),
          Effect.mapError(toDatabaseError("softDeleteEntry"))
        ),
      getMountStatus: (jobId, backupTargetId, host) =>
        sql<LedgerRow>`SELECT ${lit(ledgerSelect)} FROM ${lit(LEDGER_TABLE)}
          WHERE jobid = ${jobId} AND backup_target_id = ${exact}${backupTargetId} AND deleted = 0
            ${host === undefined ? lit("") : sql`AND host = ${exact}${host}`}
          ORDER BY id DESC LIMIT 1`.pipe(
          Effect.map((rows) => Option.map(Option.fromNullable(rows[0]), toEntry)),
          Effect.mapError(toDatabaseError("getMountStatus"))
        ),
      getActiveMounts: (host, backupTargetId) =>
        sql<LedgerRow>`SELECT ${lit(ledgerSelect)} FROM ${lit(LEDGER_TABLE)}
          WHERE mounted = 1 AND deleted = 0
            ${host === undefined ? lit("") : sql`AND host = ${exact}${host}`}
            ${backupTargetId === undefined ? lit("") : sql`AND backup_target_id = ${exact}${backupTargetId}`}
          ORDER BY id`.pipe(
          Effect.map((rows) => rows.map(toEntry)),
          Effect.mapError(toDatabaseError("getActiveMounts"))
        ),
      ping: sql`SELECT 1`.pipe(Effect.asVoid, Effect.mapError(toDatabaseError("ping"))),
      getHostState: (host) =>
        Effect.gen(function*() {
          const locks = yield* sql<{
            backup_target_id: string
            mount_path: string | null
            target_type: string | null
            pending_op: string | null
            pending_deadline: unknown
            pending_path: string | null
            pending_type: string | null
          }>`SELECT backup_target_id, mount_path, target_type, pending_op, pending_deadline, pending_path, pending_type
            FROM ${lit(LOCK_TABLE)} WHERE host = ${exact}${host} ORDER BY backup_target_id`
          const holders = yield* sql<LedgerRow>`SELECT ${lit(ledgerSelect)} FROM ${lit(LEDGER_TABLE)}
            WHERE mounted = 1 AND ${lit(notDeleted)} AND host = ${exact}${host} ORDER BY id`
          return {
            host,
            locks: locks.map((l): HostLock => ({
              backupTargetId: l.backup_target_id,
              host,
              mountPath: Option.fromNullable(l.mount_path),
              targetType: targetTypeOf(l.target_type),
              pending: l.pending_op === "mount" || l.pending_op === "unmount"
                ? Option.some({
                  op: l.pending_op,
                  deadline: d.toDate(l.pending_deadline) ?? new Date(0),
                  mountPath: l.pending_path,
                  targetType: Option.getOrNull(targetTypeOf(l.pending_type))
                })
                : Option.none()
            })),
            holders: holders.map(toEntry)
          }
        }).pipe(Effect.mapError(toDatabaseError("getHostState"))),
      getLedgerHistory: (backupTargetId, limit) =>
        sql<LedgerRow>`SELECT ${lit(ledgerSelect)} FROM ${lit(LEDGER_TABLE)}
          WHERE backup_target_id = ${exact}${backupTargetId}
          ORDER BY id DESC LIMIT ${lit(String(Math.trunc(limit)))}`.pipe(
          Effect.map((rows) => rows.map(toEntry)),
          Effect.mapError(toDatabaseError("getLedgerHistory"))
        )
    }
    return store
  })
