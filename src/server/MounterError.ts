/**
 * The error of a mount, unmount or status the Mounter could not do or refused.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/**
 * A mount or unmount that failed or was refused; the message is the reply's `error_msg`.
 *
 * @since 0.1.0
 * @category errors
 */
export class MounterError extends Schema.TaggedError<MounterError>()("MounterError", {
  operation: Schema.Literal("mount", "unmount", "status"),
  path: Schema.String,
  reason: Schema.String,
  /** Nothing was executed (refused before any command ran). */
  refused: Schema.optional(Schema.Boolean),
  cause: Schema.optional(Schema.Defect)
}) {
  override get message(): string {
    return this.reason
  }
}

/**
 * The operation a {@link MounterError} is about.
 *
 * @since 0.1.0
 * @category models
 */
export type Operation = MounterError["operation"]

/**
 * The failure of a mount of `path`; `refused` when nothing was attempted.
 *
 * @since 0.1.0
 * @category constructors
 */
export const mountFailure = (path: string) => (reason: string, refused = false, cause?: unknown) =>
  Effect.fail(
    new MounterError({
      operation: "mount",
      path,
      reason,
      ...(refused ? { refused } : {}),
      ...(cause === undefined ? {} : { cause })
    })
  )
