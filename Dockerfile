# One image for every verge process (web, worker, beat, migrations); the command picks the role.
# torch==2.14.1 from PyPI is the CUDA build on x86_64, so the same image serves GPU workers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VERGE_DATA_DIR=/data

RUN apt-get update \
    && apt-get install -y --no-install-recommends libjpeg62-turbo libpng16-16 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY models ./models
COPY store ./store
COPY workers ./workers
COPY migrations ./migrations
COPY verge ./verge
COPY webui ./webui
RUN pip install .

RUN useradd --create-home --uid 1000 verge && mkdir -p /data && chown verge /data
USER verge
VOLUME ["/data"]
ENTRYPOINT ["verge"]
CMD ["up"]
