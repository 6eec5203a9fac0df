module.exports = {
  testDir: ".",
  retries: 1,
  workers: 1,
  reporter: [["list"], ["junit", { outputFile: process.env.PLAYWRIGHT_JUNIT_OUTPUT_NAME }]],
};
