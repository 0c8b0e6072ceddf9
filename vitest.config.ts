import * as path from "node:path"
import { defineConfig } from "vitest/config"

// Two projects: "unit" runs in parallel (memory layers and live tests on their own databases and
// queues); "faults" kills processes and connections, so it runs alone, file by file, after the rest.
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
          exclude: ["test/faults/**"],
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
      }
    ]
  }
})
