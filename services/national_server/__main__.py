from pathlib import Path

from services.common.runtime import serve
from services.national_server.app import build_app

serve(build_app, Path(__file__).parent)
