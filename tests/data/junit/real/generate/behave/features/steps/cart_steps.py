from behave import given, then, when


@given("an empty cart")
def empty_cart(context):
    context.cart = []


@when('I add "{item}"')
def add(context, item):
    print(f"adding {item}")
    context.cart.append(item)


@when('I add {count:d} of "{item}"')
def add_many(context, count, item):
    context.cart.extend([item] * count)


@when('I remove "{item}"')
def remove(context, item):
    context.cart.remove(item)


@then("the cart holds {count:d} item")
@then("the cart holds {count:d} items")
def holds(context, count):
    assert len(context.cart) == count, f"cart holds {len(context.cart)}"
