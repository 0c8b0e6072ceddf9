/**
 * Loads {@link Lib} when a command runs, once.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"

/**
 * The modules a command needs to run (the library, its drivers, the server).
 *
 * @since 0.1.0
 * @category loading
 */
export const lib: Effect.Effect<typeof import("./Lib.js")> = Effect.promise(() => import("./Lib.js"))
