/**
 * The contract between the Broker and what carries its requests (AMQP, or the in-process broker): one
 * encoded request out, its raw reply back, and the signal that the request's deadline passed first.
 */
import * as Data from "effect/Data"

/**
 * One request, encoded, as the Broker hands it to a transport.
 */
export interface Outgoing {
  readonly host: string
  readonly queue: string
  readonly correlationId: string
  readonly content: Buffer
  /** Epoch ms after which the request must not run; `Infinity` for none. */
  readonly deadline: number
  readonly headers: Readonly<Record<string, unknown>>
}

/**
 * A transport's signal that a request's deadline passed before its reply came. `published: false`:
 * it passed before the request was published (still connecting, or checking the queue), so no server
 * can have it; `published: true`: the request went out and the outcome is unknown.
 */
export class DeadlineReached extends Data.TaggedClass("DeadlineReached")<{ readonly published: boolean }> {}
