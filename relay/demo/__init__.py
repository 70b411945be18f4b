"""
The demo shipped with relay: an app for ``relay worker`` (``relay.demo.app``),
the ``relay demo`` run (``relay.demo.run``) and a producer for the
docker-compose demo (``python -m relay.demo.producer``).
"""
