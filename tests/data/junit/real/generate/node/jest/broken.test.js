// A suite that fails to load: jest reports it as a failed suite without test cases.
import { nothing } from "./does-not-exist";

test("never runs", () => {
  expect(nothing).toBeUndefined();
});
