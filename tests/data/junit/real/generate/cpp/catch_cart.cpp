#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#include <stdexcept>

TEST_CASE("adds an item", "[cart]") { REQUIRE(1 + 1 == 2); }

TEST_CASE("computes the total", "[cart]") {
  int total = 10;
  CHECK(total == 12);
}

TEST_CASE("throws", "[cart]") { throw std::runtime_error("unexpected état"); }

TEST_CASE("checkout sections ✓", "[cart]") {
  SECTION("as a guest") { REQUIRE(true); }
  SECTION("with an account") { REQUIRE(1 == 2); }
}

TEST_CASE("hidden test", "[.]") { REQUIRE(false); }
