"""Sender classes that exist under the same dotted name in every test process."""


class Order:
    pass


class Invoice:
    pass
