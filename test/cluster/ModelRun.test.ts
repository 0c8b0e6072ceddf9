/**
 * The randomized model test on the clusters, under node faults (issue #13, "Faults on the cluster"):
 * the scripts of test/ModelRun.test.ts from fibers of this process and from two client processes, each
 * client on another Galera node (multi-writer, the worst case: worker 0 → node 1, worker 1 → node 2,
 * this process → node 3) and on another RabbitMQ node (A, B, C), against model servers on C whose
 * queues are quorum queues. While they run, faults in turn:
 * - `galeraKill`: SIGKILL the Galera node a client process uses, then restart it: it must rejoin (the
 *   fault ends once every node is in a cluster of 3 again);
 * - `rabbitStop`: stop_app the RabbitMQ node a client process or the model servers are connected to,
 *   then start_app (a model server that lost its broker is restarted, as systemd would);
 * - `rabbitLeaderStop`: stop_app the node leading a host's quorum queue, then start_app;
 * - and of the fault run's own: a model server SIGKILLed mid-request, the clients' broker connections
 *   closed by name, the MariaDB connections of this process killed, replies delayed past the client's
 *   timeout.
 * The run lasts until `DMS_MODEL_CLUSTER_FAULTS` faults are over (each script at least its share of
 * `DMS_MODEL_CLUSTER_OPS` operations); then the drift for reconcile, recovery (reconcile with repair, a
 * second reconcile that must be clean) and the model's checks: 0 violations, and every failure one of
 * the typed errors. The summary line gives the operations, faults by kind, errors by kind (with the
 * database's or broker's code) and the clients' retries by kind (`dms_ledger_retries_total`).
 */
import { assert, layer } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { inject } from "vitest"
import {
  awaitGaleraWhole,
  clusterRabbitmqctl,
  galeraStatus,
  quorumLeader,
  RABBIT_NODES,
  type RabbitNode,
  restoreClusters,
  script
} from "../support/clusterNodes.js"
import * as Model from "../support/model.js"
import { testDatabaseOn } from "../support/mysql.js"

const cluster = inject("cluster")
const seed = Model.envNumber("SEED", Math.floor(Math.random() * 2 ** 31))
const ops = Model.envNumber("CLUSTER_OPS", 500)
const faultCount = Model.envNumber("CLUSTER_FAULTS", 8)
/** Each slot's pause between operations (ms): node restarts and rabbitmqctl are slow on a loaded machine. */
const pauseMs = Model.envNumber("CLUSTER_PAUSE_MS", 50)

// Who connects where: worker w → Galera node w + 1 and RabbitMQ node A/B; this process (its fibers, the
// drift, recovery) → Galera node 3 and RabbitMQ C; the model servers → C first. Each client's db_url
// lists its own node first, then the others (it fails over along them). Node 3 is never killed: the
// test's own connection reads the ledger there (causally).
const galeraNode = (role: Model.ClientRole) => (role === "main" ? 3 : role + 1)
const galeraNodes = (role: Model.ClientRole) =>
  [0, 1, 2].map((i) => cluster.galera[(galeraNode(role) - 1 + i) % cluster.galera.length]!).join(",")
const rabbitNode = (role: Model.ClientRole): RabbitNode => (role === "main" ? "C" : RABBIT_NODES[role]!)
const SERVER_NODE: RabbitNode = "C"
const amqpUrl = (node: RabbitNode) => cluster.rabbit[RABBIT_NODES.indexOf(node)]!
/** The nodes from `first` on, in order: a URL list a client or server fails over along. */
const fromNode = (first: RabbitNode) => [...RABBIT_NODES.slice(RABBIT_NODES.indexOf(first)), ...RABBIT_NODES.slice(0, RABBIT_NODES.indexOf(first))]

const [galeraHost, galeraPort] = cluster.galera[2]!.split(":")
const database = testDatabaseOn({
  host: galeraHost!,
  port: Number(galeraPort),
  user: cluster.galeraUser,
  password: cluster.galeraPassword,
  session: ["SET SESSION wsrep_sync_wait = 1"]
})

/** How long a node stays down: drawn from the fault's `r` (the fault's length, not an assertion). */
const downFor = (r: number) => Duration.millis(800 + (r % 2_200))

/** Stops a RabbitMQ node's app for a while, then starts it again (also when interrupted). */
const stopRabbit = (node: RabbitNode, r: number, context: Model.FaultContext) =>
  Effect.acquireUseRelease(
    script("rabbitmq.sh", ["stop-app", node]),
    () => Effect.sleep(downFor(r)),
    () => Effect.orDie(script("rabbitmq.sh", ["start-app", node]))
  ).pipe(Effect.zipRight(context.serversUp))

const extraFaults: Readonly<Record<string, Model.ExtraFault>> = {
  galeraKill: (r, context) => {
    const worker = r % context.workers
    const node = String(galeraNode(worker))
    return Effect.acquireUseRelease(
      script("galera.sh", ["kill", node]),
      () => Effect.sleep(downFor(r)),
      // Restarted (it recovers its position and rejoins by IST), then the cluster must be whole again.
      () => Effect.orDie(Effect.zipRight(script("galera.sh", ["restart", node]), awaitGaleraWhole(cluster)))
    ).pipe(Effect.as(`galeraKill(node${node})`))
  },
  rabbitStop: (r, context) => {
    const node = r % 3 === 0 ? SERVER_NODE : rabbitNode(r % context.workers)
    return stopRabbit(node, r, context).pipe(Effect.as(`rabbitStop(${node === SERVER_NODE ? "servers" : "client"} ${node})`))
  },
  rabbitLeaderStop: (r, context) =>
    Effect.gen(function*() {
      const queue = context.queues[r % context.queues.length]!
      const leader = yield* quorumLeader(queue)
      if (leader === undefined) return undefined
      yield* stopRabbit(leader, r, context)
      return `rabbitLeaderStop(${leader})`
    })
}

/** In turn (the node faults twice as often as the others, which take no time). */
const KINDS = ["galeraKill", "rabbitStop", "rabbitLeaderStop", "serverKill", "rabbitClose", "dbKill", "delay", "galeraKill", "rabbitStop", "rabbitLeaderStop"]

const TYPED = ["ValidationError", "TimeoutError", "DatabaseError", "BrokerError", "MountError"]

layer(database, { excludeTestServices: true, timeout: "60 seconds" })("model run on the clusters", (it) => {
  it.scoped(
    `random operations from clients on different Galera and RabbitMQ nodes while ${faultCount} node faults come and go: invariants hold after reconcile (seed ${seed})`,
    () =>
      Effect.gen(function*() {
        // Whatever happens, the next test finds both clusters whole.
        yield* Effect.addFinalizer(() => Effect.orDie(restoreClusters(cluster)))
        yield* restoreClusters(cluster)
        const summary = yield* Model.run({
          seed,
          ops,
          faults: true,
          pauseMs,
          wiring: {
            dbUrl: (role, name) => `mysql://${cluster.galeraUser}:${cluster.galeraPassword}@${galeraNodes(role)}/${name}`,
            // Its own node first, then the others: it fails over along the list.
            rabbitmqUrl: (role) => fromNode(rabbitNode(role)).map(amqpUrl).join(","),
            serverUrl: () => fromNode(SERVER_NODE).map(amqpUrl).join(","),
            queueType: "quorum",
            adminUrl: amqpUrl(SERVER_NODE),
            rabbitmqctl: clusterRabbitmqctl,
            superviseServers: true,
            faultKinds: KINDS,
            extraFaults,
            faultCount
          }
        })
        console.log(Model.summaryLine(summary))
        const replay = `seed ${seed}: replay with DMS_MODEL_SEED=${seed} DMS_MODEL_CLUSTER_OPS=${ops} DMS_MODEL_CLUSTER_FAULTS=${faultCount}`
        assert.strictEqual(summary.violations.length, 0, `${replay}\n${summary.violations.slice(0, 20).join("\n")}`)
        assert.isAtLeast(summary.ops, ops)
        // No process was killed by the test, so every operation ended (none lost with a process).
        assert.isUndefined(summary.byOutcome.killed, `${replay}: operations that never ended`)
        // Every failure is one of the typed errors (no defect, interruption or hang).
        for (const kind of Object.keys(summary.errors)) {
          assert.isTrue(TYPED.some((t) => kind.startsWith(t)), `${replay}: an untyped failure ${kind}: ${JSON.stringify(summary.errors)}`)
        }
        // Reconcile repaired all the drift it found.
        const r = summary.reconciled
        assert.isDefined(summary.drift)
        assert.strictEqual(r.remounted, r.stale, `every stale target remounted: ${JSON.stringify(r)}`)
        assert.strictEqual(r.unmounted, r.orphans, `every orphan unmounted: ${JSON.stringify(r)}`)
        assert.strictEqual(r.resolved, r.pending, `every pending mark resolved: ${JSON.stringify(r)}`)
        // Every kind of fault was injected.
        for (const kind of new Set(KINDS.slice(0, Math.min(faultCount, KINDS.length)))) {
          assert.isTrue(Object.keys(summary.faults).some((k) => k.startsWith(kind)), `no ${kind} fault: ${JSON.stringify(summary.faults)}`)
        }
        // The killed nodes rejoined: every Galera node is in a cluster of 3 again.
        for (const node of cluster.galera) {
          const status = yield* galeraStatus(cluster, node)
          assert.deepStrictEqual(status, { size: 3, ready: true }, `Galera node ${node} after the run`)
        }
      }),
    { timeout: Math.max(420_000, faultCount * 40_000) }
  )
})
