"""A small pytest project whose report has every outcome pytest writes."""

import sys

import pytest


@pytest.fixture
def broken_db():
    raise RuntimeError("no such table: carts")


def test_adds_items(record_property):
    record_property("ticket", "SHOP-1")
    print("adding to the cart")
    assert 1 + 1 == 2


def test_totals_with_tax():
    print("computing total", file=sys.stderr)
    assert round(10 * 1.2, 2) == 12.5, "tax is 20 %"


def test_needs_database(broken_db):
    assert broken_db


@pytest.mark.skip(reason="payment provider sandbox is down")
def test_pays():
    pass


@pytest.mark.xfail(reason="rounding bug #12")
def test_rounding():
    assert 0.1 + 0.2 == 0.3


@pytest.mark.xfail(reason="fixed already?", strict=True)
def test_strict_xpass():
    assert True


@pytest.mark.parametrize("name", ["Zoë", "日本", "✓ emoji 🚀", "a<b&c"])
def test_créer_utilisateur(name):
    assert name != "日本"


class TestCheckout:
    class TestGuest:
        def test_guest_checkout(self):
            assert True

    def test_discount(self):
        pytest.skip("discounts are off")


def test_teardown_fails(request):
    def fail():
        raise ValueError("could not clean up")

    request.addfinalizer(fail)
