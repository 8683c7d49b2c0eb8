import { defineConfig } from "vitest/config";

/**
 * Shared vitest settings. Tests import workspace packages through the
 * `@ts-vmm/source` export condition, so they run against src/ without a build;
 * native addons are still loaded from each package's build/Release.
 */
export default defineConfig({
  resolve: { conditions: ["@ts-vmm/source"] },
  ssr: { resolve: { conditions: ["@ts-vmm/source"] } },
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 120_000,
    pool: "forks",
    reporters: ["default", "json"],
    outputFile: { json: ".vitest-report.json" },
  },
});
