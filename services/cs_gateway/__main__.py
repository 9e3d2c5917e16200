from pathlib import Path

from services.common.runtime import serve
from services.cs_gateway.app import build_app

serve(build_app, Path(__file__).parent)
