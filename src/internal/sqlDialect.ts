/**
 * What differs between the two SQL backends (MySQL/MariaDB and SQLite): the clock expressions, exact
 * comparison, result headers, error codes and date values; and how a driver error becomes a
 * `DatabaseError`.
 */
import type { SqlError } from "@effect/sql/SqlError"
import type * as Effect from "effect/Effect"
import { DatabaseError } from "../DmsError.js"

/** SQLite's current UTC time with milliseconds, and in whole seconds. */
export const sqliteNow = `strftime('%Y-%m-%d %H:%M:%f','now')`
export const sqliteNowSeconds = `strftime('%Y-%m-%d %H:%M:%S','now')`

export interface Dialect {
  readonly name: "mysql" | "sqlite"
  /** Current UTC time with milliseconds. */
  readonly now: string
  /** Current UTC time, whole seconds (the ledger's DATETIME columns). */
  readonly nowSeconds: string
  /** Current UTC time plus `ms` milliseconds. */
  readonly nowPlus: (ms: number) => string
  /** Current UTC time minus `ms` milliseconds. */
  readonly nowMinus: (ms: number) => string
  /** Milliseconds from now until a DATETIME column's value (negative once it passed), by the database's clock. */
  readonly msUntil: (column: string) => string
  /**
   * Put before a parameter compared with `backup_target_id` or `host`: the comparison is then exact.
   * MySQL compares with the column's collation (utf8mb4_general_ci by default: case- and accent-
   * insensitive, trailing spaces ignored), so target "ABC" would read target "abc"'s holders. `BINARY`
   * on the parameter side keeps the index usable. SQLite's `=` is already exact.
   */
  readonly exact: string
  readonly affected: (raw: unknown) => number
  readonly isDuplicateKey: (e: SqlError) => boolean
  readonly toDate: (v: unknown) => Date | null
  readonly fromDate: (d: Date) => unknown
}

export const errorCode = (e: SqlError): string | undefined => {
  const cause = e.cause as { code?: unknown } | undefined
  return typeof cause?.code === "string" ? cause.code : undefined
}

export const mysqlDialect: Dialect = {
  name: "mysql",
  now: "UTC_TIMESTAMP(3)",
  nowSeconds: "UTC_TIMESTAMP()",
  nowPlus: (ms) => `(UTC_TIMESTAMP(3) + INTERVAL ${Math.round(ms) * 1000} MICROSECOND)`,
  nowMinus: (ms) => `(UTC_TIMESTAMP(3) - INTERVAL ${Math.round(ms) * 1000} MICROSECOND)`,
  msUntil: (column) => `(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(3), ${column}) DIV 1000)`,
  exact: "BINARY ",
  // mysql2 sets CLIENT_FOUND_ROWS: affectedRows counts matched rows, so a fence that rewrites an
  // unchanged value still counts.
  affected: (raw) => Number((raw as { affectedRows?: number }).affectedRows ?? 0),
  isDuplicateKey: (e) => errorCode(e) === "ER_DUP_ENTRY",
  toDate: (v) => (v === null || v === undefined ? null : v instanceof Date ? v : new Date(`${String(v).replace(" ", "T")}Z`)),
  fromDate: (d) => d
}

export const sqliteDialect: Dialect = {
  name: "sqlite",
  now: sqliteNow,
  nowSeconds: sqliteNowSeconds,
  nowPlus: (ms) => `strftime('%Y-%m-%d %H:%M:%f','now','${ms < 0 ? "-" : "+"}${(Math.abs(Math.round(ms)) / 1000).toFixed(3)} seconds')`,
  nowMinus: (ms) => `strftime('%Y-%m-%d %H:%M:%f','now','${ms < 0 ? "+" : "-"}${(Math.abs(Math.round(ms)) / 1000).toFixed(3)} seconds')`,
  msUntil: (column) => `CAST(ROUND((julianday(${column}) - julianday('now')) * 86400000.0) AS INTEGER)`,
  exact: "",
  affected: (raw) => Number((raw as { changes?: number }).changes ?? 0),
  isDuplicateKey: (e) => /^SQLITE_CONSTRAINT/.test(errorCode(e) ?? ""),
  toDate: (v) => (v === null || v === undefined ? null : new Date(`${String(v).replace(" ", "T")}Z`)),
  fromDate: (d) => d.toISOString().replace("T", " ").replace("Z", "")
}

/** A boolean column's value as the drivers return it (number, bigint, string or boolean). */
export const truthy = (v: unknown): boolean => v === 1 || v === true || v === "1" || v === 1n

/** A driver error (or an already mapped one) as the `DatabaseError` of `operation`. */
export const toDatabaseError = (operation: string) => (e: SqlError | DatabaseError): DatabaseError =>
  e instanceof DatabaseError ? e : new DatabaseError({ operation, cause: e.cause ?? e })

/**
 * Runs one statement text with `?` parameters (on MySQL several, `;`-separated, in one round trip) and
 * returns the driver's result: rows for a query, the write's result header otherwise, an array of
 * those for several statements.
 */
export type Exec = (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<unknown, SqlError>

/** How a store sends its statements. */
export interface Statements {
  /** One statement; its raw result. */
  readonly run: Exec
  /** Several `;`-separated statements in one round trip (MySQL); their results. */
  readonly runMany: Exec
  /** A query; its rows. */
  readonly query: (text: string, params: ReadonlyArray<unknown>) => Effect.Effect<ReadonlyArray<Record<string, unknown>>, SqlError>
  /** Runs `effect`'s statements in one transaction (SQLite); MySQL's statements are fenced one by one instead. */
  readonly transaction: <A, E>(effect: Effect.Effect<A, E>) => Effect.Effect<A, E | SqlError>
}
