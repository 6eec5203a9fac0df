describe("Cart", () => {
  test("adds an item", () => {
    console.log("adding");
    expect([1].length).toBe(1);
  });
  test("computes the total", () => {
    expect(0.1 + 0.2).toBe(0.3);
  });
  test.skip("applies a coupon", () => {});
  test.todo("supports gift cards");
  describe("Checkout › nested", () => {
    test.each(["Zoë", "日本", "🚀"])("greets %s", (name) => {
      expect(name).not.toBe("日本");
    });
  });
});

test("throws outside any describe", () => {
  throw new TypeError("cannot read properties of undefined");
});
