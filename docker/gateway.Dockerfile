# The HTTP gateway (no torch, no Triton): a small Python image, scaled apart from the Triton servers.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}
WORKDIR /opt/bge-m3-gateway
COPY requirements/ requirements/
COPY client/ client/
COPY gateway/ gateway/
RUN pip install --no-cache-dir -c requirements/constraints.txt -r requirements/gateway.txt \
 && pip install --no-cache-dir --no-deps ./client ./gateway \
 && python -c "import bge_m3_gateway"
ENV BGE_M3_GATEWAY_TRITON=triton:8001 BGE_M3_GATEWAY_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://localhost:8080/health', timeout=8).status != 200)"]
ENTRYPOINT ["bge-m3-gateway"]
