"""Derives the corpus's encoding, prolog and truncation variants from real runner output.

Each variant changes only what its name says; SOURCES.md names the file it comes from.
"""

import pathlib
import re
import sys

out = pathlib.Path(sys.argv[1])


def read(name):
    return (out / name).read_text(encoding="utf-8")


def without_declaration(text):
    return re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", text)


# A UTF-8 byte order mark and no XML declaration (as .NET loggers write).
(out / "derived-bom-no-declaration.xml").write_bytes(
    b"\xef\xbb\xbf" + without_declaration(read("rspec.xml")).encode("utf-8")
)

# Declared and encoded UTF-16 (little endian, with a byte order mark).
text = read("surefire-unicode.xml").replace('encoding="UTF-8"', 'encoding="UTF-16"', 1)
(out / "derived-utf16-bom.xml").write_bytes(text.encode("utf-16"))

# UTF-16LE without a byte order mark: only the declaration says so.
text = read("googletest.xml").replace('encoding="UTF-8"', 'encoding="UTF-16LE"', 1)
(out / "derived-utf16le-no-bom.xml").write_bytes(text.encode("utf-16-le"))

# A blank line before the XML declaration (a shell's echo before the report).
(out / "derived-blank-line-before-declaration.xml").write_text(
    "\n" + read("gotestsum.xml"), encoding="utf-8"
)

# A DOCTYPE with an internal subset that declares an entity the report uses.
text = read("catch2.xml").replace(
    "<testsuites>",
    '<!DOCTYPE testsuites [\n  <!ENTITY shop "ACME shop">\n  <!ELEMENT testsuites ANY>\n]>\n'
    "<testsuites>",
    1,
).replace("unexpected état", "unexpected état in &shop;", 1)
(out / "derived-doctype-internal-subset.xml").write_text(text, encoding="utf-8")

# A DOCTYPE whose external entity must never be resolved (XXE): its use stays unexpanded.
text = read("pytest-xunit1-properties.xml").replace(
    "?>",
    '?>\n<!DOCTYPE testsuites [\n  <!ENTITY xxe SYSTEM "file:///etc/hostname">\n]>',
    1,
).replace("E       AssertionError: tax is 20 %", "E       AssertionError: tax is 20 % &xxe;", 1)
(out / "derived-doctype-external-entity.xml").write_text(text, encoding="utf-8")

# Cut off in the middle of an element's start tag (a disk full, a killed upload).
text = read("surefire-rerun-flaky.xml")
cut = text.index('<testcase name="computesTotal"') + len('<testcase name="compu')
(out / "derived-truncated-mid-element.xml").write_text(text[:cut], encoding="utf-8")

# Cut off between elements: every tag is complete, the suites are never closed.
text = read("phpunit.xml")
cut = text.index("<testsuite name=\"CartTest::testSizes\"")
(out / "derived-truncated-between-elements.xml").write_text(text[:cut], encoding="utf-8")
