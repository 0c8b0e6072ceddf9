/**
 * The model DMS server of the tests: the one shipped to users as `trilio-dms/testing`'s
 * `FakeDmsServer`, under the names the tests have used.
 */
export { make } from "../../src/testing/FakeDmsServer.js"
export type { Received, Service as FakeServer, Transition } from "../../src/testing/FakeDmsServer.js"
