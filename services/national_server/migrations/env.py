from services.common.migrations_env import run
from services.national_server.models import NationalBase

run(NationalBase.metadata)
