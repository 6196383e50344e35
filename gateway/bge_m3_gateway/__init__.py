"""bge-m3-gateway: OpenAI-, TEI-, Cohere/Jina-style and native BGE-M3 HTTP APIs in front of Triton."""

from bge_m3_gateway.app import create_app
from bge_m3_gateway.settings import GatewaySettings, settings_from

__all__ = ["GatewaySettings", "create_app", "settings_from"]
