/**
 * A TCP proxy to MariaDB that understands just enough of the MySQL protocol to act on one statement:
 * each client packet is matched against the armed rules by its text, so a test can
 *
 * - `dropAfter(text)`: forward the statement, let the server answer it in full (the write committed),
 *   swallow the answer and close the connection: the client sees a lost connection after COMMIT;
 * - `hold(text)`: keep the statement (and what follows on that connection) back until released;
 * - `seen(text)`: learn that a statement passed (a latch on what the client is doing).
 *
 * Each rule fires once, on the first packet that contains its text. Every query it forwards is logged
 * (`queries`: one entry a round trip, several statements in one). Binds 127.0.0.1 on a random port;
 * every connection is closed with the scope.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as net from "node:net"
import { MYSQL_HOST, MYSQL_PORT } from "./mysql.js"
import { relay } from "./tcp.js"

export interface Held {
  /** Completes when the statement has reached the proxy (the client is waiting for its answer). */
  readonly arrived: Deferred.Deferred<void>
  /** Forwards the statement, and everything the client sent after it. */
  readonly release: Effect.Effect<void>
}

export interface MysqlProxy {
  readonly port: number
  /** Completes when the statement has been answered by the server and the connection dropped. */
  readonly dropAfter: (text: string) => Effect.Effect<Deferred.Deferred<void>>
  readonly hold: (text: string) => Effect.Effect<Held>
  /** Completes when a statement containing `text` has been forwarded. */
  readonly seen: (text: string) => Effect.Effect<Deferred.Deferred<void>>
  /** The text of every query forwarded so far (COM_QUERY packets), in order. */
  readonly queries: ReadonlyArray<string>
}

interface Rule {
  readonly text: string
  readonly action: "drop" | "hold" | "see"
  readonly done: Deferred.Deferred<void>
}

interface Link {
  readonly upstream: net.Socket
  /** Client bytes not yet split into packets. */
  pending: Buffer
  /** Held packets (and all after them), when a hold rule fired on this link. */
  kept: Array<Buffer> | undefined
  /** Server bytes of the answer being swallowed, when a drop rule fired on this link. */
  swallowing: Buffer | undefined
  dropped: Deferred.Deferred<void> | undefined
}

const SERVER_MORE_RESULTS_EXISTS = 0x0008
const COM_QUERY = 0x03

/** Splits complete packets (3-byte length, sequence id, payload) off the front of `bytes`. */
const packets = (bytes: Buffer): { readonly complete: Array<Buffer>; readonly rest: Buffer } => {
  const complete: Array<Buffer> = []
  let at = 0
  while (bytes.length - at >= 4) {
    const size = bytes.readUIntLE(at, 3)
    if (bytes.length - at < 4 + size) break
    complete.push(bytes.subarray(at, at + 4 + size))
    at += 4 + size
  }
  return { complete, rest: bytes.subarray(at) }
}

/** Skips a length-encoded integer at `at`, returning the offset after it. */
const skipLenenc = (payload: Buffer, at: number): number => {
  const first = payload[at] ?? 0
  return at + (first < 0xfb ? 1 : first === 0xfc ? 3 : first === 0xfd ? 4 : 9)
}

/** Reads a length-encoded integer at `at`. */
const readLenenc = (payload: Buffer, at: number): number => {
  const first = payload[at] ?? 0
  return first < 0xfb ? first : first === 0xfc ? payload.readUInt16LE(at + 1) : first === 0xfd ? payload.readUIntLE(at + 1, 3) : Number(payload.readBigUInt64LE(at + 1))
}

/** The status flags of an OK packet, or of an EOF packet (short, 0xfe). */
const statusOf = (payload: Buffer): number =>
  payload[0] === 0xfe && payload.length < 9 ? payload.readUInt16LE(3) : payload.readUInt16LE(skipLenenc(payload, skipLenenc(payload, 1)))

/**
 * Whether `answer` holds the server's last packet for a statement (or several in one round trip): OK and
 * ERR packets, and result sets (column count, column definitions, an EOF unless the client deprecated
 * it, rows, and an EOF or OK that ends them, whose status says whether more results follow).
 */
const answered = (answer: Buffer): boolean => {
  const payloads = packets(answer).complete.map((packet) => packet.subarray(4))
  let at = 0
  while (at < payloads.length) {
    const first = payloads[at]!
    if (first[0] === 0xff) return true
    if (first[0] === 0x00) {
      if ((statusOf(first) & SERVER_MORE_RESULTS_EXISTS) === 0) return true
      at++
      continue
    }
    // A result set: skip the column definitions, then an EOF (if any) and the rows up to the last packet.
    at += 1 + readLenenc(first, 0)
    if (payloads[at]?.[0] === 0xfe && payloads[at]!.length < 9) at++
    while (at < payloads.length && payloads[at]![0] !== 0xfe) at++
    const end = payloads[at]
    if (end === undefined) return false
    if ((statusOf(end) & SERVER_MORE_RESULTS_EXISTS) === 0) return true
    at++
  }
  return false
}

/** A proxy to the test MariaDB; point a ledger URL at it with `urlOnPort(url, proxy.port)`. */
export const mysqlProxy: Effect.Effect<MysqlProxy, Error, Scope.Scope> = Effect.gen(function*() {
  const rules: Array<Rule> = []
  const queries: Array<string> = []
  // A command starts a new exchange (sequence id 0); a query's text follows its command byte.
  const logQuery = (packet: Buffer) => {
    if (packet[3] === 0 && packet[4] === COM_QUERY) queries.push(packet.subarray(5).toString("utf8"))
  }
  const arm = (text: string, action: Rule["action"]) =>
    Effect.map(Deferred.make<void>(), (done) => {
      rules.push({ text, action, done })
      return done
    })
  const take = (packet: Buffer): Rule | undefined => {
    const text = packet.subarray(4).toString("utf8")
    const index = rules.findIndex((r) => text.includes(r.text))
    return index < 0 ? undefined : rules.splice(index, 1)[0]
  }

  // Which link a hold rule kept, by the rule's Deferred.
  const holds = new Map<Deferred.Deferred<void>, Link>()
  const port = yield* relay(MYSQL_HOST, MYSQL_PORT, (client, upstream) => {
    const link: Link = { upstream, pending: Buffer.alloc(0), kept: undefined, swallowing: undefined, dropped: undefined }
    upstream.on("data", (chunk: Buffer) => {
      if (link.swallowing === undefined) return void client.write(chunk)
      link.swallowing = Buffer.concat([link.swallowing, chunk])
      if (answered(link.swallowing)) {
        client.destroy()
        upstream.destroy()
        if (link.dropped !== undefined) Deferred.unsafeDone(link.dropped, Effect.void)
      }
    })
    client.on("data", (chunk: Buffer) => {
      const split = packets(Buffer.concat([link.pending, chunk]))
      link.pending = split.rest
      for (const packet of split.complete) {
        if (link.kept !== undefined) {
          link.kept.push(packet)
          continue
        }
        const rule = take(packet)
        if (rule?.action === "hold") {
          link.kept = [packet]
          holds.set(rule.done, link)
          Deferred.unsafeDone(rule.done, Effect.void)
          continue
        }
        upstream.write(packet)
        logQuery(packet)
        if (rule?.action === "drop") {
          link.swallowing = Buffer.alloc(0)
          link.dropped = rule.done
        } else if (rule?.action === "see") Deferred.unsafeDone(rule.done, Effect.void)
      }
    })
  })
  return {
    port,
    queries,
    dropAfter: (text) => arm(text, "drop"),
    seen: (text) => arm(text, "see"),
    hold: (text) =>
      Effect.map(arm(text, "hold"), (arrived) => ({
        arrived,
        release: Effect.sync(() => {
          const link = holds.get(arrived)
          if (link?.kept === undefined) return
          for (const packet of link.kept.splice(0)) {
            link.upstream.write(packet)
            logQuery(packet)
          }
          link.kept = undefined
        })
      }))
  }
})
