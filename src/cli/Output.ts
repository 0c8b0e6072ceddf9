/**
 * What the command line prints: aligned tables and lines on stdout, errors and progress on stderr,
 * JSON (and nothing else on stdout) with `--json`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as Ledger from "../Ledger.js"

/**
 * Writes lines to stdout.
 *
 * @since 0.1.0
 * @category output
 */
export const lines = (text: ReadonlyArray<string>): Effect.Effect<void> =>
  Effect.sync(() => void process.stdout.write(text.map((l) => `${l}\n`).join("")))

/**
 * Writes one line to stdout.
 *
 * @since 0.1.0
 * @category output
 */
export const line = (text: string): Effect.Effect<void> => lines([text])

/**
 * Writes lines to stderr.
 *
 * @since 0.1.0
 * @category output
 */
export const errorLines = (text: ReadonlyArray<string>): Effect.Effect<void> =>
  Effect.sync(() => void process.stderr.write(text.map((l) => `${l}\n`).join("")))

/**
 * Writes one line to stderr.
 *
 * @since 0.1.0
 * @category output
 */
export const errorLine = (text: string): Effect.Effect<void> => errorLines([text])

/**
 * Writes a value as JSON on one line of stdout.
 *
 * @since 0.1.0
 * @category output
 */
export const json = (value: unknown): Effect.Effect<void> => line(JSON.stringify(value))

/**
 * A column of a table: its header, and whether it is right-aligned (numbers).
 *
 * @since 0.1.0
 * @category models
 */
export interface Column {
  readonly header: string
  readonly align?: "left" | "right" | undefined
}

/**
 * Formats rows as a table with aligned columns separated by two spaces (no trailing spaces).
 *
 * @since 0.1.0
 * @category formatting
 */
export const table = (columns: ReadonlyArray<Column>, rows: ReadonlyArray<ReadonlyArray<string>>): ReadonlyArray<string> => {
  const all = [columns.map((c) => c.header), ...rows]
  const widths = columns.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)))
  return all.map((row) =>
    columns.map((c, i) => {
      const cell = row[i] ?? ""
      const width = widths[i] ?? 0
      return c.align === "right" ? cell.padStart(width) : i === columns.length - 1 ? cell : cell.padEnd(width)
    }).join("  ").trimEnd()
  )
}

/**
 * A timestamp as `2025-01-31 12:00:00` (UTC, as the ledger stores it).
 *
 * @since 0.1.0
 * @category formatting
 */
export const timestamp = (date: Date | null): string =>
  date === null ? "-" : date.toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "")

/**
 * A duration as `3d4h`, `2h5m`, `4m10s`, `12s`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const age = (ms: number): string => {
  const s = Math.max(0, Math.floor(ms / 1000))
  const d = Math.floor(s / 86400)
  const h = Math.floor((s % 86400) / 3600)
  const m = Math.floor((s % 3600) / 60)
  if (d > 0) return `${d}d${h}h`
  if (h > 0) return `${h}h${m}m`
  if (m > 0) return `${m}m${s % 60}s`
  return `${s}s`
}

/**
 * Elapsed milliseconds as `850 ms` or `1.2 s`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const elapsed = (ms: number): string => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`)

/**
 * A ledger row as JSON, with the guide's column names (`jobid`, `backup_target_id`, `created_at`, …).
 *
 * @since 0.1.0
 * @category formatting
 */
export const entryJson = (e: Ledger.LedgerEntry) => ({
  id: e.id,
  jobid: e.jobId,
  backup_target_id: e.backupTargetId,
  host: e.host,
  mounted: e.mounted,
  deleted: e.deleted,
  version: e.version,
  created_at: e.createdAt.toISOString(),
  updated_at: e.updatedAt.toISOString(),
  deleted_at: e.deletedAt === null ? null : e.deletedAt.toISOString()
})

const yesNo = (b: boolean) => (b ? "yes" : "no")

/**
 * Ledger rows as a table (ID, JOB, TARGET, HOST, MOUNTED, DELETED, CREATED, UPDATED, …).
 *
 * @since 0.1.0
 * @category formatting
 */
export const entriesTable = (
  entries: ReadonlyArray<Ledger.LedgerEntry>,
  options: { readonly now?: number | undefined; readonly history?: boolean | undefined } = {}
): ReadonlyArray<string> => {
  const columns: Array<Column> = [
    { header: "ID", align: "right" },
    { header: "JOB", align: "right" },
    { header: "TARGET" },
    { header: "HOST" },
    { header: "MOUNTED" },
    ...(options.history === true ? [{ header: "DELETED" }] : []),
    { header: "CREATED (UTC)" },
    { header: "UPDATED (UTC)" },
    ...(options.now !== undefined ? [{ header: "AGE", align: "right" as const }] : []),
    ...(options.history === true ? [{ header: "DELETED AT (UTC)" }, { header: "VERSION" }] : [])
  ]
  const rows = entries.map((e) => [
    String(e.id),
    String(e.jobId),
    e.backupTargetId,
    e.host,
    yesNo(e.mounted),
    ...(options.history === true ? [yesNo(e.deleted)] : []),
    timestamp(e.createdAt),
    timestamp(e.updatedAt),
    ...(options.now !== undefined ? [age(options.now - e.createdAt.getTime())] : []),
    ...(options.history === true ? [timestamp(e.deletedAt), e.version ?? "-"] : [])
  ])
  return table(columns, rows)
}

const levelName = (label: string) => (label === "WARN" ? "warning" : label.toLowerCase())

const text = (message: unknown): string => {
  const parts = Array.isArray(message) ? message : [message]
  return parts.map((p) => (typeof p === "string" ? p : p instanceof Error ? p.message : JSON.stringify(p))).join(" ")
}

/**
 * Log lines on stderr, `trilio-dms: info: …`: stdout is for results (and only JSON with `--json`).
 *
 * @since 0.1.0
 * @category layers
 */
export const loggerLayer: Layer.Layer<never> = Logger.replace(
  Logger.defaultLogger,
  Logger.make(({ annotations, logLevel, message }) => {
    const extra = [...HashMap.toEntries(annotations)].map(([k, v]) => ` ${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
    process.stderr.write(`trilio-dms: ${levelName(logLevel.label)}: ${text(message)}${extra.join("")}\n`)
  })
)
