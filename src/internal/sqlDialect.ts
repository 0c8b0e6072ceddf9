/**
 * What differs between the two SQL backends (MySQL/MariaDB and SQLite): the clock expressions, exact
 * comparison, result headers, error codes and date values; and how a driver error becomes a
 * `DatabaseError`.
 */
import type { SqlError } from "@effect/sql/SqlError"
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
  nowPlus: (ms) => `strftime('%Y-%m-%d %H:%M:%f','now','+${(Math.round(ms) / 1000).toFixed(3)} seconds')`,
  nowMinus: (ms) => `strftime('%Y-%m-%d %H:%M:%f','now','-${(Math.round(ms) / 1000).toFixed(3)} seconds')`,
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
