import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: [process.env.DS_TEST_FILE || "conformance.test.js"],
    // One server under test: its tests run one after another, as the suite expects.
    fileParallelism: false,
    testTimeout: 60000,
    hookTimeout: 60000,
  },
})
