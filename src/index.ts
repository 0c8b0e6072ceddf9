/**
 * trilio-dms: the Dynamic Mount Service client for backup targets (NFS exports, S3 buckets), as Effect
 * services. Import a module as a namespace: `import { Ledger, DmsConfig } from "trilio-dms"`.
 *
 * @since 0.1.0
 */

/**
 * Request/reply with the DMS server of a host over RabbitMQ, and an in-process broker for tests.
 *
 * @since 0.1.0
 */
export * as Broker from "./Broker.js"

/**
 * One layer for DmsConfig + Ledger + Broker, from URLs.
 *
 * @since 0.1.0
 */
export * as Dms from "./Dms.js"

/**
 * Configuration: options > environment > `~/.trilio-dms/client.conf` > defaults.
 *
 * @since 0.1.0
 */
export * as DmsConfig from "./DmsConfig.js"

/**
 * The typed errors: ValidationError, TimeoutError, DatabaseError, BrokerError, MountError.
 *
 * @since 0.1.0
 */
export * as DmsError from "./DmsError.js"

/**
 * The mount ledger and its fenced per-(target, host) lease: MySQL, SQLite and memory layers.
 *
 * @since 0.1.0
 */
export * as Ledger from "./Ledger.js"

/**
 * mount, unmount, mountScoped, withMount, softDeleteEntry and the ledger queries.
 *
 * @since 0.1.0
 */
export * as Mount from "./Mount.js"

/**
 * reconcile: the ledger against a host's real mounts (stale rows, orphan mounts, pending marks), and
 * their repair.
 *
 * @since 0.1.0
 */
export * as Reconcile from "./Reconcile.js"

/**
 * Telemetry: OpenTelemetry tracing from the standard OTEL_* variables, a Prometheus endpoint for the
 * process's metrics, JSON logs with trace ids.
 *
 * @since 0.1.0
 */
export * as Telemetry from "./Telemetry.js"

/**
 * The wire schemas: MountRequest and Reply.
 *
 * @since 0.1.0
 */
export * as Protocol from "./Protocol.js"
