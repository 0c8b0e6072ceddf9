/**
 * What a command loads when it runs: the library, its layers, the server, the demo and the doctor's
 * checks. Loaded on demand (see {@link Lazy}), so that `--help` and a bad flag answer without loading
 * the database and broker drivers.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as DemoRun from "./DemoRun.js"
/**
 * @since 0.1.0
 */
export * as DmsConfig from "../DmsConfig.js"
/**
 * @since 0.1.0
 */
export * as DoctorChecks from "./DoctorChecks.js"
/**
 * @since 0.1.0
 */
export * as Ledger from "../Ledger.js"
/**
 * @since 0.1.0
 */
export * as Mount from "../Mount.js"
/**
 * @since 0.1.0
 */
export * as Reconcile from "../Reconcile.js"
/**
 * @since 0.1.0
 */
export * as Server from "../server/Server.js"
/**
 * @since 0.1.0
 */
export * as Setup from "./Setup.js"
/**
 * @since 0.1.0
 */
export * as Urls from "../internal/urls.js"
