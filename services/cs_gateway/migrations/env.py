from services.common.migrations_env import run
from services.cs_gateway.models import CsBase

run(CsBase.metadata)
