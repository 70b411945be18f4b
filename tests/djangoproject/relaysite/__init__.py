"""A Django project that uses relay.contrib.django, for the tests."""
