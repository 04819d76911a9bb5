# One image for every agentfleet role: workers of each platform, the CLI and Flower.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY workers ./workers
COPY tools ./tools
COPY scripts ./scripts
RUN pip install --no-cache-dir ".[flower]" && bash scripts/install-clis.sh
ENV AGENTFLEET_TOOLS_DIR=/app/.agentfleet/tools
ENTRYPOINT ["agentfleet"]
