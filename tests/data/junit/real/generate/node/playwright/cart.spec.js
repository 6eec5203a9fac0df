// Plain Playwright tests (no browser): the runner and its junit reporter are what matter.
const { test, expect } = require("@playwright/test");

test.describe("Cart", () => {
  test("adds an item", async () => {
    console.log("adding");
    expect([1].length).toBe(1);
  });
  test("computes the total", async () => {
    expect(0.1 + 0.2).toBe(0.3);
  });
  test.skip("applies a coupon", async () => {});
  test("flaky: passes on retry", async ({}, testInfo) => {
    expect(testInfo.retry).toBeGreaterThan(0);
  });
  test.describe("Checkout › nested", () => {
    for (const name of ["Zoë", "日本"]) {
      test(`greets ${name}`, async () => {
        expect(name).not.toBe("日本");
      });
    }
  });
  test.fail("known bug, expected to fail", async () => {
    expect(1).toBe(2);
  });
});
