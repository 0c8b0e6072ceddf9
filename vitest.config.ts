import * as path from "node:path"
import { defineConfig } from "vitest/config"

// Three projects: "unit" runs in parallel (memory layers and live tests on their own databases and
// queues); "faults" kills processes and connections, so it runs alone, file by file, after the rest;
// "cluster" runs on a 3-node Galera and a 3-node RabbitMQ cluster that its global setup starts once (and
// its tests stop and kill nodes), alone, file by file, last.
export default defineConfig({
  // The examples import the package by name, as users do.
  resolve: {
    alias: {
      "trilio-dms/promise": path.resolve(import.meta.dirname, "src/promise.ts"),
      "trilio-dms/testing": path.resolve(import.meta.dirname, "src/testing.ts"),
      "trilio-dms": path.resolve(import.meta.dirname, "src/index.ts")
    }
  },
  test: {
    // Under CI, also write machine-readable results: .ci/run prints "N passed, N failed" from them.
    reporters: process.env.CI ? ["default", ["json", { outputFile: ".ci-results/vitest.json" }]] : ["default"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          include: ["test/**/*.test.ts"],
          exclude: ["test/faults/**", "test/cluster/**"],
          sequence: { groupOrder: 0 }
        }
      },
      {
        extends: true,
        test: {
          name: "faults",
          include: ["test/faults/**/*.test.ts"],
          pool: "forks",
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 1 }
        }
      },
      {
        extends: true,
        test: {
          name: "cluster",
          include: ["test/cluster/**/*.test.ts"],
          globalSetup: ["test/cluster/globalSetup.ts"],
          pool: "forks",
          poolOptions: { forks: { singleFork: true } },
          sequence: { groupOrder: 2 }
        }
      }
    ]
  }
})
