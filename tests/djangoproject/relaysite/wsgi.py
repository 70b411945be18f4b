"""WSGI entry point for gunicorn (``relaysite.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "relaysite.settings")
application = get_wsgi_application()
