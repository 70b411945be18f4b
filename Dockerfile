# The image of the docker-compose demo: relay with the hiredis parser.
# python:3.11-slim has no C compiler, so relay's optional C accelerator is not
# built and relay runs its pure-Python code (the same behaviour, a little slower).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY relay ./relay
RUN pip install --no-cache-dir ".[hiredis]"
ENV PYTHONUNBUFFERED=1
