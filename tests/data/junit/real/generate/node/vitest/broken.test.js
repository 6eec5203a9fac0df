import { nothing } from "./does-not-exist.js";
import { test, expect } from "vitest";

test("never runs", () => {
  expect(nothing).toBeUndefined();
});
