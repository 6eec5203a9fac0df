"""A small unittest project, reported by unittest-xml-reporting (xmlrunner)."""

import sys
import unittest


class InventoryTest(unittest.TestCase):
    def test_count(self):
        print("counting shelves")
        self.assertEqual(2 + 2, 4)

    def test_restock(self):
        print("restock warning", file=sys.stderr)
        self.assertEqual([1, 2], [1, 3], "restock lists differ")

    def test_crash(self):
        raise KeyError("sku-42")

    @unittest.skip("warehouse API is offline")
    def test_offline(self):
        pass

    @unittest.expectedFailure
    def test_known_bug(self):
        self.assertTrue(False)

    def test_sizes(self):
        for size in ["S", "M", "XL"]:
            with self.subTest(size=size):
                self.assertNotEqual(size, "XL")


class HtmlAnswerTest(unittest.TestCase):
    def test_gets_json(self):
        # A server answered HTML: the failure's text holds a DOCTYPE and a CDATA end marker.
        body = "<!DOCTYPE html><html><body>502 ]]> Bad Gateway</body></html>"
        self.assertTrue(body.startswith("{"), body)


class ÜnicodeNamesTest(unittest.TestCase):
    def test_straße(self):
        self.assertIn("ß", "Straße")


if __name__ == "__main__":
    unittest.main()
