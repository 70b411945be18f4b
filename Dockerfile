# The image of the docker-compose demo: relay with the hiredis parser.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY relay ./relay
RUN pip install --no-cache-dir ".[hiredis]"
ENV PYTHONUNBUFFERED=1
