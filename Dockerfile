# One image for the api, worker, beat and migrate services of docker-compose.yml (the command
# picks the role). Triton runs from NVIDIA's NGC image instead; the model repository is a mount.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DFMOD_DATA_DIR=/data \
    DFMOD_MODEL_REPOSITORY=/models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY moderation ./moderation
COPY serving ./serving
COPY webhook_api ./webhook_api
COPY worker ./worker
COPY training ./training
# pdqhash is a source package: g++ builds it, then goes.
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && pip install . \
    && apt-get purge -y g++ && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 dfmod \
    && mkdir -p /data /models \
    && chown dfmod /data

USER dfmod
EXPOSE 8080
ENTRYPOINT ["dfmod"]
CMD ["--help"]
