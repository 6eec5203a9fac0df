const assert = require("node:assert");

describe("Cart", function () {
  it("adds an item", function () {
    assert.strictEqual([1].length, 1);
  });
  it("computes the total", function () {
    assert.strictEqual(0.1 + 0.2, 0.3);
  });
  it.skip("applies a coupon", function () {});
  it("is pending without a body");
  describe("Checkout ✓", function () {
    for (const name of ["Zoë", "日本"]) {
      it(`greets ${name}`, function () {
        assert.notStrictEqual(name, "日本");
      });
    }
  });
  describe("with a failing hook", function () {
    before(function () {
      throw new Error("database unavailable");
    });
    it("never runs", function () {});
  });
  describe("retried", function () {
    this.retries(2);
    let tries = 0;
    it("passes on the third try", function () {
      tries += 1;
      assert.ok(tries >= 3, `try ${tries}`);
    });
  });
});
