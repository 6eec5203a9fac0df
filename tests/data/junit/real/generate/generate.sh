#!/usr/bin/env bash
# Regenerates kitesync's corpus of real JUnit reports (tests/data/junit/real/) by running the
# real test runners on the small projects beside this script. Not run by CI: the committed
# files are the corpus; this script says how each was made. Every runner's console summary
# is appended to console.txt, which manifest.toml's counts were taken from.
#
# Needs (Debian bookworm): python3 (venv), node + npm, golang-go gotestsum, cmake googletest
# libgtest-dev catch2, openjdk + maven libsurefire-java junit4 ant ant-optional, php-cli
# phpunit, ruby-rspec ruby-rspec-junit-formatter, checkstyle; cargo + cargo-nextest.
#
# Usage: generate.sh [OUT_DIR]   (default: the directory above this script)
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="${1:-$(dirname "$HERE")}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r "$HERE"/. "$WORK/"
CONSOLE="$OUT/console.txt"
: >"$CONSOLE"

# Runs a command, keeps the lines of its output that match a pattern as its console summary.
summary() {
  local name="$1" pattern="$2"
  shift 2
  local log="$WORK/$name.log"
  "$@" >"$log" 2>&1
  { echo "## $name: $*"; grep -E "$pattern" "$log" | sed 's/\x1b\[[0-9;]*m//g'; echo; } >>"$CONSOLE"
}

# Python: pytest, unittest-xml-reporting, behave, Robot Framework.
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q pytest==9.2.0 unittest-xml-reporting==4.0.0 behave==1.3.3 \
  robotframework==7.5
PY="$WORK/venv/bin"
cd "$WORK/pytest" || exit 1
summary pytest-xunit1-properties "(passed|failed|error)" "$PY/pytest" -p no:cacheprovider \
  -o junit_family=xunit1 --junitxml="$OUT/pytest-xunit1-properties.xml"
summary pytest-xunit2-logging "(passed|failed|error)" "$PY/pytest" -p no:cacheprovider \
  -o junit_logging=all -o junit_suite_name=shop --junitxml="$OUT/pytest-xunit2-logging.xml"
cd "$WORK/unittest" || exit 1
summary xmlrunner "^(Ran|FAILED|OK)" "$PY/python" -m xmlrunner discover -p 'test_*.py' \
  --output-file "$OUT/xmlrunner-unittest.xml"
cd "$WORK/behave" || exit 1
summary behave "(passed|failed)" "$PY/behave" --junit --junit-directory "$WORK/behave-out" \
  --tags=-skip
cp "$WORK/behave-out/TESTS-cart.xml" "$OUT/behave.xml"
cd "$WORK/robot" || exit 1
summary robot "tests, .* passed" "$PY/robot" --output "$WORK/robot-output.xml" --report NONE \
  --log NONE --xunit "$OUT/robot-xunit.xml" shop.robot
cp "$WORK/robot-output.xml" "$OUT/not-junit-robot-output.xml"

# JavaScript: Jest + jest-junit, Vitest, Mocha (mocha-junit-reporter and its own xunit),
# Playwright Test (plain tests, no browser).
cd "$WORK/node" || exit 1
npm install --no-audit --no-fund --silent
cd "$WORK/node/jest" || exit 1
JEST_JUNIT_REPORT_TEST_SUITE_ERRORS=true JEST_JUNIT_OUTPUT_FILE="$OUT/jest-junit.xml" \
  summary jest "^(Tests|Test Suites):" npx jest --rootDir . --ci --reporters=default \
  --reporters=jest-junit
cd "$WORK/node/vitest" || exit 1
summary vitest "(Tests|Test Files) " npx vitest run --root . --reporter=default \
  --reporter=junit --outputFile.junit="$OUT/vitest.xml"
cd "$WORK/node/mocha" || exit 1
MOCHA_FILE="$OUT/mocha-junit-reporter.xml" npx mocha --reporter mocha-junit-reporter \
  cart.spec.js >/dev/null 2>&1
summary mocha "(passing|failing|pending)" npx mocha cart.spec.js
npx mocha --reporter xunit --reporter-option output="$OUT/mocha-xunit.xml" cart.spec.js \
  >/dev/null 2>&1
cd "$WORK/node/playwright" || exit 1
PLAYWRIGHT_JUNIT_OUTPUT_NAME="$OUT/playwright.xml" summary playwright \
  "^ +[0-9]+ (passed|failed|flaky|skipped)" npx playwright test -c playwright.config.js

# C++: googletest, Catch2, CTest (--output-junit, and ctest -T Test's dashboard file).
cmake -S "$WORK/cpp" -B "$WORK/cpp/build" >/dev/null && cmake --build "$WORK/cpp/build" -j2 >/dev/null
cd "$WORK/cpp/build" || exit 1
summary googletest "^\[  (PASSED|SKIPPED|FAILED) |DISABLED|tests from" ./gtest_cart \
  --gtest_output=xml:"$OUT/googletest.xml"
summary catch2 "^(test cases|assertions)" ./catch_cart
./catch_cart -r junit -o "$OUT/catch2.xml" >/dev/null 2>&1
summary ctest "tests passed|Not Run|Failed|Timeout|Skipped" ctest --output-junit "$OUT/ctest-junit.xml"
ctest -T Test >/dev/null 2>&1
cp Testing/*/Test.xml "$OUT/not-junit-ctest-Test.xml"

# Go: gotestsum (a build error, subtests, a panic; and --rerun-fails over a flaky test).
cd "$WORK/go" || exit 1
export GOFLAGS=-mod=mod GOPROXY=off
summary gotestsum "^DONE" gotestsum --junitfile "$OUT/gotestsum.xml" --format testname ./...
mkdir -p "$WORK/go-flaky"
FLAKY_DIR="$WORK/go-flaky" summary gotestsum-rerun "^DONE" gotestsum \
  --junitfile "$OUT/gotestsum-rerun.xml" --format testname --rerun-fails=2 --packages ./flaky

# Java: Maven Surefire 2.22.3 offline from Debian's repository, with reruns (flakyFailure,
# flakyError, rerunFailure, rerunError); Ant's junit and junitreport tasks.
cd "$WORK/java" || exit 1
mkdir -p "$WORK/m2" target/test-classes target/classes "$WORK/java-flaky" "$WORK/ant-flaky"
cp -rs /usr/share/maven-repo/. "$WORK/m2/"
javac -encoding UTF-8 -cp /usr/share/java/junit4.jar -d target/test-classes src/test/java/com/acme/*.java
summary surefire "Tests run:|Run [0-9]" mvn -o -B -Dmaven.repo.local="$WORK/m2" \
  -Dflaky.dir="$WORK/java-flaky" surefire:test
cp target/surefire-reports/TEST-com.acme.CartTest.xml "$OUT/surefire-rerun-flaky.xml"
cp "target/surefire-reports/TEST-com.acme.ÜnicodeTest.xml" "$OUT/surefire-unicode.xml"
summary ant "Tests run:" ant -Dflaky.dir="$WORK/ant-flaky"
cp target/ant/reports/TEST-com.acme.CartTest.xml "$OUT/ant-junit.xml"
cp target/ant/TESTS-TestSuites.xml "$OUT/ant-junitreport.xml"

# PHP: PHPUnit 9 (a data provider makes a nested suite; the root suite has an empty name).
cd "$WORK/php" || exit 1
summary phpunit "^(Tests:|OK)" phpunit --log-junit "$OUT/phpunit.xml"

# Ruby: RSpec with rspec_junit_formatter.
cd "$WORK/ruby" || exit 1
summary rspec "examples" rspec --format progress --format RspecJunitFormatter --out "$OUT/rspec.xml"

# Rust: cargo-nextest with retries (flakyFailure, rerunFailure).
cd "$WORK/rust" || exit 1
mkdir -p "$WORK/rust-flaky"
FLAKY_DIR="$WORK/rust-flaky" RUST_BACKTRACE=0 summary nextest "Summary" cargo nextest run \
  --profile ci --no-fail-fast
cp target/nextest/ci/junit.xml "$OUT/nextest.xml"

# Checkstyle: XML, but not JUnit.
cd "$WORK/checkstyle" || exit 1
checkstyle -c /sun_checks.xml -f xml -o "$OUT/not-junit-checkstyle.xml" Cart.java >/dev/null 2>&1

# Derived variants of the files above.
python3 "$HERE/derive.py" "$OUT"
sed -i "s#$OUT/##g; s#$WORK/##g" "$CONSOLE"
echo "corpus written to $OUT; console summaries in $CONSOLE"
