Feature: Warenkorb (cart)

  Scenario: Add an item
    Given an empty cart
    When I add "Äpfel"
    Then the cart holds 1 item

  Scenario: Remove from an empty cart
    Given an empty cart
    When I remove "Birnen"
    Then the cart holds 0 items

  Scenario: Pay by card
    Given an empty cart
    When I pay by card
    Then I get a receipt

  @skip
  Scenario: Pay by cheque
    Given an empty cart
    Then I get a receipt

  Scenario Outline: Add <count> items
    Given an empty cart
    When I add <count> of "Kirschen"
    Then the cart holds <expected> item

    Examples:
      | count | expected |
      | 2     | 2        |
      | 3     | 4        |
