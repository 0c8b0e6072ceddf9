/**
 * trilio-dms/testing: test layers for the unit tests of code that uses trilio-dms. `TestDms` gives the
 * whole client on memory (an Effect layer, or a `DMSClient`); `FakeDmsServer` is the stateful fake DMS
 * server behind it, which says what is mounted, what it received and did, and takes scripted failures,
 * holds and delays.
 *
 * ```ts
 * import { FakeDmsServer, TestDms } from "trilio-dms/testing"
 * ```
 *
 * @since 0.1.0
 */

/**
 * The stateful fake DMS server: mounts per host, requests and transitions seen, scripted failures,
 * holds, delays and reboots.
 *
 * @since 0.1.0
 */
export * as FakeDmsServer from "./testing/FakeDmsServer.js"

/**
 * The whole client on memory: `TestDms.layer()` for Effect, `TestDms.client()` for a `DMSClient`.
 *
 * @since 0.1.0
 */
export * as TestDms from "./testing/TestDms.js"
