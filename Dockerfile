# The one image every infermodes entrypoint runs: `infermodes serve`, `infermodes operator`,
# `infermodes worker`, ... (the Deployment or Job picks the command).
FROM python:3.11-slim AS build
# gcc: the install compiles the native modules (hatch_build.py: _fastcsv.c, _fastjson.c, _trees.c)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY infermodes ./infermodes
RUN pip install --no-cache-dir --prefix=/install ".[operator]"

FROM python:3.11-slim
# libgomp: XGBoost's OpenMP runtime
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /install /usr/local
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin infermodes
USER 10001
EXPOSE 8080
ENTRYPOINT []
CMD ["infermodes", "--help"]
