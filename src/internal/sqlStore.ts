/**
 * The ledger on SQL: MySQL/MariaDB and SQLite. Times come from the database's own
 * UTC clock, so clients on machines with skewed clocks agree on lease expiry.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { randomUUID } from "node:crypto"
import { DatabaseError } from "../DmsError.js"
import type { HostLock, LeaseWrite, LedgerEntry, PendingOperation } from "../Ledger.js"
import { type Dialect, type Exec, mysqlDialect, sqliteDialect, type Statements, toDatabaseError, truthy } from "./sqlDialect.js"
import { check, LEDGER_TABLE, LOCK_TABLE, migrate } from "./sqlSchema.js"
import type { LockKey, Store, StoreState } from "./store.js"
import { leaseLostReason, RESERVATION_MS, RESERVATION_REFRESH_MS } from "./store.js"
import * as StoreRetry from "./storeRetry.js"
import { VERSION } from "./version.js"

export { type Exec, toDatabaseError } from "./sqlDialect.js"

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
          pending_deadline AS l_pending_deadline, ${d.msUntil("pending_deadline")} AS l_pending_left, pending_owner AS l_pending_owner, pending_path AS l_pending_path,
          pending_type AS l_pending_type
        FROM ${LOCK_TABLE} WHERE lock_key = ?
      UNION ALL
      SELECT ${stateColumns}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM ${LEDGER_TABLE}
        WHERE mounted = 1 AND ${notDeleted} AND host = ${d.exact}? AND backup_target_id = ${d.exact}?
      UNION ALL
      SELECT ${stateColumns}, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM ${LEDGER_TABLE}
        WHERE jobid = ? AND backup_target_id = ${d.exact}? AND host = ${d.exact}? AND ${notDeleted} AND mounted = 0`

/** The MySQL statement that reads a (target, host)'s state under its lease (for plan checks in tests). */
export const mysqlStateReadText = (): string => stateReadText(mysqlDialect)

/**
 * Builds the SQL store over its statements, after checking the tables (read only; `migrate: true` creates
 * or upgrades them first). On
 * MySQL they run on a plain mysql2 pool per node (`mysqlNodes`): @effect/sql's span and scope per
 * statement cost about 0.15 ms each, a fifth of a statement's round trip, on every operation; on SQLite
 * through @effect/sql's client.
 */
const make = (d: Dialect, sql: Statements, options: StoreOptions): Effect.Effect<Store, DatabaseError> =>
  Effect.gen(function*() {
    yield* (options.migrate === true ? migrate(sql, d) : check(sql, d))
    const { query, run, runMany } = sql
    const x = d.exact

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
    const entries = (text: string, params: ReadonlyArray<unknown>) =>
      Effect.map(query(text, params), (rows) => (rows as unknown as ReadonlyArray<LedgerRow>).map(toEntry))

    const lostLease = (operation: string) => new DatabaseError({ operation, reason: leaseLostReason })

    /**
     * The lock row's assignments of a fenced write (renewing the lease, or releasing it), with the
     * write's token: a write whose commit outcome is unknown finds out from it whether it landed.
     */
    const lockSets = (w: LeaseWrite, owner: string, leaseMs: number, token: string, prefix: string) => {
      const sets: Array<string> = [`${prefix}updated_at = ${d.now}`, `${prefix}last_write = ?`]
      const params: Array<unknown> = [token]
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
        // The deadline on the database's clock, as leases are: clients with skewed clocks agree on it.
        const restored = w.pending.deadline
        sets.push(
          `${prefix}pending_op = ?`,
          `${prefix}pending_deadline = ${restored === undefined ? d.nowPlus(w.pending.timeoutMs) : "?"}`,
          `${prefix}pending_owner = ?`,
          `${prefix}pending_path = ?`,
          `${prefix}pending_type = ?`
        )
        params.push(
          w.pending.op,
          ...(restored === undefined ? [] : [d.fromDate(restored)]),
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

    /** The fence: one UPDATE of our lock row, matching nothing if the lease is no longer ours. */
    const fence = (key: LockKey, owner: string, leaseMs: number, w: LeaseWrite, token: string, operation: string) => {
      const sets = lockSets(w, owner, leaseMs, token, "")
      return run(`UPDATE ${LOCK_TABLE} SET ${sets.text} WHERE lock_key = ? AND owner = ?`, [...sets.params, key.key, owner]).pipe(
        Effect.flatMap((raw) => (d.affected(raw) === 1 ? Effect.void : Effect.fail(lostLease(operation))))
      )
    }

    /**
     * A fenced write that knows whether it landed. Each call gets a fresh token, written to the lock row by
     * the statement that makes the write count; `attempt` runs again when the store's retries run the
     * returned effect again (`again` is then true). Once the outcome of an attempt is unknown (the
     * connection was lost before its answer), or a retry finds the lease gone (the first attempt may have
     * released it), the lock row's token says whether the write landed: then it succeeds with `landed`;
     * otherwise the error stands (and a lost connection under a lease still ours is retried).
     */
    const verified = <A>(
      key: LockKey,
      owner: string,
      operation: string,
      attempt: (token: string, again: boolean) => Effect.Effect<A, DatabaseError>,
      landed: A
    ): Effect.Effect<A, DatabaseError> => {
      const token = randomUUID()
      let tries = 0
      return Effect.suspend(() => {
        const again = ++tries > 1
        return Effect.catchIf(
          attempt(token, again),
          (error) => StoreRetry.outcomeUnknown(error) || (again && error.reason === leaseLostReason),
          (error) =>
            recheckRetry(
              query(`SELECT owner, last_write FROM ${LOCK_TABLE} WHERE lock_key = ?`, [key.key]).pipe(
                Effect.mapError(toDatabaseError(operation))
              )
            ).pipe(
              Effect.flatMap((rows) => {
                const row = rows[0] as { owner: string | null; last_write: string | null } | undefined
                if (row?.last_write === token) return Effect.succeed(landed)
                return row?.owner === owner || !StoreRetry.outcomeUnknown(error) ? Effect.fail(error) : Effect.fail(lostLease(operation))
              })
            )
        )
      })
    }

    /** Whether the job holds a row of the pair (mounted, not deleted): a fenced insert for it landed. */
    const insertLanded = (key: LockKey, jobId: number) =>
      recheckRetry(
        query(
          `SELECT COUNT(*) AS n FROM ${LEDGER_TABLE} WHERE jobid = ? AND backup_target_id = ${x}? AND host = ${x}? AND deleted = 0 AND mounted = 1`,
          [jobId, key.backupTargetId, key.host]
        ).pipe(Effect.mapError(toDatabaseError("ledger write")))
      ).pipe(Effect.map((rows) => Number(rows[0]?.n ?? 0) > 0))

    // SQLite: a local transaction (no round trips): fence, then the job's row.
    const writeInTransaction = (
      key: LockKey,
      owner: string,
      leaseMs: number,
      w: LeaseWrite,
      job: NonNullable<LeaseWrite["job"]>,
      token: string
    ) =>
      sql.transaction(Effect.gen(function*() {
        yield* fence(key, owner, leaseMs, w, token, "ledger write")
        const raw = yield* run(
          `UPDATE ${LEDGER_TABLE} SET mounted = ?, updated_at = ${d.nowSeconds}, version = ?
            WHERE jobid = ? AND backup_target_id = ${x}? AND host = ${x}? AND deleted = 0`,
          [job.mounted ? 1 : 0, VERSION, job.jobId, key.backupTargetId, key.host]
        )
        if (d.affected(raw) === 0 && job.mounted) {
          yield* run(
            `INSERT INTO ${LEDGER_TABLE} (created_at, updated_at, deleted, version, backup_target_id, jobid, host, mounted)
              VALUES (${d.nowSeconds}, ${d.nowSeconds}, 0, ?, ?, ?, ?, 1)`,
            [VERSION, key.backupTargetId, job.jobId, key.host]
          )
        }
      }))

    // MySQL: every statement is fenced by itself, so no BEGIN/COMMIT round trips (on Galera each
    // autocommit statement is certified alone). An existing row is updated together with the lock row in
    // one multi-table UPDATE that joins on our ownership; a new row is inserted by an INSERT … SELECT from
    // our lock row (only if the job holds no row yet: a retried write must not insert twice), then the
    // lock row is updated. A crash between those two leaves the pending mark set, which the next
    // operation resolves.
    const writeFenced = (
      key: LockKey,
      owner: string,
      leaseMs: number,
      w: LeaseWrite,
      job: NonNullable<LeaseWrite["job"]>,
      token: string,
      again: boolean
    ) =>
      Effect.gen(function*() {
        if (job.entryId !== null) {
          const sets = lockSets(w, owner, leaseMs, token, "l.")
          // The row read under this lease is found by its primary key; without it, by the job's index.
          const row = typeof job.entryId === "number"
            ? { where: "e.id = ?", params: [job.entryId] }
            : { where: `e.jobid = ? AND e.backup_target_id = ${x}? AND e.host = ${x}?`, params: [job.jobId, key.backupTargetId, key.host] }
          const raw = yield* run(
            `UPDATE ${LEDGER_TABLE} e JOIN ${LOCK_TABLE} l ON l.lock_key = ? AND l.owner = ?
              SET e.mounted = ?, e.updated_at = ${d.nowSeconds}, e.version = ?, ${sets.text}
              WHERE ${row.where} AND e.deleted = 0`,
            [key.key, owner, job.mounted ? 1 : 0, VERSION, ...sets.params, ...row.params]
          )
          if (d.affected(raw) > 0) return
        }
        // No row for the job (or the lease is gone: the fence tells).
        if (!job.mounted) return yield* fence(key, owner, leaseMs, w, token, "ledger write")
        // The fenced insert and the lock row's update, in one round trip (two statements). A connection
        // lost between them may leave the insert landed without the update: a retried write (`again`)
        // first looks whether the job holds its row, and then only updates the lock row. (A NOT EXISTS on
        // the ledger inside the INSERT … SELECT would take shared locks on its rows and, with
        // innodb_autoinc_lock_mode 1, fail with 1467 under load.)
        const sets = lockSets(w, owner, leaseMs, token, "")
        const update = `UPDATE ${LOCK_TABLE} SET ${sets.text} WHERE lock_key = ? AND owner = ?`
        const updateParams = [...sets.params, key.key, owner]
        if (again && (yield* insertLanded(key, job.jobId))) return yield* fence(key, owner, leaseMs, w, token, "ledger write")
        const [, fenced] = (yield* runMany(
          `INSERT INTO ${LEDGER_TABLE} (created_at, updated_at, deleted, version, backup_target_id, jobid, host, mounted)
            SELECT ${d.nowSeconds}, ${d.nowSeconds}, 0, ?, ?, ?, ?, 1 FROM ${LOCK_TABLE} WHERE lock_key = ? AND owner = ?;
          ${update}`,
          [VERSION, key.backupTargetId, job.jobId, key.host, key.key, owner, ...updateParams]
        )) as [unknown, unknown]
        if (d.affected(fenced) !== 1) return yield* Effect.fail(lostLease("ledger write"))
      })

    type StateRow = LedgerRow & {
      l_mount_path: string | null
      l_target_type: string | null
      l_pending_op: string | null
      l_pending_deadline: unknown
      l_pending_left: unknown
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
    const pendingOf = (
      op: unknown,
      deadline: unknown,
      left: unknown,
      path: string | null | undefined,
      type: unknown
    ): Option.Option<PendingOperation> =>
      op === "mount" || op === "unmount"
        ? Option.some({
          op,
          deadline: d.toDate(deadline) ?? new Date(0),
          remainingMs: left === null || left === undefined ? 0 : Number(left),
          mountPath: path ?? null,
          targetType: Option.getOrNull(targetTypeOf(type))
        })
        : Option.none()
    const toState = (rows: ReadonlyArray<StateRow>, jobId: number | undefined): StoreState => {
      const first = rows.find((r) => r.id === null || r.id === undefined)
      const entries = rows.filter((r) => r.id !== null && r.id !== undefined).map(toEntry).sort((x, y) => x.id - y.id)
      const pending = pendingOf(first?.l_pending_op, first?.l_pending_deadline, first?.l_pending_left, first?.l_pending_path, first?.l_pending_type)
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
    // at once on every release and the other process starves. A retried take whose first attempt took
    // the lease (its answer was lost) finds it ours: taking is idempotent for its owner.
    const reservationOpen = `(waiter IS NULL OR waiter = ? OR waiter_at < ${d.nowMinus(RESERVATION_MS)})`
    const takeText = `UPDATE ${LOCK_TABLE} SET owner = ?, expires_at = %EXPIRES%, updated_at = ${d.now},
        waiter = CASE WHEN waiter = ? THEN NULL ELSE waiter END%MARK%
      WHERE lock_key = ? AND (owner = ? OR ((owner IS NULL OR expires_at < ${d.now}) AND ${reservationOpen}))`
    // The operation's pending mark, written by the statement that takes the lease unless an earlier
    // operation's mark is still there (that one is resolved first). pending_op is assigned last: MySQL
    // evaluates a single-table UPDATE's assignments left to right.
    const markText = (timeoutMs: number) => `,
        pending_owner = CASE WHEN pending_op IS NULL THEN ? ELSE pending_owner END,
        pending_deadline = CASE WHEN pending_op IS NULL THEN ${d.nowPlus(timeoutMs)} ELSE pending_deadline END,
        pending_path = CASE WHEN pending_op IS NULL THEN ? ELSE pending_path END,
        pending_type = CASE WHEN pending_op IS NULL THEN ? ELSE pending_type END,
        pending_op = CASE WHEN pending_op IS NULL THEN ? ELSE pending_op END`
    // A waiter writes its reservation when it has none, and refreshes it only when it is getting old:
    // its polls in between change nothing (on Galera, no write-set to replicate or collide).
    const reserveText = `UPDATE ${LOCK_TABLE} SET waiter = ?, waiter_at = ${d.now}
      WHERE lock_key = ? AND (waiter IS NULL OR (waiter = ? AND waiter_at < ${d.nowMinus(RESERVATION_REFRESH_MS)})
        OR waiter_at < ${d.nowMinus(RESERVATION_MS)})`
    const hostLockColumns = `backup_target_id, mount_path, target_type, pending_op, pending_deadline,
      ${d.msUntil("pending_deadline")} AS pending_left, pending_path, pending_type`
    // A row a purge may delete: it holds nothing and was last written before the cutoff (an operation
    // that writes it makes it recent), and its (target, host) is neither leased (an operation may be about
    // to write it) nor marked pending.
    const idle = (row: string, olderThanMs: number) =>
      `(${row}.mounted = 0 OR ${row}.deleted = 1) AND ${row}.updated_at < ${d.nowMinus(olderThanMs)}`
    const purgeable = (row: string, olderThanMs: number) =>
      `(${idle(row, olderThanMs)} AND NOT EXISTS (
        SELECT 1 FROM ${LOCK_TABLE} l WHERE l.backup_target_id = ${x}${row}.backup_target_id AND l.host = ${x}${row}.host
          AND (l.pending_op IS NOT NULL OR (l.owner IS NOT NULL AND l.expires_at >= ${d.now}))))`
    // A shared release: the job's row of the pair (parameters: job id, target, host), the pair's holders
    // other than that job (host, target, job id), and a lease nobody holds now.
    const jobHolds = (e: string) => `${e}.jobid = ? AND ${e}.backup_target_id = ${x}? AND ${e}.host = ${x}? AND ${e}.deleted = 0 AND ${e}.mounted = 1`
    const othersHold = (o: string) =>
      `${o}.mounted = 1 AND ${o}.deleted + 0 = 0 AND ${o}.host = ${x}? AND ${o}.backup_target_id = ${x}? AND ${o}.jobid <> ?`
    const leaseFree = (l: string) => `(${l}.owner IS NULL OR ${l}.expires_at < ${d.now}) AND ${l}.pending_op IS NULL`
    // MySQL: one round trip of autocommit statements. The SELECT reads, in one snapshot and locking
    // nothing, how many other jobs hold the pair and the lock row's last write token; the UPDATE writes only
    // if that token is still there, the lease is free and nothing is pending. Every change of the pair's
    // holders writes a token of its own (a fenced write, another shared release) or holds the lease until
    // it has, so an unchanged token means the holders counted are still the holders. Reads anywhere but in
    // a SELECT lock (a SET's subqueries, the other holders' rows joined into the UPDATE take shared locks
    // on every holder row of the host in idx_mounted_host): two releases of different targets on one host
    // would deadlock on each other's rows.
    const sharedMysql = `SELECT COUNT(*), (SELECT last_write FROM ${LOCK_TABLE} WHERE lock_key = ?) INTO @dms_others, @dms_seen
        FROM ${LEDGER_TABLE} o WHERE ${othersHold("o")};
      UPDATE ${LEDGER_TABLE} e JOIN ${LOCK_TABLE} l ON l.lock_key = ? AND l.last_write <=> @dms_seen AND ${leaseFree("l")}
          AND l.mount_path = ${x}?
        SET e.mounted = 0, e.updated_at = ${d.nowSeconds}, e.version = ?,
          l.last_write = ?, l.updated_at = ${d.now}, l.owner = NULL, l.expires_at = NULL
        WHERE ${jobHolds("e")} AND @dms_others > 0;
      SELECT @dms_others AS others`
    // SQLite: a short transaction whose first statement writes (so it takes the write lock at once).
    const sharedSqlite = `UPDATE ${LEDGER_TABLE} SET mounted = 0, updated_at = ${d.nowSeconds}, version = ?
      WHERE ${jobHolds(LEDGER_TABLE)}
        AND EXISTS (SELECT 1 FROM ${LOCK_TABLE} l WHERE l.lock_key = ? AND ${leaseFree("l")} AND l.mount_path = ?)
        AND EXISTS (SELECT 1 FROM ${LEDGER_TABLE} o WHERE ${othersHold("o")})`
    // Whether a shared release whose answer was lost landed: its token is on the lock row, or the job's row
    // no longer holds the pair (a later write of the pair may have replaced the token by its own).
    const sharedLanded = `SELECT last_write AS token,
        (SELECT COUNT(*) FROM ${LEDGER_TABLE} e WHERE ${jobHolds("e")}) AS mine,
        (SELECT COUNT(*) FROM ${LEDGER_TABLE} o WHERE ${othersHold("o")}) AS others
      FROM ${LOCK_TABLE} WHERE lock_key = ?`
    // Newest first by creation time: on Galera ids interleave across nodes (offsets 1, 2, 3 of step 3),
    // so a larger id is not a newer row. The id orders rows created within one second.
    const newestFirst = "ORDER BY created_at DESC, id DESC"

    const store: Store = {
      dialect: d.name,
      tryAcquire: (key, owner, leaseMs, client, readJobId, mark) =>
        Effect.gen(function*() {
          const take = takeText.replace("%EXPIRES%", d.nowPlus(leaseMs)).replace(
            "%MARK%",
            mark === undefined ? "" : markText(mark.timeoutMs)
          )
          const markParams = mark === undefined ? [] : [owner, mark.mountPath ?? null, mark.targetType ?? null, mark.op]
          const takeParams = [owner, client, ...markParams, key.key, owner, client]
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
              VALUES (?, ?, ?, ?, ${d.nowPlus(leaseMs)}, ${d.now}, ?, ${mark === undefined ? "NULL" : d.nowPlus(mark.timeoutMs)}, ?, ?, ?)`,
            [
              key.key,
              key.backupTargetId,
              key.host,
              owner,
              mark?.op ?? null,
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
        query(readText, readParams(key, jobId)).pipe(
          Effect.map((rows) => toState(rows as unknown as ReadonlyArray<StateRow>, jobId)),
          Effect.mapError(toDatabaseError("read target state"))
        ),
      // On SQLite the transaction is a deferred BEGIN whose first statement is the fence's UPDATE, so it
      // takes the write lock at once (as BEGIN IMMEDIATE would) and never upgrades from a read snapshot.
      write: (key, owner, leaseMs, w) => {
        const job = w.job
        return verified(key, owner, "ledger write", (token, again) =>
          (job === undefined
            ? fence(key, owner, leaseMs, w, token, "ledger write")
            : d.name === "mysql"
            ? writeFenced(key, owner, leaseMs, w, job, token, again)
            : writeInTransaction(key, owner, leaseMs, w, job, token)).pipe(Effect.mapError(toDatabaseError("ledger write"))), undefined)
      },
      softDelete: (key, owner, leaseMs, entryId) => {
        const mark = `UPDATE ${LEDGER_TABLE} SET deleted = 1, deleted_at = ${d.nowSeconds}, updated_at = ${d.nowSeconds}, version = ?
          WHERE id = ? AND mounted = 0 AND deleted = 0`
        // Only the statement that deletes the row writes the call's token: the fence that tells a mounted
        // row from a lost lease writes a token of its own, so a landed token always means "deleted".
        const attempt = (token: string) =>
          d.name === "mysql"
            // One statement: the row and our lock row, joined on our ownership. Nothing matched: either
            // the lease is gone (the fence tells) or the row is mounted or already deleted.
            ? Effect.gen(function*() {
              const sets = lockSets({}, owner, leaseMs, token, "l.")
              const raw = yield* run(
                `UPDATE ${LEDGER_TABLE} e JOIN ${LOCK_TABLE} l ON l.lock_key = ? AND l.owner = ?
                  SET e.deleted = 1, e.deleted_at = ${d.nowSeconds}, e.updated_at = ${d.nowSeconds}, e.version = ?, ${sets.text}
                  WHERE e.id = ? AND e.mounted = 0 AND e.deleted = 0`,
                [key.key, owner, VERSION, ...sets.params, entryId]
              )
              if (d.affected(raw) > 0) return true
              yield* fence(key, owner, leaseMs, {}, randomUUID(), "softDeleteEntry")
              return false
            })
            : sql.transaction(
              Effect.zipRight(fence(key, owner, leaseMs, {}, randomUUID(), "softDeleteEntry"), run(mark, [VERSION, entryId]))
            ).pipe(Effect.map((raw) => d.affected(raw) === 1))
        return verified(key, owner, "softDeleteEntry", (token) => attempt(token).pipe(Effect.mapError(toDatabaseError("softDeleteEntry"))), true)
      },
      // One token per call, kept across the store's retries. Once an attempt's outcome is unknown (its
      // connection was lost before the answer), the ledger says whether one landed: a retry that finds
      // nothing to release (the job's row no longer holds the pair) asks too, since reporting "nothing
      // held" for a release that did land would be wrong.
      releaseShared: (key, jobId, mountPath) => {
        const token = randomUUID()
        const mine = [jobId, key.backupTargetId, key.host]
        const others = [key.host, key.backupTargetId, jobId]
        const attempt = (d.name === "mysql"
          ? Effect.map(
            runMany(sharedMysql, [key.key, ...others, key.key, mountPath, VERSION, token, ...mine]),
            (results) => {
              const [, released, rows] = results as [unknown, unknown, ReadonlyArray<{ others: unknown }>]
              return d.affected(released) > 0 ? Number(rows[0]?.others ?? 0) : null
            }
          )
          : sql.transaction(Effect.gen(function*() {
            const released = yield* run(sharedSqlite, [VERSION, ...mine, key.key, mountPath, ...others])
            if (d.affected(released) === 0) return null
            yield* run(`UPDATE ${LOCK_TABLE} SET last_write = ?, updated_at = ${d.now}, owner = NULL, expires_at = NULL WHERE lock_key = ?`, [
              token,
              key.key
            ])
            const rows = yield* query(`SELECT COUNT(*) AS n FROM ${LEDGER_TABLE} o WHERE ${othersHold("o")}`, others)
            return Number(rows[0]?.n ?? 0)
          }))).pipe(Effect.mapError(toDatabaseError("release a shared hold")))
        const landed = recheckRetry(
          query(sharedLanded, [...mine, ...others, key.key]).pipe(Effect.mapError(toDatabaseError("release a shared hold")))
        ).pipe(Effect.map((rows) => {
          const row = rows[0] as { token: string | null; mine: unknown; others: unknown } | undefined
          return row !== undefined && (row.token === token || Number(row.mine) === 0) ? Number(row.others) : null
        }))
        let unsure = false
        return Effect.suspend(() =>
          attempt.pipe(
            Effect.flatMap((released) => (released === null && unsure ? landed : Effect.succeed(released))),
            Effect.catchIf(StoreRetry.outcomeUnknown, (error) => {
              unsure = true
              return Effect.flatMap(landed, (released) => (released === null ? Effect.fail(error) : Effect.succeed(released)))
            })
          )
        )
      },
      getMountStatus: (jobId, backupTargetId, host) =>
        entries(
          `SELECT ${ledgerSelect} FROM ${LEDGER_TABLE}
            WHERE jobid = ? AND backup_target_id = ${x}? AND deleted = 0${host === undefined ? "" : ` AND host = ${x}?`}
            ${newestFirst} LIMIT 1`,
          host === undefined ? [jobId, backupTargetId] : [jobId, backupTargetId, host]
        ).pipe(
          Effect.map((rows) => Option.fromNullable(rows[0])),
          Effect.mapError(toDatabaseError("getMountStatus"))
        ),
      getActiveMounts: (host, backupTargetId, page) =>
        entries(
          `SELECT ${ledgerSelect} FROM ${LEDGER_TABLE}
            WHERE mounted = 1 AND deleted = 0${host === undefined ? "" : ` AND host = ${x}?`}${
            backupTargetId === undefined ? "" : ` AND backup_target_id = ${x}?`
          }${page === undefined ? "" : " AND id > ?"} ORDER BY id${page === undefined ? "" : ` LIMIT ${Math.trunc(page.limit)}`}`,
          [
            ...(host === undefined ? [] : [host]),
            ...(backupTargetId === undefined ? [] : [backupTargetId]),
            ...(page === undefined ? [] : [page.afterId])
          ]
        ).pipe(Effect.mapError(toDatabaseError("getActiveMounts"))),
      purgeBatch: (olderThanMs, afterId, batchSize, dryRun) =>
        Effect.gen(function*() {
          // Candidates by primary key, a plain (non-locking) read; then deleted by id with the row's own
          // conditions checked again, so only those rows are locked, briefly, and a mount meanwhile keeps
          // its row. Not the lease: inside a DELETE, MySQL reads the lock table with shared locks held to
          // its end, and every lease take of the batch's pairs (up to one per row) waited for the batch.
          // A lease taken in between may find its pair's old idle row gone, as a write under a lease
          // already may (it then inserts a row for a mount, and an unmount has nothing to clear).
          const candidates = yield* query(
            `SELECT id, ${purgeable("e", olderThanMs)} AS ok FROM ${LEDGER_TABLE} e WHERE e.id > ? ORDER BY e.id LIMIT ${Math.trunc(batchSize)}`,
            [afterId]
          )
          const lastId = candidates.length < batchSize ? null : Number(candidates[candidates.length - 1]!.id)
          const ids = candidates.filter((r) => truthy(r.ok)).map((r) => Number(r.id))
          if (ids.length === 0 || dryRun) return { deleted: ids.length, lastId }
          const raw = yield* run(
            `DELETE FROM ${LEDGER_TABLE} WHERE id IN (${ids.map(() => "?").join(", ")}) AND ${idle(LEDGER_TABLE, olderThanMs)}`,
            ids
          )
          return { deleted: d.affected(raw), lastId }
        }).pipe(Effect.mapError(toDatabaseError("purge"))),
      ping: query("SELECT 1", []).pipe(Effect.asVoid, Effect.mapError(toDatabaseError("ping"))),
      getHostState: (host) =>
        Effect.gen(function*() {
          const locks = yield* query(
            `SELECT ${hostLockColumns} FROM ${LOCK_TABLE} WHERE host = ${x}? ORDER BY backup_target_id`,
            [host]
          )
          const holders = yield* entries(
            `SELECT ${ledgerSelect} FROM ${LEDGER_TABLE} WHERE mounted = 1 AND ${notDeleted} AND host = ${x}? ORDER BY id`,
            [host]
          )
          return {
            host,
            locks: (locks as ReadonlyArray<Record<string, unknown>>).map((l): HostLock => ({
              backupTargetId: String(l.backup_target_id),
              host,
              mountPath: Option.fromNullable(l.mount_path as string | null),
              targetType: targetTypeOf(l.target_type),
              pending: pendingOf(l.pending_op, l.pending_deadline, l.pending_left, l.pending_path as string | null, l.pending_type)
            })),
            holders
          }
        }).pipe(Effect.mapError(toDatabaseError("getHostState"))),
      getLedgerHistory: (backupTargetId, limit) =>
        entries(
          `SELECT ${ledgerSelect} FROM ${LEDGER_TABLE} WHERE backup_target_id = ${x}? ${newestFirst} LIMIT ${
            String(Math.trunc(limit))
          }`,
          [backupTargetId]
        ).pipe(Effect.mapError(toDatabaseError("getLedgerHistory")))
    }
    return store
  })

/** How long a write whose outcome is unknown may take to find out whether it landed. */
const recheckRetry = StoreRetry.retrying("checking whether a ledger write landed", Duration.seconds(10))

/** Options of a SQL store. */
export interface StoreOptions {
  /** Create or upgrade the tables before use (`trilio-dms migrate`'s work); otherwise only check them. */
  readonly migrate?: boolean | undefined
}

/** MySQL's statements, run by `exec` (see `mysqlNodes`): each fenced by itself, so no transactions. */
export const mysqlStatements = (exec: Exec): Statements => ({
  run: exec,
  runMany: exec,
  query: exec as Statements["query"],
  transaction: (effect) => effect
})

/** Statements over an @effect/sql client (SQLite's; one statement per round trip). */
export const clientStatements = (sql: SqlClient.SqlClient): Statements => ({
  run: (text, params) => sql.unsafe(text, params).raw,
  runMany: (text, params) => sql.unsafe(text, params).raw,
  query: (text, params) => sql.unsafe<Record<string, unknown>>(text, params),
  transaction: sql.withTransaction
})

/** The store on MySQL/MariaDB, its statements run by `exec` (see `mysqlNodes`). */
export const makeMysql = (exec: Exec, options: StoreOptions = {}): Effect.Effect<Store, DatabaseError> =>
  make(mysqlDialect, mysqlStatements(exec), options)

/** The store on SQLite, over the current SqlClient. */
export const makeSqlite = (options: StoreOptions = {}): Effect.Effect<Store, DatabaseError, SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => make(sqliteDialect, clientStatements(sql), options))
